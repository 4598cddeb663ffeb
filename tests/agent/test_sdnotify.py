"""sd_notify by hand, against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import sdnotify

RECEIVE_DEADLINE_S = 10.0


class Listener:
    """A datagram socket where systemd's notify socket would be; ``NOTIFY_SOCKET`` names it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self) -> dict[str, str]:
        """The next datagram, as its KEY=VALUE lines (waits up to the deadline, then fails)."""
        self.sock.settimeout(RECEIVE_DEADLINE_S)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)
        return True


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    # A short directory of its own: an AF_UNIX path must fit in 108 bytes, pytest's may not.
    with tempfile.TemporaryDirectory(prefix="sdn-") as tmp:
        path = str(Path(tmp) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield Listener(sock, path)


@pytest.fixture
def abstract_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    name = f"ffc-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield Listener(sock, "@" + name)


def test_ready_status_and_watchdog_reach_the_socket(listener: Listener) -> None:
    assert sdnotify.ready()
    assert listener.receive() == {"READY": "1"}
    assert sdnotify.status("cycle 12: 8 counters, 1 problem")
    assert listener.receive() == {"STATUS": "cycle 12: 8 counters, 1 problem"}
    assert sdnotify.watchdog()
    assert listener.receive() == {"WATCHDOG": "1"}


def test_ready_can_carry_the_first_status(listener: Listener) -> None:
    assert sdnotify.ready("watching 8 counters")
    assert listener.receive() == {"READY": "1", "STATUS": "watching 8 counters"}


def test_an_abstract_socket_name_is_understood(abstract_listener: Listener) -> None:
    assert abstract_listener.env_value.startswith("@")
    assert sdnotify.ready()
    assert abstract_listener.receive() == {"READY": "1"}
    assert sdnotify.stopping()
    assert abstract_listener.receive() == {"STOPPING": "1"}


def test_reloading_says_when_for_notify_reload(listener: Listener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = listener.receive()
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_status_is_one_scrubbed_line(listener: Listener) -> None:
    assert sdnotify.status("counter C1 down\nretrying with token=abc123XYZ")
    text = listener.receive()["STATUS"]
    assert "\n" not in text
    assert "abc123XYZ" not in text
    assert text.startswith("counter C1 down retrying with token=")


def test_status_uses_the_redactor_given(listener: Listener) -> None:
    from rma.redact import Redactor

    assert sdnotify.status("login as admin/Pa55-word failed", Redactor({"Pa55-word"}))
    assert "Pa55-word" not in listener.receive()["STATUS"]


def test_status_is_kept_short(listener: Listener) -> None:
    assert sdnotify.status("x" * 1000)
    assert len(listener.receive()["STATUS"]) == sdnotify.STATUS_MAX


def test_without_notify_socket_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_an_unknown_transport_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.ready() is False


def test_a_send_error_returns_false_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    monkeypatch.setattr(sdnotify, "_send_failed_logged", False)
    with caplog.at_level(logging.DEBUG, logger="agent.service.sdnotify"):
        assert sdnotify.watchdog() is False
        assert sdnotify.watchdog() is False
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG


def test_nothing_is_left_queued_after_a_send(listener: Listener) -> None:
    assert sdnotify.watchdog()
    assert listener.pending()
    listener.receive()
    assert not listener.pending()


# --- the watchdog's variables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("600000000", None, 600.0),
        ("600000000", "self", 600.0),
        ("1500000", "self", 1.5),
        ("600000000", "other", None),
        ("0", "self", None),
        ("-5", None, None),
        ("ten minutes", None, None),
        ("600000000", "not-a-pid", None),
        (None, "self", None),
        ("", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            pids = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
            monkeypatch.setenv(name, pids.get(value, value))
    assert sdnotify.watchdog_interval() == expected
