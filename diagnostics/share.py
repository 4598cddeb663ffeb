"""Is a door's IN share today unusual for *this* door? An overdispersed binomial test.

Real entrances are rarely symmetric: a door that is always 55 % IN / 45 % OUT (people come in
at the front and leave by the side) is normal, and flagging it every day is a ticket about
nothing. So a day's IN share is judged against the door's own usual share, with the volume
that day: with n crossings the share's binomial variance is p(1 − p)/n, plus a day-to-day part
τ² that real doors have on top (events, weather, a queue at the side door), fitted robustly
from the door's own history, plus the uncertainty of the usual share itself. A day is
significant when its z-score passes the confidence level *and* the share moved by at least
the tolerance (so an enormous door's tiny drift is not a fault). An episode is a run of
significant days in one direction; it matters once it lasts the required days.

The usual share is a volume-weighted median of the earlier days (robust to a few bad days)
that were not themselves significant, so a long fault does not become the new normal; when
fewer than ``min_history`` clean days remain in the window (a lasting change: a re-tuned
counter, a new layout), every day of the window counts and the change is accepted.

Pure numpy and the standard library: evidence in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MIN_TAU = 0.005  # never trust a day's share to better than half a point beyond the binomial


@dataclass(frozen=True)
class ShareDay:
    """One whole day of one door (or of the site): its counts and how it compares."""

    day: int  # local date, proleptic ordinal
    first: int  # first slot
    last: int  # last slot
    count_in: float
    count_out: float
    usual: float | None = None  # the usual IN share, None without enough history
    sd: float = 0.0  # the standard deviation of the day's share under the usual one
    z: float = 0.0
    significant: int = 0  # -1 IN share too low, +1 too high, 0 as usual

    @property
    def n(self) -> float:
        return self.count_in + self.count_out

    @property
    def share(self) -> float:
        return self.count_in / self.n if self.n else 0.5


@dataclass(frozen=True)
class Episode:
    """Consecutive judged days whose IN share moved the same way away from the usual one."""

    days: tuple[ShareDay, ...]
    direction: int
    usual: float  # the usual IN share (the first day's)
    tau: float  # day-to-day spread beyond the binomial, fitted on the history

    @property
    def count_in(self) -> float:
        return sum(d.count_in for d in self.days)

    @property
    def count_out(self) -> float:
        return sum(d.count_out for d in self.days)

    @property
    def share(self) -> float:
        n = self.count_in + self.count_out
        return self.count_in / n if n else 0.5

    @property
    def shift(self) -> float:
        """How far the imbalance (in − out)/(in + out) moved: twice the share's move."""
        return 2 * (self.share - self.usual)

    @property
    def z(self) -> float:
        """The pooled share's z-score: binomial over all crossings, τ² over the days."""
        n = self.count_in + self.count_out
        p = self.usual
        var = p * (1 - p) / max(n, 1) + self.tau**2 / len(self.days)
        return (self.share - p) / math.sqrt(var)

    @property
    def p_value(self) -> float:
        return 2 * (1 - NormalDist().cdf(abs(self.z)))


def judge_days(
    days: list[ShareDay],
    *,
    confidence: float,
    tolerance: float,
    history_days: int,
    min_history: int,
) -> tuple[list[ShareDay], dict[int, float]]:
    """Each day with its usual share, spread and significance; and τ per day judged."""
    crit = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    out: list[ShareDay] = []
    taus: dict[int, float] = {}
    for d in days:
        if d.n <= 0:
            continue
        window = [h for h in out if d.day - history_days <= h.day < d.day]
        clean = [h for h in window if not h.significant]
        hist = clean if len(clean) >= min_history else window
        if len(hist) < min_history:
            out.append(d)
            continue
        shares = np.array([h.share for h in hist])
        weights = np.array([h.n for h in hist])
        usual = _weighted_median(shares, weights)
        usual = min(max(usual, 0.02), 0.98)
        binom = usual * (1 - usual) / weights
        mad = 1.4826 * float(np.median(np.abs(shares - usual)))
        tau2 = max(MIN_TAU**2, mad * mad - float(np.median(binom)))
        # the usual share is itself an estimate: the variance of a median of len(hist) days
        var_usual = (math.pi / 2) * float(np.median(binom + tau2)) / len(hist)
        sd = math.sqrt(usual * (1 - usual) / d.n + tau2 + var_usual)
        z = (d.share - usual) / sd
        moved = 2 * abs(d.share - usual) >= tolerance
        sig = int(math.copysign(1, z)) if abs(z) >= crit and moved else 0
        taus[d.day] = math.sqrt(tau2)
        out.append(ShareDay(d.day, d.first, d.last, d.count_in, d.count_out, usual, sd, z, sig))
    return out, taus


def episodes(days: list[ShareDay], taus: dict[int, float]) -> list[Episode]:
    """Maximal runs of judged days significant in the same direction (days not judged, or
    without traffic, neither break nor lengthen a run)."""
    found: list[Episode] = []
    run: list[ShareDay] = []
    for d in [*days, None]:
        if d is not None and d.usual is None:
            continue
        if d is not None and d.significant and run and d.significant == run[0].significant:
            run.append(d)
            continue
        if run:
            first = run[0]
            assert first.usual is not None
            found.append(Episode(tuple(run), first.significant, first.usual, taus[first.day]))
        run = [d] if d is not None and d.significant else []
    return found


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][int(np.searchsorted(cum, cum[-1] / 2))])
