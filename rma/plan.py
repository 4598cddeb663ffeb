"""Who acts next on an open issue, and the road to its end: the action plan of the overview.

The support guide asks that management sees every open issue, tracks it and has a clear
action plan. ``action_plan`` reads one issue — the kind of problem, where its ticket stands
(status, next action, support line, its SLA) and where its RMA stands — and answers who holds
the ball (the customer, FootfallCam support, the store's IT or the agent itself), the one next
step, and the steps after it. It is the one place that words this; ``ffc-agent overview``
shows it per issue, in tables, JSON and the HTML page.

``ticket_clocks`` is the ticket's SLAs side by side, its category's and its support line's,
as ``rma.sla.ticket_sla`` computes them (the one place), in JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rma.sla import ticket_sla
from rma.tickets import Category, NextAction, Stage, Ticket, TicketStatus
from rma.workflow import FINAL
from rma.workflow import State as RmaState

SUGGEST_TO_CLOSE_DAYS = 7  # the portal closes a ticket left in Suggest To Close by itself

_LINES = (Stage.FIRST_LINE, Stage.SECOND_LINE, Stage.THIRD_LINE)


def ticket_clocks(ticket: Ticket, now: datetime) -> dict[str, Any]:
    """The category's SLA and each support line's, as JSON: ``rma.sla.ticket_sla``'s.

    ``{"category": {"sla_days", "due", "overdue"}, "stage", "lines": [{"stage", "label",
    "sla_days", "description", "state", "since", "due", "overdue"}, ...], "plan", "eta",
    "escalate_to"}``; ``state`` is ``done``, ``current`` or ``ahead``."""
    return ticket_sla(ticket, now).to_json()


def overdue(clocks: dict[str, Any] | None) -> bool:
    """Whether any of a ticket's clocks (``ticket_clocks``) has run out."""
    if not clocks:
        return False
    return bool(clocks["category"]["overdue"] or any(x["overdue"] for x in clocks["lines"]))


class Owner(enum.StrEnum):
    """Who holds the ball."""

    CUSTOMER = "customer"  # the store (the agent's operator): answer, confirm, ship, verify
    SUPPORT = "FootfallCam support"
    STORE_IT = "store IT"  # the gateway and the agent: never a FootfallCam ticket
    AGENT = "ffc-agent"  # the agent is on it: confirming, filing, watching the recovery


@dataclass(frozen=True)
class Action:
    owner: Owner
    next: str  # the one next step, a sentence
    plan: tuple[str, ...]  # the steps after it, in order

    def to_json(self) -> dict[str, Any]:
        return {"owner": self.owner.value, "next": self.next, "plan": list(self.plan)}


# the RMA road from each state: (owner, next step, the steps after it)
_RMA_ROAD: dict[RmaState, tuple[Owner, str]] = {
    RmaState.CANDIDATE: (Owner.AGENT, "gather the evidence for a hardware fault"),
    RmaState.REMEDIATING: (Owner.AGENT, "try the safe remote fixes within their budget"),
    RmaState.REQUESTED: (Owner.SUPPORT, "approve or decline the RMA request"),
    RmaState.APPROVED: (
        Owner.CUSTOMER,
        "rescue the unit's data (`ffc-agent rma rescue`), then ship it back",
    ),
    RmaState.SHIPPED: (Owner.SUPPORT, "send the replacement unit"),
    RmaState.REPLACED: (
        Owner.CUSTOMER,
        "verify the replacement (`ffc-agent rma verify-replacement`)",
    ),
    RmaState.VERIFIED: (Owner.CUSTOMER, "close the RMA and its ticket"),
}
_RMA_ORDER = tuple(_RMA_ROAD)

# what support is asked for, by the kind of problem (the ticket's own words say more)
_ASK = {
    "data": "recover or estimate the missing or wrong counts",
    "technical": "get the counter working and its data flowing again",
    "hardware": "confirm the hardware fault and approve an RMA",
}


def ticket_kind(ticket: Ticket) -> str:
    """The kind of problem a ticket is about, from the ticket alone (for tickets another
    gateway filed, whose incident is not known here): ``data``, ``hardware`` or ``technical``."""
    if ticket.category is Category.DATA_ACCURACY_ISSUE:
        return "data"
    if ticket.category is Category.DEVICE_BUG or ticket.subject.lower().startswith("rma request"):
        return "hardware"
    return "technical"


def action_plan(
    *,
    kind: str,
    incident_state: str | None = None,
    ticket: Ticket | None = None,
    clocks: dict[str, Any] | None = None,
    rma: RmaState | None = None,
    remediation: str = "",
) -> Action:
    """Who acts next on one open issue, what the next step is, and the steps after it.

    ``kind`` is the problem's ticket kind (``data``, ``technical``, ``hardware``; ``none``
    for the gateway and the agent, which are the store's IT's); ``incident_state`` the
    incident's state (``suspected``, ``open``, ``intermittent``, ``recovering``,
    ``resolved``; None for a ticket known only from the helpdesk); ``ticket`` the ticket as
    last known (None: not filed); ``clocks`` its ``ticket_clocks``; ``rma`` the state of an
    RMA in progress for the counter; ``remediation`` what the check advises a person to do."""
    if kind == "none":
        return Action(
            Owner.STORE_IT,
            remediation or "fix the gateway or the agent (no FootfallCam ticket for this)",
            ("the agent closes the incident once the checks are healthy again",),
        )
    if rma is not None and rma not in FINAL:
        owner, step = _RMA_ROAD[rma]
        after = [_RMA_ROAD[s][1] for s in _RMA_ORDER[_RMA_ORDER.index(rma) + 1 :]]
        return Action(owner, step, tuple(after))
    if incident_state == "suspected":
        return Action(
            Owner.AGENT,
            "confirm the problem on the next checks before filing",
            ("file a ticket if it holds", "close the incident if it does not"),
        )
    if ticket is None or ticket.number is None:
        return Action(
            Owner.AGENT,
            "deliver the ticket to the helpdesk (queued in the outbox)",
            (f"support: {_ASK.get(kind, _ASK['technical'])}",),
        )
    if ticket.status is TicketStatus.CLOSED:
        return Action(Owner.CUSTOMER, "none: the ticket is closed", ())
    if ticket.status is TicketStatus.SUGGEST_TO_CLOSE:
        return Action(
            Owner.CUSTOMER,
            "confirm the fix and close the ticket, or reply if the problem remains",
            (f"the portal closes the ticket by itself {SUGGEST_TO_CLOSE_DAYS} days after",),
        )
    if incident_state == "resolved":
        return Action(
            Owner.AGENT,
            "suggest closing the ticket: the problem has recovered (queued)",
            ("customer: confirm the fix and close the ticket",),
        )
    if ticket.next_action is NextAction.WAITING_ON_CUSTOMER:
        return Action(
            Owner.CUSTOMER,
            "answer support's question on the ticket (`ffc-agent tickets show`)",
            (f"support: {_ASK.get(kind, _ASK['technical'])}",),
        )
    watch = ("the agent suggests closing once the counter is healthy again",)
    if incident_state == "recovering":
        watch = ("the agent suggests closing once recovery is confirmed",)
    stage = ticket.stage
    escalate = (clocks or {}).get("escalate_to")
    if overdue(clocks):
        to = f" to the {Stage(escalate).label.lower()}" if escalate else ""
        return Action(
            Owner.CUSTOMER,
            f"chase support: the SLA has passed; ask for escalation{to}",
            (f"support ({stage.label.lower()}): {stage.description}", *watch),
        )
    return Action(
        Owner.SUPPORT,
        f"{stage.label.lower()}: {stage.description}",
        (f"support: {_ASK.get(kind, _ASK['technical'])}", *watch),
    )
