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

from diagnostics.checks.base import Check, DerivedCheck, Family, TicketKind
from diagnostics.model import Finding, Status, plural


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
    family = Family.AGENT
    ticket = TicketKind.NONE
    priority = 110
    ticket_subject = "The agent at {site}: {code} {since}"
    ticket_what = "The agent cannot deliver to one of its destinations. {said}"
    remediation: ClassVar[str] = (
        "Check the destination's settings and credentials in the config, "
        "then retry with `ffc-agent tickets retry`."
    )

    class Options(Check.Options):
        failures_for_finding: int = Field(
            1, ge=1, description="Items a destination refused for good before it is a finding."
        )

    options: Options

    def run(self, evidence: OutboxState) -> list[Finding]:
        out = []
        if not evidence.sinks:
            return [self._plain(evidence, Status.SKIP, "nothing_sent", "nothing queued yet")]
        for sink, state in evidence.sinks.items():
            failed = len(state.failed_keys)
            if failed < self.options.failures_for_finding:
                # an ok per destination ends an incident about it once it accepts again
                said = f"the destination {sink} accepts what the agent sends"
                out.append(self._plain(evidence, Status.OK, "accepting", said, sink))
                continue
            out.append(
                Finding(
                    check_id=self.id,
                    status=Status.FAIL,
                    code="destination_refuses",
                    summary=f"the destination {sink} refused {plural(failed, 'item')} for good; "
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

    def _plain(
        self, evidence: OutboxState, status: Status, code: str, summary: str, sink: str = ""
    ) -> Finding:
        return Finding(
            check_id=self.id,
            status=status,
            code=code,
            summary=summary,
            at=evidence.now,
            site=None,
            subject=f"sink:{sink}" if sink else evidence.serial,
            evidence={"sink": sink} if sink else {},
        )


class ProbeFailure(DerivedCheck):
    """The agent failed to probe a counter or to keep what it answered: its probe crashed, it
    was never started before the cycle's deadline, or its answer could not be recorded. Made by
    the runner (the probes are I/O); about the agent, so never a ticket about the device."""

    id: ClassVar[str] = "agent.probe"
    title: ClassVar[str] = "The agent probes every counter and keeps what it answered"
    applies_to = "counter"
    family = Family.AGENT
    ticket = TicketKind.NONE
    priority = 120
    ticket_subject = "The agent at {site}: {code} {since}"
    ticket_what = "The agent could not probe {low} or keep its answer. {said}"
    remediation: ClassVar[str] = (
        "Run `ffc-agent -vv check` to see the traceback in the debug log; a counter never "
        "probed in time means more slow counters than `max_parallel` allows."
    )
