"""Gateway health: is the box the agent runs on fit to judge the counters and file tickets?

A full state directory stops the agent recording anything; no default route or an unreachable
ticket destination means every counter looks offline and no ticket could leave anyway. These
are the gateway's own faults, and they must be reported as such — once, about the gateway —
and hold back counter tickets while they last (the false-alarm gate reads ``code``).

Gateway findings have ``subject="gateway"`` and ``site=None``: not a counter, not a site, but
not the agent's own ``error`` findings either (those have neither), so incidents key on
(``gateway.health``, "", "gateway") and open and resolve like any other. As with device health
there is one finding per cycle: the worst problem gives status and code, ``problems`` has all.
CPU load is recorded in the evidence but not judged: a busy gateway is not a fault by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from diagnostics.checks.base import Check, Family, TicketKind
from diagnostics.model import Finding, Observation, Status

GATEWAY = "gateway"
_MB = 1024 * 1024


@dataclass(frozen=True)
class GatewayEvidence:
    """What the agent knows about its own gateway at ``now``: the latest "gateway" probe.

    ``site`` and ``serial`` mirror ``CounterEvidence`` so the runner's generic handling (an
    ``error`` finding for a crashed check) works unchanged.
    """

    now: datetime
    observation: Observation | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    site: None = None
    serial: str = GATEWAY


class _Options(Check.Options):
    free_fail_pct: float = Field(
        5.0, ge=0, le=100, description="free space (%) in the state directory below which it fails"
    )
    free_fail_mb: float = Field(200.0, ge=0, description="free MB below which it fails")
    free_warn_pct: float = Field(10.0, ge=0, le=100, description="free space (%) that warns")
    memory_warn_pct: float = Field(5.0, ge=0, le=100, description="available memory (%) that warns")


class GatewayHealth(Check):
    id: ClassVar[str] = "gateway.health"
    title: ClassVar[str] = "Gateway fit to watch the counters and deliver tickets"
    applies_to = "gateway"
    family = Family.GATEWAY
    ticket = TicketKind.NONE  # the store's own box: its IT hears of it, not FootfallCam
    priority = 30
    ticket_subject = "{who} gateway problem ({code}) {since}"
    ticket_what = "The site gateway at {site}, which watches the counters, has a problem. {said}"
    remediation: ClassVar[str] = (
        "Fix the gateway first: free space in the agent's state directory, check its network "
        "cable and router, its NTP service, and that the helpdesk is reachable from the store."
    )

    class Options(_Options):
        pass

    options: _Options

    def run(self, evidence: GatewayEvidence) -> list[Finding]:
        obs = evidence.observation
        if obs is None:
            return [self._finding(evidence, Status.SKIP, "not_probed", "gateway not probed yet")]
        d = obs.data
        problems = self._problems(d)
        details = {**d, "problems": problems, "measured_at": obs.at.isoformat()}
        if not problems:
            return [self._finding(evidence, Status.OK, "healthy", "gateway healthy", **details)]
        worst = Status.FAIL if any(p["status"] == "fail" for p in problems) else Status.WARN
        code = next(p["code"] for p in problems if p["status"] == worst)
        summary = "; ".join(p["summary"] for p in problems)
        return [self._finding(evidence, worst, code, summary, **details)]

    def _problems(self, d: dict[str, Any]) -> list[dict[str, str]]:
        """Every problem, root causes first: no uplink explains unreachable destinations."""
        o, out = self.options, []

        def add(status: str, code: str, summary: str) -> None:
            out.append({"status": status, "code": code, "summary": summary})

        if d.get("has_default_route") is False:
            add("fail", "uplink_down", "no default route: the gateway is cut off from the network")
        down = [x for x in d.get("destinations") or [] if x.get("reachable") is False]
        if down:
            where = ", ".join(
                f"{x['destination']} ({x.get('error') or 'unreachable'})" for x in down
            )
            add("fail", "destination_unreachable", f"ticket destination unreachable: {where}")
        free_pct, free = d.get("disk_free_pct"), d.get("disk_free_bytes")
        if free_pct is not None and free is not None:
            state = f"{free / _MB:.0f} MB ({free_pct:g} %) free in {d.get('state_dir')}"
            if free_pct < o.free_fail_pct or free < o.free_fail_mb * _MB:
                add("fail", "disk_full", state)
            elif free_pct < o.free_warn_pct:
                add("warn", "disk_filling", state)
        mem = d.get("memory_available_pct")
        if mem is not None and mem < o.memory_warn_pct:
            add("warn", "memory_low", f"only {mem:g} % of memory available")
        if d.get("clock_synchronized") is False:
            add("warn", "clock_unsynchronised", "the gateway's clock is not NTP-synchronised")
        return out

    def _finding(
        self, ev: GatewayEvidence, status: Status, code: str, summary: str, **details: Any
    ) -> Finding:
        return Finding(
            check_id=self.id,
            status=status,
            code=code,
            summary=summary,
            at=ev.now,
            site=None,
            subject=GATEWAY,
            evidence=details,
            remediation=self.remediation if status in (Status.WARN, Status.FAIL) else "",
        )
