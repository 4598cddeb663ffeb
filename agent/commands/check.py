"""``ffc-agent check``: one cycle, its findings, and a Nagios plugin's exit code.

Exits 0 OK, 1 warning, 2 critical, 3 unknown (the cycle itself failed), and prints the
plugin's one status line with performance data, so it plugs into Nagios or Icinga.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.commands.common import (
    _load,
    _print_json,
    clock,
    config_option,
    json_option,
    out,
    table,
)
from diagnostics.model import Assessed, Status

if TYPE_CHECKING:
    from agent.config import Config

NAGIOS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def nagios_code(assessed: Iterable[Assessed]) -> int:
    items = list(assessed)
    genuine = [a for a in items if a.genuine]
    if any(a.finding.status is Status.FAIL for a in genuine):
        return 2
    if genuine:
        return 1
    if any(a.finding.status is Status.ERROR for a in items):
        return 3
    return 0


@click.command("check")
@config_option
@json_option
@click.option("--dry-run", is_flag=True, help="Decide as usual; queue and send no ticket.")
def check(config_path: Path, as_json: bool, dry_run: bool) -> None:
    """Run one cycle against the configured counters and print the findings.

    Exits 0 OK, 1 warning, 2 critical, 3 unknown, as a Nagios or Icinga plugin does.
    """
    from agent.app import App

    cfg = _load(config_path)
    try:
        with App.open(cfg, clock(), dry_run=dry_run) as app:
            result = app.runner.run_cycle()
    except Exception as exc:  # process boundary: the plugin must answer UNKNOWN, not crash
        from agent.store import StoreError

        if not isinstance(exc, StoreError):  # a store error is its own one line, no traceback
            logging.getLogger(__name__).exception("cycle failed")
        click.echo(f"FFC-AGENT UNKNOWN - the cycle failed: {exc}")
        sys.exit(3)
    code = nagios_code(result.assessed)
    if as_json:  # the evidence was scrubbed at the probe; scrubbed again on the way out
        _print_json(app.redactor.data([a.to_json() for a in result.assessed]))
    else:
        problems = sorted(result.problems, key=lambda a: a.finding.status is not Status.FAIL)
        head = (
            "; ".join(f"{a.finding.subject or a.finding.site} {a.finding.code}" for a in problems)
            or "all counters healthy"
        )
        click.echo(f"FFC-AGENT {NAGIOS[code]} - {head} | {perfdata(result, cfg)}")
        _findings_table(result.assessed)
        for t in result.composed if dry_run else ():
            click.echo(f"would file: [{t.category}] {t.subject}")
    sys.exit(code)


def perfdata(result: Any, cfg: Config) -> str:
    """Nagios performance data: counters up, problems by severity, ruled out, cycle time."""
    probed = sum(1 for c in cfg.counters if c.host)
    from diagnostics.checks import counter_up

    up = sum(1 for a in result.assessed if counter_up(a.finding))
    crit = sum(1 for a in result.problems if a.finding.status is Status.FAIL)
    warn = len(result.problems) - crit
    return (
        f"counters_up={up};;{probed};0;{probed} critical={crit};;;0 warning={warn};;;0 "
        f"ruled_out={len(result.ruled_out)};;;0 cycle={result.duration_s:.2f}s;;;0"
    )


def _findings_table(assessed: list[Assessed], title: str = "Findings") -> None:
    shown = table(
        title,
        ("counter", "site", "check", "status", "verdict", "summary"),
        whole=("counter", "site"),
    )
    for a in assessed:
        f = a.finding
        verdict = str(a.verdict.decision) if a.verdict else ""
        style = {"fail": "red", "warn": "yellow", "error": "magenta"}.get(str(f.status), "")
        shown.add_row(
            f.subject or "-",
            f.site or "-",
            f.check_id,
            f"[{style}]{f.status}[/]" if style else str(f.status),
            verdict,
            f.summary,
        )
    out.print(shown)
