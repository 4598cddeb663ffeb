"""Count time series: expected traffic, zero runs, gaps, level shifts and in/out balance.

Door counts are over-dispersed: the variance of an hour's count is several to tens of times its
mean, so a Poisson model calls ordinary quiet hours impossible and cries wolf. Here the expected
count of a slot comes from the same weekday and time of day in earlier weeks, and the chance of
seeing nothing comes from a negative-binomial model whose dispersion is fitted to the counter's
own history. A counter is also compared with its peers (the other doors of its group or site):
when they all dip together the store is quiet, not broken.

The work is done on numpy arrays over a regular UTC grid of slots (``Grid``), one row per
counter (``CountArrays``), so a year of 15-minute slots for a hundred counters is judged in
seconds. ``CountModel`` holds what every count check needs: the clean baselines (faulty days
left out), the dispersion, and the detectors for each kind of problem. A missing slot is
``NaN``, never zero: a slot that never arrived is missing data, not an empty shop.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from diagnostics.calendar import SiteCalendar
from diagnostics.kept import Kept
from diagnostics.model import CountSlot, held_since
from diagnostics.share import Judged

MIN_K, MAX_K = 0.3, 1000.0  # dispersion bounds: from very bursty to practically Poisson
SLOT_LENGTHS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)  # minutes that tile an hour


def _k_from_moments(num: float, den: float) -> float:
    if num == 0:
        return MIN_K  # no information: assume bursty, which is the cautious choice
    if den <= 0:
        return MAX_K
    return min(MAX_K, max(MIN_K, num / den))


def log10_p_zero(mu: np.ndarray, k: float) -> np.ndarray:
    """log10 P(count == 0) per slot of mean ``mu`` under NB(k); 0 where ``mu`` <= 0."""
    mu = np.where(np.isfinite(mu) & (mu > 0), mu, 0.0)
    return k * np.log10(k / (k + mu))


# --- the grid ----------------------------------------------------------------------------------


def _utc_offsets(epoch: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """UTC offset in seconds of each instant. The zone rules are looked up once per UTC day;
    on the days whose offset changes (the daylight-saving nights) once per hour; and per
    instant only in the hours where it changes."""
    days = np.unique(np.concatenate([epoch // 86400, epoch // 86400 + 1]))
    by_day = np.array([_offset(int(d) * 86400, tz) for d in days], dtype=np.int64)
    pos = np.searchsorted(days, epoch // 86400)
    out = by_day[pos]
    changing = np.flatnonzero(by_day[pos] != by_day[np.minimum(pos + 1, len(days) - 1)])
    if changing.size:
        out[changing] = _hourly_offsets(epoch[changing], tz)
    return out


def _offset(seconds: int, tz: ZoneInfo) -> int:
    delta = datetime.fromtimestamp(seconds, UTC).astimezone(tz).utcoffset()
    return int(delta.total_seconds()) if delta is not None else 0


def _hourly_offsets(epoch: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    hours = np.unique(np.concatenate([epoch // 3600, epoch // 3600 + 1]))
    by_hour = np.array([_offset(int(h) * 3600, tz) for h in hours], dtype=np.int64)
    pos = np.searchsorted(hours, epoch // 3600)
    out = by_hour[pos]
    changing = by_hour[pos] != by_hour[np.minimum(pos + 1, len(hours) - 1)]
    for i in np.flatnonzero(changing):
        out[i] = _offset(int(epoch[i]), tz)
    return out


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular run of ``n`` slots of ``minutes`` from ``start`` (UTC), seen in local time.

    The grid is regular in UTC, so the repeated hour of an autumn night is two slots and the
    skipped hour of a spring night is none: nothing is doubled, nothing is invented.
    """

    start: datetime
    minutes: int
    n: int
    tz: ZoneInfo
    weekday: np.ndarray  # local weekday, Monday 0
    minute: np.ndarray  # local minute of the day
    day: np.ndarray  # local date as a proleptic ordinal
    open_regular: np.ndarray  # share of the slot inside the regular weekly hours
    open_actual: np.ndarray  # the same, with closures and closed public holidays
    near_holiday: np.ndarray  # a public holiday, or the day before or after one

    @classmethod
    def build(cls, start: datetime, minutes: int, n: int, calendar: SiteCalendar) -> Grid:
        if minutes not in SLOT_LENGTHS:
            raise ValueError(f"slot length must divide an hour, got {minutes} min")
        start = start.astimezone(UTC)
        epoch = int(start.timestamp()) + np.arange(n, dtype=np.int64) * minutes * 60
        local = epoch + _utc_offsets(epoch, calendar.tz) if n else epoch
        day = local // 86400 + date(1970, 1, 1).toordinal()
        weekday = (day - 1) % 7  # ordinal 1 (0001-01-01) is a Monday
        minute = (local % 86400) // 60
        opens = np.zeros(7)
        closes = np.zeros(7)
        for wd, hours in enumerate(calendar.weekly):
            if hours is not None:
                opens[wd] = hours.open.hour * 60 + hours.open.minute
                closes[wd] = (
                    1440 if hours.close == time.max else hours.close.hour * 60 + hours.close.minute
                )
        overlap = np.minimum(minute + minutes, closes[weekday]) - np.maximum(minute, opens[weekday])
        regular = np.clip(overlap, 0, None) / minutes
        days = np.unique(day)
        open_day = {d: calendar.day(date.fromordinal(int(d))).open for d in days}
        actual = regular * np.array([open_day[d] for d in day], dtype=float) if n else regular
        holidays = [
            d for d in days.tolist() if calendar.holiday(date.fromordinal(int(d))) is not None
        ]
        near = np.isin(day, np.array([h + k for h in holidays for k in (-1, 0, 1)], dtype=np.int64))
        return cls(start, minutes, n, calendar.tz, weekday, minute, day, regular, actual, near)

    @property
    def slots_per_day(self) -> int:
        return 1440 // self.minutes

    @functools.cached_property
    def cell(self) -> np.ndarray:
        return self.weekday * self.slots_per_day + self.minute // self.minutes

    @functools.cached_property
    def week(self) -> np.ndarray:
        """Local Monday-to-Sunday week, counted from the grid's first week."""
        monday = self.day - self.weekday
        return (monday - monday.min()) // 7 if self.n else monday

    @functools.cached_property
    def day_bounds(self) -> np.ndarray:
        """Where each local day begins, and ``n`` after the last: day j is slots
        ``day_bounds[j]`` to ``day_bounds[j + 1] - 1``."""
        return np.concatenate([[0], np.flatnonzero(np.diff(self.day)) + 1, [self.n]])

    @functools.cached_property
    def cumulative_open(self) -> np.ndarray:
        """``open_regular`` summed up to each slot, a zero first."""
        return np.concatenate([[0.0], np.cumsum(self.open_regular)])

    def at(self, i: int) -> datetime:
        return self.start + timedelta(minutes=self.minutes * int(i))

    def index(self, when: datetime) -> int:
        """The first slot starting at or after ``when`` (clipped to the grid)."""
        seconds = (when - self.start).total_seconds()
        return int(min(self.n, max(0, math.ceil(seconds / (self.minutes * 60)))))


@dataclass(frozen=True, eq=False)
class CountArrays:
    """IN and OUT counts of several counters on one grid; NaN where a slot never arrived."""

    grid: Grid
    serials: tuple[str, ...]
    cin: np.ndarray  # (counters, slots)
    cout: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.cin + self.cout

    @property
    def present(self) -> np.ndarray:
        return ~np.isnan(self.cin)

    @classmethod
    def from_slots(
        cls,
        slots: Mapping[str, Sequence[CountSlot]],
        calendar: SiteCalendar,
        *,
        now: datetime,
        start: datetime | None = None,
        minutes: int | None = None,
    ) -> CountArrays:
        """Lay counters' slots on one grid from ``start`` (default: the earliest slot) up to the
        last slot that has ended by ``now``. Slots of another length or off the grid are left
        out; the CSV reader warns about them, the store never holds them."""
        columns = {serial: SlotColumns.from_slots(seq) for serial, seq in slots.items()}
        return cls.from_columns(columns, calendar, now=now, start=start, minutes=minutes)

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, SlotColumns],
        calendar: SiteCalendar,
        *,
        now: datetime,
        start: datetime | None = None,
        minutes: int | None = None,
    ) -> CountArrays:
        """``from_slots`` for slots already held as columns (as the store reads them)."""
        start, minutes, n = grid_span(columns, now=now, start=start, minutes=minutes)
        t0 = start.timestamp()
        step = minutes * 60
        grid = Grid.build(start, minutes, n, calendar)
        serials = tuple(columns)
        cin = np.full((len(serials), n), np.nan)
        cout = np.full((len(serials), n), np.nan)
        for row, serial in enumerate(serials):
            col = columns[serial]
            same = col.minutes == minutes
            offset = col.start[same] - t0
            idx = np.floor_divide(offset, step).astype(np.int64)
            keep = (offset % step == 0) & (idx >= 0) & (idx < n)
            cin[row, idx[keep]] = col.cin[same][keep]
            cout[row, idx[keep]] = col.cout[same][keep]
        return cls(grid, serials, cin, cout)


@dataclass(frozen=True, eq=False)
class SlotColumns:
    """One counter's count slots as columns, oldest first: start (UTC epoch seconds), length in
    minutes, IN and OUT. The store reads them straight into arrays, with no object per slot.

    The agent keeps five weeks of these for every counter between cycles (``agent.counts``), so
    they are held in the narrowest type that holds them exactly: 7 bytes a slot where they fit
    (start as unsigned 32-bit seconds, to 2106; length a byte; counts to 255 a slot in a byte,
    else to 65,535 in 16 bits), up to 20 where they do not (64-bit starts, 32-bit lengths,
    counts to a million, ``counter_format.MAX_COUNT``, as float32, exact to 2**24). A thousand
    counters' month took 43 MB at 20 bytes a slot. The models widen them to float64 on their
    grid."""

    start: np.ndarray  # uint32 or int64
    minutes: np.ndarray  # uint8 or int32
    cin: np.ndarray  # uint8, uint16 or float32
    cout: np.ndarray  # uint8, uint16 or float32

    @classmethod
    def empty(cls) -> SlotColumns:
        """No slots: one shared, read-only instance (asked for as a default everywhere)."""
        return _NO_SLOTS

    @classmethod
    def of(
        cls, start: npt.ArrayLike, minutes: npt.ArrayLike, cin: npt.ArrayLike, cout: npt.ArrayLike
    ) -> SlotColumns:
        """From any sequences or arrays, each in the narrowest of the held types that holds
        it exactly."""
        return cls(
            _narrow(np.asarray(start, dtype=np.int64), np.uint32),
            _narrow(np.asarray(minutes, dtype=np.int32), np.uint8),
            _narrow_count(np.asarray(cin, dtype=np.float32)),
            _narrow_count(np.asarray(cout, dtype=np.float32)),
        )

    @classmethod
    def from_slots(cls, slots: Sequence[CountSlot]) -> SlotColumns:
        return cls.of(
            [int(s.start.timestamp()) for s in slots],
            [s.minutes for s in slots],
            [s.count_in for s in slots],
            [s.count_out for s in slots],
        )

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> SlotColumns:
        """From an (n, 4) array of start, minutes, in, out."""
        rows = np.asarray(rows).reshape(-1, 4)
        return cls.of(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])

    def __len__(self) -> int:
        return int(self.start.size)

    def since(self, epoch: int) -> SlotColumns:
        """The slots starting at or after ``epoch``."""
        cut = int(np.searchsorted(self.start, epoch, side="left"))
        if cut == 0:
            return self
        return SlotColumns(self.start[cut:], self.minutes[cut:], self.cin[cut:], self.cout[cut:])

    def merged(self, newer: SlotColumns) -> SlotColumns:
        """These slots updated by ``newer``: a slot in both takes the newer counts.

        Every cycle a counter sends its latest slot again, most often unchanged, and the next
        one after the others: those two cases cost a lookup and an append, not a sort of the
        whole window (``self`` itself comes back when nothing changed)."""
        if not len(newer):
            return self
        if len(self):
            at = np.minimum(np.searchsorted(self.start, newer.start), len(self) - 1)
            if (
                np.array_equal(self.start[at], newer.start)
                and np.array_equal(self.minutes[at], newer.minutes)
                and np.array_equal(self.cin[at], newer.cin)
                and np.array_equal(self.cout[at], newer.cout)
            ):
                return self  # every one held already, with the same counts
            rising = bool(np.all(newer.start[1:] > newer.start[:-1]))  # no diff: unsigned
            if rising and newer.start[0] > self.start[-1]:
                return SlotColumns.of(
                    *(
                        np.concatenate([a, b])
                        for a, b in zip(
                            (self.start, self.minutes, self.cin, self.cout),
                            (newer.start, newer.minutes, newer.cin, newer.cout),
                            strict=True,
                        )
                    )
                )
        start = np.concatenate([newer.start, self.start])
        # np.unique keeps the first occurrence of each start: the newer one
        _, pick = np.unique(start, return_index=True)  # sorted by start

        def take(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.concatenate([a, b])[pick]

        return SlotColumns.of(
            start[pick],
            take(newer.minutes, self.minutes),
            take(newer.cin, self.cin),
            take(newer.cout, self.cout),
        )

    @functools.cached_property
    def lengths(self) -> tuple[tuple[int, int, int], ...]:
        """Each slot length held: (minutes, index of its first slot, how many slots)."""
        values, first, counts = np.unique(self.minutes, return_index=True, return_counts=True)
        return tuple(zip(values.tolist(), first.tolist(), counts.tolist(), strict=True))

    @functools.cached_property
    def first(self) -> int:
        """The earliest start (UTC epoch seconds); only for columns holding a slot."""
        return int(self.start.min())

    @functools.cached_property
    def digest(self) -> bytes:
        """A fingerprint of the contents, so a model built from them can be reused."""
        h = hashlib.blake2b(digest_size=16)
        for a in (self.start, self.minutes, self.cin, self.cout):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.digest()

    def slots(self, counter: str, arrived: datetime | None = None) -> tuple[CountSlot, ...]:
        """Back to ``CountSlot`` objects (for the few checks that read slots one by one)."""
        return tuple(
            CountSlot(
                counter,
                datetime.fromtimestamp(int(t), UTC),
                int(m),
                int(a),
                int(b),
                arrived,
            )
            for t, m, a, b in zip(
                self.start.tolist(),
                self.minutes.tolist(),
                self.cin.tolist(),
                self.cout.tolist(),
                strict=True,
            )
        )


def _narrow(values: np.ndarray, narrow: type[np.unsignedinteger]) -> np.ndarray:
    """``values`` as ``narrow`` when that holds every one of them exactly (whole numbers in
    its range), else as they are."""
    if values.dtype == narrow:
        return values
    info = np.iinfo(narrow)
    if values.size == 0 or (
        values.min() >= info.min
        and values.max() <= info.max
        and (values.dtype.kind in "iu" or bool(np.all(np.floor(values) == values)))
    ):
        return values.astype(narrow)
    return values


def _narrow_count(values: np.ndarray) -> np.ndarray:
    """Counts in a byte when every one fits (most doors' quarter-hours), else in 16 bits,
    else as they are."""
    narrow = _narrow(values, np.uint8)
    return narrow if narrow.dtype == np.uint8 else _narrow(values, np.uint16)


def _read_only(columns: SlotColumns) -> SlotColumns:
    for a in (columns.start, columns.minutes, columns.cin, columns.cout):
        a.flags.writeable = False
    return columns


_NO_SLOTS = _read_only(SlotColumns.of([], [], [], []))


# --- baselines -------------------------------------------------------------------------------


def weekly_baseline(
    values: np.ndarray, valid: np.ndarray, grid: Grid, *, memory: float = 0.85
) -> np.ndarray:
    """Expected count of every slot from the same local weekday and time in earlier weeks.

    An exponentially weighted mean over past weeks (``memory`` per week: about six weeks'
    worth), so the baseline follows the seasons but one odd week moves it little. Slots not
    ``valid`` (missing, faulty days, closed days) teach it nothing; a week of them simply lets
    older weeks speak. NaN where no earlier week has data for that time.
    """
    return weekly_baselines([values], valid, grid, memory=memory)[0]


def weekly_baselines(
    values: Sequence[np.ndarray], valid: np.ndarray, grid: Grid, *, memory: float = 0.85
) -> list[np.ndarray]:
    """``weekly_baseline`` of each of ``values``, learnt from the same ``valid`` slots: where
    those slots fall in the weekly table, and how much each earlier week weighs, is worked
    out once for all of them (the model fits two baselines, twice)."""
    n_counters = valid.shape[0]
    if grid.n == 0:
        return [np.full(v.shape, np.nan) for v in values]
    week = grid.week
    cells = 7 * grid.slots_per_day
    weeks = int(week.max()) + 1
    flat = week * cells + grid.cell
    # one bincount over every counter at once: row r's cells are offset by r whole tables.
    # Every slot is binned, the slots not valid with no weight: adding 0.0 changes no sum, and
    # it spares gathering the valid ones
    size = weeks * cells
    index = (np.arange(n_counters)[:, None] * size + flat[None, :]).ravel()
    shape = (n_counters, weeks, cells)
    counts = np.bincount(index, valid.ravel().astype(float), n_counters * size).reshape(shape)
    # the weight of the weeks before each week, and where there is any
    weights = np.empty(shape)
    acc_n = np.zeros((n_counters, cells))
    for w in range(weeks):
        weights[:, w] = acc_n
        acc_n = memory * acc_n + counts[:, w]
    known = weights > 0
    divisor = np.where(known, weights, 1)
    out = []
    for v in values:
        sums = np.bincount(index, np.where(valid, v, 0.0).ravel(), n_counters * size)
        sums = sums.reshape(shape)
        before = np.empty(shape)  # the weighted sum of the weeks before each week
        acc_sum = np.zeros((n_counters, cells))
        for w in range(weeks):
            before[:, w] = acc_sum
            acc_sum = memory * acc_sum + sums[:, w]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(known, before / divisor, np.nan)
        out.append(means[:, week, grid.cell])
    return out


def history_weeks(valid: np.ndarray, grid: Grid) -> np.ndarray:
    """Whole weeks of data each counter had before each slot's day: (counters, slots)."""
    if grid.n == 0:
        return np.zeros(valid.shape, dtype=int)
    first = int(grid.day.min())
    day = grid.day - first
    days = int(day.max()) + 1
    out = np.zeros(valid.shape, dtype=int)
    for row in range(valid.shape[0]):
        has = np.bincount(day[valid[row]], minlength=days) > 0
        before = np.concatenate([[0], np.cumsum(has)[:-1]])
        out[row] = before[day] // 7
    return out


def dispersion(values: np.ndarray, expected: np.ndarray, valid: np.ndarray) -> float:
    """NB dispersion of one counter's slots around their expectation, by moments:
    k = Σμ² / Σ((x − μ)² − μ), pooled over the slots the store is normally open."""
    ok = valid & np.isfinite(expected) & (expected > 0)
    mu = expected[ok]
    x = values[ok]
    return _k_from_moments(float(np.sum(mu * mu)), float(np.sum((x - mu) ** 2 - mu)))


# --- episodes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZeroRun:
    """Zeros from slot ``first`` to ``last`` (inclusive) with no count in between."""

    first: int
    last: int
    open_minutes: float  # regular opening time covered by the zero slots
    expected: float  # visitors expected over it, scaled by how the peers are doing
    log10_p: float  # chance of so many zeros by luck under NB(k)
    history_weeks: int
    peer_factor: float  # the peers' level against their own expectation (1.0 without peers)
    peers_observed: float
    peers_expected: float
    expected_alone: float = 0.0  # visitors expected on the counter's own history alone
    log10_p_alone: float = 0.0  # the same chance, without scaling by the peers


@dataclass(frozen=True, eq=False)
class ZeroRuns:
    """A counter's zero runs as columns, one entry a run, named as ``ZeroRun``'s fields. A
    year holds thousands of runs, nearly all ordinary nights and quiet hours: a check picks
    the few it needs words for here, before any becomes an object."""

    first: np.ndarray
    last: np.ndarray
    open_minutes: np.ndarray
    expected: np.ndarray
    log10_p: np.ndarray
    history_weeks: np.ndarray
    peer_factor: np.ndarray
    peers_observed: np.ndarray
    peers_expected: np.ndarray
    expected_alone: np.ndarray
    log10_p_alone: np.ndarray

    def runs(self, pick: np.ndarray | None = None) -> list[ZeroRun]:
        """The runs (those where ``pick`` is True), oldest first."""
        columns = [getattr(self, f.name) for f in fields(self)]
        if pick is not None:
            columns = [c[pick] for c in columns]
        return [ZeroRun(*values) for values in zip(*(c.tolist() for c in columns), strict=True)]


@dataclass(frozen=True)
class Gap:
    """Slots ``first`` to ``last`` (inclusive) that never arrived."""

    first: int
    last: int
    open_minutes: float  # regular opening time inside the gap
    expected: float  # visitors the lost slots would have counted


@dataclass(frozen=True)
class Hold:
    """A counter whose level incident is open: judged against its level before ``since``
    (the start of the shift its incident's finding named), not a level that has learnt the
    fault. ``ratio``: its usual expected traffic against its peers' (``usual_ratio``, kept
    with the incident's finding), which stands in for its own baselines once the window holds
    no week from before the shift; None without peers, or from an older finding."""

    since: datetime
    ratio: float | None = None

    @classmethod
    def from_evidence(cls, evidence: dict[str, Any]) -> Hold | None:
        """The hold a level finding's evidence names; None without a readable start (an
        older finding). A ratio that is no ratio holds the start alone."""
        since = held_since(evidence)
        if since is None:
            return None
        ratio = evidence.get("usual_ratio")
        if isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0:
            return cls(since, float(ratio))
        return cls(since)


@dataclass(frozen=True)
class Shift:
    """A level shift of a counter against its peers (or its own history) found by CUSUM."""

    direction: int  # -1 under-count, +1 over-count
    first: int  # estimated first slot of the shift
    last: int  # estimated last slot (the CUSUM's peak)
    alarm: int  # the slot at whose end the evidence crossed the threshold
    factor: float  # observed / expected level over the shift
    expected: float
    observed: float
    llr: float  # the CUSUM's peak log-likelihood ratio
    ongoing: bool  # still above the threshold at the last slot
    against: str  # "peers" or "history"


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as (first, last) inclusive index pairs."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array, the same value without its general machinery: the
    detectors take a few hundred medians of small arrays for every site, every cycle."""
    n = values.size
    if n == 0 or np.isnan(values).any():
        return math.nan
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    part = np.partition(values, (k - 1, k))
    return float((part[k - 1] + part[k]) / 2)


def _cusum(increments: np.ndarray) -> np.ndarray:
    """S_t = max(0, S_{t-1} + x_t) without a Python loop: the walk minus its running minimum."""
    walk = np.concatenate([[0.0], np.cumsum(increments)])
    return (walk - np.minimum.accumulate(walk))[1:]


@dataclass(frozen=True)
class Params:
    """How the model reads the counts: its baselines, which days they must not learn from,
    and the chances and yardsticks its detectors judge by.

    The checks' own options decide what is reported from those; these are the model's own,
    fixed and cautious, each chosen on the evaluation's dev half (docs/counts.md).
    """

    memory: float = 0.85  # weekly weight of the exponentially weighted baseline
    zero_log10_p: float = -4.0  # a zero run this improbable marks its days faulty
    zero_min_open_minutes: float = 60.0
    peer_prior: float = 4.0  # Gamma(a, a) prior on a site's daily level: shrinks small peers
    block_expected: float = 25.0  # visitors per block of the level CUSUM
    # log-ratio shifts the CUSUMs are tuned for: about 14 % (slow drifts) and 0.67×/1.5×
    shifts: tuple[float, ...] = (0.15, 0.4)
    # the CUSUM's threshold is ln(blocks between false alarms) (Wald's bound, conservative):
    # one false alarm per counter and direction in this many days of blocks
    false_alarm_days: float = 730.0
    min_threshold: float = 6.0
    min_history_weeks: int = 2
    # the level's yardstick (its reference level, spread and how blocks move together) is
    # fitted on the days before the last ``recent_days``, when ``calibration_days`` days with
    # blocks remain there: a fault not found yet would otherwise widen its own yardstick
    recent_days: int = 14
    calibration_days: int = 10
    # with two or more peers, the counter's own move (against its own history) must stand
    # out from its peers' own moves by this many times their half-range: when the peers
    # themselves scatter, one door moving is traffic moving between doors (chosen on the
    # evaluation's dev half, docs/counts.md)
    standout: float = 2.0
    # people come in groups (a family, friends): a run of zeros is the chance that no group
    # came, and a slot's expected visitors are this many fewer arrivals
    group_size: float = 2.0


class CountModel:
    """Everything the count checks judge, built once for a site (or a counter and its peers).

    Two passes: baselines from everything, then zero runs and level shifts flagged with them,
    then baselines again without the flagged days (when any day was flagged: most sites have
    none, and a second pass over the same slots would fit the same baselines). ``peers[i]``
    lists the rows that are counter ``i``'s peers (same group, else same site).
    """

    def __init__(
        self,
        arrays: CountArrays,
        calendar: SiteCalendar,
        now: datetime,
        peers: Sequence[Sequence[int]] | None = None,
        params: Params | None = None,
        held: Mapping[str, Hold] | None = None,
    ) -> None:
        self.arrays = arrays
        self.grid = g = arrays.grid
        self.calendar = calendar
        self.now = now
        self.params = params or Params()
        size = len(arrays.serials)
        if peers is None:
            peers = [[j for j in range(size) if j != i] for i in range(size)]
        self.peers = [np.asarray(sorted(set(p) - {i}), dtype=int) for i, p in enumerate(peers)]
        self.total = arrays.total
        self.present = arrays.present
        self.weeks = history_weeks(self.present, g)
        # a day the store was shut on purpose (holiday, refit) is not "a normal week"
        closed_day = (g.open_regular > 0) & (g.open_actual == 0)
        usable = self.present & ~closed_day[None, :]
        self.zero_mask = np.zeros_like(self.present)
        # a counter whose level incident is open (``held``: since when its shift began) is
        # judged against its level before it: the days since are neither learnt by its
        # baselines nor by the level's yardstick, or a fault of three weeks becomes the usual
        # level and its incident recovers while the counter still counts wrong
        known = np.zeros_like(self.present)
        self._holds = {
            arrays.serials.index(serial): hold
            for serial, hold in (held or {}).items()
            if serial in arrays.serials
        }
        for i, hold in self._holds.items():
            known[i, g.index(hold.since) :] = True
        self._stood_in: dict[int, np.ndarray] = {}  # held rows' slots expected from the ratio
        usable &= ~known
        self._bad = known
        self._fit(usable)
        self._shifts: dict[int, list[Shift]] = {}  # each counter's, once judged on this fit
        faulty = self.zero_mask | known
        for i in range(size):
            for s in self.shifts(i):
                faulty[i, s.first : s.last + 1] = True
        self.faulty_days = [set(np.unique(g.day[faulty[i]]).tolist()) for i in range(size)]
        if not any(self.faulty_days):
            return  # nothing to leave out: the second pass would fit exactly the first again
        bad = known.copy()
        for i in range(size):
            if self.faulty_days[i]:
                bad[i] |= np.isin(g.day, list(self.faulty_days[i]))
        self._bad = bad
        self._shifts = {}
        # only the counters with faulty days learn other baselines (each counter's are its
        # own slots'); the rest of the fit, which the peers' baselines feed, is done again
        self._fit(usable & ~bad, [i for i in range(size) if self.faulty_days[i]])

    @property
    def nbytes(self) -> int:
        """Bytes held in the model's arrays (its input arrays and grid included)."""
        seen: set[int] = set()
        total = 0
        for value in [*vars(self).values(), *vars(self.arrays).values(), *vars(self.grid).values()]:
            for arr in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(arr, np.ndarray) and id(arr) not in seen:
                    seen.add(id(arr))
                    total += arr.nbytes
        return total

    def _fit(self, usable: np.ndarray, rows: list[int] | None = None) -> None:
        """Baselines and dispersion from the usable slots, then the zero runs they imply.
        ``rows``: only these counters' usable slots changed since the last fit, so only their
        baselines and dispersion are learnt again."""
        g = self.grid
        # per counter, what the detectors ask for again and again: built once a fit
        self._mu: dict[int, np.ndarray] = {}
        self._cum_mu: dict[int, np.ndarray] = {}
        self._cum_peers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._day_counts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # and how often this slot of the week was empty in earlier weeks: a floor under the NB
        # chance of a zero where the counts are zero-inflated (a late hour that is busy on a
        # few days and empty on most)
        inside = usable & (g.open_regular > 0)
        if rows is None:
            self.expected, self.zero_rate = weekly_baselines(
                [self.total, (self.total == 0).astype(float)], usable, g, memory=self.params.memory
            )
            rows = list(range(self.total.shape[0]))
            self.k = np.zeros(len(rows))
        elif rows:
            total = self.total[rows]
            expected, zero_rate = weekly_baselines(
                [total, (total == 0).astype(float)], usable[rows], g, memory=self.params.memory
            )
            self.expected[rows], self.zero_rate[rows] = expected, zero_rate
        self._stand_in(rows)
        for i in rows:
            self.k[i] = dispersion(self.total[i], self.expected[i], inside[i])
        self._peers_all = self._peer_totals(None)
        self.share_k = np.array([self._share_k(i, usable[i]) for i in range(self.total.shape[0])])
        mask = np.zeros_like(self.present)
        p = self.params
        for i in range(mask.shape[0]):
            seg = self._zero_segments(i, 0, g.n)
            if seg is None:
                continue
            firsts, lasts, open_min, _, log10p = seg[:5]
            hit = (open_min >= p.zero_min_open_minutes) & (log10p <= p.zero_log10_p)
            for a, b in zip(firsts[hit].tolist(), lasts[hit].tolist(), strict=True):
                mask[i, a : b + 1] = True
        self.zero_mask = mask
        # a peer's own fault is no yardstick: its zero runs, and (second pass) the days it
        # was flagged shifted, are left out of the level its peers are held against
        self._peers_clean = self._peer_totals(mask | self._bad)

    def _stand_in(self, rows: list[int]) -> None:
        """A held counter's expectation where its own baselines have none (every week since
        its shift is held out of them, and the window has slid past the weeks before): its
        usual ratio to its peers times their expectation. Refreshed at each fit, as the
        peers' baselines may have been learnt again."""
        for i, hold in self._holds.items():
            if hold.ratio is None or self.peers[i].size == 0:
                continue
            mine = self.expected[i]
            if i in rows or i not in self._stood_in:
                gap = ~np.isfinite(mine)
                gap[: self.grid.index(hold.since)] = False
                self._stood_in[i] = gap
            theirs = self.expected[self.peers[i]]
            known = np.isfinite(theirs).all(axis=0)
            gap = self._stood_in[i]
            mine[gap] = np.where(known[gap], hold.ratio * theirs[:, gap].sum(axis=0), np.nan)

    def hold(self, i: int) -> Hold | None:
        """Counter ``i``'s open level incident, as handed to the model (None: not held)."""
        return self._holds.get(i)

    def usual_ratio(self, i: int) -> float | None:
        """The counter's expected traffic against its peers' (summed), over the open slots
        where every one of them has an expectation; None without peers or such slots. Kept
        with a level incident (``Hold.ratio``), it stands in for the counter's baselines."""
        if self.peers[i].size == 0:
            return None
        theirs = self.expected[self.peers[i]]
        ok = np.isfinite(self.expected[i]) & np.isfinite(theirs).all(axis=0)
        ok &= self.grid.open_regular > 0
        total = float(theirs[:, ok].sum())
        return float(self.expected[i, ok].sum()) / total if total > 0 else None

    def _share_k(self, i: int, usable: np.ndarray) -> float:
        """How steady the counter's share of its site's traffic is from day to day, as the
        shape k of a gamma day factor (1/k is the variance of a day's log level against its
        peers, or against its own baseline without peers, Poisson noise taken out)."""
        g = self.grid
        e = self.expected[i]
        ok = usable & np.isfinite(e) & (e > 0) & (g.open_regular > 0)
        if self.peers[i].size:
            pobs, pexp = self._peers_all[0][i], self._peers_all[1][i]
            ok &= pexp > 0
        if not ok.any():
            return 1.0 / 0.25
        day = g.day[ok] - g.day.min()
        x = np.bincount(day, weights=self.total[i][ok])
        ex = np.bincount(day, weights=e[ok])
        if self.peers[i].size:
            y = np.bincount(day, weights=pobs[ok])
            level = (y + 0.5) / np.maximum(np.bincount(day, weights=pexp[ok]), 1e-9)
            v0 = 1 / np.maximum(ex * level, 1e-9) + 1 / (y + 0.5)
        else:
            level = np.ones_like(ex)
            v0 = 1 / np.maximum(ex, 1e-9)
        keep = ex >= 20
        if keep.sum() < 5:
            return 1.0 / 0.25  # too little to tell: a share that varies by ±50 %
        z = np.log((x[keep] + 0.5) / (ex[keep] * level[keep]))
        mad = 1.4826 * _median(np.abs(z - _median(z)))
        tau2 = min(2.0, max(0.005, mad * mad - _median(v0[keep])))
        return 1.0 / tau2

    def _peer_totals(self, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per counter and slot: its peers' observed and expected counts, over the peers that
        reported (and, with ``exclude``, were not in a zero run)."""
        ok = self.present & np.isfinite(self.expected)
        if exclude is not None:
            ok &= ~exclude
        return self._peer_sum(np.where(ok, self.total, 0.0)), self._peer_sum(
            np.where(ok, self.expected, 0.0)
        )

    def _peer_sum(self, values: np.ndarray) -> np.ndarray:
        """Row i: the sum of its peers' rows. Summed row by row, not as a matrix product: the
        peers are few, and a BLAS product on a busy two-core gateway spins threads for nothing."""
        size = values.shape[0]
        out = np.zeros_like(values)
        everyone = values.sum(axis=0) if size > 2 else None
        for i, peers in enumerate(self.peers):
            if peers.size == 0:
                continue
            if peers.size == size - 1 and everyone is not None:
                out[i] = everyone - values[i]  # every other counter: one subtraction
            else:
                out[i] = values[peers].sum(axis=0)
        return out

    # -- shared pieces ---------------------------------------------------------------------------

    def index(self, serial: str) -> int:
        return self.arrays.serials.index(serial)

    def mu(self, i: int) -> np.ndarray:
        """The counter's expected count per slot inside regular hours; 0 where unknown.
        Read-only: the same array is handed to every caller."""
        out = self._mu.get(i)
        if out is None:
            e = np.where(np.isfinite(self.expected[i]), self.expected[i], 0.0)
            out = self._mu[i] = e * (self.grid.open_regular > 0)
            out.flags.writeable = False
        return out

    def _cumulative_mu(self, i: int) -> np.ndarray:
        """``mu(i)`` summed up to each slot, a zero first: the sum over first..last is
        ``c[last + 1] - c[first]``."""
        out = self._cum_mu.get(i)
        if out is None:
            out = self._cum_mu[i] = np.concatenate([[0.0], np.cumsum(self.mu(i))])
        return out

    def peer_factor(
        self, i: int, first: npt.ArrayLike, last: npt.ArrayLike
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """How busy the peers were over slots first..last against their own expectation: the
        posterior mean of a Gamma(a, a) prior on the site's level, updated by their counts
        (1.0 without peers). A storm that halves every door's traffic halves what this
        counter is expected to see; a peer that also counts nothing is evidence too."""
        lo, hi = np.asarray(first), np.asarray(last)
        if self.peers[i].size == 0:
            zero = np.zeros(lo.shape)
            return np.ones(lo.shape), zero, zero
        sums = self._cum_peers.get(i)
        if sums is None:
            obs, exp = self._peers_all[0][i], self._peers_all[1][i]
            sums = self._cum_peers[i] = (
                np.concatenate([[0.0], np.cumsum(obs)]),
                np.concatenate([[0.0], np.cumsum(exp)]),
            )
        cobs, cexp = sums
        o = cobs[hi + 1] - cobs[lo]
        e = cexp[hi + 1] - cexp[lo]
        a = self.params.peer_prior
        return (a + o) / (a + e), o, e

    # -- detectors -----------------------------------------------------------------------------

    def _zero_segments(self, i: int, lo: int, hi: int) -> tuple[np.ndarray, ...] | None:
        """Runs of zeros in slots lo..hi: first, last, open minutes, expected, log10 chance,
        peer factor, peer observed and expected, and the last two without the peers."""
        tot = self.total[i, lo:hi]
        pres = self.present[i, lo:hi]
        zero = pres & (tot == 0)
        if not zero.any():
            return None
        zidx = np.flatnonzero(zero)
        zseg = np.cumsum(pres & (tot > 0))[zidx]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(zseg)) + 1])
        firsts = lo + zidx[starts]
        lasts = lo + zidx[np.concatenate([starts[1:], [zidx.size]]) - 1]
        # the run's span is its opening time: the night before a dead morning is not the fault
        inside = self.grid.open_regular[lo + zidx] > 0
        big = np.iinfo(np.int64).max
        first_open = np.minimum.reduceat(np.where(inside, lo + zidx, big), starts)
        last_open = np.maximum.reduceat(np.where(inside, lo + zidx, -1), starts)
        has_open = last_open >= 0
        firsts = np.where(has_open, first_open, firsts)
        lasts = np.where(has_open, last_open, lasts)
        factor, pobs, pexp = self.peer_factor(i, firsts, lasts)
        seg_of = np.repeat(np.arange(starts.size), np.diff(np.concatenate([starts, [zidx.size]])))
        alone = self.mu(i)[lo:hi][zidx]
        open_min = np.add.reduceat(self.grid.open_regular[lo:hi][zidx], starts) * self.grid.minutes
        floor = self.zero_rate[i, lo:hi][zidx]
        floor = np.log10(np.where(np.isfinite(floor) & (floor > 0), floor, 1e-300))
        kr = float(self.share_k[i])

        g = self.params.group_size

        def chance(mus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            expected = np.add.reduceat(mus, starts)
            arrivals = mus / g
            log10p = np.add.reduceat(
                np.maximum(log10_p_zero(arrivals, float(self.k[i])), floor), starts
            )
            # the counter's share of the site may itself be low today: over the whole run, the
            # chance of nothing under a gamma day factor is NB(share_k) on the run's expectation
            return expected, np.maximum(log10p, kr * np.log10(kr / (kr + expected / g)))

        # judged twice: on the counter's own expectation, and scaled by how its peers are doing
        # now; the gate weighs the two (a dip the peers share is a real drop in traffic)
        expected_alone, log10p_alone = chance(alone)
        expected, log10p = chance(alone * factor[seg_of])
        if self.peers[i].size:
            # and the site's level is known only as well as the peers' counts tell it: the
            # chance of nothing under the Gamma(a + observed, a + expected) posterior of that
            # level, not under its mean alone (when every door is near zero, that matters)
            a = self.params.peer_prior
            post = (a + pobs) * np.log10((a + pexp) / (a + pexp + expected_alone / g))
            log10p = np.maximum(log10p, post)
        return (
            firsts,
            lasts,
            open_min,
            expected,
            log10p,
            factor,
            pobs,
            pexp,
            expected_alone,
            log10p_alone,
        )

    def zero_runs(self, i: int, lo: int = 0, hi: int | None = None) -> list[ZeroRun]:
        """Every run of zeros among slots lo..hi (``zero_run_columns``), as objects."""
        return self.zero_run_columns(i, lo, hi).runs()

    def zero_run_columns(self, i: int, lo: int = 0, hi: int | None = None) -> ZeroRuns:
        """Every run of zeros among slots lo..hi; missing and closed slots neither break nor
        lengthen a run. Judged under NB(k) on the counter's expectation, scaled by its peers,
        and never as less likely than such a slot was empty in earlier weeks."""
        seg = self._zero_segments(i, lo, self.grid.n if hi is None else hi)
        if seg is None:
            at, no = np.zeros(0, dtype=np.int64), np.zeros(0)  # slots and weeks; the rest
            return ZeroRuns(at, at, no, no, no, at, no, no, no, no, no)
        first, last, open_min, expected, log10p, factor, pobs, pexp, alone, log10p_alone = seg
        return ZeroRuns(
            first,
            last,
            open_min,
            expected,
            log10p,
            self.weeks[i][first],
            factor,
            pobs,
            pexp,
            alone,
            log10p_alone,
        )

    def gaps(self, i: int, lo: int = 0, hi: int | None = None) -> list[Gap]:
        """Runs of slots that never arrived among lo..hi, with the traffic they held."""
        hi = self.grid.n if hi is None else hi
        found = runs(~self.present[i, lo:hi])
        if not found:
            return []
        firsts = np.array([lo + a for a, _ in found])
        lasts = np.array([lo + b for _, b in found])
        factor, _, _ = self.peer_factor(i, firsts, lasts)
        cmu = self._cumulative_mu(i)
        copen = self.grid.cumulative_open
        return [
            Gap(
                first=int(f),
                last=int(la),
                open_minutes=float((copen[la + 1] - copen[f]) * self.grid.minutes),
                expected=float((cmu[la + 1] - cmu[f]) * fac),
            )
            for f, la, fac in zip(firsts, lasts, factor, strict=True)
        ]

    def shifts(self, i: int) -> list[Shift]:
        """Level shifts of counter ``i`` by CUSUMs on its log ratio to its peers, each shift a
        change-point with recovery (see ``_episodes``).

        Both the counter and its peers are measured against their own expectation, so the
        historical ratio between doors is built in, and a store-wide dip cancels out. Slots
        are pooled into blocks of about ``block_expected`` visitors within a local day; a
        block's variance is Poisson on both sides plus an extra part fitted robustly (MAD)
        from the counter's own record, inflated by how much blocks of one day or one week
        move together. Each CUSUM adds the log-likelihood ratio of "shifted by d" against "no
        shift" (d in ``shifts``), so its threshold reads as a false-alarm rate: at least
        e^threshold blocks between false alarms, set to ``false_alarm_days`` of the counter's
        effective blocks (blocks of a day that move together count as fewer).
        Without peers the counter is compared with its own baseline, a noisier yardstick that
        the fitted variance makes correspondingly cautious.
        """
        found = self._shifts.get(i)
        if found is None:
            found = self._shifts[i] = self._find_shifts(i)
        return list(found)

    def _find_shifts(self, i: int) -> list[Shift]:
        p = self.params
        g = self.grid
        ok = self.present[i] & np.isfinite(self.expected[i]) & (self.expected[i] > 0)
        ok &= (g.open_regular > 0) & ~self.zero_mask[i]
        has_peers = self.peers[i].size > 0
        if has_peers:
            pobs, pexp = self._peers_clean[0][i], self._peers_clean[1][i]
            ok &= pexp > 0
        else:
            # without peers nothing tells a quiet holiday (or its eve, or the day after) from
            # a counter counting too few: those days are not judged against history
            ok &= ~g.near_holiday
        if ok.sum() < 2:
            return []
        e = np.where(ok, self.expected[i], 0.0)
        # blocks of about block_expected visitors, never across local midnight
        cum = np.cumsum(e)
        day_start = np.concatenate([[True], g.day[1:] != g.day[:-1]])
        base = np.maximum.accumulate(np.where(day_start, cum - e, 0.0))
        block = np.floor((cum - base - e / 2) / p.block_expected)
        idx = np.flatnonzero(ok)
        keys = ((g.day - g.day.min()) * 100_000 + block)[idx]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(keys)) + 1])
        ends = np.concatenate([starts[1:], [idx.size]])
        first_slot, last_slot = idx[starts], idx[ends - 1]
        xb = np.add.reduceat(self.total[i][idx], starts)
        eb = np.add.reduceat(e[idx], starts)
        if has_peers:
            yb = np.add.reduceat(pobs[idx], starts)
            level = (yb + 0.5) / np.add.reduceat(pexp[idx], starts)
            v0 = 1.0 / (eb * level) + 1.0 / (yb + 0.5)
        else:
            level = np.ones_like(eb)
            v0 = 1.0 / eb
        z = np.log((xb + 0.5) / eb) - np.log(level)
        keep = eb >= p.block_expected / 2
        if keep.sum() < 8:
            return []
        first_slot, last_slot = first_slot[keep], last_slot[keep]
        xb, z, v0, expected = xb[keep], z[keep], v0[keep], (eb * level)[keep]
        # The reference level and spread come from the blocks of days not flagged faulty.
        # The level is the median over days of each day's mean: a day's mean is near normal
        # even when the log of a bursty count is skewed, and the median over days is not
        # dragged by a minority of shifted days, as the first pass still has them.
        clean = ~self._bad[i][first_slot]
        # a held counter whose shift fills every judged day has no day to learn its level
        # from: its usual level is then what its baselines (learnt before the shift) expect
        unmoored = clean.sum() < 8 and i in self._holds
        if clean.sum() < 8:
            clean = np.ones_like(clean)
        days = g.day[first_slot]
        # And they come from the days before the last two weeks, when enough remain: the
        # window is judged now, and a fault of the last days that no pass has flagged yet
        # would move the yardstick it is judged against. A door counting 0.89x its usual
        # for the last twelve days widened it so (its days moving together 13-23 times
        # what independent blocks would, against about 5 without the fault) that it was
        # never raised; measured on real series, this finds most such faults (docs/counts.md)
        older = clean & (days <= days.max() - p.recent_days)
        if np.unique(days[older]).size >= p.calibration_days:
            clean = older
        inverse, sizes = _runs_of_equal(days[clean])
        if not unmoored:
            z = z - _median(np.bincount(inverse, weights=z[clean]) / sizes)
        mad = 1.4826 * _median(np.abs(z[clean] - _median(z[clean])))
        var = v0 + max(0.0, mad * mad - _median(v0[clean]))
        u = z / np.sqrt(var)
        # How much blocks move together depends on the time scale: the blocks of a day share
        # the day's traffic, and days themselves drift together for a while (weather, a busy
        # week). Each CUSUM is calibrated at the scale over which it gathers its evidence: the
        # large shift's within a day or two (blocks of a day, and of two open days, together),
        # the small shift's over a week and more (and of a week, with ten weeks or more).
        # One inflation for both made the large CUSUM as cautious as a week's drift asks.
        days_c, weeks_c = days[clean], g.week[first_slot][clean]
        fast = _inflation(u[clean], ((days_c, 5), (_day_pairs(days_c), 5)))
        slow = max(fast, _inflation(u[clean], ((weeks_c, 10),)))
        per_day = len(first_slot) / max(1, _runs_of_equal(days)[1].size)
        scales: list[tuple[np.ndarray, float]] = []
        for d in p.shifts:
            infl = slow if d == min(p.shifts) else fast
            # Wald's bound counts independent samples: blocks that move together are worth
            # fewer than their number, so the false-alarm rate is set on effective blocks;
            # the threshold pays ln(number of CUSUMs) for asking more than once
            effective = max(1.0, per_day / infl)
            h = max(p.min_threshold, math.log(p.false_alarm_days * effective * len(p.shifts)))
            scales.append((var * infl, h))
        found: list[Shift] = []
        against = "peers" if has_peers else "history"
        blocks = _Blocks(z, xb, expected, first_slot, last_slot)
        for direction in (-1, 1):
            found.extend(self._episodes(blocks, scales, direction, against))
        found.sort(key=lambda sh: sh.first)
        return [sh for sh in found if not has_peers or self._blame(i, sh)]

    def _episodes(
        self,
        b: _Blocks,
        scales: Sequence[tuple[np.ndarray, float]],
        direction: int,
        against: str,
    ) -> list[Shift]:
        """The shifts in one direction, each a change-point with recovery.

        ``scales`` holds, per shift size in ``Params.shifts``, the blocks' variance at the
        time scale that CUSUM works on and its threshold ``h``. A shift is raised where a
        CUSUM crosses its ``h``; it began where that CUSUM last left zero, moved to the
        change-point that best explains the blocks up to the alarm at the shift's own size. It
        ends when the blocks since favour "back to normal" over "still shifted by the size seen
        so far (at least the size seen at the alarm)" by the same likelihood ratio ``h`` (a
        CUSUM the other way, at the raising CUSUM's scale): the end is where that one last left
        zero. The detectors then start afresh after the end, so a later fault is a new finding
        and a recovered counter is no longer open.
        """
        p = self.params
        z = b.z
        n = z.size
        incs = [
            (d / v) * (direction * z - d / 2) for d, (v, _) in zip(p.shifts, scales, strict=True)
        ]
        out: list[Shift] = []
        pos = 0
        while pos < n:
            hit: tuple[int, int, np.ndarray, int] | None = None
            for which, inc in enumerate(incs):
                s = _cusum(inc[pos:])
                above = np.flatnonzero(s >= scales[which][1])
                if above.size and (hit is None or above[0] < hit[0]):
                    zeros = np.flatnonzero(s[: above[0]] == 0)
                    hit = (int(above[0]), int(zeros[-1]) + 1 if zeros.size else 0, s, which)
            if hit is None:
                break
            alarm, start, s = pos + hit[0], pos + hit[1], hit[2]
            var, h = scales[hit[3]]
            w = 1.0 / var
            # the shift's size as seen from its start to each block: at least the smallest
            # shift looked for, and always in the alarm's direction
            sl = slice(start, alarm + 1)
            m = float(np.sum(w[sl] * z[sl]) / np.sum(w[sl]))
            m = direction * max(direction * m, p.shifts[0])
            # where did it begin? the change-point, at the size seen at the alarm, that gives
            # the blocks from it to the alarm the largest likelihood ratio
            gain = (2 * z[start : alarm + 1] * m - m * m) / (2 * var[start : alarm + 1])
            tail = np.cumsum(gain[::-1])[::-1]
            start += int(np.argmax(tail))
            # has it ended? blocks after the alarm against the size seen up to the one before
            after = np.arange(alarm + 1, n)
            m_prev = np.concatenate([[0.0], np.cumsum(w[start:] * z[start:])])
            c_prev = np.concatenate([[0.0], np.cumsum(w[start:])])
            k = after - start  # blocks start..after-1 seen before each
            mu = m_prev[k] / c_prev[k]
            # at least the size seen at the alarm: the blocks after a recovery are normal ones,
            # and averaging them in would shrink "still shifted" towards "back to normal"
            # until the two could no longer be told apart (the finding then never ends)
            mu = direction * np.maximum(direction * mu, direction * m)
            back = _cusum((mu * mu - 2 * z[after] * mu) / (2 * var[after]))
            over = np.flatnonzero(back >= h)
            if over.size:
                zeros = np.flatnonzero(back[: over[0]] == 0)
                end = int(after[zeros[-1]]) if zeros.size else alarm
                ongoing = False
            else:
                zeros = np.flatnonzero(back == 0)
                end = int(after[zeros[-1]]) if zeros.size else alarm
                ongoing = True
            sl = slice(start, end + 1)
            factor = float(np.exp(np.sum(w[sl] * z[sl]) / np.sum(w[sl])))
            out.append(
                Shift(
                    direction=direction,
                    first=int(b.first_slot[start]),
                    last=int(b.last_slot[end]),
                    alarm=int(b.last_slot[alarm]),
                    factor=factor,
                    expected=float(b.expected[sl].sum()),
                    observed=float(b.xb[sl].sum()),
                    llr=float(s[start - pos : end - pos + 1].max()),
                    ongoing=ongoing,
                    against=against,
                )
            )
            pos = end + 1
        return out

    def _blame(self, i: int, sh: Shift) -> bool:
        """Is it this counter that moved, or its peers? With two or more peers, the ratio to a
        majority of them must have moved the same way, and the counter's own move must stand
        out from theirs (``Params.standout``); with one peer, the counter must have moved
        further from its own history than the peer did from its own."""
        sl = slice(sh.first, sh.last + 1)
        mine = self.present[i, sl] & np.isfinite(self.expected[i, sl]) & ~self.zero_mask[i, sl]

        def own(row: int, ok: np.ndarray) -> float | None:
            e = float(np.where(ok, self.expected[row, sl], 0.0).sum())
            if e <= 0:
                return None
            return math.log((float(np.where(ok, self.total[row, sl], 0.0).sum()) + 0.5) / e)

        moves = []
        for pr in self.peers[i].tolist():
            ok = mine & self.present[pr, sl] & np.isfinite(self.expected[pr, sl])
            ok &= ~self.zero_mask[pr, sl]
            a, b = own(i, ok), own(pr, ok)
            if a is not None and b is not None:
                moves.append((a, b))
        if not moves:
            return True
        if len(moves) == 1:
            a, b = moves[0]
            return sh.direction * (a + b) >= 0
        agree = sum(sh.direction * (a - b) >= self.params.shifts[0] / 2 for a, b in moves)
        if agree * 2 <= len(moves):
            return False
        mine_moved = float(np.median([a for a, _ in moves]))
        theirs = np.array([b for _, b in moves])
        stands_out = sh.direction * (mine_moved - float(np.median(theirs)))
        return stands_out >= self.params.standout * float(theirs.max() - theirs.min()) / 2

    def day_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per counter and local day (counters, days): IN and OUT summed over the slots that
        arrived and were not in a zero run, and how many such slots there were. Built once a
        fit, for every counter at once: the balance checks ask per counter and per site."""
        if self._day_counts is None:
            full = self.present & ~self.zero_mask
            first = self.grid.day_bounds[:-1]
            if self.grid.n == 0:
                none = np.zeros((full.shape[0], first.size))
                self._day_counts = (none, none, none.astype(np.int64))
            else:
                self._day_counts = (
                    np.add.reduceat(np.where(full, self.arrays.cin, 0.0), first, axis=1),
                    np.add.reduceat(np.where(full, self.arrays.cout, 0.0), first, axis=1),
                    np.add.reduceat(full.astype(np.int64), first, axis=1),
                )
            for a in self._day_counts:
                a.flags.writeable = False
        return self._day_counts

    def whole_days(
        self, rows: Sequence[int], lo: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per local day, IN and OUT summed over the given counters: (whole, first slot, end
        slot, in, out), one entry a day, ``end`` one past the day's last slot. ``whole`` is
        False for a day that ends by ``lo``, is short (the grid's first or last day), or on
        which one of the counters missed a slot or was in a zero run: a part day is not
        balanced by nature (its in and out are then those of the slots that were counted).
        Counts are whole numbers, so the sums are exact in any order."""
        g = self.grid
        rows = list(rows)
        day_in, day_out, full = self.day_counts()
        first, end = g.day_bounds[:-1], g.day_bounds[1:]
        whole = (end > lo) & ((end - first) * g.minutes >= 23 * 60)  # 23 h: spring forward
        whole &= (full[rows] >= end - first).all(axis=0)
        return whole, first, end, day_in[rows].sum(axis=0), day_out[rows].sum(axis=0)


@dataclass(frozen=True)
class _Blocks:
    """The level detector's blocks: log ratio, counted, expected, slots."""

    z: np.ndarray
    xb: np.ndarray
    expected: np.ndarray
    first_slot: np.ndarray
    last_slot: np.ndarray


def _runs_of_equal(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True, return_counts=True)`` without the values, for
    keys already in order (the blocks' days and weeks): no sort, as the level detector runs
    per counter, twice a model."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    new = np.concatenate([[True], keys[1:] != keys[:-1]])
    return np.cumsum(new) - 1, np.diff(np.append(np.flatnonzero(new), keys.size))


def _inflation(u: np.ndarray, groupings: Sequence[tuple[np.ndarray, int]]) -> float:
    """How much blocks that belong together (of one day, of two open days, of one week) move
    together: the largest robust variance (MAD²) of their standardised sums over the given
    groupings (labels in time order; each used only with at least its number of groups, so
    that a few shifted ones cannot set the spread), at least 1. This also calibrates a spread
    that the MAD of single blocks understates when their tails are heavy."""
    worst = 1.0
    for group, least in groupings:
        # the labels come in order (blocks run forward in time): a group is a run of one label
        starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
        if group.size == 0 or starts.size < least:
            continue
        sizes = np.diff(np.append(starts, group.size))
        sums = np.add.reduceat(u, starts) / np.sqrt(sizes)
        spread = 1.4826 * _median(np.abs(sums - _median(sums)))
        worst = max(worst, spread * spread)
    return worst


def _day_pairs(day: np.ndarray) -> np.ndarray:
    """Each block's pair of consecutive days with blocks (the first and second such day are
    one pair, the third and fourth the next, ...); ``day`` in order."""
    if day.size == 0:
        return day
    return np.cumsum(np.concatenate([[0], day[1:] != day[:-1]])) // 2


def grid_span(
    columns: Mapping[str, SlotColumns],
    *,
    now: datetime,
    start: datetime | None = None,
    minutes: int | None = None,
) -> tuple[datetime, int, int]:
    """The grid ``from_columns`` lays the slots on: start, slot length (the most common one,
    on a tie the one seen first) and the number of slots that have ended by ``now``."""
    if minutes is None:
        # the most common length over all the columns in order; on a tie the one seen first
        totals: dict[int, int] = {}
        firsts: dict[int, int] = {}
        offset = 0
        for col in columns.values():
            for value, first, count in col.lengths:
                totals[value] = totals.get(value, 0) + count
                firsts.setdefault(value, offset + first)
            offset += len(col)
        minutes = min(totals, key=lambda v: (-totals[v], firsts[v])) if totals else 15
    if start is None:
        starts = [c.first for c in columns.values() if len(c)]
        start = datetime.fromtimestamp(min(starts), UTC) if starts else now
    n = max(0, int((now - start).total_seconds() // (minutes * 60)))
    return start, minutes, n


# Bytes of count models kept between cycles. A site of ten counters' model holds 0.26 MB with
# three days of history, 0.6 with a week, 3 over five weeks: a gateway of up to about 480, 210
# or 40 counters keeps every site's model; a larger one builds each site's model once a cycle
# and keeps none between cycles (``diagnostics.kept``).
MODEL_BUDGET = 12 * 2**20
# Bytes of judged days kept between cycles: about 2 kB a door or site over five weeks, so a
# gateway of about 2,000 counters keeps them all.
DAYS_BUDGET = 4 * 2**20


_Inputs = tuple[tuple[SlotColumns, ...], SiteCalendar, datetime, tuple[object, ...]]


class ModelCache(Kept[CountModel]):
    """Count models kept between the agent's cycles and shared by the checks of a cycle.

    A ``CountModel`` is a pure function of its inputs — the counters' slots, the calendar, the
    grid and who is whose peer — so a model built from the same inputs is reused as it is, and
    the checks judge exactly what they would have judged from a fresh one. The caller names
    each model by ``who`` (the counters and their peers) and ``inputs`` (everything else it is
    built from; ``SlotColumns.digest`` fingerprints the slots). One model is kept per ``who``:
    a new slot replaces the model it outdates at once, so memory holds one model per group,
    never two. ``sweep`` forgets the models nobody asked for since the previous sweep.

    Memory is bounded: a model holds a dozen arrays over the whole history window (about 3 MB
    for a site of ten counters over five weeks), so a gateway of a thousand counters cannot
    keep them all. A fleet whose models fit ``budget`` keeps them all between cycles; a larger
    one keeps only the site being judged (the runner calls ``group`` between sites, so each
    site's model is built once a cycle, about 10 ms for such a site, and shared by its
    counters' checks and its own) and none between cycles: a few sites' models kept of a
    hundred would save a few builds and hold the budget through the probe phase.

    ``days`` keeps, the same way, what the balance checks judged of each door's and site's
    whole days (``diagnostics.share.Judged``, a few kB each): it changes once a day, so a
    gateway whose models are built every cycle still judges its days once a day.
    """

    def __init__(self, budget: int = MODEL_BUDGET, days_budget: int = DAYS_BUDGET) -> None:
        super().__init__(budget, lambda model: model.nbytes)
        # and the balance checks' judged days, per door and per site: they change once a day,
        # and judging them again is a quarter of a site's checks over four weeks
        self.days: Kept[Judged] = Kept(days_budget, lambda judged: judged.nbytes)
        self._inputs: _Inputs | None = None

    def inputs_of(
        self, columns: Mapping[str, SlotColumns], calendar: SiteCalendar, now: datetime
    ) -> tuple[object, ...]:
        """Everything a model of ``columns`` is a function of, besides who is whose peer:
        the calendar, the grid (``now`` counts only through it) and the slots' digests. Each
        of a site's counters asks with the same columns, so the last answer is kept (the
        columns with it, so they are the same objects, not ones at a reused address)."""
        held = self._inputs
        if (
            held is not None
            and held[1] == calendar
            and held[2] == now
            and len(held[0]) == len(columns)
            and all(a is b for a, b in zip(held[0], columns.values(), strict=False))
        ):
            return held[3]
        key = (calendar, grid_span(columns, now=now), tuple(c.digest for c in columns.values()))
        self._inputs = (tuple(columns.values()), calendar, now, key)
        return key

    def group(self) -> None:
        super().group()
        self.days.group()
        self._inputs = None

    def sweep(self) -> None:
        """The cycle's sweep (``Kept.sweep``) of the models and of the judged days."""
        super().sweep()
        self.days.sweep()
        self._inputs = None
