"""``ffc-agent remote fix COUNTER STEP``: one rung of the remediation ladder, run by a person.

The same steps the agent climbs on its own (renew the API token, restart the counting service,
reboot, power-cycle the PoE port), for second-line support in a remote-access session. It asks
for confirmation unless ``--yes``, honours ``--dry-run``, checks the counter again afterwards,
and goes into the repairs table and the audit log with the person's login name as the actor —
so it counts against the same per-counter budget, which a person may knowingly exceed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from agent.commands.common import (
    _actor,
    _counter,
    _load,
    clock,
    config_option,
    fail,
    json_option,
    out,
)
from rma.ladder import TITLES, Outcome, Step, budget_left


@click.command("fix", epilog=f"STEP is one of: {', '.join(s.value for s in Step)}.")
@click.argument("serial", metavar="COUNTER")
@click.argument("step", metavar="STEP", type=click.Choice([s.value for s in Step]))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Say what would run; touch nothing.")
@config_option
@json_option
def fix(serial: str, step: str, yes: bool, dry_run: bool, config_path: Path, as_json: bool) -> None:
    """Run one remediation STEP on COUNTER now, checked afterwards and audited."""
    from agent.app import App

    cfg = _load(config_path)
    counter = _counter(cfg, serial, config_path)
    chosen = Step(step)
    with App.open(cfg, clock()) as app:
        runner = app.runner
        fixer = runner.remediator
        if not fixer.caps(counter).can(chosen):
            fail(
                f"remote fix: {TITLES[chosen]} is not possible on {serial} "
                "(needs [counters.ssh] or [remediation] poe_command)",
                as_json=as_json,
            )
        now = runner.clock.now()
        left = budget_left(fixer.rmas.attempts(serial), chosen, fixer.budget(), now)
        dry = dry_run or cfg.remediation.dry_run
        if not dry and not yes:
            note = "" if left > 0 else " (the agent's daily budget for it is spent)"
            click.confirm(f"{TITLES[chosen]} on {serial}{note}?", abort=True, err=True)
        attempt = fixer.run_step(counter, chosen, actor=_actor(), dry_run=dry)
    data = {
        "counter": serial,
        "step": chosen.value,
        "outcome": attempt.outcome.value,
        "detail": attempt.detail,
        "actor": attempt.actor,
        "at": attempt.at.isoformat(),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        out.print(f"{serial}: {TITLES[chosen]} — {attempt.outcome.value}: {attempt.detail}")
    if attempt.outcome in (Outcome.FAILED, Outcome.NOT_HEALED):
        sys.exit(1)
