"""When a support ticket's SLA falls due, and whether FootfallCam has let it pass.

Each portal category promises an answer within so many days (Technical Issue 1 day, Data
Accuracy Issue 3 days, ...; see ``rma.tickets.Category``). A store whose counter has been dark
for four days on a 1-day ticket should chase support, not wait: the agent exports the number of
overdue tickets so that Prometheus can raise that alarm, and the CLI can show the due date.

The rule, in calendar days from ``created_at`` (the support guide speaks of days, not working
days):

- a ticket without an SLA (a category with none) is never overdue;
- the SLA is support's promise to act, so it stops counting once the ball is no longer with
  FootfallCam: in "Suggest To Close" and "Closed", and while the ticket waits on the customer;
- otherwise it is overdue once ``now`` is past ``created_at + sla_days``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rma.tickets import NextAction, Ticket, TicketStatus

# Support has answered: it suggests closing (the portal closes it by itself 7 days later) or
# has closed the ticket. Neither can be late.
_ANSWERED = frozenset({TicketStatus.SUGGEST_TO_CLOSE, TicketStatus.CLOSED})


def sla_due(ticket: Ticket) -> datetime | None:
    """When support's answer falls due: ``created_at`` plus the ticket's SLA days, or None."""
    if ticket.sla_days is None:
        return None
    return ticket.created_at + timedelta(days=ticket.sla_days)


def is_overdue(ticket: Ticket, now: datetime) -> bool:
    """Whether the ticket waits on FootfallCam past its SLA at ``now`` (timezone-aware)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if ticket.status in _ANSWERED or ticket.next_action is NextAction.WAITING_ON_CUSTOMER:
        return False
    due = sla_due(ticket)
    return due is not None and now > due
