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
from datetime import datetime
from types import MappingProxyType
from typing import Any


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
            f"(`ffc-agent rma rescue {rma_id}`); a returned unit's data is lost"
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
