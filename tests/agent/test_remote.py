"""Remote-access sessions against a real sshd whose ForceCommand is the simulated device shell.

The shell is driven through pipes (and once through a real pseudo-terminal) and its transcript
and audit entry checked byte for byte; the tunnel fetches a simulated counter's live view
through a real direct-tcpip channel. Unknown and changed host keys are refused before anything
is sent. The transcript's own rules (redaction, password prompts, key blocks, the size cap)
are pure and tested without a server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

import agent.cli  # noqa: F401
from agent.commands.remote import remote
from agent.probes.ssh import HostKeyError, SshTarget, enroll
from agent.remote import Transcript, run_shell, run_tunnel, transcript_path_for
from agent.store import Store
from diagnostics.model import ProbeErrorCode
from rma.redact import Redactor
from simulator import FakeClock, Fleet, SimCounter, SimSite

integration = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
DEADLINE_S = 20.0


class Ticking:
    """An injected clock: each reading is one millisecond after the last."""

    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        self.at += timedelta(milliseconds=1)
        return self.at


def target(sshd) -> SshTarget:
    return SshTarget(sshd.host, sshd.port, sshd.user, sshd.client_key)


def audit_rows(store: Store, action: str) -> list[tuple[str, str, dict]]:
    rows = store._db.execute(
        "SELECT actor, target, detail FROM audit WHERE action = ? ORDER BY id", (action,)
    ).fetchall()
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


def piped(text: str):
    """A binary stdin whose pipe holds ``text`` and then ends."""
    r, w = os.pipe()
    os.write(w, text.encode())
    os.close(w)
    return os.fdopen(r, "rb", buffering=0)


def wait_for(condition, what: str, deadline_s: float = DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.02)  # yield between looks at the condition
    return value


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state):
    with Store.open(state) as s:
        yield s


@pytest.fixture
def enrolled(sshd, state) -> Path:
    known_hosts = state / "known_hosts"
    enroll(target(sshd), known_hosts, timeout=10)
    return known_hosts


def shell(sshd, known_hosts, store, text, path, **kw):
    out = io.BytesIO()
    with piped(text) as stdin:
        result = run_shell(
            target(sshd),
            known_hosts,
            stdin=stdin,
            stdout=out,
            transcript_path=path,
            actor="jo.support",
            store=store,
            counter="FFC1",
            timeout_s=10,
            **kw,
        )
    return result, out.getvalue().decode()


# -- the shell -----------------------------------------------------------------------------------


@integration
def test_piped_shell_is_relayed_recorded_and_audited(sshd, enrolled, store, state):
    path = state / "sessions" / "s.txt"
    result, output = shell(sshd, enrolled, store, "cat /proc/uptime\nexit\n", path)

    assert "86400.00 311040.00" in output  # the device's answer reached stdout
    assert result.ended_by == "device" and result.exit_status == 0 and result.mode == "line"
    assert result.bytes_to_device == len(b"cat /proc/uptime\nexit\n")
    assert result.bytes_from_device == len(output.encode())

    lines = path.read_text().splitlines()
    header, footer = json.loads(lines[0]), json.loads(lines[-1])
    assert header["format"] == "ffc-agent-shell-transcript/1"
    assert header["counter"] == "FFC1" and header["actor"] == "jo.support"
    assert header["host_key"] == sshd.host_key_fingerprint
    body = lines[1:-1]
    assert any(line.endswith(" >>> cat /proc/uptime") for line in body)
    assert any(line.endswith(" >>> exit") for line in body)
    assert any("    " in line and "86400.00 311040.00" in line for line in body)
    assert footer["bytes_to_device"] == result.bytes_to_device and footer["exit_status"] == 0
    assert (path.stat().st_mode & 0o777) == 0o600
    assert str(sshd.client_key) not in path.read_text()

    [(actor, counter, detail)] = audit_rows(store, "remote.shell")
    assert (actor, counter) == ("jo.support", "FFC1")
    assert detail["ok"] is True and detail["target"] == str(target(sshd))
    assert detail["bytes_to_device"] == result.bytes_to_device
    assert detail["bytes_from_device"] == result.bytes_from_device
    assert detail["transcript"] == str(path)
    assert detail["transcript_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert detail["transcript_bytes"] == path.stat().st_size
    assert detail["started"] <= detail["ended"]


@integration
def test_a_refused_command_shows_the_devices_message(sshd, enrolled, store, state):
    path = state / "sessions" / "s.txt"
    result, output = shell(sshd, enrolled, store, "rm -rf /var/lib\nhostname\n", path)
    message = "ffc-sim: 'rm -rf /var/lib' is not allowed: this device shell is read-only"
    assert message in output  # stderr is merged, as a terminal shows it
    assert "ffc-counter\n" in output  # the session went on: `hostname` answered
    assert message in path.read_text()
    assert result.ended_by == "device"  # piped input ran out: the device logged out


@integration
def test_transcript_passes_the_redactor(sshd, enrolled, store, state):
    secret = "hunter2-Secret-9"
    path = state / "sessions" / "s.txt"
    _, output = shell(
        sshd, enrolled, store, f"cat {secret}\nexit\n", path, redactor=Redactor([secret])
    )
    assert secret in output  # the engineer sees the device's answer unchanged
    text = path.read_text()
    assert secret not in text
    assert ">>> cat [REDACTED]" in text


@integration
def test_unknown_host_key_is_refused_and_nothing_is_written(sshd, store, state):
    known_hosts = state / "known_hosts"
    path = state / "sessions" / "s.txt"
    with pytest.raises(HostKeyError) as caught:
        shell(sshd, known_hosts, store, "cat /proc/uptime\n", path)
    assert caught.value.code is ProbeErrorCode.HOST_KEY_UNKNOWN
    assert caught.value.offered == sshd.host_key_fingerprint
    assert not known_hosts.exists()  # refused, never learned
    assert not path.exists()
    [(actor, _, detail)] = audit_rows(store, "remote.shell")
    assert actor == "jo.support"
    assert detail["ok"] is False and detail["error"] == "host_key_unknown"
    assert detail["offered_host_key"] == sshd.host_key_fingerprint


@integration
def test_changed_host_key_is_refused_and_the_pin_kept(sshd, enrolled, store, state):
    pinned = enrolled.read_text()
    sshd.restart(new_host_key=True)
    with pytest.raises(HostKeyError) as caught:
        shell(sshd, enrolled, store, "cat /proc/uptime\n", state / "s.txt")
    assert caught.value.code is ProbeErrorCode.HOST_KEY_MISMATCH
    assert enrolled.read_text() == pinned
    assert not (state / "s.txt").exists()


def terminal_session(sshd, known_hosts, store, path, *keys: bytes):
    """run_shell with a real pseudo-terminal on stdin, typing ``keys`` once it is raw; returns
    the result, the output, and whether the terminal's settings came back unchanged."""
    master, slave = os.openpty()
    saved = termios.tcgetattr(slave)

    def type_in() -> None:
        # tty.setraw flushes pending input: type only once the terminal is raw.
        wait_for(lambda: not termios.tcgetattr(slave)[3] & termios.ICANON, "raw mode")
        for key in keys:
            os.write(master, key)

    typist = threading.Thread(target=type_in, daemon=True)
    typist.start()
    out = io.BytesIO()
    try:
        with os.fdopen(slave, "rb", buffering=0, closefd=False) as stdin:
            result = run_shell(
                target(sshd),
                known_hosts,
                stdin=stdin,
                stdout=out,
                transcript_path=path,
                actor="jo.support",
                store=store,
                counter="FFC1",
                now=Ticking(),
            )
        typist.join(DEADLINE_S)
        restored = termios.tcgetattr(slave) == saved
    finally:
        os.close(master)
        os.close(slave)
    return result, out.getvalue().decode(), restored


@integration
def test_terminal_session_uses_a_pty_and_restores_the_terminal(sshd, enrolled, store, state):
    path = state / "sessions" / "pty.txt"
    result, output, restored = terminal_session(
        sshd, enrolled, store, path, b"hostname\r", b"exit\r"
    )
    assert restored  # the terminal is the engineer's again
    assert result.mode == "pty" and result.ended_by == "device"
    assert "hostname\r\nexit\r\n" in output  # typed ahead, echoed by the device's pty
    assert "~$ ffc-counter\r\n" in output  # its answer, with the pty's CR LF
    text = path.read_text()
    assert " >>> hostname" in text and "2026-11-25T14:00:00" in text  # the injected clock


@integration
def test_tilde_dot_leaves_a_terminal_session(sshd, enrolled, store, state):
    path = state / "sessions" / "pty.txt"
    # A "~" inside a line and a doubled "~~" at its start go to the device; "~." leaves.
    result, _, restored = terminal_session(
        sshd, enrolled, store, path, b"uname ~.\r", b"~~x\r", b"~."
    )
    assert restored and result.ended_by == "escape"
    assert result.bytes_to_device == len(b"uname ~.\r~x\r")
    text = path.read_text()
    assert ">>> uname ~." in text and ">>> ~x" in text and "### session left with ~." in text
    [(_, _, detail)] = audit_rows(store, "remote.shell")
    assert detail["ended_by"] == "escape" and detail["transcript_sha256"]


# -- the transcript, pure ------------------------------------------------------------------------


def transcript(tmp_path, **kw) -> Transcript:
    return Transcript(tmp_path / "t.txt", {"counter": "C"}, clock=Ticking(), **kw)


def test_transcript_never_records_a_password_typed_at_a_prompt(tmp_path):
    t = transcript(tmp_path, echo=True)
    t.output(b"[sudo] password for pi: ")
    t.input(b"s3cr3t-typed\r")
    t.output(b"\r\npi@ffc:~$ ")
    t.input(b"uname -a\r")
    t.close({})
    text = (tmp_path / "t.txt").read_text()
    assert "s3cr3t-typed" not in text
    assert ">>> [REDACTED]" in text and ">>> uname -a" in text


def test_transcript_drops_private_key_blocks_and_escapes_controls(tmp_path):
    t = transcript(tmp_path)
    t.output(b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nshort==\n")
    t.output(b"-----END OPENSSH PRIVATE KEY-----\n\x1b[31mred\x1b[0m\n")
    t.input(b"ls /tmp\x7f\x7f\x7fdev\n")
    sha, size = t.close({"end": "x"})
    raw = (tmp_path / "t.txt").read_bytes()
    text = raw.decode()
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in text and "short==" not in text
    assert "[private key block removed: 4 lines]" in text
    assert "\\x1b[31mred\\x1b[0m" in text and "\x1b" not in text
    assert ">>> ls /dev" in text  # backspaces applied as the device's line editor would
    assert sha == hashlib.sha256(raw).hexdigest() and size == len(raw)


def test_transcript_is_capped_but_its_footer_is_written(tmp_path):
    t = transcript(tmp_path, max_bytes=2000)
    for i in range(200):
        t.output(f"line {i:03d} of a chatty command\n".encode())
    t.close({"end": "x"})
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert t.truncated
    assert "transcript cut at 2000 bytes" in lines[-2]
    assert json.loads(lines[-1]) == {"end": "x"}
    assert "line 199" not in "".join(lines)
    assert len("\n".join(lines[:-1]).encode()) <= 2000 + 200


def test_transcript_never_overwrites_an_earlier_record(tmp_path):
    (tmp_path / "t.txt").write_text("earlier session\n")
    with pytest.raises(FileExistsError):
        transcript(tmp_path)
    assert (tmp_path / "t.txt").read_text() == "earlier session\n"
    path = transcript_path_for(tmp_path, "FFC1", NOW)
    path.parent.mkdir(parents=True)
    path.write_text("x")
    assert transcript_path_for(tmp_path, "FFC1", NOW) != path


# -- the tunnel ----------------------------------------------------------------------------------


@pytest.fixture
def fleet():
    with Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter("FFC1", "Main door", "LDN01", base_rate=150.0)],
        seed=3,
        clock=FakeClock(NOW),
    ) as f:
        yield f


class Tunnel:
    """run_tunnel in a thread; ``port`` once ready; ``stop()`` ends it and returns its result."""

    def __init__(self, sshd, known_hosts, store, remote_port, **kw) -> None:
        self.stop_event = threading.Event()
        self.ready: queue.Queue[int] = queue.Queue()
        self.outcome: queue.Queue[object] = queue.Queue()

        def run() -> None:
            try:
                self.outcome.put(
                    run_tunnel(
                        target(sshd),
                        known_hosts,
                        local_port=0,
                        remote_port=remote_port,
                        actor="jo.support",
                        store=store,
                        counter="FFC1",
                        stop_event=self.stop_event,
                        on_ready=self.ready.put,
                        **kw,
                    )
                )
            except BaseException as exc:  # handed to the test thread to re-raise
                self.outcome.put(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def port(self) -> int:
        try:
            return self.ready.get(timeout=DEADLINE_S)
        except queue.Empty:
            raise AssertionError(f"the tunnel did not start: {self.outcome.get_nowait()}") from None

    def stop(self):
        self.stop_event.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "the tunnel did not stop"
        result = self.outcome.get_nowait()
        if isinstance(result, BaseException):
            raise result
        return result


@integration
def test_tunnel_fetches_the_live_view_and_is_audited(sshd, enrolled, store, fleet):
    tunnel = Tunnel(sshd, enrolled, store, fleet.port("FFC1"))
    port = tunnel.port()
    expected = fleet.snapshot("FFC1")
    bodies = []
    for _ in range(2):  # two connections, each over its own channel
        r = requests.get(f"http://127.0.0.1:{port}/snapshot.jpg", timeout=(5, 20))
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
        bodies.append(r.content)
    assert bodies == [expected, expected] and expected[:3] == b"\xff\xd8\xff"
    result = tunnel.stop()

    assert result.ended_by == "stop"
    assert result.connections == 2 and result.failed_connections == 0
    assert result.bytes_from_device > 2 * len(expected)  # the bodies and their headers
    assert result.bytes_to_device > 0
    [(actor, counter, opened)] = audit_rows(store, "remote.tunnel.open")
    [(_, _, closed)] = audit_rows(store, "remote.tunnel.close")
    assert (actor, counter) == ("jo.support", "FFC1")
    assert opened["ok"] is True and opened["local"] == f"127.0.0.1:{port}"
    assert opened["remote"] == f"127.0.0.1:{fleet.port('FFC1')}"
    assert opened["host_key"] == sshd.host_key_fingerprint
    assert closed["connections"] == 2 and closed["bytes_from_device"] == result.bytes_from_device
    with pytest.raises(ConnectionRefusedError):  # closed means closed
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@integration
def test_tunnel_listens_on_127_0_0_1_only(sshd, enrolled, store, fleet):
    tunnel = Tunnel(sshd, enrolled, store, fleet.port("FFC1"))
    port = tunnel.port()
    try:
        # Another loopback address reaches a socket bound to 0.0.0.0, not one on 127.0.0.1.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        tunnel.stop()
    with pytest.raises(ValueError, match="loopback only"):
        run_tunnel(
            target(sshd),
            enrolled,
            local_port=0,
            bind="0.0.0.0",  # what must be refused
            actor="jo",
            store=store,
            counter="FFC1",
            stop_event=threading.Event(),
            on_ready=lambda port: None,
        )


@integration
def test_tunnel_to_a_closed_port_fails_that_connection_only(sshd, enrolled, store, fleet):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    tunnel = Tunnel(sshd, enrolled, store, closed_port)
    port = tunnel.port()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=(5, 20))
    assert tunnel.thread.is_alive()  # one failed connection does not end the tunnel
    result = tunnel.stop()
    assert result.connections == 1 and result.failed_connections == 1
    assert result.bytes_from_device == 0


@integration
def test_tunnel_with_an_unknown_host_key_never_listens(sshd, store, state):
    with pytest.raises(HostKeyError):
        run_tunnel(
            target(sshd),
            state / "known_hosts",
            local_port=0,
            actor="jo",
            store=store,
            counter="FFC1",
            stop_event=threading.Event(),
            on_ready=lambda port: pytest.fail("ready without a pinned key"),
        )
    assert not (state / "known_hosts").exists()
    [(_, _, detail)] = audit_rows(store, "remote.tunnel.open")
    assert detail["ok"] is False and detail["error"] == "host_key_unknown"
    assert audit_rows(store, "remote.tunnel.close") == []


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path, sshd, fleet) -> Path:
    text = fleet.agent_config_toml(tmp_path / "state")
    text = text.replace(
        "[[sinks]]",
        f'[counters.ssh]\nuser = "{sshd.user}"\nkey_file = "{sshd.client_key}"\n'
        f"port = {sshd.port}\n\n[[sinks]]",
    )
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


CLI = (
    "import sys; from agent.cli import cli; import agent.commands.remote as r; "
    "r.remote(sys.argv[1:])"
)


def cli_process(*args, **kw) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        cwd=Path(__file__).resolve().parents[2],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


@integration
def test_cli_refuses_without_ssh_or_pinned_key(tmp_path, config, sshd):
    no_ssh = tmp_path / "no-ssh.toml"
    no_ssh.write_text(config.read_text().split("[counters.ssh]")[0] + '[[sinks]]\ntype = "local"\n')
    result = CliRunner().invoke(remote, ["tunnel", "FFC1", "--config", str(no_ssh)])
    assert result.exit_code == 1 and "no [counters.ssh] table" in result.output
    result = CliRunner().invoke(remote, ["tunnel", "NOPE", "--config", str(config)])
    assert result.exit_code == 2 and "no counter 'NOPE'" in result.output
    result = CliRunner().invoke(remote, ["tunnel", "FFC1", "--config", str(config)])
    assert result.exit_code == 1
    assert "not pinned" in result.output and "ffc-agent enroll FFC1" in result.output
    # under --json each refusal is a JSON object on stdout, with the same exit code
    for cfg, words in ((no_ssh, "no [counters.ssh] table"), (config, "not pinned")):
        result = CliRunner().invoke(remote, ["tunnel", "FFC1", "--config", str(cfg), "--json"])
        assert result.exit_code == 1, result.output
        said = json.loads(result.stdout)
        assert words in said["error"] + said.get("hint", ""), said
    assert "ffc-agent enroll FFC1" in said["hint"]


@integration
def test_cli_shell_and_tunnel_end_to_end(tmp_path, config, sshd, fleet):
    state = tmp_path / "state"
    enroll(target(sshd), state / "known_hosts", timeout=10)

    proc = cli_process("shell", "FFC1", "--config", str(config), stdin=subprocess.PIPE)
    out, err = proc.communicate("df -P /\nexit\n", timeout=60)
    assert proc.returncode == 0, err
    assert "/dev/root" in out and "session closed (device)" in err
    [path] = (state / "sessions").glob("FFC1-*-shell.txt")
    assert ">>> df -P /" in path.read_text()
    assert hashlib.sha256(path.read_bytes()).hexdigest() in err

    proc = cli_process("tunnel", "FFC1", "--config", str(config), "--json")
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["url"].startswith("http://127.0.0.1:")
        r = requests.get(ready["url"] + "snapshot.jpg", timeout=(5, 20))
        assert r.status_code == 200 and r.content == fleet.snapshot("FFC1")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, err
    closed = json.loads(out.strip().splitlines()[-1])
    assert closed["event"] == "closed" and closed["ended_by"] == "interrupt"
    assert closed["connections"] == 1
    with Store.open(state) as store:
        [(shell_actor, _, shell)] = audit_rows(store, "remote.shell")
        [(tunnel_actor, _, _)] = audit_rows(store, "remote.tunnel.close")
    assert shell_actor and shell_actor == tunnel_actor  # who ran it: the login on the gateway
    assert shell["transcript"] == str(path)
