"""A manual accuracy audit: a person's tally against the counter's stored counts.

FootfallCam's acceptance level for count discrepancies is 5 %. The way to know a counter meets
it is the way their tuning experts do: someone stands at the door and tallies IN and OUT over
time windows, and the tally is compared with what the counter stored for the same windows.
This module is the pure half of ``ffc-agent analyze audit``: the tally's CSV in, the counter's
slots in, the accuracy per direction with an interval and a verdict out. No I/O.

The tally (``start,end,in,out``; ISO-8601 with offset; a header, blank and ``#`` lines are
allowed): one row per window the person counted. A window is compared with the stored slots
that lie wholly inside it; it is *full* when those slots cover it exactly (it starts and ends
on slot boundaries and no slot is missing), otherwise *partial*: listed, but left out of the
accuracy, since part of the counter's count for it is unknown.

Per direction, over the full windows: the ratio ``r = Σ counted / Σ tallied`` (a ratio
estimator, so a busy window weighs more than a quiet one), the accuracy ``1 − |r − 1|``, and a
percentile bootstrap interval of ``r`` over windows (resampling whole windows, seeded, so the
same tally always gives the same answer). A direction *passes* when the whole interval lies
within the acceptance level, *fails* when the whole interval lies beyond it, and is otherwise
*inconclusive: tally more*; so is a tally of fewer than ``min_windows`` full windows. The
audit passes when both directions pass and fails when either fails.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from diagnostics.model import CountSlot

PASSES, FAILS, INCONCLUSIVE = "passes", "fails", "inconclusive: tally more"


class AuditCsvError(ValueError):
    """A tally row that cannot be trusted; the message names the line."""


@dataclass(frozen=True)
class TallyWindow:
    start: datetime
    end: datetime
    count_in: int
    count_out: int


def parse_tally_csv(text: str) -> list[TallyWindow]:
    """The windows of a tally CSV, in time order; refuses naive times, negative or
    non-integer counts, windows that end before they start, and windows that overlap."""
    windows: list[tuple[int, TallyWindow]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            cells = [c.strip() for row in csv.reader([line]) for c in row]
        except csv.Error:
            raise AuditCsvError(f"line {number}: not a CSV row") from None
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if cells[0].lower() == "start":
            continue
        if len(cells) != 4:
            raise AuditCsvError(f"line {number}: want start,end,in,out, got {len(cells)} fields")
        try:
            start, end = datetime.fromisoformat(cells[0]), datetime.fromisoformat(cells[1])
        except ValueError:
            raise AuditCsvError(f"line {number}: not an ISO-8601 time") from None
        if start.tzinfo is None or end.tzinfo is None:
            raise AuditCsvError(f"line {number}: give the times with their UTC offset")
        if end <= start:
            raise AuditCsvError(f"line {number}: the window ends before it starts")
        try:
            cin, cout = int(cells[2]), int(cells[3])
        except ValueError:
            raise AuditCsvError(f"line {number}: IN and OUT must be whole numbers") from None
        if cin < 0 or cout < 0:
            raise AuditCsvError(f"line {number}: a negative count")
        windows.append((number, TallyWindow(start, end, cin, cout)))
    windows.sort(key=lambda w: w[1].start)
    for (_, a), (number, b) in itertools.pairwise(windows):
        if b.start < a.end:
            raise AuditCsvError(f"line {number}: the window overlaps the one before it")
    return [w for _, w in windows]


@dataclass(frozen=True)
class WindowResult:
    window: TallyWindow
    counted_in: int
    counted_out: int
    covered_minutes: float
    full: bool

    def to_json(self) -> dict[str, Any]:
        w = self.window
        return {
            "start": w.start.isoformat(),
            "end": w.end.isoformat(),
            "manual_in": w.count_in,
            "manual_out": w.count_out,
            "counted_in": self.counted_in,
            "counted_out": self.counted_out,
            "full": self.full,
            "covered_minutes": self.covered_minutes,
        }


@dataclass(frozen=True)
class Direction:
    name: str  # "in" or "out"
    manual: int
    counted: int
    ratio: float | None  # counted / manual
    low: float | None  # the interval of the ratio
    high: float | None
    verdict: str

    acceptance: float = 0.05

    @property
    def accuracy(self) -> float | None:
        return None if self.ratio is None else 1 - abs(self.ratio - 1)

    @property
    def point_within(self) -> bool | None:
        """Is the point estimate within the acceptance level (the interval aside)?"""
        return None if self.ratio is None else abs(self.ratio - 1) <= self.acceptance

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "direction": self.name,
            "manual": self.manual,
            "counted": self.counted,
            "ratio": r(self.ratio),
            "accuracy": r(self.accuracy),
            "ratio_low": r(self.low),
            "ratio_high": r(self.high),
            "point_within": self.point_within,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class AuditResult:
    counter: str
    windows: tuple[WindowResult, ...]
    directions: tuple[Direction, ...]
    verdict: str
    acceptance: float
    confidence: float
    method: str = "ratio estimator; percentile bootstrap over full windows"

    def to_json(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "verdict": self.verdict,
            "acceptance": self.acceptance,
            "confidence": self.confidence,
            "method": self.method,
            "full_windows": sum(w.full for w in self.windows),
            "partial_windows": sum(not w.full for w in self.windows),
            "directions": [d.to_json() for d in self.directions],
            "windows": [w.to_json() for w in self.windows],
        }


def compare(window: TallyWindow, slots: Sequence[CountSlot]) -> WindowResult:
    """The stored slots wholly inside ``window``, and whether they cover it exactly."""
    inside = [
        s
        for s in slots
        if s.start >= window.start and s.start + timedelta(minutes=s.minutes) <= window.end
    ]
    covered = float(sum(s.minutes for s in inside))
    length = (window.end - window.start).total_seconds() / 60
    return WindowResult(
        window,
        sum(s.count_in for s in inside),
        sum(s.count_out for s in inside),
        covered,
        full=bool(inside) and covered == length,
    )


def audit(
    counter: str,
    windows: Sequence[TallyWindow],
    slots: Sequence[CountSlot],
    *,
    acceptance: float = 0.05,
    confidence: float = 0.95,
    min_windows: int = 5,
    resamples: int = 4000,
    seed: int = 0,
) -> AuditResult:
    """Judge the counter's stored ``slots`` against the tallied ``windows``."""
    results = tuple(compare(w, slots) for w in windows)
    full = [r for r in results if r.full]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(full), (resamples, len(full))) if full else None
    directions = []
    for name in ("in", "out"):
        manual = np.array([r.window.count_in if name == "in" else r.window.count_out for r in full])
        counted = np.array([r.counted_in if name == "in" else r.counted_out for r in full])
        directions.append(
            _direction(name, manual, counted, picks, acceptance, confidence, min_windows)
        )
    verdicts = {d.verdict for d in directions}
    verdict = FAILS if FAILS in verdicts else PASSES if verdicts == {PASSES} else INCONCLUSIVE
    return AuditResult(counter, results, tuple(directions), verdict, acceptance, confidence)


def _direction(
    name: str,
    manual: np.ndarray,
    counted: np.ndarray,
    picks: np.ndarray | None,
    acceptance: float,
    confidence: float,
    min_windows: int,
) -> Direction:
    total_m, total_c = int(manual.sum()), int(counted.sum())
    if picks is None or total_m == 0:
        return Direction(name, total_m, total_c, None, None, None, INCONCLUSIVE, acceptance)
    ratio = total_c / total_m
    m, c = manual[picks].sum(axis=1), counted[picks].sum(axis=1)
    boot = c[m > 0] / m[m > 0]
    tail = (1 - confidence) / 2 * 100
    low, high = (float(x) for x in np.percentile(boot, [tail, 100 - tail]))
    if len(manual) < min_windows:
        verdict = INCONCLUSIVE
    elif 1 - acceptance <= low and high <= 1 + acceptance:
        verdict = PASSES
    elif high < 1 - acceptance or low > 1 + acceptance:
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    return Direction(name, total_m, total_c, ratio, low, high, verdict, acceptance)
