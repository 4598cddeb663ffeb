"""The one assembly point (``agent/app.py``), the one clock, and the lazy command line."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.app import App
from agent.cli import COMMANDS, cli
from agent.config import load_config
from agent.delivery.sinks import LocalSink
from simulator import FakeClock
from tests.agent.test_attach import write_config

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 11, 26, 15, 30, tzinfo=UTC)
# what ``ffc-agent --help`` must not load (issue 9): slow to import, and none is needed to list
HEAVY = ("paramiko", "holidays", "numpy", "PIL", "rich", "requests", "pydantic", "agent.probes")


def test_the_app_builds_each_part_once_and_the_parts_share_them(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    with App.open(load_config(write_config(tmp_path)), clock) as app:
        runner = app.runner
        assert app.runner is runner and runner.app is app
        assert runner.tickets is app.tickets and runner.sinks is app.sinks
        assert runner.redactor is app.redactor and runner.views is app.views
        assert runner.clock is clock and runner.store is app.store
        assert app.tickets.outbox is app.outbox and app.tickets.notifier is app.notifier
        assert app.tickets.evidence is app.bundler and app.bundler.redactor is app.redactor
        assert app.notifier.redactor is app.redactor
        assert [type(s) for s in app.sinks] == [LocalSink]
        store = app.store
    with pytest.raises(Exception, match="closed"):
        store.incidents()  # App.open closed the store it opened


def test_a_part_is_built_only_when_asked_for(tmp_path: Path) -> None:
    with App.open(load_config(write_config(tmp_path))) as app:
        assert app.outbox.items() == []
        assert "runner" not in vars(app) and "tickets" not in vars(app)


def test_given_sinks_are_used_instead_of_the_configured_ones(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    with App.open(config, sinks=[]) as app:
        assert app.sinks == [] and app.runner.sinks == [] and app.tickets.sinks == []


def test_a_command_takes_now_from_the_injected_clock(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    args = ["silence", "add", "FC3D000101", "--for", "2h", "--reason", "refit"]
    result = CliRunner().invoke(
        cli, [*args, "--config", str(path), "--json"], obj={"clock": FakeClock(NOW)}
    )
    assert result.exit_code == 0, result.output
    added = json.loads(result.stdout)
    assert added["start"] == NOW.isoformat()
    assert added["until"] == "2025-11-26T17:30:00+00:00"


def test_no_agent_code_reads_the_wall_clock_but_the_system_clock() -> None:
    """``datetime.now`` appears once in the house: ``diagnostics.model.SystemClock``."""
    calls = []
    for package in ("agent", "diagnostics", "rma"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("now", "utcnow", "today")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("datetime", "date")
                ):
                    calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == ["diagnostics/model.py:" + calls[0].rpartition(":")[2]], calls


# --- the lazy command line


def test_every_command_resolves_and_its_listed_help_is_its_own() -> None:
    ctx = click.Context(cli)
    for name, (target, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command), target
        assert command.name == name, target
        assert command.get_short_help_str(200) == short, name


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["stauts"])
    assert result.exit_code == 2 and "No such command 'stauts'" in result.output


@pytest.mark.parametrize(
    "args", [["--help"], ["status", "--help"], ["remote", "--help"], ["demo", "--help"]]
)
def test_help_loads_nothing_heavy(args: list[str]) -> None:
    script = (
        "import sys\n"
        "from agent.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_python_dash_m_agent_is_ffc_agent() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: ffc-agent" in done.stdout
    assert all(f"  {name} " in done.stdout for name in COMMANDS)
