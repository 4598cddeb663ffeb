"""``ffc-agent diagnose COUNTER``: the full checklist on one counter, now, for support.

Second-line support in a remote-access session wants one answer about one device: probe it
now (API, live view and SSH health, whatever their schedules say), run every check on it, pass
the findings through the false-alarm gate, say what is wrong, and hand over a bundle to attach
to the ticket. Every run goes into the audit log with who ran it.

It exits as ``check`` does, so a script or a monitoring plugin can act on it: 0 healthy,
1 degraded or suspect (a problem still awaiting confirmation), 2 faulty, 3 unknown (a check
itself broke).
"""

from __future__ import annotations

import sys
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
from diagnostics.model import Assessed, Decision, Status

if TYPE_CHECKING:
    from agent.app import App


@click.command("diagnose")
@click.argument("serial", metavar="COUNTER")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the bundle (default: <state_dir>/bundles).",
)
@config_option
@json_option
def diagnose_cmd(serial: str, output_dir: Path | None, config_path: Path, as_json: bool) -> None:
    """The full diagnostic checklist on COUNTER now, with a verdict and a bundle.

    Exits 0 healthy, 1 degraded or suspect (awaiting confirmation), 2 faulty, 3 unknown (a
    check broke), as `check` does.
    """
    from agent.app import App

    cfg = _load(config_path)
    if serial not in {c.serial for c in cfg.counters}:
        raise click.BadParameter(f"no counter {serial!r} in {config_path}", param_hint="COUNTER")
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
        sys.exit(result.exit_code)
    for step in result.steps:
        out.print(f"{_MARKS[step['status']]} {step['step']}: {step['detail']}")
    verdict = VERDICTS[result.verdict]
    out.print(
        f"\n[bold {verdict.colour}]{serial}: {verdict.words}[/]  bundle: {result.bundle_path}"
    )
    sys.exit(result.exit_code)


@dataclass(frozen=True)
class _Verdict:
    words: str  # as a person reads it
    colour: str
    exit_code: int  # check's (Nagios) convention


VERDICTS = {
    "healthy": _Verdict("healthy", "green", 0),
    "degraded": _Verdict("degraded", "yellow", 1),
    "suspect": _Verdict("suspect (awaiting confirmation)", "yellow", 1),
    "faulty": _Verdict("faulty", "red", 2),
    "unknown": _Verdict("unknown (a check could not run)", "magenta", 3),
}
# a step's mark: a skipped check neither passed nor failed, and one awaiting confirmation is open
_MARKS = {
    "ok": "[green]✓[/]",
    "skip": "[dim]–[/]",
    "pending": "[yellow]?[/]",
    "warn": "[yellow]✗[/]",
    "fail": "[red]✗[/]",
    "error": "[magenta]![/]",
}


@dataclass
class Diagnosis:
    serial: str
    at: datetime
    steps: list[dict[str, Any]] = field(default_factory=list)
    assessed: list[Assessed] = field(default_factory=list)
    bundle_path: Path | None = None

    @property
    def verdict(self) -> str:
        """``faulty`` or ``degraded`` for a confirmed problem, ``suspect`` for one the gate
        still waits to confirm (never ``healthy``: the live view may well be covered)."""
        genuine = [a for a in self.assessed if a.genuine]
        if any(a.finding.status is Status.FAIL for a in genuine):
            return "faulty"
        if genuine:
            return "degraded"
        if any(_pending(a) for a in self.assessed):
            return "suspect"
        if any(a.finding.status is Status.ERROR for a in self.assessed):
            return "unknown"
        return "healthy"

    @property
    def exit_code(self) -> int:
        return VERDICTS[self.verdict].exit_code

    def to_json(self) -> dict[str, Any]:
        return {
            "counter": self.serial,
            "at": self.at.isoformat(),
            "verdict": self.verdict,
            "exit_code": self.exit_code,
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
                "status": "ok" if obs.ok else "fail",
                "detail": obs.error or _short(obs.data),
                "elapsed_s": round(obs.elapsed_s, 3),
            }
        )
    if not counter.host:
        result.steps.append(
            {"step": "probe", "ok": False, "status": "fail", "detail": "no host configured"}
        )

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
                "status": "pending" if _pending(a) else str(a.finding.status),
                "detail": a.finding.summary
                + (f" — {a.verdict.decision}: {'; '.join(a.verdict.reasons)}" if a.verdict else ""),
            }
        )

    progress("building the diagnostics bundle")
    made = app.bundler.bundle(
        key=f"diagnose-{serial}",  # the bundle's name adds the time, once
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


def _pending(a: Assessed) -> bool:
    """A problem the gate has not decided on yet, or one its check still waits to confirm."""
    decided = a.verdict is not None and a.verdict.decision is not Decision.PENDING
    return a.finding.unconfirmed or (a.finding.problem and not decided)


def _short(data: dict[str, Any]) -> str:
    keep = {k: v for k, v in data.items() if k not in ("commands", "outputs", "notes")}
    text = ", ".join(f"{k}={v}" for k, v in keep.items())
    return text[:200]
