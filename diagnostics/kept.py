"""Values built from their inputs and kept between uses, within a byte budget.

The agent keeps three kinds of costly, rebuildable values between cycles: the count models of
each site and the judged days of each door's and site's IN/OUT balance
(``diagnostics.series.ModelCache``), and the prepared reference view of each counter
(``agent.views``). All are pure functions of their inputs, so a value is reused while its
inputs are the same and rebuilt when they change, one value per ``who``, never two. All are
asked for in a round: every site's models and days, in the same order, every cycle; every
counter's reference, in turn, as its snapshots come.

A round either fits the budget or it does not. When it fits, every value is kept for the next
round. When it does not, keeping part of it pays little and costs the whole budget all cycle:
in a round the least recently used value is exactly the next one asked for, so an LRU cache
reuses nothing, and even the best choice (Belady's: let the most recently used go) reuses only
budget/round of the values — on a gateway of 1,000 counters 5 sites' models of 100, and 4
references of 800 — while holding 12 and 8 MiB through the probe phase, where the agent's
memory peaks (``bench/fleet.py``: 163 MiB with them, 146 without, at the same CPU). So the
first value that does not fit ends the keeping: from then on only the current group's values
(``group``: one site's models, asked for by each of its counters' checks and its own; without
groups, the value just asked for) are held, and at the round's end (``end_round``) none. The
next round starts where this one ended: it keeps values only if this round's, all together,
would have fitted, so a fleet that shrinks, or a history that is still short, is kept whole
again, and a fleet that does not fit never fills the budget for nothing. One value larger than
the whole budget is still kept while it is in use.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class Kept(Generic[V]):
    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self.budget = budget
        self._size = size
        # who → (inputs, value, bytes), least recently used first
        self._values: OrderedDict[Hashable, tuple[Hashable, V, int]] = OrderedDict()
        self._used: set[Hashable] = set()  # asked for since ``sweep``
        self._group: set[Hashable] | None = None  # asked for since ``group``: kept for now
        self.overflowed = False  # the round does not fit the budget: keep only the group
        self._round: dict[Hashable, int] = {}  # who → bytes, of the values asked this round
        self.built = 0
        self.reused = 0
        self.held = 0  # bytes of the values kept

    def group(self) -> None:
        """The values asked for from now on belong together (one site's): the ones asked
        for before are let go first."""
        self._group = set()
        if self.overflowed:
            self._let_go(set())

    def get(self, who: Hashable, inputs: Hashable, build: Callable[[], V]) -> V:
        """``who``'s value for ``inputs``: the one kept, or built now (and kept if it fits)."""
        if self._group is not None:
            self._group.add(who)
        self._used.add(who)
        held = self._values.get(who)
        if held is not None and held[0] == inputs:
            self._round[who] = held[2]
            self.reused += 1
            self._values.move_to_end(who)
            return held[1]
        self.forget(who)  # let the outdated value go before building its successor
        value = build()
        size = self._size(value)
        self._values[who] = (inputs, value, size)
        self._round[who] = size
        self.held += size
        self.built += 1
        if self.held > self.budget:
            self.overflowed = True
        if self.overflowed:
            self._let_go(self._group if self._group is not None else {who})
        return value

    def _let_go(self, keep: set[Hashable]) -> None:
        for other in [k for k in self._values if k not in keep]:
            self.forget(other)

    def inputs(self, who: Hashable) -> Hashable | None:
        """The inputs ``who``'s kept value was built from (None if none is kept)."""
        held = self._values.get(who)
        return held[0] if held is not None else None

    def forget(self, who: Hashable) -> None:
        held = self._values.pop(who, None)
        if held is not None:
            self.held -= held[2]

    def end_round(self) -> None:
        """The round is over. If its values, all together, did not fit the budget, none is
        kept, and the next round keeps only its groups; if they did, all are kept, and the
        next round keeps values again. A round that asked for nothing changes nothing."""
        if self._round:
            self.overflowed = sum(self._round.values()) > self.budget
            self._round = {}
        if self.overflowed:
            self._let_go(set())
        self._group = None

    def sweep(self) -> None:
        """End the round, and forget the values nobody asked for since the previous sweep."""
        for who in [k for k in self._values if k not in self._used]:
            self.forget(who)
        self._used = set()
        self.end_round()

    def __contains__(self, who: Hashable) -> bool:
        return who in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._values)
