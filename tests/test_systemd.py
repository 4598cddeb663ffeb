"""The systemd unit, its sysusers and tmpfiles snippets, checked by systemd's own tools.

``systemd-analyze verify`` must accept the unit without a word about it, and
``systemd-analyze security --offline=true`` must rate its exposure 2.0 or lower. The snippets
are applied by ``systemd-sysusers``/``systemd-tmpfiles --root`` to a scratch root. Debian's
``systemd`` package provides the tools (no running systemd is needed); without them these tests
skip, and fail under ``CI=true``. The fast tests at the top need nothing: they hold the unit to
the code's own constants (the config path, EX_CONFIG, the state directory).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.commands.common import DEFAULT_CONFIG
from agent.config import DEFAULT_STATE_DIR, EX_CONFIG

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "ffc-agent.service"
SYSUSERS = ROOT / "systemd" / "ffc-agent.sysusers"
TMPFILES = ROOT / "systemd" / "ffc-agent.tmpfiles"
SHIPPED_EXEC = "/usr/local/bin/ffc-agent"
MAX_EXPOSURE = 2.0
TOOL_TIMEOUT_S = 120


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key`` → every value it is given, in order (unit files repeat keys; configparser can't)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or line.startswith("["):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return unit_settings(UNIT.read_text())


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key, [])
    assert len(values) == 1, f"{key}= should be set once, got {values}"
    return values[0]


# --- the unit against the code (fast, no systemd needed) ---------------------------------------


def test_the_unit_runs_the_daemon_with_the_default_config(unit: dict[str, list[str]]) -> None:
    assert one(unit, "ExecStart") == f"{SHIPPED_EXEC} run --config {DEFAULT_CONFIG}"
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"


def test_a_config_error_is_not_restarted(unit: dict[str, list[str]]) -> None:
    assert one(unit, "Restart") == "on-failure"
    assert str(EX_CONFIG) in one(unit, "RestartPreventExitStatus").split()
    assert one(unit, "WatchdogSec")


def test_a_state_file_of_an_unknown_schema_is_not_restarted(unit: dict[str, list[str]]) -> None:
    from agent.store import EX_SCHEMA

    assert str(EX_SCHEMA) in one(unit, "RestartPreventExitStatus").split()
    assert one(unit, "StateDirectoryMode") == "0700"


def test_the_state_directory_is_the_configs_default(unit: dict[str, list[str]]) -> None:
    assert Path("/var/lib") / one(unit, "StateDirectory") == DEFAULT_STATE_DIR


def test_the_service_user_is_the_one_sysusers_creates(unit: dict[str, list[str]]) -> None:
    entries = [line.split() for line in SYSUSERS.read_text().splitlines() if line[:2] == "u "]
    assert [e[1] for e in entries] == [one(unit, "User")]
    assert one(unit, "Group") == one(unit, "User")
    assert "DynamicUser" not in unit  # the state (known_hosts, tickets) keeps one owner


def test_every_credential_has_a_default_and_lives_beside_the_config(
    unit: dict[str, list[str]],
) -> None:
    loads = dict(v.split(":", 1) for v in unit["LoadCredential"])
    defaults = dict(v.split(":", 1) for v in unit["SetCredential"])
    assert "counter-password" in loads
    # A missing source file must not stop the unit from starting (SetCredential= is the
    # fallback), and a command run by hand must find the same file by the same relative name
    # (config.py resolves it against the config file's folder outside systemd).
    assert set(defaults) == set(loads)
    assert all(value == r"\n" for value in defaults.values())
    for name, source in loads.items():
        assert Path(source) == Path(DEFAULT_CONFIG).parent / name


def test_psutil_keeps_its_proc_files(unit: dict[str, list[str]]) -> None:
    # ProcSubset=pid hides /proc/meminfo, /proc/loadavg and /proc/net/route: the gateway
    # health probe would report "unknown" for memory, load and uplink.
    assert unit.get("ProcSubset", ["all"]) == ["all"]
    assert "AF_INET" in one(unit, "RestrictAddressFamilies").split()


# --- systemd's own tools -----------------------------------------------------------------------


def require(tool: str) -> str:
    """The tool's path, or skip (fail under CI=true): Debian's ``systemd`` package has it."""
    path = shutil.which(tool)
    if path:
        return path
    reason = f"{tool} not found: apt-get install systemd"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, env=env
    )


@pytest.fixture
def testable_unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at a stub executable.

    ``systemd-analyze verify`` checks that ExecStart's program exists and is executable, and
    ffc-agent is not installed in /usr/local/bin on a build machine. Only that path changes;
    every other line is verified as shipped. The copy keeps the unit's file name, which is
    its unit name.
    """
    stub = tmp_path / "bin" / "ffc-agent"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={SHIPPED_EXEC} ") == 1
    copy = tmp_path / "unit" / UNIT.name
    copy.parent.mkdir()
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={stub} "))
    return copy


@pytest.mark.integration
def test_systemd_analyze_verify_accepts_the_unit(testable_unit: Path) -> None:
    analyze = require("systemd-analyze")
    result = run([analyze, "verify", "--man=no", str(testable_unit)])
    output = result.stdout + result.stderr
    # verify also loads the host's units (multi-user.target and whatever it pulls in) and may
    # complain about those; only lines about this unit count.
    ours = [line for line in output.splitlines() if "ffc-agent" in line]
    assert result.returncode == 0, output
    assert ours == [], "\n".join(ours)


@pytest.mark.integration
def test_systemd_analyze_security_rates_the_unit_ok(testable_unit: Path) -> None:
    analyze = require("systemd-analyze")
    result = run([analyze, "security", "--no-pager", "--offline=true", str(testable_unit)])
    table = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", table)
    assert match, table
    exposure = float(match.group(1))
    print(f"systemd-analyze security: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, table


def _require_root_for_chown() -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles --root needs root to chown in the scratch root")


@pytest.mark.integration
def test_sysusers_and_tmpfiles_set_up_user_and_directories(tmp_path: Path) -> None:
    sysusers = require("systemd-sysusers")
    tmpfiles = require("systemd-tmpfiles")
    _require_root_for_chown()
    root = tmp_path / "root"
    for sub in ("etc/sysusers.d", "etc/tmpfiles.d", "usr/sbin"):
        (root / sub).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    shutil.copy(SYSUSERS, root / "etc/sysusers.d/ffc-agent.conf")
    shutil.copy(TMPFILES, root / "etc/tmpfiles.d/ffc-agent.conf")

    result = run([sysusers, f"--root={root}", "ffc-agent.conf"])
    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").open()}
    user = passwd["ffc-agent"]
    uid, gid = int(user[2]), int(user[3])
    assert 0 < uid < 1000  # a system user
    assert user[5] == str(DEFAULT_STATE_DIR)
    assert user[6].strip() == "/usr/sbin/nologin"

    # the installer's config, written with the usual umask, and a file a root command left
    (root / "etc/ffc-agent").mkdir()
    (root / "etc/ffc-agent/ffc-agent.toml").write_text("[agent]\n")
    (root / "etc/ffc-agent/ffc-agent.toml").chmod(0o644)
    (root / "var/lib/ffc-agent").mkdir(parents=True)
    (root / "var/lib/ffc-agent/known_hosts").write_text("")

    result = run([tmpfiles, "--create", f"--root={root}", "ffc-agent.conf"])
    assert result.returncode == 0, result.stderr

    def mode_owner(rel: str) -> tuple[int, int, int]:
        st = (root / rel).stat()
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    assert mode_owner("etc/ffc-agent") == (0o750, 0, gid)
    assert mode_owner("etc/ffc-agent/ffc-agent.toml") == (0o640, 0, gid)
    assert mode_owner("var/lib/ffc-agent") == (0o700, uid, gid)
    assert mode_owner("var/lib/ffc-agent/known_hosts")[1:] == (uid, gid)


# --- MemoryDenyWriteExecute= -------------------------------------------------------------------

# Run in a child process under the kernel's own W^X lock (prctl PR_SET_MDWE, Linux 6.3+), which
# refuses what systemd's MemoryDenyWriteExecute= refuses: a writable-and-executable mapping, or
# making a mapping executable later. The child imports the whole agent and does the work that
# loads native code: numpy and Pillow on an image, psutil, cryptography keys, SQLite.
MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, io, sys, tempfile
    from pathlib import Path

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)

    import numpy as np
    from PIL import Image
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    import agent.cli, agent.runner, agent.service.logs, agent.service.sdnotify
    import agent.delivery.sinks, rma.bundle
    from agent.probes.gateway import probe_gateway
    from agent.store import Store
    from diagnostics import liveview

    rng = np.random.default_rng(7)
    pixels = (rng.random((576, 768, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    reference = liveview.prepare_reference(buf.getvalue())
    print("liveview", liveview.analyze(buf.getvalue(), reference).verdict)
    print("linalg", float(np.linalg.det(rng.random((50, 50)) + np.eye(50) * 50)) > 0)
    gateway = probe_gateway(Path(tempfile.gettempdir()))
    print("memory", gateway.data["memory_total_bytes"] is not None)
    ed25519.Ed25519PrivateKey.generate()
    rsa.generate_private_key(65537, 2048)
    with tempfile.TemporaryDirectory() as state, Store.open(Path(state)):
        print("store", "ok")
    """
)


@pytest.mark.integration
def test_the_agent_needs_no_writable_executable_memory() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        cwd=ROOT,
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "liveview",
        "clear",
        "linalg",
        "True",
        "memory",
        "True",
        "store",
        "ok",
    ]
