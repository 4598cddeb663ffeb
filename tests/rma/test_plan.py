"""rma.plan: who acts next on an open issue and the plan after it; a ticket's clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rma.plan import Owner, action_plan, overdue, ticket_clocks, ticket_kind
from rma.tickets import Category, NextAction, Stage, Ticket, TicketStatus
from rma.workflow import State

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def ticket(
    *,
    category: Category = Category.TECHNICAL_ISSUE,
    created: datetime = NOW - timedelta(hours=2),
    status: TicketStatus = TicketStatus.OPEN,
    next_action: NextAction = NextAction.WAITING_ON_FOOTFALLCAM,
    stage: Stage = Stage.FIRST_LINE,
    number: str | None = "42",
    subject: str = "Counter FFC0001 offline since 12:00",
) -> Ticket:
    return Ticket.from_json(
        {
            "key": "ffc-0123456789abcdef",
            "number": number,
            "issue_level": "counter",
            "counter_unassigned": False,
            "site": "LDN01",
            "counters": ["FFC0001"],
            "subject": subject,
            "category": category.value,
            "occurred_on": created.date().isoformat(),
            "comment": {
                "what": "offline",
                "where": "LDN01",
                "when": "today",
                "which_device": "FFC0001",
                "how": "probe refused",
            },
            "requester": "it@example.com",
            "status": status.value,
            "next_action": next_action.value,
            "stage": stage.value,
            "created_at": created.isoformat(),
            "updated_at": created.isoformat(),
        }
    )


def plan_for(t: Ticket | None, **kw: Any) -> Any:
    return action_plan(
        kind=kw.pop("kind", "technical"),
        incident_state=kw.pop("incident_state", "open"),
        ticket=t,
        clocks=ticket_clocks(t, NOW) if t is not None and t.number else None,
        **kw,
    )


def test_clocks_put_the_category_and_the_first_line_side_by_side() -> None:
    t = ticket(category=Category.DATA_ACCURACY_ISSUE)
    clocks = ticket_clocks(t, NOW)
    assert clocks["category"] == {
        "sla_days": 3,
        "due": (t.created_at + timedelta(days=3)).isoformat(),
        "overdue": False,
    }
    assert clocks["stage"] == "first_line"
    first, second, third = clocks["lines"]
    assert (first["state"], first["sla_days"], first["overdue"]) == ("current", 1, False)
    assert first["due"] == (t.created_at + timedelta(days=1)).isoformat()
    assert (second["state"], second["sla_days"]) == ("ahead", 3)
    assert (third["state"], third["sla_days"], third["description"]) == (
        "ahead",
        None,
        "a plan and an ETA",
    )
    assert clocks["escalate_to"] is None and not overdue(clocks)


def test_a_first_line_past_its_day_is_overdue_and_escalates_to_the_second() -> None:
    t = ticket(category=Category.DATA_ACCURACY_ISSUE, created=NOW - timedelta(days=2))
    clocks = ticket_clocks(t, NOW)
    assert not clocks["category"]["overdue"]  # 3 days
    assert clocks["lines"][0]["overdue"] and clocks["escalate_to"] == "second_line"
    assert overdue(clocks)
    action = plan_for(t)
    assert action.owner is Owner.CUSTOMER
    assert "chase support" in action.next and "second line" in action.next


def test_a_later_line_has_no_clock_of_its_own_until_its_start_is_recorded() -> None:
    clocks = ticket_clocks(ticket(stage=Stage.SECOND_LINE, created=NOW - timedelta(days=5)), NOW)
    assert [x["state"] for x in clocks["lines"]] == ["done", "current", "ahead"]
    assert clocks["lines"][1]["due"] is None and not clocks["lines"][1]["overdue"]
    assert clocks["category"]["overdue"]  # the category's 1 day has long passed


def test_waiting_on_the_customer_stops_the_clocks() -> None:
    t = ticket(created=NOW - timedelta(days=4), next_action=NextAction.WAITING_ON_CUSTOMER)
    assert not overdue(ticket_clocks(t, NOW))
    action = plan_for(t)
    assert action.owner is Owner.CUSTOMER and "answer support" in action.next


def test_after_suggest_to_close_the_next_action_is_the_customers() -> None:
    t = ticket(status=TicketStatus.SUGGEST_TO_CLOSE, next_action=NextAction.WAITING_ON_CUSTOMER)
    action = plan_for(t, incident_state="resolved")
    assert action.owner is Owner.CUSTOMER
    assert "close the ticket" in action.next and "7 days" in action.plan[0]


def test_support_holds_an_open_ticket_in_time_with_its_lines_task() -> None:
    action = plan_for(ticket(stage=Stage.SECOND_LINE))
    assert action.owner is Owner.SUPPORT
    assert action.next == "second line: diagnosis, sometimes a remote-access session"
    assert "healthy again" in action.plan[-1]
    data = plan_for(ticket(category=Category.DATA_ACCURACY_ISSUE), kind="data")
    assert "recover or estimate" in data.plan[0]


@pytest.mark.parametrize(
    ("state", "owner", "words"),
    [
        (State.CANDIDATE, Owner.AGENT, "evidence"),
        (State.REQUESTED, Owner.SUPPORT, "approve or decline"),
        (State.APPROVED, Owner.CUSTOMER, "rescue the unit's data"),
        (State.SHIPPED, Owner.SUPPORT, "send the replacement unit"),
        (State.REPLACED, Owner.CUSTOMER, "verify the replacement"),
    ],
)
def test_an_rma_in_progress_leads_the_plan(state: State, owner: Owner, words: str) -> None:
    action = plan_for(ticket(), kind="hardware", rma=state)
    assert action.owner is owner and words in action.next
    # the plan is the rest of the road, in order, ending with closing it
    assert action.plan[-1] == "close the RMA and its ticket"
    assert words not in " ".join(action.plan)


def test_the_gateway_is_the_store_its_and_an_unfiled_ticket_the_agents() -> None:
    gateway = action_plan(kind="none", incident_state="open", remediation="Free some space.")
    assert gateway.owner is Owner.STORE_IT and gateway.next == "Free some space."
    queued = plan_for(ticket(number=None))
    assert queued.owner is Owner.AGENT and "deliver the ticket" in queued.next
    confirming = plan_for(None, incident_state="suspected")
    assert confirming.owner is Owner.AGENT and "confirm" in confirming.next
    recovered = plan_for(ticket(), incident_state="resolved")
    assert recovered.owner is Owner.AGENT and "suggest closing" in recovered.next


def test_the_kind_of_a_ticket_known_only_from_the_helpdesk() -> None:
    assert ticket_kind(ticket(category=Category.DATA_ACCURACY_ISSUE)) == "data"
    assert ticket_kind(ticket(subject="RMA request: FFC0001 camera fault")) == "hardware"
    assert ticket_kind(ticket()) == "technical"
    assert plan_for(ticket()).to_json()["owner"] == "FootfallCam support"
