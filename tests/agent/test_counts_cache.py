"""The slot cache hands the checks what a fresh read of the store would, cycle after cycle."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agent.counts import SlotCache
from agent.store import Store
from diagnostics.model import CountSlot

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "state") as s:
        yield s


def day(serial: str, end: datetime, n: int = 96) -> list[CountSlot]:
    return [CountSlot(serial, end - (n - i) * STEP, 15, i % 7, i % 5) for i in range(n)]


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(
            (a[k].start, a[k].minutes, a[k].cin, a[k].cout),
            (b[k].start, b[k].minutes, b[k].cin, b[k].cout),
            strict=True,
        ):
            np.testing.assert_array_equal(x, y)


def test_store_reads_slots_as_columns(store):
    store.add_slots(day("A", NOW), NOW)
    cols = store.slot_columns(["A", "B"], NOW - timedelta(hours=2))
    assert len(cols["A"]) == 8 and len(cols["B"]) == 0
    assert cols["A"].start[0] == int((NOW - timedelta(hours=2)).timestamp())


def test_cache_follows_new_revised_and_foreign_slots(store):
    serials = ["A", "B"]
    for s in serials:
        store.add_slots(day(s, NOW), NOW)
    cache = SlotCache(store)
    since = NOW - timedelta(hours=20)
    same(cache.window(serials, since), store.slot_columns(serials, since))
    now = NOW
    for cycle in range(6):
        now += STEP
        since += STEP
        fresh = [CountSlot("A", now - STEP, 15, cycle, 1)]
        revised = [CountSlot("A", now - 2 * STEP, 15, 99, 99)]  # keeps its arrival time
        store.add_slots(fresh + revised, now)
        cache.note(fresh + revised)  # what Runner.record does
        # another process wrote B's new slot: the cache reads it from the store
        store.add_slots([CountSlot("B", now - STEP, 15, 3, 4)], now)
        same(cache.window(serials, since), store.slot_columns(serials, since))


def test_cache_reads_everything_again_on_a_new_day(store):
    store.add_slots(day("A", NOW), NOW)
    cache = SlotCache(store)
    since = NOW - timedelta(hours=20)
    cache.window(["A"], since)
    # rewritten behind the cache's back (not noted, no newer slot): seen after the daily read
    store.add_slots([CountSlot("A", NOW - 3 * STEP, 15, 50, 50)], NOW)
    later = since + timedelta(days=1)
    store.add_slots(day("A", NOW + timedelta(days=1)), NOW + timedelta(days=1))
    same(cache.window(["A"], later), store.slot_columns(["A"], later))


def test_the_starts_a_counter_resumes_from_come_from_memory_as_the_store_holds_them(store):
    # the runner looks for the first gap in a week of each counter's slots every cycle: the
    # cache answers as the store would, and says it cannot when it does not hold that far
    # back or another process stored a newer slot
    slots = [s for s in day("A", NOW) if s.start.hour != 9]  # a gap in the morning
    store.add_slots(slots, NOW)
    cache = SlotCache(store)
    floor = NOW - timedelta(hours=20)
    cache.window(["A"], floor)
    mark = store.watermark("A")
    assert mark is not None
    for since in (floor, NOW - timedelta(hours=7, seconds=1), NOW - STEP, NOW):
        got = cache.starts("A", since, mark)
        assert got is not None
        np.testing.assert_array_equal(got, store.slot_columns(["A"], since)["A"].start)
    assert cache.starts("A", floor - STEP, mark) is None  # older than the cache holds
    assert cache.starts("B", floor, mark) is None  # a counter it holds nothing of
    newer = CountSlot("A", NOW, 15, 1, 1)
    store.add_slots([newer], NOW + STEP)  # another process: the cache was not told
    assert cache.starts("A", floor, store.watermark("A")) is None
    cache.note([newer])  # what Runner.record does after storing
    np.testing.assert_array_equal(
        cache.starts("A", floor, store.watermark("A")), store.slot_columns(["A"], floor)["A"].start
    )
