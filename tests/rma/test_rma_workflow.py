"""rma.workflow and rma.rescue: the allowed moves, their preconditions, the slot ledger."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from diagnostics.countcsv import parse_counts_csv
from diagnostics.model import CountSlot
from rma import rescue
from rma.workflow import Facts, IllegalTransition, State, check_transition

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_the_happy_road_is_allowed() -> None:
    road = [
        State.CANDIDATE,
        State.REMEDIATING,
        State.REQUESTED,
        State.APPROVED,
        State.SHIPPED,
        State.REPLACED,
        State.VERIFIED,
        State.CLOSED,
    ]
    facts = Facts(rescued=True, replacement_verified=True)
    for a, b in itertools.pairwise(road):
        assert check_transition(1, a, b, facts) is b


def test_illegal_moves_are_refused_with_one_clear_line() -> None:
    with pytest.raises(IllegalTransition, match=r"RMA 7 is candidate: it cannot move to shipped"):
        check_transition(7, "candidate", "shipped", Facts(rescued=True))
    with pytest.raises(IllegalTransition, match="final"):
        check_transition(7, "closed", "requested", Facts())
    with pytest.raises(IllegalTransition, match="unknown state"):
        check_transition(7, "candidate", "teleported", Facts())


def test_no_shipping_before_rescue_and_no_verified_before_verification() -> None:
    with pytest.raises(IllegalTransition, match="rescue the unit's data"):
        check_transition(3, State.APPROVED, State.SHIPPED, Facts())
    with pytest.raises(IllegalTransition, match="verify-replacement 3"):
        check_transition(3, State.REPLACED, State.VERIFIED, Facts(rescued=True))


def test_rescue_names_the_holes_exactly() -> None:
    start = NOW - timedelta(hours=2)
    grid = rescue.ledger(start, NOW, 15)
    assert len(grid) == 8
    held = grid[:3] + grid[5:]
    report = rescue.judge("C1", held, start=start, end=NOW, minutes=15, recovered=4)
    assert report.expected == 8 and report.held == 6 and report.lost == 2
    (hole,) = report.holes
    assert hole.start == grid[3] and hole.end == grid[5]
    assert "2 slots could not be recovered" in report.summary()
    assert rescue.judge("C1", grid, start=start, end=NOW, minutes=15).complete


def test_rescue_csv_is_the_project_count_format() -> None:
    slots = [CountSlot("C1", NOW - timedelta(minutes=15 * i), 15, i, i + 1) for i in range(3)]
    text = rescue.to_csv(slots)
    assert text.splitlines()[0] == "timestamp,counter,in,out"
    parsed, _warnings = parse_counts_csv(text)
    assert sorted((s.start, s.count_in) for s in parsed["C1"]) == sorted(
        (s.start, s.count_in) for s in slots
    )


def test_each_move_is_a_task_line_with_its_status_and_due_date() -> None:
    from rma.tickets import TaskType
    from rma.workflow import Move, task_for, task_line

    requested = Move(NOW, State.REMEDIATING, State.REQUESTED, "agent", "camera not present")
    task = task_for(requested)
    assert (task.task, task.status, task.due) == ("RMA requested", "open", date(2026, 3, 3))
    assert task.type is TaskType.SUPPORT_OPERATION
    line = task_line(7, requested)
    assert line.splitlines()[:4] == [
        "Task: RMA requested (RMA 7)",
        "Status: open",
        "Due: 2026-03-03",
        "Type: support operation",
    ]
    assert "from remediating to requested by agent" in line and "camera not present" in line
    shipped = task_for(Move(NOW, State.APPROVED, State.SHIPPED, "alice", "DHL 1"))
    assert shipped.due == date(2026, 3, 12)
    closed = task_for(Move(NOW, State.VERIFIED, State.CLOSED, "alice", "done"))
    assert (closed.status, closed.due) == ("done", None)
    assert task_for(Move(NOW, State.REQUESTED, State.REJECTED, "bob", "no")).status == "rejected"
