"""What a counter should have counted: per-slot expectations with a band, for repairs.

When counts are missing or wrong, the retailer's reports can be corrected only with an estimate
of what the counter would have seen. The estimate for a slot is the counter's own weekly
baseline (the count model of the checks, faulty days left out) scaled by how its peers did over
the span, as the zero-run judgement does; the band is two standard deviations of the fitted
negative-binomial spread; IN and OUT are split by the counter's own historical share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from diagnostics.calendar import SiteCalendar
from diagnostics.model import CountSlot
from diagnostics.series import CountArrays, CountModel


@dataclass(frozen=True)
class SlotEstimate:
    start: datetime
    counter: str
    count_in: int | None  # None: the slot never arrived
    count_out: int | None
    expected: float | None  # IN + OUT the counter should have seen; None: no baseline yet
    low: float | None
    high: float | None
    expected_in: float | None
    expected_out: float | None

    @property
    def missing(self) -> bool:
        return self.count_in is None

    @property
    def observed(self) -> int | None:
        return None if self.count_in is None else self.count_in + (self.count_out or 0)

    @property
    def correction(self) -> float | None:
        """What to add to the reported total for this slot (negative for an over-count)."""
        if self.expected is None:
            return None
        return self.expected - (self.observed or 0)


def estimate(
    slots: Mapping[str, Sequence[CountSlot]],
    calendar: SiteCalendar,
    *,
    serial: str,
    peers: Sequence[str],
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[SlotEstimate]:
    """Per slot of ``serial`` in ``[start, end)``: what arrived and what was expected."""
    rows = {s: list(slots.get(s, ())) for s in (serial, *peers) if slots.get(s)}
    if serial not in rows:
        return []
    arrays = CountArrays.from_slots(rows, calendar, now=now)
    names = list(arrays.serials)
    peer_rows = [
        [names.index(p) for p in peers if p in names] if s == serial else [] for s in names
    ]
    model = CountModel(arrays, calendar, now, peer_rows)
    i = model.index(serial)
    grid = model.grid
    lo, hi = max(0, grid.index(start)), min(grid.n, grid.index(end))
    if hi <= lo:
        return []
    factor = float(model.peer_factor(i, [lo], [hi - 1])[0][0]) if model.peers[i].size else 1.0
    mu = model.mu(i) * factor
    k = float(model.k[i]) if math.isfinite(float(model.k[i])) else 1000.0
    have = model.present[i]
    own = [s for s in rows[serial] if s.start < start]
    total = sum(s.total for s in own)
    share_in = sum(s.count_in for s in own) / total if total else 0.5
    by_start = {s.start: s for s in rows[serial]}
    out = []
    for j in range(lo, hi):
        at = grid.at(j)
        slot = by_start.get(at) if have[j] else None
        known = math.isfinite(float(model.expected[i][j]))
        m = float(mu[j]) if known else None
        sd = math.sqrt(m + m * m / k) if m is not None else None
        out.append(
            SlotEstimate(
                start=at,
                counter=serial,
                count_in=slot.count_in if slot else None,
                count_out=slot.count_out if slot else None,
                expected=round(m, 2) if m is not None else None,
                low=round(max(0.0, m - 2 * sd), 2) if m is not None and sd is not None else None,
                high=round(m + 2 * sd, 2) if m is not None and sd is not None else None,
                expected_in=round(m * share_in, 2) if m is not None else None,
                expected_out=round(m * (1 - share_in), 2) if m is not None else None,
            )
        )
    return out
