"""``ffc-agent config check|example``: validate a configuration, or print one to start from."""

from __future__ import annotations

from pathlib import Path

import click

from agent.commands.common import CONFIG_ENV, DEFAULT_CONFIG, _load, plural


@click.group()
def config() -> None:
    """Check the configuration, or print an example to start from."""


@config.command("check")
@click.argument("file", type=click.Path(readable=False, path_type=Path), required=False)
@click.option(
    "--config",
    "config_path",
    # no dir_okay=False, readable=False: click would exit 2 for a directory or an unreadable
    # file; load_config says what is wrong, exit 78
    type=click.Path(readable=False, path_type=Path),
    envvar=CONFIG_ENV,
    default=DEFAULT_CONFIG,
    show_default=True,
    show_envvar=True,
    help="The file to check when FILE is not given.",
)
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
