"""Slots as columns, and count models reused: the same judgement as from fresh objects."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnostics.calendar import Hours, SiteCalendar
from diagnostics.checks import CounterEvidence, SiteEvidence, checks_for
from diagnostics.checks.counts import CountCheck
from diagnostics.model import CountSlot
from diagnostics.series import (
    CountArrays,
    CountModel,
    ModelCache,
    SlotColumns,
    _hourly_offsets,
    _utc_offsets,
)

CAL = SiteCalendar("Europe/London", tuple([Hours(time(9), time(20))] * 7))
NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def slots(serial: str, days: int, seed: int, zero_from: datetime | None = None) -> list[CountSlot]:
    rng = np.random.default_rng(seed)
    first = NOW - timedelta(days=days)
    out = []
    for i in range(days * 96):
        start = first + timedelta(minutes=15 * i)
        busy = 9 <= start.hour < 20
        n = int(rng.poisson(20)) if busy and not (zero_from and start >= zero_from) else 0
        out.append(CountSlot(serial, start, 15, n // 2, n - n // 2))
    return out


def test_columns_lay_out_the_same_arrays_as_slot_objects():
    data = {"A": slots("A", 10, 1), "B": slots("B", 9, 2)[5:]}
    data["B"] = [s for s in data["B"] if s.start.hour != 3]  # gaps stay missing
    direct = CountArrays.from_slots(data, CAL, now=NOW)
    cols = {k: SlotColumns.from_slots(v) for k, v in data.items()}
    via = CountArrays.from_columns(cols, CAL, now=NOW)
    assert via.grid.start == direct.grid.start and via.grid.n == direct.grid.n
    np.testing.assert_array_equal(via.cin, direct.cin)
    np.testing.assert_array_equal(via.cout, direct.cout)


def test_merged_takes_the_newer_counts_and_keeps_order():
    old = SlotColumns.from_slots(slots("A", 2, 1))
    revised = CountSlot("A", NOW - timedelta(minutes=15), 15, 7, 9)
    fresh = CountSlot("A", NOW, 15, 1, 2)
    merged = old.merged(SlotColumns.from_slots([fresh, revised]))
    assert len(merged) == len(old) + 1
    assert np.all(np.diff(merged.start) > 0)
    assert (merged.cin[-2], merged.cout[-2], merged.cin[-1]) == (7, 9, 1)
    assert merged.since(int(NOW.timestamp())).start.tolist() == [int(NOW.timestamp())]


def test_day_by_day_zone_offsets_match_hour_by_hour():
    epoch = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) + np.arange(0, 366 * 96) * 900
    for zone in ("Europe/London", "America/New_York", "Australia/Lord_Howe", "UTC"):
        tz = ZoneInfo(zone)
        np.testing.assert_array_equal(_utc_offsets(epoch, tz), _hourly_offsets(epoch, tz))


def evidence(data: dict[str, list[CountSlot]], *, columns: bool, models: ModelCache | None):
    own, peers = data["A"], {k: v for k, v in data.items() if k != "A"}
    cols = {k: SlotColumns.from_slots(v) for k, v in data.items()} if columns else None
    return CounterEvidence(
        "A", "door", "S1", CAL, NOW, slots=own, peers=peers, counts=cols, models=models
    )


def test_checks_judge_columns_and_cached_models_as_they_judge_slots():
    zero_from = NOW - timedelta(hours=4)
    data = {"A": slots("A", 30, 1, zero_from), "B": slots("B", 30, 2), "C": slots("C", 30, 3)}
    checks = [c for c in checks_for("counter") if isinstance(c, CountCheck)]
    cache = ModelCache()

    def judged(ev: CounterEvidence) -> list[tuple[str, str, str]]:
        return [(f.check_id, str(f.status), f.summary) for c in checks for f in c.run(ev)]

    plain = judged(evidence(data, columns=False, models=None))
    assert any(code == "fail" for _, code, _ in plain)  # the zero run is found
    assert judged(evidence(data, columns=True, models=cache)) == plain
    assert cache.built == 1 and cache.reused == len(checks) - 1  # one model for all checks
    assert judged(evidence(data, columns=True, models=cache)) == plain
    assert cache.built == 1


class _Sized:
    """Stands for a model in the cache's own tests: the cache reads only its size."""

    def __init__(self, nbytes: int = 1) -> None:
        self.nbytes = nbytes


def test_model_cache_keeps_one_model_per_group_and_forgets_unused_ones():
    cache = ModelCache()
    first = cache.get("a", 1, _Sized)  # type: ignore[arg-type]
    cache.get("b", 1, _Sized)  # type: ignore[arg-type]
    cache.sweep()
    assert cache.get("a", 1, _Sized) is first  # type: ignore[arg-type]
    cache.sweep()
    assert "b" not in cache
    newer = cache.get("a", 2, _Sized)  # type: ignore[arg-type]
    assert newer is not first and len(cache) == 1
    assert cache.held == 1


def _round(cache: ModelCache, sites: str, size: int = 100, inputs: int = 1) -> None:
    """One cycle's round: each site's model in turn, then the sweep."""
    for site in sites:
        cache.group()
        cache.get(site, inputs, lambda: _Sized(size))  # type: ignore[arg-type, return-value]
    cache.sweep()


def test_model_cache_keeps_a_round_that_fits_whole():
    cache = ModelCache(budget=400)  # room for four models of 100 bytes
    _round(cache, "abcd")
    _round(cache, "abcd")
    assert cache.built == 4 and cache.reused == 4 and set(cache) == set("abcd")


def test_model_cache_keeps_nothing_of_a_round_that_does_not_fit_between_rounds():
    cache = ModelCache(budget=250)  # room for two models of 100 bytes, asked for four
    held: list[int] = []
    inner = cache.get

    def get(who, inputs, build):  # type: ignore[no-untyped-def]
        value = inner(who, inputs, build)
        held.append(cache.held)
        return value

    cache.get = get  # type: ignore[method-assign]
    _round(cache, "abcd")
    # the first round keeps what fits until it overflows, then only the site being judged
    assert held == [100, 200, 100, 100] and len(cache) == 0 and cache.held == 0
    held.clear()
    _round(cache, "abcd")
    # every cycle asks for a, b, c, d in turn: a partial keep would save one build of four
    # and hold the whole budget through the probe phase; the next round keeps only its group
    assert held == [100, 100, 100, 100] and len(cache) == 0
    assert cache.built == 8 and cache.reused == 0
    # a site's own models are never let go while it is being judged
    cache.group()
    mine = cache.get("e1", 1, lambda: _Sized(100))  # type: ignore[arg-type, return-value]
    cache.get("e2", 1, lambda: _Sized(100))  # type: ignore[arg-type, return-value]
    cache.get("e3", 1, lambda: _Sized(100))  # type: ignore[arg-type, return-value]
    assert cache.get("e1", 1, lambda: _Sized(100)) is mine  # type: ignore[arg-type, return-value]
    assert set(cache) == {"e1", "e2", "e3"}
    cache.group()
    assert len(cache) == 0
    # one model larger than the whole budget is still kept (the checks are using it)
    big = cache.get("d", 1, lambda: _Sized(1000))  # type: ignore[arg-type, return-value]
    assert list(cache) == ["d"] and cache.held == 1000
    assert cache.get("d", 1, lambda: _Sized(1000)) is big  # type: ignore[arg-type, return-value]


def test_model_cache_keeps_again_once_the_round_fits():
    cache = ModelCache(budget=250)
    _round(cache, "abcd")
    _round(cache, "ab")  # the fleet shrank: this round fits, but started thrifty
    assert list(cache) == ["b"]  # the last group, held when the round ended, stays
    _round(cache, "ab")  # and the next one keeps it whole
    assert set(cache) == {"a", "b"}
    reused = cache.reused
    _round(cache, "ab")
    assert cache.reused == reused + 2


def test_model_cache_without_groups_keeps_only_the_model_just_asked_for_past_its_budget():
    cache = ModelCache(budget=250)
    for who in "abc":
        cache.get(who, 1, lambda: _Sized(100))  # type: ignore[arg-type, return-value]
    assert list(cache) == ["c"] and cache.held == 100


def test_a_model_counts_the_bytes_of_its_arrays():
    data = {"A": slots("A", 30, 1), "B": slots("B", 30, 2)}
    cols = {k: SlotColumns.from_slots(v) for k, v in data.items()}
    model = CountModel(CountArrays.from_columns(cols, CAL, now=NOW), CAL, NOW)
    assert model.nbytes >= model.total.nbytes + model.expected.nbytes + model.arrays.cin.nbytes
    assert model.nbytes < 64 * model.total.nbytes  # no array counted twice over


def test_slot_columns_are_held_narrow_and_widen_exactly():
    # the usual month: 7 bytes a slot, 8 where a quarter-hour counted more than 255
    usual = SlotColumns.of([1_800_000_000, 1_800_000_900], [15, 15], [65_535, 3], [0, 7])
    assert [a.dtype for a in (usual.start, usual.minutes, usual.cin, usual.cout)] == [
        np.uint32,
        np.uint8,
        np.uint16,
        np.uint8,
    ]
    assert SlotColumns.of([0], [15], [255], [256]).cin.dtype == np.uint8
    assert SlotColumns.of([0], [15], [255], [256]).cout.dtype == np.uint16
    # what does not fit stays wide, exactly: a count past 16 bits, a start past 2106
    huge = 1_000_000  # counter_format.MAX_COUNT
    cols = SlotColumns.of([0, 2**33], [15, 1440], [huge, 3], [0.5, 7])
    assert (cols.start.dtype, cols.minutes.dtype, cols.cin.dtype, cols.cout.dtype) == (
        np.int64,
        np.int32,
        np.float32,
        np.float32,
    )
    assert cols.cin.tolist() == [huge, 3.0] and cols.slots("X")[0].count_in == huge
    assert cols.start.tolist() == [0, 2**33] and cols.minutes.tolist() == [15, 1440]
    # merging keeps the narrowest type that holds the result
    merged = usual.merged(SlotColumns.of([1_800_001_800], [15], [70_000], [1]))
    assert merged.cin.dtype == np.float32 and merged.cin.tolist() == [65_535, 3, 70_000]
    assert merged.cout.dtype == np.uint8 and merged.start.dtype == np.uint32
    # a byte's counts merged with a larger one widen to what holds it
    wider = usual.merged(SlotColumns.of([1_800_001_800], [15], [1], [300]))
    assert wider.cout.dtype == np.uint16 and wider.cout.tolist() == [0, 7, 300]
    # and the models widen them to the same float64 counts
    arrays = CountArrays.from_columns(
        {"A": usual}, CAL, now=datetime.fromtimestamp(1_800_002_000, UTC)
    )
    assert arrays.cin[0].tolist() == [65_535.0, 3.0] and arrays.cout.dtype == np.float64


def test_a_site_and_its_counters_share_one_model_when_every_peer_is_everyone_else():
    zero_from = NOW - timedelta(hours=4)
    data = {"A": slots("A", 30, 1, zero_from), "B": slots("B", 30, 2), "C": slots("C", 30, 3)}
    counter_checks = [c for c in checks_for("counter") if isinstance(c, CountCheck)]
    site_checks = [c for c in checks_for("site") if isinstance(c, CountCheck)]
    assert site_checks

    def site(groups: dict[str, str | None], models: ModelCache | None) -> SiteEvidence:
        cols = {k: SlotColumns.from_slots(v) for k, v in data.items()}
        return SiteEvidence("S1", CAL, NOW, groups=groups, counts=cols, models=models)

    def judged(checks: list[CountCheck], ev: object) -> list[tuple[str, str, str]]:
        return [(f.check_id, str(f.status), f.summary) for c in checks for f in c.run(ev)]

    for groups, models in (
        (dict.fromkeys(data, None), 1),  # no groups: everyone's peers are all the others
        ({"A": "in", "B": "in", "C": "out"}, 2),  # groups: the site's model is its own
    ):
        cache = ModelCache()
        plain = judged(site_checks, site(groups, None))
        judged(counter_checks, evidence(data, columns=True, models=cache))
        assert judged(site_checks, site(groups, cache)) == plain  # the same judgement
        assert cache.built == models


def _merged_by_hand(old: SlotColumns, newer: SlotColumns) -> SlotColumns:
    """What merging means, slot by slot: every start once, in order, with the newer counts
    where both have it (of several newer ones for one start, the first)."""

    def rows(c: SlotColumns) -> list[list[float]]:
        return [c.start.tolist(), c.minutes.tolist(), c.cin.tolist(), c.cout.tolist()]

    held = {start: rest for start, *rest in zip(*rows(old), strict=True)}
    for start, *rest in reversed(list(zip(*rows(newer), strict=True))):
        held[start] = rest
    ordered = sorted(held.items())
    return SlotColumns.of(
        [t for t, _ in ordered],
        [r[0] for _, r in ordered],
        [r[1] for _, r in ordered],
        [r[2] for _, r in ordered],
    )


@settings(max_examples=300, deadline=None)
@given(
    held=st.lists(st.integers(0, 40), unique=True, max_size=12).map(sorted),
    new=st.lists(st.integers(0, 45), max_size=4),
    counts=st.lists(st.integers(0, 70_000), min_size=32, max_size=32),
    resend=st.booleans(),
)
def test_merging_slots_is_a_sorted_merge_with_the_newer_counts(held, new, counts, resend):
    n = len(held)
    old = SlotColumns.of([s * 900 for s in held], [15] * n, counts[:n], counts[12 : 12 + n])
    if resend and n:  # the latest slots sent again, unchanged: the same columns come back
        again = SlotColumns.of(old.start[-2:], old.minutes[-2:], old.cin[-2:], old.cout[-2:])
        assert old.merged(again) is old
    m = len(new)
    newer = SlotColumns.of([s * 900 for s in new], [15] * m, counts[24 : 24 + m], [1] * m)
    merged, expected = old.merged(newer), _merged_by_hand(old, newer)
    for field in ("start", "minutes", "cin", "cout"):
        got, want = getattr(merged, field), getattr(expected, field)
        assert got.tolist() == want.tolist() and got.dtype == want.dtype, field


def test_a_models_inputs_are_worked_out_once_for_a_sites_counters_and_again_when_they_change():
    # every counter of a site asks for the site's model with the same columns: the inputs
    # (grid, digests) are worked out for the first and handed to the rest; other columns,
    # another time or another calendar are worked out afresh
    data = {"A": slots("A", 3, 1), "B": slots("B", 3, 2)}
    cols = {k: SlotColumns.from_slots(v) for k, v in data.items()}
    cache = ModelCache()
    first = cache.inputs_of(cols, CAL, NOW)
    assert cache.inputs_of(dict(cols), CAL, NOW) is first
    assert cache.inputs_of(cols, CAL, NOW + timedelta(minutes=15)) != first
    copy = {k: SlotColumns.from_slots(v) for k, v in data.items()}  # equal, not the same
    assert cache.inputs_of(copy, CAL, NOW) == first
    revised = dict(copy, B=SlotColumns.from_slots([*data["B"][:-1], data["A"][-1]]))
    assert cache.inputs_of(revised, CAL, NOW) != first
    other = SiteCalendar("Europe/Paris", CAL.weekly)
    assert cache.inputs_of(revised, other, NOW) != cache.inputs_of(revised, CAL, NOW)
    cache.group()  # a new site: nothing carried over
    assert cache.inputs_of(cols, CAL, NOW) is not first
