"""The simulated traffic looks like real door counts: reproducible, over-dispersed, balanced."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from simulator import FakeClock
from simulator.traffic import day_bounds, site_weather
from tests.simulator.helpers import CLOSED_DAY, NOW, make_fleet

FIVE_WEEKS = timedelta(days=35)


def test_the_same_seed_gives_the_same_counts_and_another_seed_does_not(clock):
    a = make_fleet(clock, seed=7).expected_counts("FFC0001", NOW - FIVE_WEEKS, NOW)
    b = make_fleet(clock, seed=7).expected_counts("FFC0001", NOW - FIVE_WEEKS, NOW)
    c = make_fleet(clock, seed=8).expected_counts("FFC0001", NOW - FIVE_WEEKS, NOW)
    assert a == b
    assert [row[1] for row in a] != [row[1] for row in c]


def test_quarter_hours_are_over_dispersed_within_an_hour_of_week_cell(fleet):
    cells = defaultdict(list)
    for start, count_in, _ in fleet.expected_counts("FFC0001", NOW - FIVE_WEEKS, NOW):
        cells[(start.weekday(), start.hour, start.minute)].append(count_in)
    ratios = [
        np.var(v, ddof=1) / np.mean(v) for v in cells.values() if len(v) >= 4 and np.mean(v) > 5
    ]
    assert len(ratios) > 100
    assert np.median(ratios) > 2.0  # a Poisson process would give about 1


def test_in_and_out_balance_over_each_open_day(fleet):
    days = defaultdict(lambda: [0, 0])
    for start, count_in, count_out in fleet.expected_counts(
        "FFC0002", (NOW - FIVE_WEEKS).replace(hour=0, minute=0, second=0), NOW.replace(hour=0)
    ):
        days[start.date()][0] += count_in
        days[start.date()][1] += count_out
    open_days = [(i, o) for i, o in days.values() if i > 0]
    assert len(open_days) >= 25
    for count_in, count_out in open_days:
        assert abs(count_out - count_in) / count_in < 0.04


def test_a_closed_store_and_the_night_are_genuine_zeros_not_gaps(fleet):
    start = datetime(2026, 3, 8, tzinfo=ZoneInfo("Europe/London"))  # a Sunday, no hours
    sunday = fleet.expected_counts("FFC0001", start, start + timedelta(days=1))
    refit = datetime.combine(CLOSED_DAY, datetime.min.time(), ZoneInfo("Europe/London"))
    closed = fleet.expected_counts("FFC0001", refit, refit + timedelta(days=1))
    night = fleet.expected_counts("FFC0001", NOW.replace(hour=0), NOW.replace(hour=8))
    for rows in (sunday, closed, night):
        assert len(rows) == len({r[0] for r in rows}) > 0
        assert all(r[1] == 0 and r[2] == 0 for r in rows)
    assert len(sunday) == len(closed) == 96


def test_lunch_and_late_afternoon_are_the_peaks(fleet):
    by_hour = defaultdict(int)
    for start, count_in, _ in fleet.expected_counts("FFC0002", NOW - FIVE_WEEKS, NOW, 60):
        if start.weekday() < 5:
            by_hour[start.hour] += count_in
    assert by_hour[12] > 1.3 * by_hour[10]
    assert by_hour[17] > 1.3 * by_hour[15]
    assert by_hour[3] == 0


def test_counters_of_a_site_move_together_and_differ_in_level(fleet):
    def daily(serial):
        totals = defaultdict(int)
        for start, count_in, _ in fleet.expected_counts(serial, NOW - FIVE_WEEKS, NOW, 60):
            totals[start.date()] += count_in
        return totals

    a, b = daily("FFC0001"), daily("FFC0002")
    days = [d for d in a if a[d] > 0]
    assert np.corrcoef([a[d] for d in days], [b[d] for d in days])[0, 1] > 0.6
    assert 1.5 < sum(b.values()) / sum(a.values()) < 2.6  # base rates 240 vs 120
    assert site_weather(7, "LDN01", date(2026, 3, 2)) != site_weather(7, "LDN01", date(2026, 3, 3))


def test_only_complete_past_slots_within_the_history_are_held(fleet):
    rows = fleet.expected_counts("FFC0001", NOW - timedelta(days=60), NOW + timedelta(days=1))
    london = ZoneInfo("Europe/London")
    oldest = datetime.combine(NOW.date() - timedelta(days=35), datetime.min.time(), london)
    assert rows[0][0] == oldest
    assert rows[-1][0] + timedelta(minutes=15) <= NOW
    assert rows[-1][0] + timedelta(minutes=30) > NOW


def test_a_dst_day_has_25_hourly_rows_with_their_offsets():
    london = ZoneInfo("Europe/London")
    assert day_bounds(date(2026, 10, 25), london)[1] == 25 * 60
    assert day_bounds(date(2026, 3, 29), london)[1] == 23 * 60
    fleet = make_fleet(FakeClock(datetime(2026, 10, 27, tzinfo=UTC)))
    start, end = datetime(2026, 10, 25, tzinfo=london), datetime(2026, 10, 26, tzinfo=london)
    rows = fleet.expected_counts("FFC0001", start, end, 60)
    stamps = [r[0].astimezone(london).isoformat() for r in rows]
    assert len(rows) == 25
    assert "2026-10-25T01:00:00+01:00" in stamps and "2026-10-25T01:00:00+00:00" in stamps
