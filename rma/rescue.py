"""Data rescue before a swap: which count slots are safe, which are lost, and the CSV for support.

A returned unit's data is lost (DESIGN.md §2), so before it ships the agent pulls every slot
the counter still holds into its own store. This module judges the result against the slot
ledger — every slot start the counter should have produced in the window — and says exactly
which slots could not be recovered, as ranges a person can read. The CSV is the project's count
format (``timestamp,counter,in,out``; a missing row means missing data, never zero).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from diagnostics.model import CountSlot


@dataclass(frozen=True, slots=True)
class Hole:
    """Slots ``[start, end)`` that nobody holds any more."""

    start: datetime
    end: datetime
    slots: int

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "slots": self.slots}


@dataclass(frozen=True, slots=True)
class RescueReport:
    counter: str
    start: datetime
    end: datetime
    minutes: int
    expected: int
    held: int
    recovered: int  # slots this rescue added to the store
    holes: tuple[Hole, ...]
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def lost(self) -> int:
        return sum(h.slots for h in self.holes)

    @property
    def complete(self) -> bool:
        return not self.holes

    def summary(self) -> str:
        span = f"{self.start.isoformat(timespec='minutes')} to {_t(self.end)}"
        head = (
            f"{self.held} of {self.expected} {self.minutes}-minute slots from {span}"
            f" are safe in the agent's store ({self.recovered} recovered by the rescue)"
        )
        if self.complete:
            return head + "; nothing was lost."
        ranges = "; ".join(
            f"{h.start.isoformat(timespec='minutes')} to {h.end.isoformat(timespec='minutes')} "
            f"({h.slots} slots)"
            for h in self.holes
        )
        return head + f"; {self.lost} slots could not be recovered: {ranges}."

    def to_json(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "minutes": self.minutes,
            "expected": self.expected,
            "held": self.held,
            "recovered": self.recovered,
            "lost": self.lost,
            "holes": [h.to_json() for h in self.holes],
            "sources": list(self.sources),
            "notes": list(self.notes),
            "summary": self.summary(),
        }


def _t(at: datetime) -> str:
    return at.isoformat(timespec="minutes")


def ledger(start: datetime, end: datetime, minutes: int) -> list[datetime]:
    """Every slot start in ``[start, end)`` on the ``minutes`` grid (aligned to the epoch)."""
    step = minutes * 60
    first = -(-int(start.timestamp()) // step) * step
    out, t = [], first
    while t < end.timestamp():
        out.append(datetime.fromtimestamp(t, start.tzinfo))
        t += step
    return out


def judge(
    counter: str,
    held: Iterable[datetime],
    *,
    start: datetime,
    end: datetime,
    minutes: int,
    recovered: int = 0,
    sources: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> RescueReport:
    """Compare the slots the store holds with the ledger; the gaps become holes."""
    expected = ledger(start, end, minutes)
    have = {int(t.timestamp()) for t in held}
    holes: list[Hole] = []
    run: list[datetime] = []
    for t in expected:
        if int(t.timestamp()) in have:
            if run:
                holes.append(Hole(run[0], run[-1] + timedelta(minutes=minutes), len(run)))
                run = []
        else:
            run.append(t)
    if run:
        holes.append(Hole(run[0], run[-1] + timedelta(minutes=minutes), len(run)))
    n_held = sum(1 for t in expected if int(t.timestamp()) in have)
    return RescueReport(
        counter,
        start,
        end,
        minutes,
        len(expected),
        n_held,
        recovered,
        tuple(holes),
        tuple(sources),
        tuple(notes),
    )


def to_csv(slots: Iterable[CountSlot]) -> str:
    """The rescued slots in the project's count CSV, oldest first."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["timestamp", "counter", "in", "out"])
    for s in sorted(slots, key=lambda s: (s.start, s.counter)):
        writer.writerow([s.start.isoformat(), s.counter, s.count_in, s.count_out])
    return buf.getvalue()
