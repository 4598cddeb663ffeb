"""Loading a configuration that is bad in ways a TOML parser does not expect: every failure is
one line and exit 78 from every command, never a traceback, a hang or click's exit 2, and no
value that may carry a credential is echoed (docs/reliability.md, "Configuration")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.config import EX_CONFIG, MAX_CONFIG_BYTES, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "Tk9planted0hookT0kenQ"  # planted in URLs: never in any output

GOOD = """\
[agent]
state_dir = "state"

[[sites]]
code = "S1"
name = "Shop"
timezone = "Europe/London"
[sites.opening_hours]
mon = "09:00-17:00"
"""


def counter(password_file: str) -> str:
    return (
        '\n[[counters]]\nserial = "C1"\nname = "Door"\nsite = "S1"\nhost = "127.0.0.1"\n'
        f'username = "admin"\npassword_file = "{password_file}"\n'
    )


def bad_files(tmp_path: Path) -> dict[str, Path]:
    """Every kind of bad file, each at its own path."""
    out: dict[str, Path] = {}
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    out["fifo"] = fifo
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    out["directory"] = folder
    big = tmp_path / "big.toml"
    big.write_text(GOOD + "#" * MAX_CONFIG_BYTES + "\n")
    out["oversized"] = big
    nested = tmp_path / "nested.toml"
    nested.write_text("a = " + "[" * 5000 + "\n")
    out["nested"] = nested
    zero = tmp_path / "zero.toml"
    zero.write_text(GOOD + counter("/dev/zero"))
    out["dev_zero_password"] = zero
    secret = tmp_path / "huge-secret"
    secret.write_text("x" * (64 * 1024 + 1))
    huge = tmp_path / "huge-secret.toml"
    huge.write_text(GOOD + counter(str(secret)))
    out["oversized_secret"] = huge
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(GOOD.encode() + "# caf\u00e9\n".encode("latin-1"))
    out["not_utf8"] = latin
    hook = tmp_path / "hook.toml"
    hook.write_text(
        GOOD + f'\n[notifications]\nemail = false\nchat_webhook_url = "htps://chat/hooks/{TOKEN}"\n'
    )
    out["webhook_url"] = hook
    rt = tmp_path / "rt.toml"
    rt.write_text(GOOD + f'\n[[sinks]]\ntype = "rt"\nurl = "htp://rt/{TOKEN}"\ntoken = "t"\n')
    out["rt_url"] = rt
    host = tmp_path / "host.toml"
    host.write_text(GOOD + counter("pw").replace('"127.0.0.1"', f'"http://u:{TOKEN}@10.0.0.1/"'))
    (tmp_path / "pw").write_text("pw\n")
    out["host_url"] = host
    return out


EXPECTED = {
    "fifo": "not a regular file",
    "directory": "is a directory",
    "oversized": "too large",
    "nested": "nested too deeply",
    "dev_zero_password": "not a regular file",
    "oversized_secret": "too large",
    "not_utf8": "not UTF-8",
    "webhook_url": "expected an http:// or https:// URL",
    "rt_url": "expected an http:// or https:// URL",
    "host_url": "expected a host name",
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return bad_files(tmp_path)


@pytest.mark.timeout(60)  # a FIFO must not block: a hang here is the bug
def test_every_bad_file_is_one_config_error_naming_what_is_wrong(files):
    for kind, path in files.items():
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        lines = caught.value.lines
        assert len(lines) == 1, (kind, lines)
        assert EXPECTED[kind] in lines[0], (kind, lines)
        assert TOKEN not in lines[0], (kind, lines)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "command", [["config", "check"], ["check", "--config"], ["status", "--config"]]
)
def test_every_command_exits_78_with_one_line_for_every_bad_file(files, command):
    for kind, path in files.items():
        result = CliRunner().invoke(cli, [*command, str(path)])
        assert result.exit_code == EX_CONFIG, (kind, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and EXPECTED[kind] in lines[0], (kind, result.output)
        assert TOKEN not in result.output and "Traceback" not in result.output


def test_an_unreadable_file_is_exit_78(tmp_path):
    """Root reads any file, so as root a forked child drops to nobody, to whom it is closed."""
    config = tmp_path / "ffc-agent.toml"
    config.write_text(GOOD)
    config.chmod(0o000)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, just the command and its exit code
        try:
            os.close(read)
            # nobody may not read the interpreter's own library (a Python under /root): load
            # what the command imports while still root, then drop
            CliRunner().invoke(cli, ["config", "check", "--help"])
            import agent.config  # noqa: F401

            if os.geteuid() == 0:
                os.setuid(65534)
            result = CliRunner().invoke(cli, ["config", "check", str(config)])
            os.write(write, f"{result.exit_code}\n{result.output}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    code, *lines = out.strip().splitlines()
    assert int(code) == EX_CONFIG, out
    assert lines == [f"{config}: cannot read: Permission denied"]


def test_the_service_exits_78_at_start_for_a_fifo_and_does_not_hang(tmp_path):
    fifo = tmp_path / "ffc-agent.toml"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(fifo)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == EX_CONFIG, done.stderr
    assert done.stderr.strip().splitlines() == [f"{fifo}: not a regular file"]


def test_a_good_file_still_loads(tmp_path):
    path = tmp_path / "ffc-agent.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.agent.keep_slots_days == 400 and config.agent.keep_findings_days == 30
