"""The simulated world's nouns: sites, counters and the clock they live by.

A site is a store with opening hours in its own timezone; a counter is one FootfallCam device
at one door of a site. The simulator reads the time only through a clock object, so tests and
the demo can run a fleet at any date (a DST change, a closure) without waiting for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
APIS = ("cgi-bin", "pi-cgi")


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real time, in UTC. The only place the simulator reads the wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A settable clock for tests and the demo; ``now()`` is always timezone-aware."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware datetime")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware datetime")
        self._at = at

    def advance(self, delta: timedelta) -> None:
        self._at = self._at + delta


def _parse_span(text: str) -> tuple[int, int] | None:
    """``"09:00-20:00"`` → minutes (540, 1200); ``"closed"`` → None."""
    text = text.strip().lower()
    if text == "closed":
        return None
    try:
        start_s, end_s = (part.strip() for part in text.split("-"))
        start = time.fromisoformat(start_s)
        end_min = 1440 if end_s == "24:00" else _minutes(time.fromisoformat(end_s))
    except ValueError:
        raise ValueError(f"expected 'HH:MM-HH:MM' or 'closed', got {text!r}") from None
    if end_min <= _minutes(start):
        raise ValueError(f"closing time must be after opening time in {text!r}")
    return _minutes(start), end_min


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


@dataclass(frozen=True)
class SimSite:
    """A store. A weekday missing from ``opening_hours`` or set to "closed" is a closed day.

    ``closed_dates`` are days with no traffic at all (a refit or closure); ``holidays`` is the
    region written into the agent config (derived from the timezone when not given).
    """

    code: str
    name: str
    timezone: str = "Europe/London"
    opening_hours: Mapping[str, str] = field(default_factory=dict)
    closed_dates: tuple[date, ...] = ()
    holidays: str | None = None
    closure_reason: str = "closed for refit"

    def __post_init__(self) -> None:
        ZoneInfo(self.timezone)  # fail early on a typo
        unknown = set(self.opening_hours) - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"site {self.code}: unknown weekday {min(unknown)!r}")
        for text in self.opening_hours.values():
            _parse_span(text)
        object.__setattr__(self, "closed_dates", tuple(sorted(set(self.closed_dates))))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def hours_on(self, day: date) -> tuple[int, int] | None:
        """Opening and closing minute of the local day, or None when the store is shut."""
        if day in self.closed_dates:
            return None
        return _parse_span(self.opening_hours.get(WEEKDAYS[day.weekday()], "closed"))


@dataclass(frozen=True)
class SimCounter:
    """One simulated device. ``base_rate`` is people per hour through the door at the peak."""

    serial: str
    name: str
    site: str
    base_rate: float = 120.0
    username: str = "admin"
    password: str = field(default="secret", repr=False)
    api: str = "cgi-bin"
    port: int = 0
    group: str | None = None
    model: str | None = None
    firmware: str | None = None
    snapshot_path: str = "/snapshot.jpg"

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"counter {self.serial}: api must be one of {APIS}, got {self.api!r}")
        if self.base_rate < 0:
            raise ValueError(f"counter {self.serial}: base_rate must not be negative")
        if not self.snapshot_path.startswith("/"):
            raise ValueError(f"counter {self.serial}: snapshot_path must start with '/'")

    @property
    def device_model(self) -> str:
        if self.model:
            return self.model
        return "FootfallCam 3D Plus" if self.api == "pi-cgi" else "FootfallCam 3D Pro2"

    @property
    def device_firmware(self) -> str:
        if self.firmware:
            return self.firmware
        return "2.9.4" if self.api == "pi-cgi" else "4.3.1"
