"""The agent's own health: does what it decided to send actually leave the gateway?

A destination that refuses an item for good (a revoked API key, a mailbox rejecting the
sender) means tickets stop reaching support while the agent looks busy. The outbox does not
retry such an item forever; this check tells the store's IT instead, once per destination,
until the destination takes its items again (``ffc-agent tickets retry``).

Evidence: an ``OutboxState`` the agent reads from its store. Findings are about the agent, not a
counter or a site: ``subject="sink:<name>"``, ``site=None``; they never become FootfallCam tickets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from diagnostics.checks.base import Check
from diagnostics.model import Finding, Status


@dataclass(frozen=True)
class SinkState:
    """One destination's items: how many in each state, the oldest undelivered one's age (s),
    and the items refused for good (oldest first) with their keys and the last refusal."""

    counts: dict[str, int] = field(default_factory=dict)
    oldest_pending_s: float = 0.0
    failed_keys: tuple[str, ...] = ()
    last_error: str = ""


@dataclass(frozen=True)
class OutboxState:
    """The outbox at ``now``, per destination name. ``site``/``serial`` mirror the other
    evidence types so the runner's isolation (an ``error`` finding) works unchanged."""

    now: datetime
    sinks: dict[str, SinkState] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    site: None = None
    serial: str = "agent"


class OutboxHealth(Check):
    id: ClassVar[str] = "agent.outbox"
    title: ClassVar[str] = "Destinations accept what the agent sends"
    applies_to = "agent"
    remediation: ClassVar[str] = (
        "Check the destination's settings and credentials in the config, "
        "then retry with `ffc-agent tickets retry`."
    )

    class Options(Check.Options):
        failures_for_finding: int = Field(1, ge=1)  # items refused for good before a finding

    options: Options

    def run(self, evidence: OutboxState) -> list[Finding]:
        out = []
        for sink, state in evidence.sinks.items():
            failed = len(state.failed_keys)
            if failed < self.options.failures_for_finding:
                continue
            out.append(
                Finding(
                    check_id=self.id,
                    status=Status.FAIL,
                    code="destination_refuses",
                    summary=f"the destination {sink} refused {failed} item(s) for good; "
                    f"last: {state.last_error}",
                    at=evidence.now,
                    site=None,
                    subject=f"sink:{sink}",
                    evidence={
                        "sink": sink,
                        "failed": failed,
                        "last_error": state.last_error,
                        "keys": list(state.failed_keys[-10:]),
                    },
                    remediation=self.remediation,
                )
            )
        return out
