"""What every ``ffc-agent`` command shares: the --config and --json options, loading the
configuration (one line per bad field, exit 78), the consoles, and who is at the keyboard."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from agent.config import EX_CONFIG, Config, ConfigError, load_config

DEFAULT_CONFIG = "/etc/ffc-agent/ffc-agent.toml"
CONFIG_ENV = "FFC_AGENT_CONFIG"

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

config_option = click.option(
    "--config",
    "config_path",
    # no dir_okay=False: click would exit 2 for a directory; load_config says why, exit 78
    type=click.Path(path_type=Path),
    envvar=CONFIG_ENV,
    default=DEFAULT_CONFIG,
    show_default=True,
    show_envvar=True,
    help="The agent's TOML configuration.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _config_failed(exc: ConfigError) -> NoReturn:
    for line in exc.lines:
        click.echo(line, err=True)
    sys.exit(EX_CONFIG)


def _load(path: Path) -> Config:
    """The configuration, or its error lines and exit 78. From here on, every log line of the
    command is also scrubbed of the configuration's secrets by value."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        _config_failed(exc)
    from agent.service.logs import setup_logging
    from rma.redact import Redactor

    ctx = click.get_current_context(silent=True)
    verbose = ((ctx.find_root().obj or {}) if ctx else {}).get("verbose", 0)
    setup_logging(verbose, redactor=Redactor(config.secret_values()))
    return config


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
