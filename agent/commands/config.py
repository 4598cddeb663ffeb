"""``ffc-agent config check|example``: validate a configuration, or print one to start from."""

from __future__ import annotations

from pathlib import Path

import click

from agent.commands.common import _load


@click.group()
def config() -> None:
    """Check the configuration, or print an example to start from."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE: one line per bad field, exit 78 if any."""
    cfg = _load(file)
    click.echo(
        f"{file}: OK ({len(cfg.sites)} sites, {len(cfg.counters)} counters, {len(cfg.sinks)} sinks)"
    )


@config.command("example")
def config_example() -> None:
    """Print a commented example configuration."""
    from agent.config import example_config

    click.echo(example_config(), nl=False)
