"""A real OpenSSH sshd on 127.0.0.1 whose ForceCommand is the simulated device shell.

Tests of the SSH probes, host-key pinning and (later) remote-access sessions run against this
server, not against mocks of paramiko. ``Sshd`` owns a working directory with its own host key,
a client key in ``authorized_keys``, a config file and the device-state JSON that
``simulator/shell.py`` reads; ``restart(new_host_key=True)`` brings it back on the same port
with a new host key, which is what a swapped device looks like to the agent.

Readiness is a condition, not a sleep: sshd logs "Server listening on ..." to stderr (``-e``)
once it accepts, and a TCP connect confirms it. Debian's ``openssh-server`` provides
``/usr/sbin/sshd``; without it the tests skip, or fail under ``CI=true`` (DESIGN.md §7).
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from simulator.shell import DeviceState

SSHD = "/usr/sbin/sshd"
SHELL_SCRIPT = Path(__file__).resolve().parents[1] / "simulator" / "shell.py"
START_TIMEOUT_S = 15.0


def require_sshd() -> str:
    """The sshd binary, or skip (fail under CI=true) with the reason."""
    path = SSHD if os.access(SSHD, os.X_OK) else shutil.which("sshd")
    keygen = shutil.which("ssh-keygen")
    if path and keygen:
        return path
    reason = "OpenSSH sshd/ssh-keygen not installed (apt-get install openssh-server)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def keygen(path: Path, comment: str = "ffc-test") -> Path:
    """A new passphrase-less ed25519 key at ``path`` (and ``path.pub``)."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def keygen_fingerprint(path: Path) -> str:
    """``SHA256:...`` as ssh-keygen prints it: the reference for our own fingerprints."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return out.split()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    """One sshd on 127.0.0.1. ``start``/``stop``/``restart``; a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        force_command: str | None = None,
        extra_config: tuple[str, ...] = (),
    ) -> None:
        self.binary = require_sshd()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.client_key = self.workdir / "client_ed25519"
        self.authorized_keys = self.workdir / "authorized_keys"
        self.state_file = self.workdir / "device.json"
        self.config_file = self.workdir / "sshd_config"
        self.force_command = force_command or (
            f"{shlex.quote(sys.executable)} -I {shlex.quote(str(SHELL_SCRIPT))} "
            f"--state {shlex.quote(str(self.state_file))}"
        )
        self.extra_config = extra_config
        self.proc: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self._listening = threading.Event()
        keygen(self.host_key, "host")
        keygen(self.client_key, "client")
        self.authorized_keys.write_text(
            self.client_key.with_name(self.client_key.name + ".pub").read_text()
        )
        self.write_state()

    # -- the device -------------------------------------------------------------------------

    def write_state(self, **state: Any) -> DeviceState:
        """Script the device behind the shell: ``DeviceState`` fields, defaults for the rest."""
        device = DeviceState(**state)
        device.write(self.state_file)
        return device

    @property
    def host_key_fingerprint(self) -> str:
        return keygen_fingerprint(self.host_key.with_name(self.host_key.name + ".pub"))

    # -- the server -------------------------------------------------------------------------

    def _config(self, penalties: bool) -> str:
        lines = [
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            f"ForceCommand {self.force_command}",
            *self.extra_config,
        ]
        if penalties:
            # OpenSSH 9.8+ would otherwise lock 127.0.0.1 out for a while after the
            # deliberate authentication failures some tests provoke.
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        for penalties in (True, False):
            self.config_file.write_text(self._config(penalties))
            check = subprocess.run(
                [self.binary, "-t", "-f", str(self.config_file)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if check.returncode == 0:
                return
        raise RuntimeError(f"sshd rejects its test config: {check.stderr.strip()}")

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("sshd already running")
        try:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        except PermissionError:
            pass  # not root: sshd then runs without privilege separation
        self._write_config()
        self._listening.clear()
        self.proc = subprocess.Popen(
            [self.binary, "-D", "-e", "-f", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sshd did not start:\n" + self.log())
        with socket.create_connection((self.host, self.port), timeout=5):
            pass

    def _read_log(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log_lines.append(line.rstrip("\n"))
            if "Server listening on" in line:
                self._listening.set()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, *, new_host_key: bool = False) -> None:
        """Stop, optionally give the server a new host key, start again on the same port."""
        self.stop()
        if new_host_key:
            keygen(self.host_key, "replacement")
        self.start()

    def log(self) -> str:
        return "\n".join(self.log_lines)

    def __enter__(self) -> Sshd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
