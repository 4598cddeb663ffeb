"""The ``ffc-agent`` command line: the root group and where each command lives. Nothing else.

Each command group's code is in ``agent/commands/<group>.py``; this module maps the command
names to them and imports a module only when its command runs or shows its own help, so
``ffc-agent --help`` (and a mistyped command) costs click and nothing more: no paramiko,
pydantic, rich, numpy or probe is loaded to print a list. The one-line help shown in that list
is kept here beside the mapping (``COMMANDS``); a test checks it against each command's own.

People get rich tables on stdout and progress on stderr; scripts get ``--json``. Exit codes are
a contract: ``check`` speaks the Nagios plugin language (0 OK, 1 warning, 2 critical,
3 unknown), and any command given a bad configuration exits 78 (EX_CONFIG), which the systemd
unit treats as "do not restart".
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import click

# name → ("module:attribute" of the click command, the first line of its help)
COMMANDS: Mapping[str, tuple[str, str]] = {
    "analyze": (
        "agent.commands.analyze:analyze",
        "Judge exported data (a count CSV, snapshots, a manual tally) without a running fleet.",
    ),
    "assess": (
        "agent.commands.assess:assess_cmd",
        "Is it a real problem or a false alarm? The assessment to make before raising a ticket.",
    ),
    "bundle": ("agent.commands.bundle:bundle", "Diagnostics bundles for support."),
    "check": (
        "agent.commands.check:check",
        "Run one cycle against the configured counters and print the findings.",
    ),
    "config": (
        "agent.commands.config:config",
        "Check the configuration, or print an example to start from.",
    ),
    "demo": (
        "agent.commands.demo:demo",
        "Run the whole job on a simulated store and show what the agent found and filed.",
    ),
    "diagnose": (
        "agent.commands.diagnose:diagnose_cmd",
        "The full diagnostic checklist on COUNTER now, with a verdict and a bundle.",
    ),
    "enroll": (
        "agent.commands.enroll:enroll_cmd",
        "Pin COUNTER's SSH host key, deliberately (first contact, or a replaced unit).",
    ),
    "incidents": (
        "agent.commands.incidents:incidents_cmd",
        "List the incidents (open ones unless --all), with their ids and tickets.",
    ),
    "overview": (
        "agent.commands.overview:overview_cmd",
        "Open issues per site with SLA and action plan, data completeness, RMAs in progress.",
    ),
    "remote": (
        "agent.commands.remote:remote",
        "Remote-access sessions with a counter over SSH: recorded and audited.",
    ),
    "rma": (
        "agent.commands.rma:rma",
        "The RMA road: from a suspect counter to a verified replacement.",
    ),
    "run": (
        "agent.commands.run:run_cmd",
        "Run the service: a cycle every cycle_seconds until SIGTERM (systemd Type=notify).",
    ),
    "shadow": (
        "agent.commands.shadow:shadow",
        "Shadow mode: what the agent would have filed, and what it ruled out.",
    ),
    "silence": (
        "agent.commands.silence:silence",
        "Silences and maintenance windows: hold a counter's or site's findings for a while.",
    ),
    "simulate": (
        "agent.commands.simulate:simulate",
        "Run simulated counters on 127.0.0.1 and print the config to point the agent at them.",
    ),
    "status": (
        "agent.commands.status:status_cmd",
        "The fleet at a glance, from what the agent already knows (probes nothing).",
    ),
    "tickets": (
        "agent.commands.tickets:tickets",
        "The tickets the agent has filed, and their delivery.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported from ``lazy`` (name → ("module:attribute", short
    help)) when they are run or show their own help; the list in ``--help`` is drawn from the
    short helps alone."""

    def __init__(self, *args: object, lazy: Mapping[str, tuple[str, str]], **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name][0]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if n in self.lazy or n in self.commands]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.lazy:
                # the way click shortens a command's own help (its helper is deprecated in 8.5)
                text = click.Command(name, help=self.lazy[name][1]).get_short_help_str(limit)
            else:
                command = self.commands[name]
                if command.hidden:
                    continue
                text = command.get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """The commands' one error boundary for the state database: a damaged, foreign or full
        store is one line on stderr and a non-zero exit (65 for a schema this agent does not
        know, 1 otherwise), never a traceback."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # only a command that opened the store can raise its errors: nothing is imported
            # here for the ones that did not (a `--help` stays light)
            store = sys.modules.get("agent.store")
            sqlite3 = sys.modules.get("sqlite3")
            if store is not None and isinstance(exc, store.StoreError):
                click.echo(f"ffc-agent: {exc}", err=True)
                ctx.exit(exc.exit_code)
            if sqlite3 is not None and isinstance(exc, sqlite3.Error):
                # damage found past the open-time check, a lock held
                click.echo(f"ffc-agent: the state database failed: {exc}", err=True)
                ctx.exit(1)
            raise


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(package_name="ffc-agent")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """ffc-agent: device health and RMA agent for FootfallCam people counters."""
    from agent.service.logs import setup_logging

    # what a caller put in obj (a test's fake clock) is kept; see commands.common.clock
    ctx.obj = {**(ctx.obj or {}), "verbose": verbose}
    setup_logging(verbose)
    # Whatever the shell's umask, what a command writes (the store, tickets, bundles,
    # snapshots of people, known_hosts) is the user's alone, as under the unit's UMask=0077.
    previous = os.umask(0o077)
    ctx.call_on_close(lambda: os.umask(previous))


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    cli.main(args=argv, prog_name="ffc-agent")


if __name__ == "__main__":
    main()
