"""Synthetic but realistic count history for pure check tests."""

from datetime import UTC, date, datetime, time, timedelta

import numpy as np

from diagnostics.calendar import Closure, Hours, SiteCalendar
from diagnostics.checks.base import CounterEvidence
from diagnostics.model import CountSlot, Observation

WEEK = tuple([Hours(time(9), time(20))] * 6 + [Hours(time(10), time(18))])


def calendar(closures=()):
    return SiteCalendar(
        "Europe/London",
        WEEK,
        holiday_region="GB-ENG",
        closures=tuple(Closure(a, b, r) for a, b, r in closures),
    )


def history(serial, now, *, days=28, peak=40.0, k=3.0, seed=1, zero_from=None, cal=None):
    """15-minute slots for ``days`` before ``now``: NB counts while open, zeros when closed."""
    cal = cal or calendar()
    rng = np.random.default_rng(seed)
    start = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    slots = []
    t = start
    while t < now - timedelta(minutes=15) + timedelta(seconds=1):
        share = cal.open_fraction(t, 15, regular=True)
        mu = peak * share
        n = int(rng.poisson(rng.gamma(k, mu / k))) if mu > 0 else 0
        if zero_from is not None and t >= zero_from:
            n = 0
        slots.append(CountSlot(serial, t, 15, (n + 1) // 2, n // 2))
        t += timedelta(minutes=15)
    return tuple(slots)


def evidence(slots, now, *, cal=None, api_ok=True, serial="FFC1", extra=None):
    cal = cal or calendar()
    obs = {"api": Observation(serial, "api", now, api_ok)}
    return CounterEvidence(
        serial=serial,
        name="Main door",
        site="LDN01",
        calendar=cal,
        now=now,
        observations=obs,
        slots=slots,
        extra=extra or {},
    )


# A Wednesday afternoon in November (GMT): the store is open 09:00-20:00
NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
TODAY = date(2026, 11, 25)
