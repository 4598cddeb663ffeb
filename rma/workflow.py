"""The RMA workflow: the road from a suspect counter to a verified replacement, as a state machine.

candidate → remediating → requested → approved → shipped → replaced → verified → closed, with
rejected (FootfallCam declined the return) and cancelled (the counter healed, or a person
stopped it). Every move is recorded with who made it and why; a move the road does not allow is
refused with one clear line, so neither a typo nor a replayed command can skip a step.

Two moves have preconditions that protect the store's data and its counts: a unit is not
"shipped" before its data was rescued (the returned unit's data is lost, DESIGN.md §2), and an
RMA is not "verified" before the replacement was checked (answers, reports its new serial, its
host key pinned, counts flowing, a new reference image). ``agent/rmas.py`` persists the state
and does the work; this module only says what is allowed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from rma.portal import TaskType

if TYPE_CHECKING:  # the model (pydantic) loads when a task is made, not for `rma --help`
    from rma.tickets import Task


class State(enum.StrEnum):
    CANDIDATE = "candidate"
    REMEDIATING = "remediating"
    REQUESTED = "requested"
    APPROVED = "approved"
    SHIPPED = "shipped"
    REPLACED = "replaced"
    VERIFIED = "verified"
    CLOSED = "closed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


FINAL = frozenset({State.CLOSED, State.REJECTED, State.CANCELLED})

_NEXT: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        State.CANDIDATE: frozenset({State.REMEDIATING, State.REQUESTED, State.CANCELLED}),
        # back to candidate: the ladder healed it, but a person or the repeat-offender rule
        # still suspects the unit
        State.REMEDIATING: frozenset({State.CANDIDATE, State.REQUESTED, State.CANCELLED}),
        State.REQUESTED: frozenset({State.APPROVED, State.REJECTED, State.CANCELLED}),
        State.APPROVED: frozenset({State.SHIPPED, State.CANCELLED}),
        State.SHIPPED: frozenset({State.REPLACED}),
        State.REPLACED: frozenset({State.VERIFIED}),
        State.VERIFIED: frozenset({State.CLOSED}),
        State.CLOSED: frozenset(),
        State.REJECTED: frozenset(),
        State.CANCELLED: frozenset(),
    }
)

# What each state means for the ticket's task list and for people reading `rma show`.
DESCRIPTIONS: Mapping[State, str] = MappingProxyType(
    {
        State.CANDIDATE: "suspected hardware fault; evidence being gathered",
        State.REMEDIATING: "safe remote fixes being tried",
        State.REQUESTED: "RMA requested from FootfallCam support",
        State.APPROVED: "FootfallCam approved the return; rescue the data, then ship",
        State.SHIPPED: "faulty unit shipped back; waiting for the replacement",
        State.REPLACED: "replacement installed; verifying it",
        State.VERIFIED: "replacement verified: answers, new serial pinned, counts flowing",
        State.CLOSED: "closed",
        State.REJECTED: "FootfallCam declined the return",
        State.CANCELLED: "cancelled",
    }
)


# Each state in the ticket's task list: how many days until its task is due (who acts next has
# that long; None: nobody is waited on) and the task's status. Requested: the Technical Issue
# SLA (1 day); approved: rescue and ship within 3; shipped: a replacement within 10; replaced:
# the counts must flow (24 h by default) before it is verified.
_TASKS: Mapping[State, tuple[int | None, str]] = MappingProxyType(
    {
        State.CANDIDATE: (None, "open"),
        State.REMEDIATING: (None, "open"),
        State.REQUESTED: (1, "open"),
        State.APPROVED: (3, "open"),
        State.SHIPPED: (10, "open"),
        State.REPLACED: (2, "open"),
        State.VERIFIED: (None, "done"),
        State.CLOSED: (None, "done"),
        State.REJECTED: (None, "rejected"),
        State.CANCELLED: (None, "cancelled"),
    }
)


class IllegalTransition(ValueError):
    """A move the workflow does not allow; the message is the one line a person sees."""


def allowed(current: State) -> frozenset[State]:
    return _NEXT[current]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the preconditions look at: has the data been rescued, the replacement verified."""

    rescued: bool = False
    replacement_verified: bool = False


def check_transition(rma_id: int, current: State | str, target: State | str, facts: Facts) -> State:
    """The target state if the move is allowed; ``IllegalTransition`` with the reason if not."""
    try:
        now, to = State(current), State(target)
    except ValueError as exc:
        known = ", ".join(s.value for s in State)
        raise IllegalTransition(f"RMA {rma_id}: unknown state ({exc}); known: {known}") from None
    if to not in _NEXT[now]:
        options = ", ".join(sorted(s.value for s in _NEXT[now])) or "none: it is final"
        raise IllegalTransition(
            f"RMA {rma_id} is {now.value}: it cannot move to {to.value} (allowed: {options})"
        )
    if to is State.SHIPPED and not facts.rescued:
        raise IllegalTransition(
            f"RMA {rma_id}: rescue the unit's data before shipping it "
            f"(`ffc-agent rma rescue {rma_id}`, with --accept-loss for a unit that cannot be "
            f"reached); a returned unit's data is lost"
        )
    if to is State.VERIFIED and not facts.replacement_verified:
        raise IllegalTransition(
            f"RMA {rma_id}: verify the replacement first "
            f"(`ffc-agent rma verify-replacement {rma_id} --serial NEW`)"
        )
    return to


@dataclass(frozen=True, slots=True)
class Move:
    """One recorded transition."""

    at: datetime
    from_state: State | None
    to_state: State
    actor: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "from": self.from_state.value if self.from_state else None,
            "to": self.to_state.value,
            "actor": self.actor,
            "reason": self.reason,
        }


def task_for(move: Move) -> Task:
    """The ticket's task for the state an RMA just moved to: title, status and due date."""
    days, status = _TASKS[move.to_state]
    due = (move.at + timedelta(days=days)).date() if days is not None else None
    title = f"RMA {move.to_state.value}"
    from rma.tickets import Task

    return Task(task=title, type=TaskType.SUPPORT_OPERATION, due=due, status=status)


def tasks_for(move: Move) -> list[Task]:
    """The task-list changes one move makes: the state left behind is done (a task of the same
    name is updated in place), and the new state's task is added."""
    done: list[Task] = []
    if move.from_state is not None and _TASKS[move.from_state][1] == "open":
        left = task_for(Move(move.at, None, move.from_state, move.actor, move.reason))
        done.append(left.model_copy(update={"status": "done", "due": None}))
    return [*done, task_for(move)]


def task_line(rma_id: int, move: Move) -> str:
    """The follow-up that shows one move in the ticket's task list, one line per fact."""
    task = task_for(move)
    due = task.due.isoformat() if task.due else "none"
    came = f"from {move.from_state.value} " if move.from_state else ""
    return (
        f"Task: {task.task} (RMA {rma_id})\n"
        f"Status: {task.status}\n"
        f"Due: {due}\n"
        f"Type: {task.type.value}\n"
        f"What: {DESCRIPTIONS[move.to_state]}\n"
        f"Moved {came}to {move.to_state.value} by {move.actor} at "
        f"{move.at.isoformat(timespec='minutes')}: {move.reason}"
    )
