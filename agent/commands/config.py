"""``ffc-agent config check|example``: validate a configuration, or print one to start from."""

from __future__ import annotations

from pathlib import Path

import click

from agent.commands.common import _load, config_option_with
from diagnostics.model import plural


@click.group()
def config() -> None:
    """Check the configuration, or print an example to start from."""


@config.command("check")
@click.argument("file", type=click.Path(readable=False, path_type=Path), required=False)
@config_option_with("The file to check when FILE is not given.")
def config_check(file: Path | None, config_path: Path) -> None:
    """Validate FILE (default: the configured file): one line per bad field, exit 78 if any."""
    file = file or config_path
    cfg = _load(file)
    counts = ", ".join(
        plural(len(items), noun)
        for items, noun in ((cfg.sites, "site"), (cfg.counters, "counter"), (cfg.sinks, "sink"))
    )
    click.echo(f"{file}: OK ({counts})")


@config.command("example")
def config_example() -> None:
    """Print a commented example configuration."""
    from agent.config import example_config

    click.echo(example_config(), nl=False)
