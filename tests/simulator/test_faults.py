"""Counting faults and data gaps, judged on what the device holds (no sockets needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from simulator import FaultSpecError, parse_fault_spec
from tests.simulator.helpers import NOW

DAY = timedelta(days=1)
DAY_START = NOW.replace(hour=0, minute=0, second=0)  # London is on UTC in March


def totals(rows):
    return sum(r[1] for r in rows), sum(r[2] for r in rows)


def test_zeros_from_since_and_untouched_before(fleet):
    before = fleet.expected_counts("FFC0001", DAY_START - DAY, DAY_START)
    since = NOW - timedelta(hours=3)
    fleet.set_fault("FFC0001", "zeros", since=since)
    after = fleet.expected_counts("FFC0001", DAY_START - DAY, NOW)
    assert after[: len(before)] == before
    late = [r for r in after if r[0] >= since]
    assert late and all(r[1] == 0 == r[2] for r in late)
    assert sum(r[1] for r in after if r[0] < since) > 0


@pytest.mark.parametrize(
    ("kind", "factor", "scales_in"),
    [("under_count", 0.6, True), ("over_count", 1.5, True), ("imbalance", 0.8, False)],
)
def test_scaling_faults_scale_the_recorded_counts(fleet, kind, factor, scales_in):
    window = (DAY_START - 7 * DAY, DAY_START)
    true_in, true_out = totals(fleet.expected_counts("FFC0002", *window))
    fleet.set_fault("FFC0002", kind, since=window[0], factor=factor)
    got_in, got_out = totals(fleet.expected_counts("FFC0002", *window))
    assert got_out / true_out == pytest.approx(factor, rel=0.03)
    assert got_in / true_in == pytest.approx(factor if scales_in else 1.0, rel=0.03)


def test_clearing_a_counting_fault_keeps_what_was_recorded_while_faulty(fleet, clock):
    fleet.set_fault("FFC0001", "zeros", since=NOW - timedelta(hours=2))
    clock.advance(timedelta(hours=1))
    assert fleet.clear_fault("FFC0001") == ["zeros"]
    clock.advance(timedelta(hours=2))
    rows = fleet.expected_counts("FFC0001", NOW - timedelta(hours=2), clock.now())
    during = [r for r in rows if r[0] + timedelta(minutes=15) <= NOW + timedelta(hours=1)]
    after = [r for r in rows if r[0] >= NOW + timedelta(hours=1)]
    assert during and totals(during) == (0, 0)
    assert totals(after)[0] > 0


def test_an_offline_device_records_nothing_while_off(fleet, clock):
    fleet.set_fault("FFC0001", "offline", since=NOW - timedelta(hours=3))
    clock.advance(timedelta(hours=1))
    fleet.clear_fault("FFC0001", "offline")
    clock.advance(timedelta(hours=1))
    starts = [r[0] for r in fleet.expected_counts("FFC0001", DAY_START, clock.now())]
    gap = [s for s in starts if NOW - timedelta(hours=3) <= s < NOW + timedelta(hours=1)]
    assert gap == []
    assert any(s >= NOW + timedelta(hours=1) for s in starts)
    assert any(s < NOW - timedelta(hours=3) for s in starts)


def test_held_back_slots_arrive_late_but_those_older_than_a_week_are_lost(fleet, clock):
    since = DAY_START - 10 * DAY
    fleet.set_fault("FFC0001", "held_back", since=since)
    fleet.clear_fault("FFC0001", "held_back")
    starts = [r[0] for r in fleet.expected_counts("FFC0001", since - DAY, NOW)]
    lost = [s for s in starts if since <= s < NOW - 7 * DAY]
    assert lost == []
    assert any(s < since for s in starts)  # before the outage: still there
    assert sum(1 for s in starts if s >= NOW - 7 * DAY) > 600  # the last week: uploaded late


def test_unknown_kinds_parameters_and_values_are_refused(fleet):
    with pytest.raises(ValueError, match="unknown fault kind"):
        fleet.set_fault("FFC0001", "exploded")
    with pytest.raises(ValueError, match="unknown parameter"):
        fleet.set_fault("FFC0001", "slow", seconds=3)
    with pytest.raises(ValueError, match="factor must be in"):
        fleet.set_fault("FFC0001", "under_count", factor=1.2)
    with pytest.raises(KeyError, match="unknown counter"):
        fleet.set_fault("NOPE", "zeros")
    assert fleet.faults("FFC0001") == []


def test_fault_specs_from_the_command_line():
    serials = ["FFC0001", "FFC0002"]
    assert parse_fault_spec("FFC0002:under_count:0.5", serials, NOW) == (
        "FFC0002",
        "under_count",
        NOW,
        {"factor": "0.5"},
    )
    serial, kind, since, params = parse_fault_spec("FFC0001:moved:angle=20,since=-2h", serials, NOW)
    assert (serial, kind, params) == ("FFC0001", "moved", {"angle": "20"})
    assert since == NOW - timedelta(hours=2)
    assert parse_fault_spec("FFC0001:offline", serials, NOW)[1] == "offline"
    for bad, why in [
        ("FFC0009:offline", "unknown counter"),
        ("FFC0001:melted", "unknown kind"),
        ("FFC0001:offline:3", "takes no parameter"),
        ("FFC0001:slow:fast", "must be a number"),
        ("FFC0001", "expected SERIAL:KIND"),
        ("FFC0001:zeros:since=yesterday", "since must be"),
    ]:
        with pytest.raises(FaultSpecError, match=why):
            parse_fault_spec(bad, serials, NOW)
