"""The false-alarm gate: every problem finding leaves with a verdict and its reasons.

Support asks customers to rule out false alarms before raising a ticket; the gate does it the
way a careful support engineer would, and writes down why. It works in two passes:

1. the cycle as a whole (``diagnostics.outages``): the gateway's own fault, a storm of
   failures with one common cause, a whole site down at once — these fold many counter
   findings into one finding about the real cause;
2. each finding alone, through ``RULES`` in order: a person's silence or maintenance window,
   the store being shut, data still inside the counter's upload window, a counter not yet
   tuned, a dip its peers share, or plain luck. The first rule that decides wins; a problem
   no rule explains is genuine, and says so.

Only problems (warn, fail) get a verdict; ``error`` findings are about the agent and never a
device, so they pass through without one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from diagnostics.calendar import SiteCalendar
from diagnostics.checks import Family, meta
from diagnostics.model import Assessed, Decision, Finding, Verdict, as_datetime
from diagnostics.outages import group_pass

# the chance below which zeros are not luck: 1 in 10,000 for the run as a whole
MAX_LOG10_PROBABILITY = -4.0
# peers at or below this share of their usual level are "in the same dip"
PEER_DIP = 0.8


@dataclass(frozen=True)
class Silence:
    """A person's word: do not raise anything about ``target`` between ``start`` and ``until``.

    ``target`` is a counter serial, a site code, or ``*`` for everything. A silence that starts
    in the future is a maintenance window.
    """

    id: int
    target: str
    start: datetime
    until: datetime
    reason: str
    author: str = ""

    def covers(self, finding: Finding, now: datetime) -> bool:
        if not self.start <= now < self.until:
            return False
        return self.target in ("*", finding.subject, finding.site)


@dataclass(frozen=True)
class Gate:
    """What the gate knows beyond each finding."""

    calendars: Mapping[str, SiteCalendar] = field(default_factory=dict)
    now: datetime | None = None
    silences: Sequence[Silence] = ()
    untuned: frozenset[str] = frozenset()  # counters whose accuracy audit is not finished
    counters_by_site: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_log10_probability: float = MAX_LOG10_PROBABILITY

    def calendar(self, finding: Finding) -> SiteCalendar | None:
        return self.calendars.get(finding.site or "")


Rule = Callable[[Finding, Gate], Verdict | None]


def _span(finding: Finding) -> tuple[datetime | None, datetime | None]:
    """The time a count finding is about: a zero run's, or any other's ``start``/``end``."""
    ev = finding.evidence
    start = as_datetime(ev.get("zero_since")) or as_datetime(ev.get("start"))
    end = as_datetime(ev.get("last_slot_end")) or as_datetime(ev.get("end")) or finding.at
    return start, end


def _counts(finding: Finding) -> bool:
    return meta(finding).family is Family.COUNTS


def _odds(log10_p: float) -> str:
    return f"1 in {10**-log10_p:,.0f}" if log10_p > -9 else f"below 1 in 10^{int(-log10_p)}"


# -- the rules, in the order they are asked -------------------------------------------------------


def silenced(finding: Finding, gate: Gate) -> Verdict | None:
    """A person silenced the counter or site, or set a maintenance window: wait it out."""
    now = gate.now or finding.at
    for s in gate.silences:
        if s.covers(finding, now):
            who = f" by {s.author}" if s.author else ""
            return Verdict(
                Decision.PENDING,
                (f"silenced{who} until {s.until.isoformat()}: {s.reason} (silence {s.id})",),
                rule="silenced",
                until=s.until,
            )
    return None


def store_closed(finding: Finding, gate: Gate) -> Verdict | None:
    """Zero, low or missing counts while the store is shut (closure, refit, holiday, night)
    are the truth, or cost nothing: no visitor went uncounted."""
    calendar = gate.calendar(finding)
    if calendar is None or not _counts(finding):
        return None
    start, end = _span(finding)
    if start is None or end is None or end <= start:
        return None
    minutes = int((end - start).total_seconds() // 60)
    # open at all is enough to say no: stop at the first open step
    if any(calendar.open_fraction(at, step) > 0 for at, step in _steps(start, minutes)):
        return None
    reasons = calendar.closed_reasons(start, end) or [
        f"outside opening hours (that day: {calendar.day(calendar.local(start).date()).reason})"
    ]
    return Verdict(Decision.FALSE_ALARM, tuple(f"store {r}" for r in reasons), rule="store_closed")


def upload_window(finding: Finding, gate: Gate) -> Verdict | None:
    """Missing data a counter still holds is pending, not lost: it uploads it when back online
    within its upload window. Close to the end of the window it is raised, while there is
    still time to act; past it, the data is lost and the finding is genuine."""
    if not _counts(finding) or finding.code not in ("missing", "site_outage"):
        return None
    lost_at = as_datetime(finding.evidence.get("lost_at"))
    if lost_at is None:
        return None
    warn_at = as_datetime(finding.evidence.get("warn_at")) or lost_at
    calendar = gate.calendar(finding)
    local = f"{lost_at.astimezone(calendar.tz):%a %d %b %Y %H:%M}" if calendar else lost_at
    if finding.at >= lost_at:
        why = f"the data is lost: the counter keeps unsent counts only until {local}"
        return Verdict(Decision.GENUINE, (why,), rule="upload_window")
    if finding.at >= warn_at:
        why = f"data will be lost on {local} unless the counter comes back online"
        return Verdict(Decision.GENUINE, (why,), rule="upload_window")
    why = (
        "still inside the counter's upload window: it keeps the counts and sends them when "
        f"back online (lost on {local} if not)"
    )
    return Verdict(Decision.PENDING, (why,), rule="upload_window", until=lost_at)


def not_tuned(finding: Finding, gate: Gate) -> Verdict | None:
    """A counter whose accuracy audit is not finished is not yet judged for accuracy (the
    checks that declare ``accuracy``), nor is a site's finding blamed on it (``suspect``)."""
    who = finding.subject if finding.subject is not None else finding.evidence.get("suspect")
    if who not in gate.untuned or not meta(finding).accuracy:
        return None
    why = "the counter's accuracy audit (tuning) is not finished: its accuracy is not judged yet"
    if finding.subject is None:
        why = f"most likely about {who}, whose " + why.removeprefix("the counter's ")
    return Verdict(Decision.FALSE_ALARM, (why,), rule="not_tuned")


def peers_same_dip(finding: Finding, gate: Gate) -> Verdict | None:
    """The counter's peers are down too, and at their level the counter's zeros are no
    surprise: a real drop in traffic (a storm, a road closure), not a device fault."""
    ev = finding.evidence
    factor, scaled = ev.get("peer_factor"), ev.get("log10_probability")
    if finding.code != "zero_run" or factor is None or scaled is None:
        return None
    if factor > PEER_DIP or scaled <= gate.max_log10_probability:
        return None
    why = (
        f"its peers are at {factor:.0%} of their usual level too; at that level about "
        f"{ev.get('expected', 0):.0f} visitors were expected and none is {_odds(scaled)}: "
        "a real drop in traffic"
    )
    return Verdict(Decision.FALSE_ALARM, (why,), rule="peers_same_dip")


def plausible(finding: Finding, gate: Gate) -> Verdict | None:
    """Low traffic that luck explains: the chance of the zeros is above the gate's threshold."""
    scaled = finding.evidence.get("log10_probability")
    if finding.code != "zero_run" or scaled is None or scaled <= gate.max_log10_probability:
        return None
    why = (
        f"statistically plausible: about {finding.evidence.get('expected', 0):.1f} visitors "
        f"were expected, and none is {_odds(scaled)} for this counter's traffic"
    )
    return Verdict(Decision.FALSE_ALARM, (why,), rule="plausible")


def _steps(start: datetime, minutes: int, step: int = 15) -> Iterable[tuple[datetime, int]]:
    for offset in range(0, minutes, step):
        yield start + timedelta(minutes=offset), min(step, minutes - offset)


RULES: tuple[Rule, ...] = (
    silenced,
    store_closed,
    upload_window,
    not_tuned,
    peers_same_dip,
    plausible,
)


def assess(
    findings: Iterable[Finding],
    calendars: Mapping[str, SiteCalendar] | None = None,
    *,
    gate: Gate | None = None,
) -> list[Assessed]:
    """Give every problem finding a verdict; pass the rest through without one."""
    if gate is None:
        gate = Gate(calendars=calendars or {})
    elif calendars is not None:
        raise TypeError("give the calendars inside the gate")
    findings, decided = group_pass(list(findings), gate.counters_by_site)
    out: list[Assessed] = []
    for i, finding in enumerate(findings):
        if not finding.problem:
            out.append(Assessed(finding))
            continue
        verdict = decided.get(i)
        if verdict is None or verdict.decision is Decision.GENUINE:
            # a person's silence outranks everything the cycle concluded
            verdict = silenced(finding, gate) or verdict
        for rule in RULES[1:] if verdict is None else ():
            verdict = rule(finding, gate)
            if verdict is not None:
                break
        if verdict is None:
            verdict = Verdict(
                Decision.GENUINE,
                ("no rule explains it: the store was open and the counter was expected to work",)
                if _counts(finding)
                else ("no rule explains it",),
            )
        out.append(Assessed(finding, verdict))
    return out
