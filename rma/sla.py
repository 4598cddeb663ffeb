"""When a support ticket's SLA falls due, and whether FootfallCam has let it pass.

Each portal category promises an answer within so many days (Technical Issue 1 day, Data
Accuracy Issue 3 days, ...; see ``rma.tickets.Category``). A store whose counter has been dark
for four days on a 1-day ticket should chase support, not wait: the agent exports the number of
overdue tickets so that Prometheus can raise that alarm, and the CLI can show the due date.

The rule, in calendar days from ``created_at`` (the support guide speaks of days, not working
days, so weekends count):

- a day is 24 hours of elapsed time: the due moment is the same whether ``created_at`` carries
  a zone with daylight saving (as built in memory) or a fixed offset (as read back from JSON),
  so a ticket's due time does not move by an hour across a clock change or a round trip;
- a ticket without an SLA (a category with none, ``sla_days`` None) has no due time and is
  never overdue; an SLA of 0 days is due at once;
- the SLA is support's promise to act, so it stops counting once the ball is no longer with
  FootfallCam: in "Suggest To Close" and "Closed", and while the ticket waits on the customer;
- otherwise it is overdue once ``now`` is past ``created_at + sla_days``.

Each support line has its own promise as well (DESIGN.md §2): the first line answers within 1
day of taking the ticket (initial assessment and localisation), the second within 3 days
(diagnosis), and the third with a plan and an ETA, the ETA being its own due date.
``ticket_sla`` puts the line's clock beside the category's, for every caller (``tickets show``,
the overview, the escalation in ``agent.delivery.ticketing``): a line's clock starts when the
line took the ticket (``stage_since``; the creation for the first line; a later line whose
start was never recorded has no clock), is paused by the same rule as the category's, and a
line that runs out is escalated to the next one (``escalate_to``).
The third line is due at the end of its ETA day (in ``created_at``'s zone) and has no next line.

``line_text`` and ``category_text`` put those clocks in a few words ("Second line · due
14 Mar 11:00 UTC", "Second line · overdue 5 h", "1 d · paused") from ``ticket_sla``'s JSON:
the one wording ``tickets list``, the overview's tables and its HTML page share (``tickets
show`` lays every clock out in full), due times in UTC (``when_text``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from rma.tickets import NextAction, Stage, Ticket, TicketStatus

# Support has answered: it suggests closing (the portal closes it by itself 7 days later) or
# has closed the ticket. Neither can be late.
_ANSWERED = frozenset({TicketStatus.SUGGEST_TO_CLOSE, TicketStatus.CLOSED})


def sla_due(ticket: Ticket) -> datetime | None:
    """When support's answer falls due: ``created_at`` plus the ticket's SLA days, or None.

    The one rule for every caller (the CLI, the metrics, the notifier). Days are added in UTC,
    then shown in ``created_at``'s own zone: Python adds a timedelta to a zoned datetime on the
    wall clock, which would make a 1-day SLA 23 or 25 hours long across a clock change."""
    if ticket.sla_days is None:
        return None
    created = ticket.created_at
    return (created.astimezone(UTC) + timedelta(days=ticket.sla_days)).astimezone(created.tzinfo)


def is_overdue(ticket: Ticket, now: datetime) -> bool:
    """Whether the ticket waits on FootfallCam past its SLA at ``now`` (timezone-aware)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    due = sla_due(ticket)
    return due is not None and _with_support(ticket) and now > due


def _with_support(ticket: Ticket) -> bool:
    """Whether the ball is with FootfallCam (the SLA clocks run only then)."""
    return (
        ticket.status not in _ANSWERED and ticket.next_action is not NextAction.WAITING_ON_CUSTOMER
    )


_LINES = (Stage.FIRST_LINE, Stage.SECOND_LINE, Stage.THIRD_LINE)
LineState = Literal["done", "current", "ahead"]


@dataclass(frozen=True)
class LineSla:
    """One support line's part of a ticket: ``done`` (it passed the ticket on), ``current``
    (it holds it: ``since``, ``due`` and ``overdue`` are set) or ``ahead`` (not reached)."""

    stage: Stage
    sla_days: int | None  # the line's promise; None for the third line (a plan and an ETA)
    state: LineState
    since: datetime | None = None
    due: datetime | None = None
    overdue: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage.value,
            "label": self.stage.label,
            "sla_days": self.sla_days,
            "description": self.stage.description,
            "state": self.state,
            "since": self.since.isoformat() if self.since else None,
            "due": self.due.isoformat() if self.due else None,
            "overdue": self.overdue,
        }


@dataclass(frozen=True)
class TicketSla:
    """A ticket's two clocks side by side: its category's SLA and its support line's."""

    category_days: int | None
    category_due: datetime | None
    category_overdue: bool
    lines: tuple[LineSla, ...]  # first, second, third line, in order
    plan: str
    eta: str | None  # ISO date
    running: bool = True  # the ball is with FootfallCam: the clocks count (else paused)

    @property
    def current(self) -> LineSla:
        return next(line for line in self.lines if line.state == "current")

    @property
    def escalate_to(self) -> Stage | None:
        """The next line, when the current one ran out of time and there is a next one."""
        now = self.current
        if not now.overdue:
            return None
        i = _LINES.index(now.stage)
        return _LINES[i + 1] if i + 1 < len(_LINES) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "category": {
                "sla_days": self.category_days,
                "due": self.category_due.isoformat() if self.category_due else None,
                "overdue": self.category_overdue,
            },
            "stage": self.current.stage.value,
            "lines": [line.to_json() for line in self.lines],
            "plan": self.plan,
            "eta": self.eta,
            "escalate_to": self.escalate_to.value if self.escalate_to else None,
            "running": self.running,
        }


def line_due(ticket: Ticket) -> datetime | None:
    """When the support line holding ``ticket`` owes its answer: the line's start plus its
    SLA days (24-hour days, as ``sla_due``); for the third line the end of its ETA day; None
    when the third line has no ETA yet, or a later line's start was never recorded."""
    created = ticket.created_at
    since = _line_start(ticket)
    days = ticket.stage.sla_days
    if days is not None:
        if since is None:
            return None
        return (since.astimezone(UTC) + timedelta(days=days)).astimezone(created.tzinfo)
    if ticket.eta is None:
        return None
    return datetime.combine(ticket.eta + timedelta(days=1), time(), tzinfo=created.tzinfo)


def _line_start(ticket: Ticket) -> datetime | None:
    """When the current line took the ticket: recorded, or the creation for the first line;
    None for a later line whose start was never recorded (its clock is unknown, never late)."""
    if ticket.stage_since is not None:
        return ticket.stage_since
    return ticket.created_at if ticket.stage is Stage.FIRST_LINE else None


def ticket_sla(ticket: Ticket, now: datetime) -> TicketSla:
    """The category's SLA and each support line's, at ``now`` (timezone-aware): the one
    function the CLI, the overview and the escalation read a ticket's clocks from."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    held = _LINES.index(ticket.stage)
    lines = []
    for i, stage in enumerate(_LINES):
        if i != held:
            lines.append(LineSla(stage, stage.sla_days, "done" if i < held else "ahead"))
            continue
        due = line_due(ticket)
        lines.append(
            LineSla(
                stage,
                stage.sla_days,
                "current",
                since=_line_start(ticket),
                due=due,
                overdue=due is not None and _with_support(ticket) and now > due,
            )
        )
    return TicketSla(
        category_days=ticket.sla_days,
        category_due=sla_due(ticket),
        category_overdue=is_overdue(ticket, now),
        lines=tuple(lines),
        plan=ticket.plan,
        eta=ticket.eta.isoformat() if ticket.eta else None,
        running=_with_support(ticket),
    )


# --- the clocks in words


def when_text(at: datetime | str | None, now: datetime) -> str:
    """A due time as people read it in a list: "07 Dec 14:00 UTC", the year only when it is
    not ``now``'s; "-" for none. Short words, so a narrow table wraps it, never cuts it."""
    if not at:
        return "-"
    moment = (datetime.fromisoformat(at) if isinstance(at, str) else at).astimezone(UTC)
    return f"{_day(moment.date(), now)} {moment:%H:%M} UTC"


def _day(day: date, now: datetime) -> str:
    year = "" if day.year == now.astimezone(UTC).year else f" {day.year}"
    return f"{day:%d %b}{year}"


def line_text(sla: Mapping[str, Any], now: datetime) -> str:
    """The support line holding the ticket and where its clock stands at ``now``, from
    ``TicketSla.to_json()``: "Second line · due 14 Mar 11:00 UTC", "Second line · overdue
    5 h", "Third line · ETA 20 Mar", "Third line · no ETA yet", "Second line · paused"."""
    line = next(x for x in sla["lines"] if x["state"] == "current")
    if line["overdue"]:
        state = _clock(line["due"], True, sla, now)
    elif line["sla_days"] is None:  # the third line: a plan and an ETA
        eta = sla["eta"]
        state = f"ETA {_day(date.fromisoformat(eta), now)}" if eta else "no ETA yet"
        if not sla["running"]:
            state += ", paused"
    elif line["due"] is None:
        state = "no clock (its start was not recorded)"
    else:
        state = _clock(line["due"], False, sla, now)
    return f"{line['label']} · {state}"


def category_text(sla: Mapping[str, Any], now: datetime) -> str:
    """The category's SLA and where it stands at ``now``, from ``TicketSla.to_json()``:
    "1 d · due 11 Mar 10:00 UTC", "3 d · overdue 2 d", "1 d · paused", or "none"."""
    category = sla["category"]
    if category["sla_days"] is None:
        return "none"
    return f"{category['sla_days']} d · " + _clock(category["due"], category["overdue"], sla, now)


def _clock(due: str | None, overdue: bool, sla: Mapping[str, Any], now: datetime) -> str:
    if overdue and due:
        return f"overdue {_span(now - datetime.fromisoformat(due))}"
    if not sla["running"]:
        return "paused"
    return f"due {when_text(due, now)}"


def _span(late: timedelta) -> str:
    """How long past due, to the unit that matters: minutes, hours, then days."""
    minutes = int(late.total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"
