"""What every ``ffc-agent`` command shares: the --config and --json options, loading the
configuration (one line per bad field, exit 78), the consoles, the clock, who is at the
keyboard, and whether anyone is there to answer a question.

Cheap to import on purpose: ``ffc-agent --help`` and every command's ``--help`` load this
module, so rich, pydantic and the rest are imported where they are first used.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from diagnostics.model import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from rich.table import Table

    from agent.config import Config, ConfigError, CounterConfig

DEFAULT_CONFIG = "/etc/ffc-agent/ffc-agent.toml"
CONFIG_ENV = "FFC_AGENT_CONFIG"
EX_DATAERR = 65  # sysexits: the input data was incorrect (a bad count CSV)


class _Console:
    """A rich console made on first use (rich is slow to import, and --help needs none)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def config_option_with(help: str) -> Callable[[F], F]:
    """``--config FILE`` (or ``FFC_AGENT_CONFIG``), with the help a command gives it."""
    return click.option(
        "--config",
        "config_path",
        # no dir_okay=False, readable=False: click would exit 2 for a directory or an
        # unreadable file; load_config says what is wrong, exit 78
        type=click.Path(readable=False, path_type=Path),
        envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG,
        show_default=True,
        show_envvar=True,
        help=help,
    )


config_option = config_option_with("The agent's TOML configuration.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


def table(
    title: str,
    columns: Iterable[str],
    *,
    whole: Collection[str] = (),
    **options: Any,
) -> Table:
    """A table for people that stays readable at 80 columns. Nothing is ever cut to an
    ellipsis: a cell wraps at its spaces, and a word too wide for its column (a check id, a
    path) folds onto the next line, so all of it is there to copy. Too wide a table narrows
    its widest wrapping columns first (a summary before a date); ``whole`` columns (serials,
    ticket numbers, ids: short words that must read whole) do not wrap and give up width
    only after all the others. Every command's tables are made here."""
    from rich.table import Table

    made = Table(title=title, title_justify="left", **options)
    for name in columns:
        made.add_column(
            name,
            overflow="fold",
            no_wrap=name in whole,
        )
    return made


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def fail(message: str, *, as_json: bool, code: int = 1, hint: str = "") -> NoReturn:
    """A command's error, as one line (and what to do about it, if known): on stderr for a
    person, or under --json as ``{"error": message, "hint": hint}`` on stdout, so a script
    reads JSON whatever happened; then exit ``code``. The caller passes text already free of
    secrets (probe errors are scrubbed where they are made)."""
    if as_json:
        _print_json({"error": message, **({"hint": hint} if hint else {})})
    else:
        click.echo(f"Error: {message}", err=True)
        if hint:
            click.echo(hint, err=True)
    sys.exit(code)


def _config_failed(exc: ConfigError) -> NoReturn:
    from agent.config import EX_CONFIG

    for line in exc.lines:
        click.echo(line, err=True)
    sys.exit(EX_CONFIG)


def _counter(cfg: Config, serial: str, config_path: Path) -> CounterConfig:
    """The configured counter ``serial``, or click's usage error naming the file."""
    try:
        return cfg.counter(serial)
    except KeyError:
        raise click.BadParameter(
            f"no counter {serial!r} in {config_path}", param_hint="COUNTER"
        ) from None


def _load(path: Path) -> Config:
    """The configuration, or its error lines and exit 78. From here on, every log line of the
    command is also scrubbed of the configuration's secrets by value."""
    from agent.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        if _missing(path):  # a first run: say where else the file can come from
            exc.lines.append(
                f"give the file with --config FILE or {CONFIG_ENV}=FILE "
                f"(default {DEFAULT_CONFIG}); `ffc-agent config example` prints one to start from"
            )
        _config_failed(exc)
    from agent.service.logs import setup_logging
    from rma.redact import Redactor

    ctx = click.get_current_context(silent=True)
    verbose = ((ctx.find_root().obj or {}) if ctx else {}).get("verbose", 0)
    setup_logging(verbose, redactor=Redactor(config.secret_values()))
    return config


def _missing(path: Path) -> bool:
    """No such file (not: a file that cannot be looked at, which is another error)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def clock() -> Clock:
    """The command's clock: the root context's ``obj["clock"]`` if one was given (a test's
    fake: ``CliRunner().invoke(cli, args, obj={"clock": fake})``), else the system clock."""
    ctx = click.get_current_context(silent=True)
    obj = (ctx.find_root().obj or {}) if ctx else {}
    return obj.get("clock") or SYSTEM_CLOCK


def interactive() -> bool:
    """Whether a person is at the keyboard to answer questions: stdin is a terminal, unless
    the root context's ``obj["interactive"]`` says otherwise (a test's, as with ``clock``:
    ``CliRunner().invoke(cli, args, input=..., obj={"interactive": True})``). A script, a
    pipe or the service never is, so nothing ever waits on a question there."""
    ctx = click.get_current_context(silent=True)
    obj = (ctx.find_root().obj or {}) if ctx else {}
    if "interactive" in obj:
        return bool(obj["interactive"])
    return sys.stdin.isatty()


def _aware(text: str, what: str) -> datetime:
    """An ISO-8601 time with its UTC offset, or a usage error naming the option ``what``."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 time: {text!r}", param_hint=what) from None
    if when.tzinfo is None:
        raise click.BadParameter("give the time with its UTC offset", param_hint=what)
    return when


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
