"""``ffc-agent diagnose COUNTER``: the full checklist on one counter, now, for support.

Second-line support in a remote-access session wants one answer about one device: probe it
now (API, live view and SSH health, whatever their schedules say), run every check on it, pass
the findings through the false-alarm gate, say what is wrong, and hand over a bundle to attach
to the ticket. Every run goes into the audit log with who ran it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.runner import Plan, Runner
from diagnostics.assess import assess
from diagnostics.model import Assessed, Status


@dataclass
class Diagnosis:
    serial: str
    at: datetime
    steps: list[dict[str, Any]] = field(default_factory=list)
    assessed: list[Assessed] = field(default_factory=list)
    bundle_path: Path | None = None

    @property
    def verdict(self) -> str:
        genuine = [a for a in self.assessed if a.genuine]
        if any(a.finding.status is Status.FAIL for a in genuine):
            return "faulty"
        if genuine:
            return "degraded"
        if any(a.finding.status is Status.ERROR for a in self.assessed):
            return "unknown"
        return "healthy"

    def to_json(self) -> dict[str, Any]:
        return {
            "counter": self.serial,
            "at": self.at.isoformat(),
            "verdict": self.verdict,
            "steps": self.steps,
            "findings": [a.to_json() for a in self.assessed],
            "bundle": str(self.bundle_path) if self.bundle_path else None,
        }


def diagnose(
    runner: Runner,
    serial: str,
    *,
    actor: str,
    bundle_dir: Path,
    progress: Callable[[str], None] = lambda _s: None,
) -> Diagnosis:
    config, store = runner.config, runner.store
    counter = config.counter(serial)
    now = runner.clock.now()
    result = Diagnosis(serial, now)

    progress("probing the counter (API, live view, SSH)")
    deadline = time.monotonic() + max(3 * config.agent.probe_timeout_seconds, 30.0)
    plan = Plan(fetch_from=runner.plan(counter, now).fetch_from, snapshot=True, ssh=True)
    probed = runner.probe_counter(counter, now, deadline, plan)
    runner.record({serial: probed}, now)
    for obs in probed.observations:
        result.steps.append(
            {
                "step": f"probe {obs.probe}",
                "ok": obs.ok,
                "detail": obs.error or _short(obs.data),
                "elapsed_s": round(obs.elapsed_s, 3),
            }
        )
    if not counter.host:
        result.steps.append({"step": "probe", "ok": False, "detail": "no host configured"})

    progress("running every check")
    findings = runner.run_checks(runner.evidence(counter, now))
    calendars = {s.code: s.calendar() for s in config.sites}
    progress("ruling out false alarms")
    result.assessed = assess(findings, gate=runner.gate(now, calendars))
    for a in result.assessed:
        result.steps.append(
            {
                "step": a.finding.check_id,
                "ok": not a.finding.problem,
                "detail": a.finding.summary
                + (f" — {a.verdict.decision}: {'; '.join(a.verdict.reasons)}" if a.verdict else ""),
            }
        )

    progress("building the diagnostics bundle")
    made = runner.tickets.evidence.bundle(
        key=f"diagnose-{serial}-{now:%Y%m%dT%H%M%S}",
        site=counter.site,
        counters=(serial,),
        findings=result.assessed,
        started_at=now - timedelta(days=1),
        now=now,
        subject=f"Diagnosis of {serial} by {actor}",
    )
    bundle_dir.mkdir(parents=True, exist_ok=True)
    result.bundle_path = bundle_dir / made.name
    result.bundle_path.write_bytes(made.data)
    store.audit(
        now,
        actor,
        "diagnose",
        serial,
        {"verdict": result.verdict, "bundle": str(result.bundle_path), "sha256": made.sha256},
    )
    return result


def _short(data: dict[str, Any]) -> str:
    keep = {k: v for k, v in data.items() if k not in ("commands", "outputs", "notes")}
    text = ", ".join(f"{k}={v}" for k, v in keep.items())
    return text[:200]
