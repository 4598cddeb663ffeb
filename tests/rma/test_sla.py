"""rma.sla: when a ticket's SLA falls due, and when it is overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from rma.sla import category_text, is_overdue, line_due, line_text, sla_due, ticket_sla
from rma.tickets import Category, NextAction, Stage, Ticket, TicketStatus

NOW = datetime(2025, 6, 26, 14, 30, tzinfo=UTC)


def ticket(
    category: Category,
    created_at: datetime,
    status: TicketStatus = TicketStatus.OPEN,
    next_action: NextAction = NextAction.WAITING_ON_FOOTFALLCAM,
) -> Ticket:
    return Ticket.from_json(
        {
            "key": "ffc-0123456789abcdef",
            "issue_level": "counter",
            "counter_unassigned": False,
            "site": "LDN01",
            "counters": ["FFC0001"],
            "subject": "Counter FFC0001 is offline",
            "category": category.value,
            "occurred_on": created_at.date().isoformat(),
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
            "created_at": created_at.isoformat(),
            "updated_at": created_at.isoformat(),
        }
    )


def test_due_is_created_plus_the_category_sla_in_days() -> None:
    created = NOW - timedelta(hours=5)
    assert sla_due(ticket(Category.TECHNICAL_ISSUE, created)) == created + timedelta(days=1)
    assert sla_due(ticket(Category.DATA_ACCURACY_ISSUE, created)) == created + timedelta(days=3)


def test_a_day_and_an_hour_is_late_for_a_technical_issue_not_for_data_accuracy() -> None:
    created = NOW - timedelta(days=1, hours=1)
    assert is_overdue(ticket(Category.TECHNICAL_ISSUE, created), NOW)
    assert not is_overdue(ticket(Category.DATA_ACCURACY_ISSUE, created), NOW)
    assert is_overdue(ticket(Category.DATA_ACCURACY_ISSUE, NOW - timedelta(days=3, hours=1)), NOW)


def test_overdue_only_after_the_due_moment() -> None:
    t = ticket(Category.TECHNICAL_ISSUE, NOW - timedelta(days=1))
    assert not is_overdue(t, NOW)
    assert is_overdue(t, NOW + timedelta(seconds=1))


@pytest.mark.parametrize(
    ("status", "next_action"),
    [
        (TicketStatus.SUGGEST_TO_CLOSE, NextAction.WAITING_ON_FOOTFALLCAM),
        (TicketStatus.CLOSED, NextAction.WAITING_ON_FOOTFALLCAM),
        (TicketStatus.OPEN, NextAction.WAITING_ON_CUSTOMER),
    ],
)
def test_the_sla_stops_once_the_ball_is_not_with_support(
    status: TicketStatus, next_action: NextAction
) -> None:
    old = NOW - timedelta(days=10)
    assert not is_overdue(ticket(Category.TECHNICAL_ISSUE, old, status, next_action), NOW)
    # the same ticket waiting on FootfallCam in an open status is late
    assert is_overdue(ticket(Category.TECHNICAL_ISSUE, old, TicketStatus.DIFFICULT_TO_TUNE), NOW)


def test_a_category_without_an_sla_is_never_overdue() -> None:
    t = ticket(Category.ACCURACY_AUDIT_OBSTACLE, NOW - timedelta(days=30))
    assert sla_due(t) is None
    assert not is_overdue(t, NOW)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_overdue(ticket(Category.TECHNICAL_ISSUE, NOW), NOW.replace(tzinfo=None))


def test_a_day_is_24_hours_across_a_clock_change_and_a_json_round_trip() -> None:
    # Filed at noon the day before the UK clocks go forward. The notifier used to add the day
    # on the wall clock (due 23 h later) while a ticket read back from JSON, with a fixed offset,
    # came due 24 h later: the due time moved by an hour depending on where it was computed.
    london = ZoneInfo("Europe/London")
    created = datetime(2025, 3, 29, 12, 0, tzinfo=london)
    t = ticket(Category.TECHNICAL_ISSUE, created)
    t = t.model_copy(update={"created_at": created})  # the zone as built in memory
    due = sla_due(t)
    assert due is not None
    # (Python subtracts two datetimes of one zone on the wall clock too: compare in UTC)
    assert due.astimezone(UTC) - created.astimezone(UTC) == timedelta(hours=24)
    assert due == sla_due(Ticket.from_json(t.to_json()))
    assert due.utcoffset() == timedelta(hours=1)  # shown in the ticket's own zone (BST)
    assert not is_overdue(t, datetime(2025, 3, 30, 11, 30, tzinfo=UTC))


def test_an_sla_of_zero_days_is_due_at_once_and_none_means_no_sla() -> None:
    # The notifier's copy read 0 as "no SLA"; only None means a category without one.
    created = NOW - timedelta(minutes=1)
    t = ticket(Category.TECHNICAL_ISSUE, created).model_copy(update={"sla_days": 0})
    assert sla_due(t) == created
    assert is_overdue(t, NOW)
    assert sla_due(t.model_copy(update={"sla_days": None})) is None


# --- the support lines' own clocks, beside the category's


def test_the_first_line_owes_an_answer_a_day_after_creation_beside_the_category_sla() -> None:
    created = NOW - timedelta(days=1, hours=2)
    t = ticket(Category.DATA_ACCURACY_ISSUE, created)
    view = ticket_sla(t, NOW)
    assert view.current.stage is Stage.FIRST_LINE
    assert view.current.due == created + timedelta(days=1)
    assert view.current.overdue  # a day and two hours: the first line is late ...
    assert view.category_due == created + timedelta(days=3)
    assert not view.category_overdue  # ... while the 3-day category SLA still runs
    assert view.escalate_to is Stage.SECOND_LINE
    assert [line.state for line in view.lines] == ["current", "ahead", "ahead"]


def test_the_second_line_clock_starts_when_it_takes_the_ticket() -> None:
    created = NOW - timedelta(days=5)
    taken = NOW - timedelta(days=2)
    t = ticket(Category.TECHNICAL_ISSUE, created).with_stage(Stage.SECOND_LINE, taken)
    view = ticket_sla(t, NOW)
    assert view.current.since == taken
    assert line_due(t) == taken + timedelta(days=3)
    assert not view.current.overdue and view.escalate_to is None
    assert view.category_overdue  # the 1-day category SLA ran out long ago
    assert [line.state for line in view.lines] == ["done", "current", "ahead"]
    later = ticket_sla(t, taken + timedelta(days=3, seconds=1))
    assert later.escalate_to is Stage.THIRD_LINE


def test_the_third_line_is_due_at_the_end_of_its_eta_and_escalates_nowhere() -> None:
    created = NOW - timedelta(days=10)
    t = ticket(Category.TECHNICAL_ISSUE, created).with_stage(Stage.THIRD_LINE, NOW)
    assert line_due(t) is None  # no ETA yet: nothing to be late against
    assert not ticket_sla(t, NOW + timedelta(days=30)).current.overdue
    planned = t.with_stage(Stage.THIRD_LINE, NOW, plan="firmware 5.2 fixes it", eta=NOW.date())
    assert planned.stage_since == t.stage_since  # the same line keeps its start
    end_of_eta = datetime(2025, 6, 27, tzinfo=UTC)
    assert line_due(planned) == end_of_eta
    view = ticket_sla(planned, end_of_eta + timedelta(minutes=1))
    assert view.current.overdue and view.escalate_to is None
    assert view.to_json()["plan"] == "firmware 5.2 fixes it"
    assert view.to_json()["eta"] == "2025-06-26"


def test_no_line_is_late_while_the_ticket_waits_on_the_customer() -> None:
    t = ticket(
        Category.TECHNICAL_ISSUE,
        NOW - timedelta(days=4),
        next_action=NextAction.WAITING_ON_CUSTOMER,
    )
    view = ticket_sla(t, NOW)
    assert not view.current.overdue and view.escalate_to is None
    closed = ticket(Category.TECHNICAL_ISSUE, NOW - timedelta(days=4), TicketStatus.CLOSED)
    assert ticket_sla(closed, NOW).escalate_to is None


def test_the_stage_and_its_start_survive_a_json_round_trip() -> None:
    t = ticket(Category.TECHNICAL_ISSUE, NOW).with_stage("second_line", NOW + timedelta(hours=30))
    back = Ticket.from_json(t.to_json())
    assert back.stage is Stage.SECOND_LINE and back.stage_since == t.stage_since
    assert ticket_sla(back, NOW).to_json() == ticket_sla(t, NOW).to_json()


def test_a_later_line_whose_start_was_never_recorded_has_no_clock() -> None:
    t = ticket(Category.TECHNICAL_ISSUE, NOW - timedelta(days=5))
    legacy = Ticket.from_json({**t.to_json(), "stage": "second_line"})  # no stage_since
    view = ticket_sla(legacy, NOW)
    assert line_due(legacy) is None and view.current.since is None
    assert not view.current.overdue and view.escalate_to is None
    assert view.category_overdue


# --- the clocks in words (tickets list, the overview's tables and page)


def test_the_line_and_the_category_in_words_due_then_overdue_to_the_unit_that_matters() -> None:
    created = datetime(2025, 6, 26, 9, 0, tzinfo=ZoneInfo("Europe/London"))  # 08:00 UTC
    t = ticket(Category.DATA_ACCURACY_ISSUE, created)
    assert line_text(ticket_sla(t, created).to_json(), created) == (
        "First line · due 27 Jun 08:00 UTC"
    )
    assert category_text(ticket_sla(t, created).to_json(), created) == (
        "3 d · due 29 Jun 08:00 UTC"
    )
    for late, said in (
        (timedelta(seconds=20), "1 min"),
        (timedelta(minutes=59), "59 min"),
        (timedelta(hours=5, minutes=59), "5 h"),
        (timedelta(hours=47), "47 h"),
        (timedelta(days=4, hours=23), "4 d"),
    ):
        now = created + timedelta(days=1) + late
        assert line_text(ticket_sla(t, now).to_json(), now) == f"First line · overdue {said}"
    now = created + timedelta(days=3, hours=2)
    assert category_text(ticket_sla(t, now).to_json(), now) == "3 d · overdue 2 h"
    # a due date in another year than now's says its year
    new_year = datetime(2025, 12, 31, 12, 0, tzinfo=UTC)
    t = ticket(Category.TECHNICAL_ISSUE, new_year)
    assert line_text(ticket_sla(t, new_year).to_json(), new_year) == (
        "First line · due 01 Jan 2026 12:00 UTC"
    )


def test_the_words_for_a_paused_clock_the_third_line_and_a_line_without_a_clock() -> None:
    waiting = ticket(
        Category.TECHNICAL_ISSUE,
        NOW - timedelta(days=4),
        next_action=NextAction.WAITING_ON_CUSTOMER,
    )
    view = ticket_sla(waiting, NOW).to_json()
    assert view["running"] is False
    assert line_text(view, NOW) == "First line · paused"
    assert category_text(view, NOW) == "1 d · paused"
    third = ticket(Category.TECHNICAL_ISSUE, NOW).with_stage(Stage.THIRD_LINE, NOW)
    assert line_text(ticket_sla(third, NOW).to_json(), NOW) == "Third line · no ETA yet"
    planned = third.with_stage(Stage.THIRD_LINE, NOW, plan="firmware 5.2", eta=NOW.date())
    assert line_text(ticket_sla(planned, NOW).to_json(), NOW) == "Third line · ETA 26 Jun"
    later = datetime(2025, 6, 27, 5, 0, tzinfo=UTC)
    assert line_text(ticket_sla(planned, later).to_json(), later) == "Third line · overdue 5 h"
    legacy = Ticket.from_json({**third.to_json(), "stage": "second_line", "stage_since": None})
    assert line_text(ticket_sla(legacy, NOW).to_json(), NOW) == (
        "Second line · no clock (its start was not recorded)"
    )
    no_sla = ticket(Category.TECHNICAL_ISSUE, NOW).model_copy(update={"sla_days": None})
    assert category_text(ticket_sla(no_sla, NOW).to_json(), NOW) == "none"
