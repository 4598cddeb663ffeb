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
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rma.tickets import NextAction, Ticket, TicketStatus

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
    if ticket.status in _ANSWERED or ticket.next_action is NextAction.WAITING_ON_CUSTOMER:
        return False
    due = sla_due(ticket)
    return due is not None and now > due
