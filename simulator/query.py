"""The counts query of the cgi-bin API: parameters in device-local time, checked like a device.

A device refuses what it cannot answer with a 400 and a reason, and the agent's error handling
is only tested if the simulator is as strict: dates as YYYYMMDD, times as HHmmss, a known
resolution, an end after the start, and at most 24 hours per call.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from simulator.model import SimSite

RESOLUTIONS = (1, 5, 10, 15, 30, 60)
MAX_SPAN = timedelta(hours=24)


class BadRequest(ValueError):
    """A parameter the device refuses (HTTP 400); the message is the reason."""


def parse_date(text: str, name: str) -> date:
    if len(text) != 8 or not text.isdigit():
        raise BadRequest(f"{name} must be YYYYMMDD, got {text!r}")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise BadRequest(f"{name} is not a valid date: {text!r}") from None


def _time(text: str, name: str, *, allow_24: bool) -> tuple[int, int, int]:
    if len(text) != 6 or not text.isdigit():
        raise BadRequest(f"{name} must be HHmmss, got {text!r}")
    h, m, s = int(text[:2]), int(text[2:4]), int(text[4:])
    if (h, m, s) == (24, 0, 0) and allow_24:
        return h, m, s
    if h > 23 or m > 59 or s > 59:
        raise BadRequest(f"{name} is not a valid time: {text!r}")
    return h, m, s


def _local(day: date, hms: tuple[int, int, int], site: SimSite) -> datetime:
    if hms[0] == 24:
        day, hms = day + timedelta(days=1), (0, 0, 0)
    return datetime.combine(day, time(*hms), tzinfo=site.tz)


def parse_count_params(
    params: dict[str, str], site: SimSite
) -> tuple[datetime, datetime, str, int]:
    """Validate the apiCount parameters: (start UTC, end UTC, data_format, minutes).

    Times are device-local wall-clock times (a repeated DST hour means its first occurrence).
    The 24-hour limit is met if the span is at most 24 h by the wall clock or in real time,
    so a whole local day always fits in one call, even the 25-hour day in autumn.
    """
    data_format = params.get("data_format", "minute").lower()
    if data_format not in ("hour", "minute", "second"):
        raise BadRequest("data_format must be hour, minute or second")
    raw_res = params.get("resolution_min", "")
    if raw_res and (not raw_res.isdigit() or int(raw_res) not in RESOLUTIONS):
        raise BadRequest(f"resolution_min must be one of {RESOLUTIONS}, got {raw_res!r}")
    minutes = {"hour": 60, "second": 1}.get(data_format, int(raw_res or 15))
    if "date_start" not in params:
        raise BadRequest("date_start is required (YYYYMMDD)")
    day_start = parse_date(params["date_start"], "date_start")
    day_end = parse_date(params.get("date_end") or params["date_start"], "date_end")
    t_start = _time(params.get("time_start") or "000000", "time_start", allow_24=False)
    t_end = _time(params.get("time_end") or "240000", "time_end", allow_24=True)
    start, end = _local(day_start, t_start, site), _local(day_end, t_end, site)
    wall = end.replace(tzinfo=None) - start.replace(tzinfo=None)
    real = end.astimezone(UTC) - start.astimezone(UTC)
    if wall <= timedelta(0) or real <= timedelta(0):
        raise BadRequest("the end must be after the start")
    if wall > MAX_SPAN and real > MAX_SPAN:
        raise BadRequest("at most 24 hours per call: split the range into several calls")
    return start.astimezone(UTC), end.astimezone(UTC), data_format, minutes
