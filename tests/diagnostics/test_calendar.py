from datetime import UTC, date, datetime, time

import pytest

from diagnostics.calendar import Closure, Hours, SiteCalendar, parse_hours

WEEK = tuple([Hours(time(9), time(17, 30))] * 6 + [None])  # closed on Sundays


def cal(**kw):
    return SiteCalendar("Europe/London", WEEK, **kw)


def test_parse_hours():
    assert parse_hours("09:00-17:30") == Hours(time(9), time(17, 30))
    assert parse_hours("closed") is None
    assert parse_hours("00:00-24:00") == Hours(time(0), time.max)
    # "09.30" was read by time.fromisoformat as nine o'clock and 0.3 s: refused now, like the rest
    for bad in ("9-17", "17:00-09:00", "09:00", "nine to five", "09.30-17.30", "0930-1730"):
        with pytest.raises(ValueError):
            parse_hours(bad)


def test_open_and_closed_times_in_local_time():
    c = cal()
    # 2026-07-01 is a Wednesday; London is on BST (UTC+1): 08:30 UTC is 09:30 local
    assert c.status_at(datetime(2026, 7, 1, 8, 30, tzinfo=UTC)) == (True, "open 09:00-17:30")
    is_open, why = c.status_at(datetime(2026, 7, 1, 7, 30, tzinfo=UTC))
    assert not is_open and "outside opening hours" in why
    is_open, why = c.status_at(datetime(2026, 7, 5, 12, tzinfo=UTC))  # a Sunday
    assert not is_open and "Sun" in why


def test_closure_and_holiday():
    c = cal(
        closures=(Closure(date(2026, 11, 20), date(2026, 11, 30), "refit"),),
        holiday_region="GB-ENG",
        closed_on_public_holidays=True,
    )
    assert not c.is_open(datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert c.is_open(datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert "refit" in c.day(date(2026, 11, 25)).reason
    # Christmas Day 2026 is a Friday: open by the week, closed as a holiday
    status = c.day(date(2026, 12, 25))
    assert not status.open and "Christmas" in status.reason
    assert cal(holiday_region="GB-ENG").day(date(2026, 12, 25)).open  # stays open if told to


def test_open_fraction_regular_ignores_closures():
    c = cal(closures=(Closure(date(2026, 11, 25), date(2026, 11, 25), "stocktake"),))
    slot = datetime(2026, 11, 25, 9, 15, tzinfo=UTC)  # GMT in November: local 09:15
    assert c.open_fraction(slot, 15) == 0.0
    assert c.open_fraction(slot, 15, regular=True) == 1.0
    edge = datetime(2026, 11, 24, 17, 15, tzinfo=UTC)  # 17:15-17:30 open, then closed
    assert c.open_fraction(edge, 30) == pytest.approx(0.5)
    assert c.closed_reasons(slot, slot.replace(hour=12)) == [
        "closed 2026-11-25..2026-11-25: stocktake"
    ]


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        cal().is_open(datetime(2026, 7, 1, 12))


def test_holiday_regions_are_checked():
    from diagnostics.calendar import check_holiday_region

    assert check_holiday_region("GB-ENG") == ("GB", "ENG")
    assert check_holiday_region("GB") == ("GB", None)
    with pytest.raises(ValueError, match="unknown subdivision 'XYZ'"):
        check_holiday_region("GB-XYZ")
    with pytest.raises(ValueError, match="unknown country 'XX'"):
        check_holiday_region("XX")
