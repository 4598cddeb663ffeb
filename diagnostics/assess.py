"""The false-alarm gate: every problem finding leaves with a verdict and its reasons.

Support asks customers to rule out false alarms before raising a ticket; the gate does it the
way a careful support engineer would, and writes down why. Each rule is a small function that
either decides (returns a Verdict) or passes (returns None); the first rule that decides wins,
and a problem no rule explains is genuine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from diagnostics.calendar import SiteCalendar
from diagnostics.model import Assessed, Decision, Finding, Verdict, as_datetime

Rule = Callable[[Finding, SiteCalendar | None], Verdict | None]


def _span(finding: Finding) -> tuple[datetime | None, datetime | None]:
    """The time a count finding is about: a zero run's, or any other's ``start``/``end``."""
    ev = finding.evidence
    start = as_datetime(ev.get("zero_since")) or as_datetime(ev.get("start"))
    end = as_datetime(ev.get("last_slot_end")) or as_datetime(ev.get("end")) or finding.at
    return start, end


def _counts(finding: Finding) -> bool:
    return finding.check_id.startswith(("counter.counts.", "site.counts."))


def store_closed(finding: Finding, calendar: SiteCalendar | None) -> Verdict | None:
    """Zero, low or missing counts while the store is shut (closure, refit, holiday, night)
    are the truth, or cost nothing: no visitor went uncounted."""
    if calendar is None or not _counts(finding):
        return None
    start, end = _span(finding)
    if start is None or end is None or end <= start:
        return None
    minutes = int((end - start).total_seconds() // 60)
    open_minutes = sum(
        calendar.open_fraction(start, step, regular=False) * step
        for start, step in _steps(start, minutes)
    )
    if open_minutes > 0:
        return None
    reasons = calendar.closed_reasons(start, end) or ["outside opening hours"]
    return Verdict(
        Decision.FALSE_ALARM,
        tuple(f"store {r}" for r in reasons),
        rule="store_closed",
    )


def upload_window(finding: Finding, calendar: SiteCalendar | None) -> Verdict | None:
    """Missing data a counter still holds is pending, not lost: it uploads it when back online
    within its upload window. Close to the end of the window it is raised, while there is
    still time to act; past it, the data is lost and the finding is genuine."""
    if not _counts(finding) or finding.code not in ("missing", "site_outage"):
        return None
    lost_at = as_datetime(finding.evidence.get("lost_at"))
    if lost_at is None:
        return None
    warn_at = as_datetime(finding.evidence.get("warn_at")) or lost_at
    local = (
        f"{lost_at.astimezone(calendar.tz):%a %d %b %Y %H:%M}"
        if calendar
        else (lost_at.isoformat())
    )
    if finding.at >= lost_at:
        return Verdict(
            Decision.GENUINE,
            (f"the data is lost: the counter keeps unsent counts only until {local}",),
            rule="upload_window",
        )
    if finding.at >= warn_at:
        return Verdict(
            Decision.GENUINE,
            (f"data will be lost on {local} unless the counter comes back online",),
            rule="upload_window",
        )
    return Verdict(
        Decision.PENDING,
        (
            f"still inside the counter's upload window: it keeps the counts and sends them when "
            f"back online (lost on {local} if not)",
        ),
        rule="upload_window",
        until=lost_at,
    )


def _steps(start: datetime, minutes: int, step: int = 15) -> Iterable[tuple[datetime, int]]:
    for offset in range(0, minutes, step):
        yield start + timedelta(minutes=offset), min(step, minutes - offset)


RULES: tuple[Rule, ...] = (store_closed, upload_window)


def assess(findings: Iterable[Finding], calendars: Mapping[str, SiteCalendar]) -> list[Assessed]:
    """Give every problem finding a verdict; pass the rest through without one."""
    out: list[Assessed] = []
    for finding in findings:
        if not finding.problem:
            out.append(Assessed(finding))
            continue
        calendar = calendars.get(finding.site or "")
        verdict = None
        for rule in RULES:
            verdict = rule(finding, calendar)
            if verdict is not None:
                break
        if verdict is None:
            verdict = Verdict(
                Decision.GENUINE,
                ("no rule explains it: the store was open and the counter was expected to work",)
                if _counts(finding)
                else ("no rule explains it",),
                rule="",
            )
        out.append(Assessed(finding, verdict))
    return out
