"""``ffc-agent enroll COUNTER``: pin a counter's SSH host key, deliberately.

First contact, or a replaced unit: the new key is compared by a person and pinned in the
agent's own ``known_hosts``; the old and new fingerprints go into the audit log (``ssh.enroll``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agent.commands.common import (
    _actor,
    _counter,
    _load,
    _print_json,
    clock,
    config_option,
    json_option,
    out,
)


@click.command("enroll")
@click.argument("serial", metavar="COUNTER")
@config_option
@json_option
def enroll_cmd(serial: str, config_path: Path, as_json: bool) -> None:
    """Pin COUNTER's SSH host key, deliberately (first contact, or a replaced unit)."""
    from agent.app import App
    from agent.probes.ssh import SshTarget, enroll, pinned_fingerprint
    from diagnostics.model import ProbeError

    cfg = _load(config_path)
    counter = _counter(cfg, serial, config_path)
    target = SshTarget.for_counter(counter)
    if target is None:
        raise click.ClickException(f"{serial} has no [counters.ssh] table: nothing to enroll")
    state_dir = Path(cfg.agent.state_dir)
    known_hosts = state_dir / "known_hosts"
    old = pinned_fingerprint(target, known_hosts)
    try:
        new = enroll(target, known_hosts, timeout=cfg.agent.probe_timeout_seconds)
    except ProbeError as exc:
        click.echo(f"enroll {serial}: {exc.message}", err=True)
        sys.exit(1)
    with App.open(cfg, clock()) as app:
        store = app.store
        store.audit(
            clock().now(),
            _actor(),
            "ssh.enroll",
            serial,
            {"host": str(target), "old": old, "new": new},
        )
    if as_json:
        _print_json({"counter": serial, "host": str(target), "previous": old, "fingerprint": new})
        return
    if old and old != new:
        out.print(f"[yellow]{serial}: host key replaced[/] (was {old})")
    out.print(f"{serial} ({target}): pinned {new}")
