"""When a store is open: opening hours, public holidays, closures and refits.

Zero footfall while a store is shut is the truth, not a fault. Every count judgement asks this
module first, so a closed store never raises a counting ticket, and the reason it was not judged
is stated in the store's own words ("closed for refit", "Christmas Day").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Hours:
    """Opening hours on one day; ``close`` may be 24:00, written as ``time.max``."""

    open: time
    close: time

    def contains(self, t: time) -> bool:
        return self.open <= t < self.close

    def __str__(self) -> str:
        close = "24:00" if self.close == time.max else self.close.strftime("%H:%M")
        return f"{self.open.strftime('%H:%M')}-{close}"


@dataclass(frozen=True, slots=True)
class Closure:
    start: date
    end: date  # inclusive
    reason: str

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True, slots=True)
class DayStatus:
    open: bool
    reason: str  # why it is closed, or "open HH:MM-HH:MM"
    hours: Hours | None = None


# Two digits, a colon, two digits, on each side: ``time.fromisoformat`` alone would also take
# "09.30" (nine o'clock and 0.3 seconds), "0930", "T09:30" or "09:30Z".
_SPAN = re.compile(r"([0-9]{2}:[0-9]{2})\s*-\s*([0-9]{2}:[0-9]{2})")


def parse_span(text: str, expected: str = "'HH:MM-HH:MM'") -> tuple[time, time]:
    """``"HH:MM-HH:MM"`` -> (start, end): the one reader of a span of local clock times, for
    opening hours here and the notifier's quiet hours in the agent's config alike. An end of
    24:00 is ``time.max``, the end of the day. Whether the end must follow the start is the
    caller's rule. Raises ValueError with a clear reason (``expected`` says what was wanted)."""
    match = _SPAN.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected {expected}, got {text!r}")
    start_s, end_s = match.groups()
    try:
        start = time.fromisoformat(start_s)
        end = time.max if end_s == "24:00" else time.fromisoformat(end_s)
    except ValueError:
        raise ValueError(f"not a time of day in {text!r}") from None
    return start, end


def parse_hours(text: str) -> Hours | None:
    """``"09:00-17:30"`` → Hours; ``"closed"`` → None. Raises ValueError with a clear reason."""
    if text.strip().lower() == "closed":
        return None
    start, end = parse_span(text, expected="'HH:MM-HH:MM' or 'closed'")
    if end <= start:
        raise ValueError(f"closing time must be after opening time in {text.strip()!r}")
    return Hours(start, end)


@lru_cache(maxsize=64)
def _holidays(country: str, subdiv: str | None, year: int) -> dict[date, str]:
    import holidays  # here: the package is large, and most commands never ask it

    return dict(holidays.country_holidays(country, subdiv=subdiv, years=year).items())


def check_holiday_region(region: str) -> tuple[str, str | None]:
    """``"GB-ENG"`` → ("GB", "ENG"), checked against the holidays package; ValueError if not."""
    import holidays

    country, _, subdiv = region.partition("-")
    if country not in holidays.list_supported_countries():
        raise ValueError(f"unknown country {country!r} in holidays region {region!r}")
    try:
        holidays.country_holidays(country, subdiv=subdiv or None)
    except NotImplementedError:
        raise ValueError(
            f"unknown subdivision {subdiv!r} of {country!r} in holidays region {region!r}"
        ) from None
    return country, subdiv or None


@dataclass(frozen=True, slots=True)
class SiteCalendar:
    """A site's calendar. ``weekly`` holds seven entries, Monday first; None means closed."""

    timezone: str
    weekly: tuple[Hours | None, ...]
    holiday_region: str | None = None
    closed_on_public_holidays: bool = False
    closures: tuple[Closure, ...] = ()
    special: tuple[tuple[date, Hours | None], ...] = ()  # hours for one date (None: closed)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def holiday(self, day: date) -> str | None:
        if not self.holiday_region:
            return None
        country, _, subdiv = self.holiday_region.partition("-")
        return _holidays(country, subdiv or None, day.year).get(day)

    def day(self, day: date) -> DayStatus:
        for closure in self.closures:
            if closure.covers(day):
                return DayStatus(False, f"closed {closure.start}..{closure.end}: {closure.reason}")
        for when, hours in self.special:
            if when == day:
                if hours is None:
                    return DayStatus(False, f"closed on {day} (special hours)")
                return DayStatus(True, f"open {hours} (special hours)", hours)
        name = self.holiday(day)
        if name and self.closed_on_public_holidays:
            return DayStatus(False, f"closed for the public holiday {name}")
        hours = self.weekly[day.weekday()]
        if hours is None:
            return DayStatus(False, f"closed on {WEEKDAYS[day.weekday()].capitalize()}days")
        return DayStatus(True, f"open {hours}", hours)

    def hours_on(self, day: date) -> Hours | None:
        """The hours the store is open on ``day`` (None: closed): ``day`` without the words,
        for the callers that ask it once a slot."""
        for closure in self.closures:
            if closure.covers(day):
                return None
        for when, hours in self.special:
            if when == day:
                return hours
        if self.closed_on_public_holidays and self.holiday(day):
            return None
        return self.weekly[day.weekday()]

    def local(self, at: datetime) -> datetime:
        if at.tzinfo is None:
            raise ValueError("calendar times must be timezone-aware")
        return at.astimezone(self.tz)

    def is_open(self, at: datetime) -> bool:
        return self.status_at(at)[0]

    def status_at(self, at: datetime) -> tuple[bool, str]:
        """Whether the store is open at ``at``, and the reason in words."""
        local = self.local(at)
        status = self.day(local.date())
        if not status.open or status.hours is None:
            return False, status.reason
        if not status.hours.contains(local.time()):
            return False, f"outside opening hours ({status.hours}, local time {local:%H:%M})"
        return True, status.reason

    def open_fraction(self, start: datetime, minutes: int, *, regular: bool = False) -> float:
        """The share of ``[start, start+minutes)`` during which the store is open.

        ``regular`` uses the weekly hours alone, ignoring closures and holidays: what a normal
        week would be, which is what a count baseline learns. Slots are short (an hour at
        most), so the day of the slot's start decides.
        """
        local = self.local(start)
        if regular:
            hours = self.weekly[local.weekday()]
        else:
            hours = self.hours_on(local.date())
        if hours is None or minutes <= 0:
            return 0.0
        begin = local.hour * 60 + local.minute
        end = begin + minutes
        o = hours.open.hour * 60 + hours.open.minute
        c = 24 * 60 if hours.close == time.max else hours.close.hour * 60 + hours.close.minute
        return max(0, min(end, c) - max(begin, o)) / minutes

    def closed_reasons(self, start: datetime, end: datetime) -> list[str]:
        """Why the store is shut on each local day of ``[start, end)``, without repeats."""
        reasons: list[str] = []
        day = self.local(start).date()
        last = self.local(end - timedelta(seconds=1)).date()
        while day <= last:
            status = self.day(day)
            if not status.open and status.reason not in reasons:
                reasons.append(status.reason)
            day += timedelta(days=1)
        return reasons
