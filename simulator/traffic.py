"""Realistic, reproducible door traffic: per-minute IN and OUT counts for one local day.

The agent's judgement (zero runs, under-counts, peers, baselines) is only as good as the
traffic it is tested on. Real door counts are over-dispersed (people come in groups and in
bursts, and whole days run high or low with the weather), have lunch and late-afternoon peaks,
are genuinely zero while a store is shut, and balance IN against OUT over a day because people
leave after a dwell time. This module draws such traffic from a seed, one local day at a time,
so any day in the device's history can be produced on demand and always comes out the same.

Model, per local minute m of a day: rate = base_rate/60 · profile(m) · weekday · weather(site,
day) · mood(counter, day) · burst(5-minute block), IN ~ Poisson(rate). The gamma-distributed
burst factor makes the counts negative binomial (gamma-Poisson); the site's weather factor is
shared by its counters so peers move together. Each person leaves after a gamma dwell time,
through this door with probability 0.985, and a matching trickle of people who came in by
another door leaves through this one.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from simulator.model import SimCounter, SimSite

WEEKDAY_FACTOR = (0.82, 0.85, 0.9, 0.95, 1.05, 1.25, 0.9)  # Monday first
BURST_SHAPE = 2.0  # gamma shape of the 5-minute burst factor: variance/mean of 15 min ≈ 5-8
BURST_MINUTES = 5
WEATHER_SIGMA = 0.18  # log-sd of the site's daily factor
MOOD_SIGMA = 0.06  # log-sd of a counter's own daily factor
DWELL_SHAPE, DWELL_SCALE = 2.0, 11.0  # gamma dwell time in minutes, mean 22
LEAVE_HERE = 0.985  # share of people leaving by the door they came in
LAST_OUT_MINUTES = 30  # everyone is out this long after closing


def key(text: str) -> int:
    """A stable integer for seeding from a name (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, int]:
    """UTC start of the local day and its length in real minutes (1380/1440/1500 with DST)."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)
    return start, int((end - start).total_seconds() // 60)


def wall_minutes(start: datetime, n: int, tz: ZoneInfo) -> np.ndarray:
    """The local wall-clock minute-of-day of each real minute of a day (repeats/skips at DST)."""
    out = np.empty(n, dtype=np.int64)
    for h in range(0, n, 60):
        wall = (start + timedelta(minutes=h)).astimezone(tz)
        width = min(60, n - h)
        out[h : h + width] = wall.hour * 60 + wall.minute + np.arange(width)
    return out % 1440


def _shape(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.float64)
    lunch = 0.55 * np.exp(-0.5 * ((m - 765.0) / 55.0) ** 2)
    evening = 0.8 * np.exp(-0.5 * ((m - 1050.0) / 80.0) ** 2)
    return 0.35 + lunch + evening


_SHAPE_MAX = float(_shape(np.arange(1440)).max())


def profile(wall: np.ndarray, hours: tuple[int, int] | None) -> np.ndarray:
    """Relative arrival intensity (peak ≈ 1) per minute; exactly 0 outside opening hours."""
    if hours is None:
        return np.zeros(wall.shape, dtype=np.float64)
    open_m, close_m = hours
    is_open = (wall >= open_m) & (wall < close_m)
    ramp = np.clip((wall - open_m) / 30.0, 0.3, 1.0)  # a slow first half hour
    taper = np.clip((close_m - wall) / 20.0, 0.4, 1.0)  # few arrive just before closing
    return np.where(is_open, _shape(wall) / _SHAPE_MAX * ramp * taper, 0.0)


@dataclass(frozen=True)
class DayCounts:
    """One counter's true traffic over one local day, one entry per real minute.

    ``u_in``/``u_out`` are uniforms used for stochastic rounding when a fault scales the
    counts, so a faulty counter is as reproducible as a healthy one.
    """

    day: date
    start: datetime  # UTC instant of local midnight
    ins: np.ndarray
    outs: np.ndarray
    u_in: np.ndarray
    u_out: np.ndarray

    @property
    def minutes(self) -> int:
        return int(self.ins.shape[0])

    def epoch_minutes(self) -> np.ndarray:
        """Unix seconds of the start of each minute."""
        return int(self.start.timestamp()) + 60 * np.arange(self.minutes, dtype=np.int64)


def site_weather(seed: int, site: str, day: date) -> float:
    """The site's traffic factor for the day: shared by all its counters."""
    rng = np.random.default_rng([seed, key(site), day.toordinal(), 7])
    return float(rng.lognormal(0.0, WEATHER_SIGMA))


def generate_day(seed: int, site: SimSite, counter: SimCounter, day: date) -> DayCounts:
    """Draw one counter's traffic for one local day. Pure: the same inputs give the same day."""
    tz = site.tz
    start, n = day_bounds(day, tz)
    wall = wall_minutes(start, n, tz)
    rng = np.random.default_rng([seed, key(counter.serial), day.toordinal()])
    hours = site.hours_on(day)
    mood = rng.lognormal(0.0, MOOD_SIGMA)
    level = counter.base_rate / 60.0 * WEEKDAY_FACTOR[day.weekday()]
    rate = level * site_weather(seed, site.code, day) * mood * profile(wall, hours)
    n_blocks = -(-n // BURST_MINUTES)
    burst = rng.gamma(BURST_SHAPE, 1.0 / BURST_SHAPE, size=n_blocks)
    rate = rate * np.repeat(burst, BURST_MINUTES)[:n]
    ins = rng.poisson(rate)
    outs = _departures(rng, ins, rate, n)
    return DayCounts(
        day=day,
        start=start,
        ins=ins.astype(np.int32),
        outs=outs.astype(np.int32),
        u_in=rng.random(n).astype(np.float32),
        u_out=rng.random(n).astype(np.float32),
    )


def _departures(rng: np.random.Generator, ins: np.ndarray, rate: np.ndarray, n: int) -> np.ndarray:
    people = int(ins.sum())
    if people == 0:
        return np.zeros(n, dtype=np.int64)
    last_open = int(np.flatnonzero(rate > 0).max()) if np.any(rate > 0) else n - 1
    latest = min(n - 1, last_open + LAST_OUT_MINUTES)
    arrived = np.repeat(np.arange(n), ins)
    leaves_here = arrived[rng.random(people) < LEAVE_HERE]
    # people who came in by another door of the store and leave by this one
    others = rng.choice(n, size=rng.poisson(people * (1 - LEAVE_HERE)), p=rate / rate.sum())
    left = np.concatenate([leaves_here, others])
    dwell = np.maximum(1, np.rint(rng.gamma(DWELL_SHAPE, DWELL_SCALE, size=left.size)))
    when = np.minimum(left + dwell.astype(np.int64), latest)
    return np.bincount(when, minlength=n)


class Traffic:
    """Cached per-day traffic for a fleet. Thread-safe; days are evicted oldest first."""

    MAX_DAYS = 4096

    def __init__(self, seed: int, sites: dict[str, SimSite]) -> None:
        self.seed = seed
        self.sites = dict(sites)
        self._cache: dict[tuple[str, date], DayCounts] = {}
        self._lock = threading.Lock()

    def day(self, counter: SimCounter, day: date) -> DayCounts:
        cache_key = (counter.serial, day)
        with self._lock:
            hit = self._cache.get(cache_key)
            site = self.sites[counter.site]
        if hit is not None:
            return hit
        made = generate_day(self.seed, site, counter, day)
        with self._lock:
            self._cache[cache_key] = made
            while len(self._cache) > self.MAX_DAYS:
                self._cache.pop(next(iter(self._cache)))
        return made

    def replace_site(self, site: SimSite) -> None:
        """Swap a site's definition (e.g. new closed dates) and forget its cached days."""
        with self._lock:
            self.sites[site.code] = site
            self._cache.clear()
