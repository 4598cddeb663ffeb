"""Is a door's IN share today unusual for *this* door? An overdispersed binomial test.

Real entrances are rarely symmetric: a door that is always 55 % IN / 45 % OUT (people come in
at the front and leave by the side) is normal, and flagging it every day is a ticket about
nothing. So a day's IN share is judged against the door's own usual share, with the volume
that day: with n crossings the share's binomial variance is p(1 − p)/n, plus a day-to-day part
τ² that real doors have on top (events, weather, a queue at the side door), fitted robustly
from the door's own history, plus the uncertainty of the usual share itself. A day alone is
*unusual* when its z-score passes the confidence level *and* the share moved by at least the
tolerance (so an enormous door's tiny drift is not a fault). A *lasting move* is found by a
sequential test (a CUSUM per direction, each day weighted by its own variance), so a modest
move that no single day shows is found over a few days and a large one in two; it ends when
a test the other way says the share is back to usual.

The usual share is a volume-weighted median of the earlier days (robust to a few bad days)
that were not part of a move, so a long fault does not become the new normal; when
fewer than ``min_history`` clean days remain in the window (a lasting change: a re-tuned
counter, a new layout), every day of the window counts and the change is accepted.

Pure numpy and the standard library: evidence in, numbers out.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from datetime import datetime
from statistics import NormalDist
from typing import Any

import numpy as np

from diagnostics.model import held_since

MIN_TAU = 0.005  # never trust a day's share to better than half a point beyond the binomial
# a site's balance (paired directions): never trust it to better than counters that miss 1 %
# of crossings at random would give (the share's variance is then 0.01 of the binomial's)
MIN_PHI = 0.01


@dataclass(frozen=True)
class HeldSplit:
    """A door whose IN/OUT imbalance incident is open: its move began ``since``, and its
    usual IN share was ``usual`` (both as its finding named them)."""

    since: datetime
    usual: float

    @classmethod
    def from_evidence(cls, evidence: dict[str, Any]) -> HeldSplit | None:
        """The hold an imbalance finding's evidence names; None without a readable start or
        a usual share between 0 and 1."""
        since, usual = held_since(evidence), evidence.get("usual_share_in")
        if since is None or not isinstance(usual, (int, float)) or not 0 < usual < 1:
            return None
        return cls(since, float(usual))


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
    significant: int = 0  # in a lasting move: -1 IN share too low, +1 too high, 0 as usual
    unusual: bool = False  # this day alone is significant (z past the level, moved enough)
    alarm: bool = False  # the day the lasting move was raised
    phi: float = 1.0  # the binomial part's factor in the day's variance (below 1: paired)

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
    phi: float = 1.0  # the binomial part's factor (fitted, for a site's paired directions)

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
        """The pooled share's z-score: binomial (times φ) over all crossings, τ² over the
        days."""
        n = self.count_in + self.count_out
        p = self.usual
        var = self.phi * p * (1 - p) / max(n, 1) + self.tau**2 / len(self.days)
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
    min_days: int = 2,
    false_alarm_days: float = 730.0,
    paired: bool = False,
    kept: tuple[int, float] | None = None,
) -> tuple[list[ShareDay], dict[int, float]]:
    """Each day with its usual share and spread, whether it is unusual on its own, and
    whether it belongs to a lasting move (``significant``); and τ per day judged.

    A lasting move is found by a CUSUM per direction on the day's share against the usual
    one, each day weighted by its own variance (volume and τ): the log-likelihood ratio of
    "moved by ``tolerance``" against "as usual", so a busy door's evidence counts more and a
    move within half the tolerance adds nothing; beside it a second one for a move of twice
    the tolerance, which reaches a clear move in fewer days. It is raised when a sum passes
    ln(2 × ``false_alarm_days``) (at most one false alarm per door and direction in that
    many days, by Wald's bound, the 2 paying for asking twice); no day adds more than
    1/(``min_days`` − ½) of that, so it always takes ``min_days`` days. It began where the
    sum last left zero, and ends where a CUSUM the other way ("as usual" against "moved as
    much as so far") last left zero once it passed the same
    threshold; days of a move are left out of the usual share that later days are judged on.

    ``paired``: the IN and OUT are the same people (a whole site: whoever comes in goes
    out), so they are not independent draws and the binomial is the wrong null: the day's
    variance is φ·p(1 − p)/n, φ fitted robustly on the history (the MAD of the days'
    binomial z-scores, squared; at least ``MIN_PHI``) — volume-aware, and as quiet or as
    noisy as this site's own balance has been. Otherwise binomial plus τ² (a door).

    ``kept``: an open incident's move, (its first day, the usual share its finding named).
    The days since are not learnt as usual. A move that outlasts the window leaves too few
    days outside it to learn the usual share from: without ``kept`` every day of the window
    then counts and the move is accepted as the new usual (a re-tuned counter, a new
    layout); with it the days are judged against the share it names (their spread still
    measured around themselves), so the move goes on while the incident is open.
    """
    crit = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    # two sizes of move per direction, as the level detector: ``tolerance`` (a modest move
    # over many days) and twice that (a clear one, seen in fewer), so the threshold pays
    # for asking twice
    sizes = (tolerance, 2 * tolerance)
    h = math.log(max(false_alarm_days, 2.0) * len(sizes))
    # one day carries at most 1/(min_days - 1/2) of the threshold: it takes min_days days,
    # the first of which may be a part day (a fault begins at any hour)
    cap = h / max(min_days - 0.5, 0.5)
    delta = tolerance  # the share move looked for; a share move of delta/2 is the tolerance
    out: list[ShareDay] = []
    taus: dict[int, float] = {}
    # the CUSUMs, (direction, size) -> sum: towards more IN (+1) and towards more OUT (-1)
    sums = {(k, m): 0.0 for k in (1, -1) for m in sizes}
    since = dict.fromkeys(sums, 0)  # index in ``out`` where each CUSUM last left zero
    state = 0  # the direction of the move in progress, 0 when none
    back = 0.0  # the CUSUM back to normal while a move is in progress
    moved_by: list[tuple[float, float]] = []  # (weight, move) of the move's days
    last_normal = 0  # index of the last day of the move where ``back`` was zero
    # each judged day's share and crossings, and whether it is part of a move, beside ``out``
    # (a few dozen numbers a day: plain Python beats numpy's per-call cost here)
    day_share: list[float] = []
    day_n: list[float] = []
    moving: list[bool] = []

    def mark(j: int, significant: int, alarm: bool = False) -> None:
        out[j] = replace(out[j], significant=significant, alarm=alarm)
        moving[j] = bool(significant)

    days = [d for d in days if d.n > 0]  # a day without traffic says nothing about a share
    # each day's window of history (the days of the last ``history_days`` before it) and its
    # medians, for every day at once: they are what a day costs, and the days of a move,
    # left out below, are rare enough to be done one by one
    starts: list[int] = []
    lo = 0  # the days arrive in order: the window's first day only moves forward
    for here, d in enumerate(days):
        while lo < here and days[lo].day < d.day - history_days:
            lo += 1
        starts.append(lo)
    medians = _window_medians(days, starts, min_history, paired=paired)
    held_from, held_usual = kept if kept is not None else (math.inf, 0.5)
    for here, d in enumerate(days):
        n, share = d.n, d.share
        lo = starts[here]
        held = lo < len(out) and out[-1].day >= held_from  # its window holds a held day
        if held or True in moving[lo:]:  # leave out the days of a move, if enough are left
            span = range(lo, len(out))
            clean = [j for j in span if not moving[j] and out[j].day < held_from]
            accepted = len(clean) < min_history
            hist = list(span) if accepted else clean
            shares = [day_share[j] for j in hist]
            crossings = [day_n[j] for j in hist]
            known = len(shares)
            if known >= min_history:
                usual = _weighted_median(shares, crossings)
                usual = min(max(usual, 0.02), 0.98)
                reciprocal = _median_reciprocal(crossings)
                if paired:
                    pq = usual * (1 - usual)
                    spread = _median(
                        [
                            abs(v - usual) * math.sqrt(m / pq)
                            for v, m in zip(shares, crossings, strict=True)
                        ]
                    )
                else:
                    spread = _median([abs(v - usual) for v in shares])
                if accepted and held:
                    usual = min(max(held_usual, 0.02), 0.98)
        else:  # the usual case: every day of the window, its medians already known
            known = here - lo
            if known >= min_history:
                usual, reciprocal, spread = medians[here]
        if known < min_history:
            out.append(d)
            day_share.append(share)
            day_n.append(n)
            moving.append(False)
            continue
        binom = usual * (1 - usual) * reciprocal
        # τ (or φ) is itself estimated, from a few weeks of days by the MAD (about 37 % as
        # efficient as the variance): a new day's spread is a t with that many degrees of
        # freedom, not a normal, and a spread that came out low by chance must not make
        # ordinary days look odd
        df = max(3.0, 0.37 * known)
        phi = 1.0
        if paired:
            phi = max(MIN_PHI, (1.4826 * spread) ** 2) * df / (df - 2)
            binom *= phi
            tau2 = 0.0
        else:
            mad = 1.4826 * spread
            tau2 = max(MIN_TAU**2, mad * mad - binom) * df / (df - 2)
        # the usual share is itself an estimate: the variance of a median of that many days
        var_usual = (math.pi / 2) * (binom + tau2) / known
        var = phi * usual * (1 - usual) / n + tau2 + var_usual
        sd = math.sqrt(var)
        x = share - usual
        z = x / sd
        unusual = abs(z) >= crit and 2 * abs(x) >= tolerance
        taus[d.day] = math.sqrt(tau2)
        out.append(
            ShareDay(
                d.day, d.first, d.last, d.count_in, d.count_out, usual, sd, z, 0, unusual, phi=phi
            )
        )
        day_share.append(share)
        day_n.append(n)
        moving.append(False)
        here = len(out) - 1
        if state:
            y = state * x
            # against the size of the move seen before today
            m = max(sum(w * v for w, v in moved_by) / sum(w for w, _ in moved_by), delta)
            moved_by.append((1 / var, y))
            back = max(0.0, back + (m * m - 2 * y * m) / (2 * var))
            if back == 0.0:
                last_normal = here
            if back < h:
                mark(here, state)
                continue
            # back to usual: the move ended on the last day that still looked moved
            for j in range(last_normal + 1, here + 1):
                mark(j, 0)
            state = 0
            sums = dict.fromkeys(sums, 0.0)
            since = dict.fromkeys(sums, here + 1)
            continue
        for key in sums:
            k, size = key
            inc = min(cap, (size / var) * (k * x - size / 2))
            sums[key] = value = max(0.0, sums[key] + inc)
            if value == 0.0:
                since[key] = here + 1
        for key, value in sums.items():
            k = key[0]
            if value >= h - 1e-9:
                state, back, last_normal = k, 0.0, here
                judged = [j for j in range(since[key], here + 1) if out[j].usual is not None]
                moves = [
                    (1 / out[j].sd ** 2, k * (out[j].share - (out[j].usual or 0.0))) for j in judged
                ]
                # where did it begin? the day from which the days up to the alarm, at the
                # size of the move seen, give the largest likelihood ratio
                m = max(sum(w * v for w, v in moves) / sum(w for w, _ in moves), delta)
                gain = [w * (2 * v * m - m * m) / 2 for w, v in moves]
                tail = np.cumsum(gain[::-1])[::-1]
                first = int(np.argmax(tail))
                moved_by = moves[first:]
                for j in judged[first:]:
                    mark(j, k, j == here)
                break
    return out, taus


@dataclass(frozen=True, eq=False)
class Judged:
    """What ``judge_days`` said about a run of days, held compactly between cycles.

    The judgement of whole days changes only when a day ends or a day's counts are revised,
    but the agent judges every cycle; kept as one small array (a few kB a door, where the
    ``ShareDay`` objects take ten times that), it is handed back for the same days
    (``key``) with their slots as they are now (a day's slots are numbered from the
    window's start, which moves every cycle).
    """

    values: np.ndarray  # per day with traffic: usual (NaN: None), sd, z, significant,
    # unusual, alarm, phi, τ (NaN: not judged)

    @classmethod
    def pack(cls, judged: list[ShareDay], taus: dict[int, float]) -> Judged:
        values = np.array(
            [
                (
                    math.nan if d.usual is None else d.usual,
                    d.sd,
                    d.z,
                    d.significant,
                    d.unusual,
                    d.alarm,
                    d.phi,
                    taus.get(d.day, math.nan),
                )
                for d in judged
            ],
            dtype=float,
        ).reshape(len(judged), 8)
        values.flags.writeable = False
        return cls(values)

    def unpack(self, days: list[ShareDay]) -> tuple[list[ShareDay], dict[int, float]]:
        """``judge_days``'s answer for ``days``, the days this was packed from (by ``key``)."""
        days = [d for d in days if d.n > 0]
        out: list[ShareDay] = []
        taus: dict[int, float] = {}
        for d, row in zip(days, self.values.tolist(), strict=True):
            usual, sd, z, significant, unusual, alarm, phi, tau = row
            out.append(
                ShareDay(
                    d.day,
                    d.first,
                    d.last,
                    d.count_in,
                    d.count_out,
                    None if math.isnan(usual) else usual,
                    sd,
                    z,
                    int(significant),
                    bool(unusual),
                    bool(alarm),
                    phi,
                )
            )
            if not math.isnan(tau):
                taus[d.day] = tau
        return out, taus

    @property
    def nbytes(self) -> int:
        return self.values.nbytes

    @staticmethod
    def key(days: list[ShareDay]) -> bytes:
        """The days' dates and counts, which are all that ``judge_days`` judges."""
        values = np.array([(d.day, d.count_in, d.count_out) for d in days], dtype=float)
        return hashlib.blake2b(values.tobytes(), digest_size=16).digest()


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
            found.append(
                Episode(tuple(run), first.significant, first.usual, taus[first.day], first.phi)
            )
        run = [d] if d is not None and d.significant else []
    return found


def _window_medians(
    days: list[ShareDay], starts: list[int], min_history: int, *, paired: bool
) -> list[tuple[float, float, float]]:
    """For each day ``t``, over the days ``starts[t]`` to ``t - 1`` (its window, when it holds
    at least ``min_history``): the usual share (``_weighted_median`` of the shares by their
    crossings, clipped to 0.02..0.98), ``_median_reciprocal`` of the crossings, and the
    median spread: of |share − usual| for a door, of the binomial z-score's size for a site
    (``paired``). The same numbers, to the bit, as those functions on each window's lists
    (the same sorts, the same sums in the same order), for all the days in a few numpy calls
    instead of a few Python sorts a day."""
    size = len(days)
    first = np.asarray(starts, dtype=np.int64)
    length = np.arange(size) - first
    judged = np.flatnonzero(length >= min_history)
    out = [(0.0, 0.0, 0.0)] * size
    if judged.size == 0:
        return out
    count_in = np.array([d.count_in for d in days], dtype=float)
    n = count_in + np.array([d.count_out for d in days], dtype=float)
    share = count_in / n
    # one row per judged day, its window's days left-aligned; the columns past the window
    # are padding, which weighs nothing and is sorted last (as +inf)
    first, length = first[judged], length[judged]
    cols = np.arange(int(length.max()))
    inside = cols[None, :] < length[:, None]
    at = np.where(inside, first[:, None] + cols[None, :], 0)
    values, weights = share[at], np.where(inside, n[at], 0.0)
    rows = np.arange(judged.size)
    last = length - 1
    # the weighted median: sorted by share (then crossings), the first at which the running
    # weight reaches half the total (summed in the window's order, as ``sum`` does)
    order = np.lexsort((weights, np.where(inside, values, np.inf)), axis=1)
    ranked = np.take_along_axis(values, order, axis=1)
    running = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    half = np.cumsum(weights, axis=1)[rows, last] / 2
    reached = (running >= half[:, None]) & inside
    pick = np.where(reached.any(axis=1), reached.argmax(axis=1), last)
    usual = np.minimum(np.maximum(ranked[rows, pick], 0.02), 0.98)
    # the reciprocals of the crossings sorted up are sorted down: the middle two are the same
    crossings = np.sort(np.where(inside, weights, np.inf), axis=1)
    reciprocal = _row_medians(1 / crossings, length)
    if paired:
        pq = usual * (1 - usual)
        dev = np.abs(values - usual[:, None]) * np.sqrt(weights / pq[:, None])
    else:
        dev = np.abs(values - usual[:, None])
    spread = _row_medians(np.sort(np.where(inside, dev, np.inf), axis=1), length)
    for t, u, r, m in zip(
        judged.tolist(), usual.tolist(), reciprocal.tolist(), spread.tolist(), strict=True
    ):
        out[t] = (u, r, m)
    return out


def _row_medians(ordered: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``_median`` of each row's first ``length`` entries, the row already in order."""
    rows = np.arange(length.size)
    mid = length // 2
    upper = ordered[rows, mid]
    lower = ordered[rows, np.maximum(mid - 1, 0)]
    return np.where(length % 2 == 1, upper, (lower + upper) / 2)


def _weighted_median(values: list[float], weights: list[float]) -> float:
    pairs = sorted(zip(values, weights, strict=True))
    half = sum(weights) / 2
    acc = 0.0
    for value, weight in pairs:
        acc += weight
        if acc >= half:
            return value
    return pairs[-1][0]


def _median_reciprocal(values: list[float]) -> float:
    """``_median([1 / v for v in values])``, to the bit, from one sort of ``values``: the
    reciprocal turns the order round, so the middle ones are the same two."""
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    if n % 2:
        return 1 / ordered[mid]
    return (1 / ordered[mid] + 1 / ordered[mid - 1]) / 2


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
