"""The manual accuracy audit (issue 13 item 7): a tally against the stored counts, per
direction, with an interval, against FootfallCam's 5 % acceptance level."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diagnostics.audit import (
    FAILS,
    INCONCLUSIVE,
    PASSES,
    AuditCsvError,
    TallyWindow,
    audit,
    parse_tally_csv,
)
from diagnostics.model import CountSlot

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def tally(n=12, minutes=30, seed=0):
    """``n`` windows of ``minutes`` from 09:00, with realistic uneven traffic."""
    rng = np.random.default_rng(seed)
    return [
        TallyWindow(
            T0 + timedelta(minutes=minutes * i),
            T0 + timedelta(minutes=minutes * (i + 1)),
            int(rng.integers(20, 120)),
            int(rng.integers(20, 120)),
        )
        for i in range(n)
    ]


def stored(windows, factor_in=1.0, factor_out=1.0, seed=1, slot=15):
    """The counter's 15-minute slots for the tallied windows, counting ``factor`` × the truth
    (split at random between the window's slots)."""
    rng = np.random.default_rng(seed)
    out = []
    for w in windows:
        k = int((w.end - w.start).total_seconds() // (slot * 60))
        cin = rng.multinomial(round(w.count_in * factor_in), [1 / k] * k)
        cout = rng.multinomial(round(w.count_out * factor_out), [1 / k] * k)
        for j in range(k):
            start = w.start + timedelta(minutes=slot * j)
            out.append(CountSlot("A", start, slot, int(cin[j]), int(cout[j])))
    return out


def test_a_perfect_counter_passes():
    windows = tally()
    result = audit("A", windows, stored(windows))
    assert result.verdict == PASSES
    for d in result.directions:
        assert d.accuracy == 1.0 and d.low == d.high == 1.0 and d.point_within


def test_a_counter_at_nine_tenths_fails():
    windows = tally()
    result = audit("A", windows, stored(windows, factor_out=0.9))
    assert result.verdict == FAILS
    din, dout = result.directions
    assert din.verdict == PASSES and dout.verdict == FAILS
    assert dout.accuracy == pytest.approx(0.9, abs=0.01) and not dout.point_within


def test_too_few_windows_is_inconclusive():
    windows = tally(n=3)
    result = audit("A", windows, stored(windows))
    assert result.verdict == INCONCLUSIVE
    assert all(d.verdict == INCONCLUSIVE for d in result.directions)


def test_a_noisy_counter_near_the_limit_is_inconclusive_until_more_is_tallied():
    # a counter right at 5 % off with window-to-window scatter: the interval straddles
    rng = np.random.default_rng(3)
    windows = tally(n=8)
    slots = [
        CountSlot(
            s.counter, s.start, s.minutes, s.count_in, int(s.count_out * rng.uniform(0.8, 1.1))
        )
        for s in stored(windows, factor_out=1.0)
    ]
    result = audit("A", windows, slots)
    assert result.directions[1].verdict == INCONCLUSIVE and result.verdict == INCONCLUSIVE


def test_windows_off_the_slot_boundaries_or_with_missing_slots_are_partial():
    windows = tally(n=8)
    slots = stored(windows)
    shifted = TallyWindow(
        windows[0].start + timedelta(minutes=5), windows[0].end, windows[0].count_in, 0
    )
    holed = [s for s in slots if s.start != windows[1].start]
    result = audit("A", [shifted, *windows[1:]], holed)
    full = [w.full for w in result.windows]
    assert full[:2] == [False, False] and all(full[2:])
    assert result.to_json()["partial_windows"] == 2 and result.to_json()["full_windows"] == 6
    # partial windows are left out: the rest is still a perfect counter
    assert result.directions[0].ratio == 1.0


def test_the_same_tally_always_gives_the_same_interval():
    windows = tally()
    slots = stored(windows, factor_in=0.97)
    assert audit("A", windows, slots).to_json() == audit("A", windows, slots).to_json()


def test_tally_csv_format():
    text = (
        "start,end,in,out\n"
        "# Saturday, front door\n"
        "2026-11-23T09:30:00+00:00,2026-11-23T10:00:00+00:00,40,35\n"
        "\n"
        "2026-11-23T09:00:00+00:00,2026-11-23T09:30:00+00:00,12,3\n"
    )
    windows = parse_tally_csv(text)
    assert [w.count_in for w in windows] == [12, 40]  # sorted by time


@pytest.mark.parametrize(
    "row, why",
    [
        ("2026-11-23T09:00:00,2026-11-23T09:30:00,1,1", "UTC offset"),
        ("2026-11-23T09:30:00+00:00,2026-11-23T09:00:00+00:00,1,1", "ends before"),
        ("2026-11-23T09:00:00+00:00,2026-11-23T09:30:00+00:00,-1,1", "negative"),
        ("2026-11-23T09:00:00+00:00,2026-11-23T09:30:00+00:00,1.5,1", "whole numbers"),
        ("2026-11-23T09:00:00+00:00,2026-11-23T09:30:00+00:00,1", "fields"),
        ("yesterday,today,1,1", "ISO-8601"),
    ],
)
def test_bad_tally_rows_name_their_line(row, why):
    with pytest.raises(AuditCsvError, match=f"line 2: .*{why}"):
        parse_tally_csv("start,end,in,out\n" + row + "\n")


def test_overlapping_windows_are_refused():
    text = (
        "2026-11-23T09:00:00+00:00,2026-11-23T09:30:00+00:00,1,1\n"
        "2026-11-23T09:15:00+00:00,2026-11-23T09:45:00+00:00,1,1\n"
    )
    with pytest.raises(AuditCsvError, match="overlaps"):
        parse_tally_csv(text)


@given(st.text(max_size=200))
def test_the_parser_never_fails_but_with_its_own_error(text):
    try:
        parse_tally_csv(text)
    except AuditCsvError:
        pass
