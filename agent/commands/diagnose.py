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
from typing import TYPE_CHECKING, Any

import click

from agent.commands.common import (
    _actor,
    _load,
    _print_json,
    clock,
    config_option,
    err,
    json_option,
    out,
)
from diagnostics.model import Assessed, Status

if TYPE_CHECKING:
    from agent.app import App


@click.command("diagnose")
@click.argument("serial")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the bundle (default: <state_dir>/bundles).",
)
@config_option
@json_option
def diagnose_cmd(serial: str, output_dir: Path | None, config_path: Path, as_json: bool) -> None:
    """The full diagnostic checklist on COUNTER now, with a verdict and a bundle."""
    from agent.app import App

    cfg = _load(config_path)
    if serial not in {c.serial for c in cfg.counters}:
        raise click.BadParameter(f"no counter {serial!r} in {config_path}", param_hint="SERIAL")
    with App.open(cfg, clock(), dry_run=True) as app:
        with err.status(f"diagnosing {serial}") as spinner:
            result = diagnose(
                app,
                serial,
                actor=_actor(),
                bundle_dir=output_dir or Path(cfg.agent.state_dir) / "bundles",
                progress=lambda text: spinner.update(f"{serial}: {text}"),
            )
    if as_json:
        _print_json(result.to_json())
        return
    for step in result.steps:
        mark = "[green]✓[/]" if step["ok"] else "[red]✗[/]"
        out.print(f"{mark} {step['step']}: {step['detail']}")
    colour = {"healthy": "green", "degraded": "yellow", "faulty": "red"}.get(result.verdict, "")
    out.print(f"\n[bold {colour}]{serial}: {result.verdict}[/]  bundle: {result.bundle_path}")


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
    app: App,
    serial: str,
    *,
    actor: str,
    bundle_dir: Path,
    progress: Callable[[str], None] = lambda _s: None,
) -> Diagnosis:
    from agent.runner import Plan
    from diagnostics.assess import assess

    config, store, runner = app.config, app.store, app.runner
    counter = config.counter(serial)
    now = app.clock.now()
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
    made = app.bundler.bundle(
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
