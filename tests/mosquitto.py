"""A real Mosquitto broker on 127.0.0.1, for the MQTT push tests (DESIGN.md §7).

``Mosquitto`` owns a working directory with its config (one listener on a free loopback port,
anonymous or with a password file written by ``mosquitto_passwd -b``). ``start`` waits until the
port accepts — a condition with a deadline, not a sleep — and ``stop``/``start`` bring it down
and back on the same port, which is how a test shows the listener reconnecting by itself.
Debian's ``mosquitto`` provides the binaries; without them the tests skip, or fail under
``CI=true``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_TIMEOUT_S = 15.0


def require_mosquitto() -> tuple[str, str]:
    """The ``mosquitto`` and ``mosquitto_passwd`` binaries, or skip (fail under CI=true)."""
    paths = [
        shutil.which(name) or f"/usr/sbin/{name}" for name in ("mosquitto", "mosquitto_passwd")
    ]
    if all(os.access(p, os.X_OK) for p in paths):
        return paths[0], paths[1]
    reason = "mosquitto not installed (apt-get install mosquitto)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """One broker on 127.0.0.1. ``users`` maps names to passwords: then anonymous is refused."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None) -> None:
        self.binary, self.passwd = require_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.users = dict(users or {})
        self.config_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "persistence false",
            # as root, mosquitto would switch to the "mosquitto" user, which cannot read the
            # test's private directory: stay the user running the tests
            f"user {getpass.getuser()}",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.users:
            password_file = self.workdir / "passwd"
            password_file.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    [self.passwd, "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        self.config_file.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("mosquitto already running")
        self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mosquitto did not start:\n" + self.log())
            time.sleep(0.05)  # the poll interval of the readiness condition, not a wait

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

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
