"""The fleet's recent count slots, kept in memory as numpy columns between cycles.

Every cycle the count checks look back weeks (the baselines need them), but only the last
quarter of an hour is new. Reading every counter's month of slots from SQLite each cycle costs
time in proportion to the history; this cache reads it once, then takes each cycle's new and
revised slots from the runner as it records them, and reads from the store only a counter whose
newest slot there is newer than the cache's (another process wrote it). Once a day it reads the
whole window again, so a slot rewritten behind the runner's back is picked up within a day.
The window handed to the checks is cut exactly where a fresh read would cut it, so the checks
see the same slots either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

import numpy as np

from agent.store import Store
from diagnostics.model import CountSlot
from diagnostics.series import SlotColumns


class SlotCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._columns: dict[str, SlotColumns] = {}
        self._floor: datetime | None = None  # the cache holds every slot from here
        self._day: date | None = None  # the UTC day of the last full read
        self._views: dict[str, tuple[SlotColumns, int, SlotColumns]] = {}

    def window(self, serials: Sequence[str], since: datetime) -> dict[str, SlotColumns]:
        """Every counter's slots from ``since`` (as ``Store.slot_columns`` would read them)."""
        if self._floor is None or since < self._floor or since.date() != self._day:
            self.refresh(serials, since)
        else:
            self._catch_up(serials)
        cut = int(since.timestamp())
        out = {}
        for serial in serials:
            held = self._columns[serial]
            seen = self._views.get(serial)
            if seen is None or seen[0] is not held or seen[1] != cut:
                # the same object while nothing changed: its digest is computed once, and the
                # models keyed by it are found again
                seen = self._views[serial] = (held, cut, held.since(cut))
            out[serial] = seen[2]
        return out

    def starts(self, serial: str, since: datetime, newest: datetime) -> np.ndarray | None:
        """The starts of the counter's slots from ``since`` (``Store.slot_columns``'s), from
        memory; None when the cache cannot say: it holds nothing from that far back, or its
        newest slot is not the store's ``newest`` (another process wrote since)."""
        have = self._columns.get(serial)
        if self._floor is None or since < self._floor or have is None or not len(have):
            return None
        if int(have.start[-1]) != int(newest.timestamp()):
            return None
        return have.start[np.searchsorted(have.start, int(since.timestamp())) :]

    def refresh(self, serials: Sequence[str], since: datetime) -> None:
        self._columns = self.store.slot_columns(serials, since)
        self._floor, self._day = since, since.date()

    def _catch_up(self, serials: Sequence[str]) -> None:
        """Read the counters the store holds newer slots for than the cache (another writer)."""
        assert self._floor is not None
        for serial in serials:
            have = self._columns.get(serial)
            mark = self.store.watermark(serial)
            if have is None:
                self._columns |= self.store.slot_columns([serial], self._floor)
            elif mark is not None and (not len(have) or int(mark.timestamp()) > have.start[-1]):
                since = (
                    datetime.fromtimestamp(int(have.start[-1]), mark.tzinfo)
                    if len(have)
                    else self._floor
                )
                newer = self.store.slot_columns([serial], since)[serial]
                self._columns[serial] = have.merged(newer)

    def note(self, slots: Iterable[CountSlot]) -> None:
        """Slots the runner has just stored (new, or revised counts of a slot held before)."""
        if self._floor is None:
            return  # nothing held yet: the first window reads them from the store
        by_counter: dict[str, list[CountSlot]] = {}
        for slot in slots:
            if slot.start >= self._floor:
                by_counter.setdefault(slot.counter, []).append(slot)
        for serial, seq in by_counter.items():
            have = self._columns.get(serial, SlotColumns.empty())
            self._columns[serial] = have.merged(SlotColumns.from_slots(seq))
