"""``ffc-agent bundle create COUNTER``: a redacted diagnostics bundle, built by hand.

From what the agent already holds (nothing is probed); the bundle's sha256 and size go into
the audit log (``bundle.create``).
"""

from __future__ import annotations

from datetime import timedelta
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


@click.group()
def bundle() -> None:
    """Diagnostics bundles for support."""


@bundle.command("create")
@click.argument("serial", metavar="COUNTER")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the .tar.gz (default: its own name, here).",
)
@config_option
@json_option
def bundle_create(serial: str, output: Path | None, config_path: Path, as_json: bool) -> None:
    """Build a redacted diagnostics bundle for COUNTER from what the agent holds."""
    from agent.app import App

    cfg = _load(config_path)
    counter = _counter(cfg, serial, config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        findings = [r for r in app.store.latest_findings() if r["subject"] == serial]
        made = app.bundler.bundle(
            key=f"manual-{serial}",  # the bundle's name adds the time, once
            site=counter.site,
            counters=(serial,),
            findings=findings,
            started_at=now - timedelta(days=1),
            now=now,
            subject=f"Diagnostics bundle for {serial}",
        )
        app.store.audit(
            now, _actor(), "bundle.create", serial, {"sha256": made.sha256, "size": made.size}
        )
    path = output or Path(made.name)
    path.write_bytes(made.data)
    if as_json:
        _print_json(
            {"path": str(path), "size": made.size, "sha256": made.sha256, "manifest": made.manifest}
        )
        return
    out.print(f"{path}: {made.size:,} bytes, sha256 {made.sha256}")
