"""``ffc-agent run``: the service (``agent/service/daemon.py``), as systemd starts it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agent.commands.common import config_option


@click.command("run")
@config_option
@click.pass_context
def run_cmd(ctx: click.Context, config_path: Path) -> None:
    """Run the service: a cycle every cycle_seconds until SIGTERM (systemd Type=notify)."""
    from agent.service.daemon import Daemon

    verbose = (ctx.obj or {}).get("verbose", 0)
    sys.exit(Daemon(config_path, verbosity=max(verbose, 1)).run())
