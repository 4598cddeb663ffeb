"""The README's first ten minutes: the commands a newcomer copies must work as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SCRIPT = (ROOT / "scripts" / "test").read_text(encoding="utf-8")


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_the_first_command_installs_into_a_venv() -> None:
    # A stock Debian or Ubuntu python3 refuses `pip install` outside a venv (PEP 668).
    first = blocks()[0]
    steps = [shlex.split(step) for step in first.strip().split("&&")]
    assert steps[0] == ["python3", "-m", "venv", ".venv"]
    for argv in steps[1:]:
        assert argv[0].startswith(".venv/bin/"), argv  # nothing runs outside the venv
    assert any(argv[:2] == [".venv/bin/pip", "install"] for argv in steps)
    assert steps[-1] == [".venv/bin/ffc-agent", "demo"]


def test_no_command_block_pip_installs_into_the_system_python() -> None:
    for block in blocks():
        assert not re.search(r"(^|[\s;&|])(python3 -m pip|pip3?) install", block), block


def test_the_test_command_is_what_ci_runs() -> None:
    assert blocks()[1].strip() == "bash scripts/test"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.strip().splitlines()[-1] == "bash scripts/test"


def test_scripts_test_uses_a_venv_for_everything_it_installs_and_runs() -> None:
    lines = [line.split("#")[0].strip() for line in SCRIPT.splitlines()]
    lines = [line for line in lines if line]
    assert "[ -x .venv/bin/python ] || python3 -m venv .venv" in lines
    assert "py=.venv/bin/python" in lines
    runs = [line for line in lines if re.match(r"(python3?|\"\$py\") -m ", line)]
    assert runs, "no tool runs"
    for line in runs:
        assert line.startswith('"$py" -m '), line
    for tool in ("pip install", "ruff check", "ruff format --check", "mypy", "pytest"):
        assert any(line.startswith(f'"$py" -m {tool}') for line in runs), tool


def test_scripts_test_installs_what_the_readme_says() -> None:
    needed = set(re.findall(r"^need ([\w.+-]+)", SCRIPT, flags=re.M))
    needed |= set(re.findall(r"; need ([\w.+-]+)", SCRIPT))
    for package in ("openssh-server", "chromium", "request-tracker5", "mosquitto", "prometheus"):
        assert package in needed
    assert "python3-venv" in needed
    for name in ("Chromium", "Request Tracker", "mosquitto", "sshd", "Prometheus", "root"):
        assert name in README.split("## What the demo shows")[0], name
