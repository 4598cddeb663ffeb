"""The remediation ladder: which safe fix comes next for a device fault, within the budget.

FootfallCam corrects remotely what can be corrected before a unit is swapped (DESIGN.md §2).
The agent does the same, gently first: renew the API token, restart the counting service,
reboot the counter, power-cycle its PoE port. After each rung it checks again and stops at the
first that heals. This module decides, and only decides: given the fault, what the agent can
reach (SSH, a PoE command), the rungs already tried in this incident and every repair of the
counter it remembers, it names the next rung or says why there is none. ``agent/remediate.py``
does the work and records it.

The budget is what keeps a sick counter from being rebooted all day: each rung may run at most
so many times per counter in a rolling day. A counter the ladder healed ``repeat_heals`` times
within ``repeat_window_days`` is a repeat offender, an RMA candidate even while it is up.
Everything here is pure: the same history gives the same answer in the service, in
``ffc-agent remote fix --dry-run`` and in tests.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType


class Step(enum.StrEnum):
    """One rung, gentlest first. The values are stable: the audit log and tickets use them."""

    RENEW_TOKEN = "renew_token"  # noqa: S105 - a step name, not a secret
    RESTART_SERVICE = "restart_service"
    REBOOT = "reboot"
    POE_CYCLE = "poe_cycle"


ORDER: tuple[Step, ...] = tuple(Step)

TITLES: Mapping[Step, str] = MappingProxyType(
    {
        Step.RENEW_TOKEN: "renew the API token",
        Step.RESTART_SERVICE: "restart the counting service (SSH)",
        Step.REBOOT: "reboot the counter (SSH)",
        Step.POE_CYCLE: "power-cycle the counter's PoE port",
    }
)


class Outcome(enum.StrEnum):
    """How one attempt ended. Only ``healed`` stops the ladder."""

    HEALED = "healed"  # the step ran and the check came back clean
    NOT_HEALED = "not_healed"  # the step ran; the fault is still there
    FAILED = "failed"  # the step itself could not run (SSH refused, command exited non-zero)
    DRY_RUN = "dry_run"  # what would have run; nothing touched the device
    # a reboot or power cycle was sent; the next cycles check whether the counter came back
    # (healed) until the recheck time is over (not healed): the cycle never waits for a boot
    PENDING = "pending"


RAN = frozenset({Outcome.HEALED, Outcome.NOT_HEALED, Outcome.FAILED, Outcome.PENDING})

# Which rungs can help which fault (by the finding's ``code``, never its check id). A token can
# only fix what the API refuses; a service restart or reboot needs a device that still answers
# SSH; a PoE cycle is the one fix for a counter that answers nothing at all.
_API = (Step.RENEW_TOKEN,)
_ALL = ORDER
_HELPS: Mapping[str, tuple[Step, ...]] = MappingProxyType(
    {
        "auth_failed": _API,
        "http_error": _ALL,
        "bad_response": _ALL,
        "refused": (Step.RESTART_SERVICE, Step.REBOOT, Step.POE_CYCLE),
        "timeout": (Step.RESTART_SERVICE, Step.REBOOT, Step.POE_CYCLE),
        "unreachable": (Step.REBOOT, Step.POE_CYCLE),
        "offline": (Step.RESTART_SERVICE, Step.REBOOT, Step.POE_CYCLE),
        "counting_service_down": (Step.RESTART_SERVICE, Step.REBOOT, Step.POE_CYCLE),
        "no_recent_events": (Step.RESTART_SERVICE, Step.REBOOT, Step.POE_CYCLE),
        "zero_run": (Step.RESTART_SERVICE, Step.REBOOT, Step.POE_CYCLE),
        "frozen": (Step.RESTART_SERVICE, Step.REBOOT, Step.POE_CYCLE),
        "hardware_fault": (Step.REBOOT, Step.POE_CYCLE),  # a camera can come back on a cold boot
    }
)
_NEEDS_SSH = frozenset({Step.RESTART_SERVICE, Step.REBOOT})


def fixable(code: str) -> bool:
    """Whether the ladder has any rung for a fault with this finding code."""
    return code in _HELPS


def rungs_for(code: str) -> tuple[Step, ...]:
    return _HELPS.get(code, ())


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-counter limits. ``per_day`` caps each rung in any rolling 24 hours."""

    per_day: Mapping[Step, int] = field(
        default_factory=lambda: MappingProxyType(
            {Step.RENEW_TOKEN: 6, Step.RESTART_SERVICE: 3, Step.REBOOT: 2, Step.POE_CYCLE: 1}
        )
    )
    repeat_heals: int = 3
    repeat_window_days: float = 14.0

    def limit(self, step: Step) -> int:
        return int(self.per_day.get(step, 0))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the agent can do to this counter: SSH configured, a PoE command configured."""

    ssh: bool = False
    poe: bool = False

    def can(self, step: Step) -> bool:
        if step in _NEEDS_SSH:
            return self.ssh
        if step is Step.POE_CYCLE:
            return self.poe
        return True


@dataclass(frozen=True, slots=True)
class Attempt:
    """One rung tried on one counter (the audit log's ``remediate`` rows, parsed)."""

    counter: str
    step: Step
    at: datetime
    outcome: Outcome
    actor: str = "agent"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """The ladder's word: the next rung, or none and why; what the budget held back."""

    step: Step | None
    reason: str
    tried: tuple[Step, ...] = ()
    over_budget: tuple[Step, ...] = ()
    unavailable: tuple[Step, ...] = ()
    waiting: Step | None = None  # a rung sent, its recheck still to come

    @property
    def exhausted(self) -> bool:
        """No rung left to try for this fault: every fix was tried, barred or impossible."""
        return self.step is None and self.waiting is None

    def to_json(self) -> dict[str, object]:
        return {
            "step": str(self.step) if self.step else None,
            "reason": self.reason,
            "tried": [str(s) for s in self.tried],
            "over_budget": [str(s) for s in self.over_budget],
            "unavailable": [str(s) for s in self.unavailable],
            "waiting": str(self.waiting) if self.waiting else None,
        }


def used_today(history: Iterable[Attempt], step: Step, now: datetime) -> int:
    """How often ``step`` actually ran (dry runs excluded) in the 24 hours before ``now``."""
    since = now - timedelta(days=1)
    return sum(1 for a in history if a.step is step and a.outcome in RAN and since < a.at <= now)


def budget_left(history: Iterable[Attempt], step: Step, budget: Budget, now: datetime) -> int:
    return max(0, budget.limit(step) - used_today(list(history), step, now))


def next_step(
    code: str,
    *,
    caps: Capabilities,
    history: Sequence[Attempt],
    since: datetime,
    budget: Budget,
    now: datetime,
) -> Plan:
    """The next rung for a fault with finding ``code`` that began at ``since``.

    ``history`` is every attempt on this counter; those since the incident began count as
    tried (a rung that did not heal is not tried again for the same incident), all within the
    last day count against the budget. A healed attempt since ``since`` means the ladder is done.
    """
    rungs = rungs_for(code)
    if not rungs:
        return Plan(None, f"no safe remote fix for {code!r}")
    this_incident = [a for a in history if a.at >= since and a.outcome in RAN]
    if any(a.outcome is Outcome.HEALED for a in this_incident):
        return Plan(None, "already healed by the ladder", tried=_steps(this_incident))
    tried = _steps(this_incident)
    pending = next((a for a in this_incident if a.outcome is Outcome.PENDING), None)
    if pending is not None:
        return Plan(
            None,
            f"waiting to see whether {TITLES[pending.step]} brought the counter back",
            tried=tried,
            waiting=pending.step,
        )
    over, unavailable = [], []
    for step in rungs:
        if step in tried:
            continue
        if not caps.can(step):
            unavailable.append(step)
            continue
        if budget_left(history, step, budget, now) <= 0:
            over.append(step)
            continue
        return Plan(
            step,
            f"next rung: {TITLES[step]}",
            tried=tried,
            over_budget=tuple(over),
            unavailable=tuple(unavailable),
        )
    if over:
        barred = ", ".join(f"{TITLES[s]} ({budget.limit(s)} a day)" for s in over)
        reason = f"repair budget spent for today: {barred}"
    elif tried:
        reason = "every safe fix was tried; none healed the counter"
    else:
        reason = "no safe fix is available (no SSH or PoE command configured)"
    return Plan(None, reason, tried=tried, over_budget=tuple(over), unavailable=tuple(unavailable))


def heals(history: Iterable[Attempt], budget: Budget, now: datetime) -> list[Attempt]:
    """The healing attempts inside the repeat-offender window."""
    since = now - timedelta(days=budget.repeat_window_days)
    return [a for a in history if a.outcome is Outcome.HEALED and since < a.at <= now]


def repeat_offender(history: Iterable[Attempt], budget: Budget, now: datetime) -> bool:
    """Healed ``repeat_heals`` times within the window: an RMA candidate even while up.

    Several rungs healing in one incident would count once each; each heal ends an incident,
    so in practice one heal is one episode.
    """
    return len(heals(history, budget, now)) >= budget.repeat_heals


def _steps(attempts: Iterable[Attempt]) -> tuple[Step, ...]:
    seen: list[Step] = []
    for a in sorted(attempts, key=lambda a: a.at):
        if a.step not in seen:
            seen.append(a.step)
    return tuple(seen)
