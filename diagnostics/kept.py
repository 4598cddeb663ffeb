"""Values built from their inputs and kept between uses, within a byte budget.

The agent keeps two kinds of costly, rebuildable values between cycles: the count models of
each site (``diagnostics.series.ModelCache``) and the prepared reference view of each counter
(``agent.views``). Both are pure functions of their inputs, so a value is reused while its
inputs are the same and rebuilt when they change, one value per ``who``, never two. Both are
asked for in a round: every site's models, in the same order, every cycle; every counter's
reference, in turn, once a snapshot.

Past ``budget`` bytes one must go, and for such a round the least recently used value is
exactly the next one asked for: letting it go keeps nothing the round ever uses again (32 MiB
of references at 1,000 counters were never used twice). The one let go here is the most
recently used outside the current group (``group``; without it, only the value just asked
for is protected): the value whose next use lies furthest ahead, Belady's rule for a round.
A round then reuses as many values as the budget holds, and a group's values (one site's
models, asked for by each of its counters' checks and its own) are never let go while it
is being judged. One value larger than the whole budget is still kept while it is in use.
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
        self.built = 0
        self.reused = 0
        self.held = 0  # bytes of the values kept

    def group(self) -> None:
        """The values asked for from now on belong together (one site's): the ones asked
        for before may be let go first."""
        self._group = set()

    def get(self, who: Hashable, inputs: Hashable, build: Callable[[], V]) -> V:
        """``who``'s value for ``inputs``: the one kept, or built now (and kept if it fits)."""
        if self._group is not None:
            self._group.add(who)
        self._used.add(who)
        held = self._values.get(who)
        if held is not None and held[0] == inputs:
            self.reused += 1
            self._values.move_to_end(who)
            return held[1]
        self.forget(who)  # let the outdated value go before building its successor
        value = build()
        size = self._size(value)
        self._values[who] = (inputs, value, size)
        self.held += size
        self.built += 1
        keep = self._group if self._group is not None else {who}
        for other in reversed(list(self._values)):  # the most recently used first
            if self.held <= self.budget:
                break
            if other not in keep:
                self.forget(other)
        return value

    def inputs(self, who: Hashable) -> Hashable | None:
        """The inputs ``who``'s kept value was built from (None if none is kept)."""
        held = self._values.get(who)
        return held[0] if held is not None else None

    def forget(self, who: Hashable) -> None:
        held = self._values.pop(who, None)
        if held is not None:
            self.held -= held[2]

    def sweep(self) -> None:
        """Forget the values nobody asked for since the previous sweep."""
        for who in [k for k in self._values if k not in self._used]:
            self.forget(who)
        self._used = set()

    def __contains__(self, who: Hashable) -> bool:
        return who in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._values)
