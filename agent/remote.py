"""Remote-access sessions for second-line support: a recorded shell and a tunnel to a counter.

During a remote-access session (DESIGN.md §1) a support engineer logs into the store's gateway
and, from there, into a counter: ``ffc-agent remote shell COUNTER`` opens an interactive shell
whose whole conversation is written to a transcript, and ``ffc-agent remote tunnel COUNTER``
forwards a port on the gateway's loopback to the counter's web interface, to see its live view
and settings. Both go over the one SSH wrapper (``agent.probes.ssh``), so the counter's host key
must be pinned (``ffc-agent enroll``); an unknown or changed key is refused before anything is
sent. Every session ends up in the audit log with who ran it, so it can be attached to a ticket.

**The shell.** With a terminal on stdin the device gets a pty of the same size (raw mode
locally, restored in ``finally`` whatever happens); otherwise the shell runs in plain line mode,
which is what a pipe or a test drives. ``select`` relays both ways; the remote's stderr is
merged, as a terminal shows it. At a terminal, ``~.`` at the start of a line leaves a stuck
session, as in OpenSSH (Ctrl-C belongs to the device there).

**The transcript** is a UTF-8 text file, mode 0600, never overwritten::

    {"format": "ffc-agent-shell-transcript/1", "counter": "FFC1", "actor": "jo", ...}
    2026-11-25T14:00:00.120Z     pi@ffc-counter:~$
    2026-11-25T14:00:01.310Z >>> cat /proc/uptime
    2026-11-25T14:00:01.402Z     86400.00 311040.00
    {"end": "2026-11-25T14:00:02.001Z", "bytes_to_device": 23, ...}

The first and last lines are JSON (header, footer); between them, one line per line of text
with the UTC time it was completed: ``>>> `` marks a line typed (or piped) to the device, four
spaces mark the device's output. Control characters are shown as ``\\xNN``; with a pty the
device echoes what is typed, so typed lines also appear in the output. It is capped at
``max_transcript_bytes``: past that, one line says so and the session goes on unrecorded
(the audit entry says ``"truncated": true``; byte counts stay exact).

**Secrets** never reach the transcript: each line passes the ``Redactor`` if one is given
(``Config.secret_values()``), else the pattern layer ``rma.redact.scrub``; a private-key block
is dropped whole (only its line count is kept); a line typed at a password prompt is recorded
as ``[REDACTED]``. The private key used to log in is never read by this module.

**The tunnel** listens on a loopback address only (never ``0.0.0.0``: the gateway sits on the
store's network), relays each accepted connection over its own ``direct-tcpip`` channel in its
own thread, and runs until ``stop_event`` is set, Ctrl-C, or the SSH connection drops.

Audit entries (``Store.audit``; target = the counter's serial):

- ``remote.shell``: actor, target, host key, start/end, duration, mode (pty/line),
  ``bytes_to_device``/``bytes_from_device``, exit status, transcript path, its sha256 and size,
  ``truncated``, ``ended_by``. A session that could not start is recorded too, with
  ``ok: false`` and the error code, and leaves no transcript.
- ``remote.tunnel.open`` and ``remote.tunnel.close``: local and remote address; at close the
  connection counts (``connections``, ``failed_connections``), bytes each way, ``ended_by``.
  A tunnel that could not start records one ``remote.tunnel.open`` with ``ok: false``.
"""

from __future__ import annotations

import codecs
import hashlib
import ipaddress
import json
import logging
import os
import re
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agent.probes.ssh import HostKeyError, SshSession, SshStream, SshTarget
from diagnostics.model import SYSTEM_CLOCK, ProbeError
from rma.redact import REDACTED, Redactor, scrub

log = logging.getLogger(__name__)

TRANSCRIPT_FORMAT = "ffc-agent-shell-transcript/1"
DEFAULT_MAX_TRANSCRIPT = 8 * 1024 * 1024  # an hour of busy typing is well under 1 MiB
CHUNK = 32768
# How often the tunnel looks at stop_event and the SSH connection between connections.
TUNNEL_POLL_S = 0.25
_PASSWORD_PROMPT = re.compile(r"(?i)(password|passphrase|passcode|\bpin)[^\n]{0,40}:\s*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Auditor(Protocol):
    """What a session needs of the store: ``agent.store.Store`` is one."""

    def audit(
        self,
        at: datetime,
        actor: str,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None: ...


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def transcript_path_for(state_dir: Path, counter: str, at: datetime) -> Path:
    """A new, unused transcript path: ``<state_dir>/sessions/<counter>-<UTC time>-shell.txt``."""
    folder = Path(state_dir) / "sessions"
    base = f"{counter}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}-shell"
    path, n = folder / f"{base}.txt", 1
    while path.exists():
        n += 1
        path = folder / f"{base}-{n}.txt"
    return path


# -- the transcript --------------------------------------------------------------------------------


class Transcript:
    """The file a shell session is recorded in (format: see the module docstring).

    ``output`` and ``input`` take raw bytes as they pass; lines are written when complete, each
    scrubbed first. ``close`` writes the footer and returns the file's sha256 and size. The file
    is created exclusively with mode 0600: an earlier record is never overwritten.
    """

    def __init__(
        self,
        path: Path,
        header: dict[str, Any],
        *,
        clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
        redactor: Redactor | None = None,
        max_bytes: int = DEFAULT_MAX_TRANSCRIPT,
        echo: bool = False,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self._clock = clock
        self._scrub: Callable[[str], str] = redactor.text if redactor is not None else scrub
        self._max = max_bytes
        # With a pty the device echoes typed text into the output: a pending output line is
        # then the echo itself, and must not be cut in two when a typed line completes.
        self._echo = echo
        self.size = 0
        self.truncated = False
        self._out_decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._in_decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._out = ""
        self._in: list[str] = []
        self._in_after_cr = False
        self._tail = ""  # the device's latest output, to spot a password prompt
        self._key_lines = 0  # inside a private-key block: how many lines were dropped
        header = {"format": TRANSCRIPT_FORMAT, **header}
        self._put(json.dumps(header, default=str) + "\n", always=True)

    def output(self, data: bytes) -> None:
        text = self._out_decoder.decode(data)
        self._tail = (self._tail + text)[-200:]
        while text:
            line, sep, text = text.partition("\n")
            self._out += line
            if not sep:
                break
            self._emit("    ", self._out.removesuffix("\r"))
            self._out = ""

    def input(self, data: bytes) -> None:
        for ch in self._in_decoder.decode(data):
            if ch == "\n" and self._in_after_cr:
                self._in_after_cr = False  # CR LF is one line end
                continue
            self._in_after_cr = ch == "\r"
            if ch in "\r\n":
                self._typed_line()
            elif ch in "\x7f\x08":  # the line editing a person sees: backspace
                if self._in:
                    self._in.pop()
            elif ch == "\x15":  # Ctrl-U: kill the line
                self._in.clear()
            elif ch in "\x03\x04":  # Ctrl-C, Ctrl-D end what was typed so far
                self._in.append("^C" if ch == "\x03" else "^D")
                self._typed_line()
            else:
                self._in.append(ch)

    def _typed_line(self) -> None:
        line = "".join(self._in)
        self._in.clear()
        if _PASSWORD_PROMPT.search(self._tail):
            line = REDACTED if line else line  # typed at a password prompt: never recorded
        if not self._echo and self._out:
            self._emit("    ", self._out)  # the prompt, so the typed line follows it
            self._out = ""
        self._tail = ""
        self._emit(">>> ", line)

    def note(self, text: str) -> None:
        """A line of our own, e.g. ``end of input``."""
        self._emit("### ", text)

    def _emit(self, marker: str, text: str) -> None:
        if self._key_lines:
            self._key_lines += 1
            if "-----END" in text and "PRIVATE KEY" in text:
                dropped, self._key_lines = self._key_lines, 0
                text = f"[private key block removed: {dropped} lines]"
            else:
                return
        elif "-----BEGIN" in text and "PRIVATE KEY" in text and "-----END" not in text:
            self._key_lines = 1
            return
        line = f"{_stamp(self._clock())} {marker}{_CONTROL.sub(_escape, self._scrub(text))}\n"
        self._put(line)

    def _put(self, line: str, *, always: bool = False) -> None:
        size = len(line.encode("utf-8"))
        if self.truncated and not always:
            return
        if not always and self.size and self.size + size > self._max:
            self.truncated = True
            line = (
                f"{_stamp(self._clock())} ### transcript cut at {self._max} bytes; "
                "the session went on unrecorded\n"
            )
            size = len(line.encode("utf-8"))
        self._file.write(line)
        self._file.flush()
        self.size += size

    def close(self, footer: dict[str, Any]) -> tuple[str, int]:
        """Flush what is pending, write the footer; returns (sha256 hex, size in bytes)."""
        if not self._file.closed:
            self.output(self._out_decoder.decode(b"", final=True).encode())
            if self._out:
                self._emit("    ", self._out)
                self._out = ""
            if self._in:
                self._typed_line()
            if self._key_lines:
                self._key_lines = 0
                self._emit("### ", "[private key block removed: cut off]")
            # The footer is always written, past the cap too: it closes the record.
            self._put(json.dumps(footer, default=str) + "\n", always=True)
            self._file.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                digest.update(block)
        return digest.hexdigest(), self.path.stat().st_size


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group(0)):02x}"


# -- the shell -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShellResult:
    """How a recorded shell session went; ``to_json`` is the audit entry's detail."""

    counter: str
    target: str
    host_key: str | None
    mode: str  # "pty" or "line"
    started: datetime
    ended: datetime
    bytes_to_device: int
    bytes_from_device: int
    exit_status: int | None
    transcript: Path
    transcript_sha256: str
    transcript_bytes: int
    truncated: bool
    ended_by: str  # "device" (the shell ended), "interrupt", "escape" (~.), "error: ..."

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            ok=True,
            started=self.started.isoformat(),
            ended=self.ended.isoformat(),
            duration_s=round((self.ended - self.started).total_seconds(), 3),
            transcript=str(self.transcript),
        )
        return data


def run_shell(
    target: SshTarget,
    known_hosts: Path,
    *,
    stdin: BinaryIO,
    stdout: BinaryIO,
    transcript_path: Path,
    actor: str,
    store: Auditor,
    counter: str,
    timeout_s: float = 10.0,
    now: Callable[[], datetime] = SYSTEM_CLOCK.now,
    redactor: Redactor | None = None,
    max_transcript_bytes: int = DEFAULT_MAX_TRANSCRIPT,
) -> ShellResult:
    """An interactive shell on the counter, relayed between ``stdin``/``stdout`` and recorded.

    ``stdin`` must have a real file descriptor (a terminal, a pipe); ``stdout`` is any binary
    writer, flushed after each chunk. ``timeout_s`` bounds connecting, logging in and opening
    the shell, not the session. Returns when the device's shell ends (``exit``, or the end of
    piped input) or on Ctrl-C in line mode; the audit entry is written either way.

    Raises ``ProbeError`` (``HostKeyError`` for an unknown or changed host key) when the
    session cannot start; that attempt is audited, and no transcript is created.
    """
    in_fd = stdin.fileno()
    tty = os.isatty(in_fd)
    mode = "pty" if tty else "line"
    started = now()
    session = SshSession(target, known_hosts, timeout_s=timeout_s)
    stream: SshStream | None = None
    opened = False
    try:
        session.open()
        if tty:
            stream = session.open_shell(os.environ.get("TERM") or "vt100", *_terminal_size(in_fd))
        else:
            stream = session.open_shell(None)
        transcript = Transcript(
            transcript_path,
            {
                "counter": counter,
                "target": str(target),
                "actor": actor,
                "host_key": session.host_key,
                "mode": mode,
                "started": _stamp(started),
            },
            clock=now,
            redactor=redactor,
            max_bytes=max_transcript_bytes,
            echo=tty,
        )
        opened = True
    except (ProbeError, OSError) as exc:
        store.audit(now(), actor, "remote.shell", counter, _refused(target, exc, started))
        raise
    finally:
        if not opened:  # refused, or Ctrl-C while connecting: leave nothing open
            if stream is not None:
                stream.close()
            session.close()
    counts = [0, 0]  # bytes to the device, from the device
    ended_by: str | None = None
    status: int | None = None
    try:
        with _terminal(in_fd) as wake_fd:
            _relay_shell(stream, in_fd, stdout, transcript, wake_fd, counts)
        ended_by = "device"
        status = stream.exit_status(wait_s=1.0)  # it follows the end of output closely
    except KeyboardInterrupt:  # line mode only: in raw mode Ctrl-C goes to the device
        ended_by = "interrupt"
    except _LeftByEscape:
        ended_by = "escape"
    except (ProbeError, OSError) as exc:
        ended_by = f"error: {exc}"
    finally:
        stream.close()
        session.close()
        ended = now()
        ended_by = ended_by or "error"  # something unexpected: it propagates after the audit
        sha, size = transcript.close(
            {
                "end": _stamp(ended),
                "bytes_to_device": counts[0],
                "bytes_from_device": counts[1],
                "exit_status": status,
                "ended_by": ended_by,
                "truncated": transcript.truncated,
            }
        )
        result = ShellResult(
            counter=counter,
            target=str(target),
            host_key=session.host_key,
            mode=mode,
            started=started,
            ended=ended,
            bytes_to_device=counts[0],
            bytes_from_device=counts[1],
            exit_status=status,
            transcript=Path(transcript_path),
            transcript_sha256=sha,
            transcript_bytes=size,
            truncated=transcript.truncated,
            ended_by=ended_by,
        )
        store.audit(ended, actor, "remote.shell", counter, result.to_json())
    return result


def _relay_shell(
    stream: SshStream,
    in_fd: int,
    stdout: BinaryIO,
    transcript: Transcript,
    wake_fd: int | None,
    counts: list[int],
) -> None:
    """Relay until the device closes the shell. ``counts`` = [to device, from device].

    With a terminal (``wake_fd`` given), ``~.`` typed at the start of a line leaves the session
    (``_LeftByEscape``), as in OpenSSH: in raw mode Ctrl-C belongs to the device, and a dead
    connection must not hold the engineer's terminal.
    """
    reading = True
    escape = _Escape() if wake_fd is not None else None
    while True:
        watch: list[Any] = [stream]
        if reading:
            watch.append(in_fd)
        if wake_fd is not None:
            watch.append(wake_fd)
        # No timeout needed: the channel's descriptor wakes on data, end of file and close.
        ready, _, _ = select.select(watch, [], [])
        if stream in ready:
            data = stream.recv(CHUNK)
            if not data:
                return
            counts[1] += len(data)
            stdout.write(data)
            stdout.flush()
            transcript.output(data)
        if reading and in_fd in ready:
            data = os.read(in_fd, 4096)
            if data and escape is not None:
                data, leave = escape.feed(data)
                if leave:  # what was typed before "~." still goes to the device
                    if data:
                        stream.send(data)
                        counts[0] += len(data)
                        transcript.input(data)
                    transcript.note("session left with ~.")
                    raise _LeftByEscape
                if not data:
                    continue  # a lone "~" waits for the next key
            if data:
                stream.send(data)
                counts[0] += len(data)
                transcript.input(data)
            else:
                reading = False  # piped input ran out: the device reads to its end, then exits
                stream.shutdown_write()
                transcript.note("end of input")
        if wake_fd is not None and wake_fd in ready:
            os.read(wake_fd, 512)
            stream.resize(*_terminal_size(in_fd))


class _LeftByEscape(Exception):
    """The engineer typed ``~.``."""


class _Escape:
    """Spots ``~.`` at the start of a typed line; ``~~`` sends one ``~``."""

    def __init__(self) -> None:
        self._line_start = True
        self._tilde = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """What to send on, and whether the engineer asked to leave."""
        sent = bytearray()
        for byte in data:
            ch = bytes([byte])
            if self._tilde:
                self._tilde = False
                if ch == b".":
                    return bytes(sent), True
                sent += ch if ch == b"~" else b"~" + ch
            elif self._line_start and ch == b"~":
                self._tilde = True
                continue
            else:
                sent += ch
            self._line_start = ch in (b"\r", b"\n")
        return bytes(sent), False


@contextmanager
def _terminal(fd: int) -> Iterator[int | None]:
    """Raw mode and window-size changes for a terminal on ``fd``; nothing for a pipe.

    Yields a descriptor that becomes readable when the window was resized (or None). The
    terminal's settings and the SIGWINCH handler are restored in ``finally``, always: a
    support engineer must not be left with a dead terminal after a dropped session.
    """
    if not os.isatty(fd):
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous: Any = None
    on_main = threading.current_thread() is threading.main_thread()

    def resized(signum: int, frame: Any) -> None:
        try:
            os.write(wake_w, b"w")
        except BlockingIOError:
            pass  # a resize is already pending: one wake-up is enough

    try:
        if on_main:
            previous = signal.signal(signal.SIGWINCH, resized)
        tty.setraw(fd)
        yield wake_r if on_main else None
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if on_main:
            signal.signal(signal.SIGWINCH, previous)
        os.close(wake_r)
        os.close(wake_w)


def _terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


def _refused(target: SshTarget, exc: ProbeError | OSError, started: datetime) -> dict[str, Any]:
    """The audit detail of a session that could not start."""
    if isinstance(exc, ProbeError):
        error, message = str(exc.code), exc.message
    else:  # the transcript could not be created
        error, message = "local_error", f"{type(exc).__name__}: {exc.strerror or exc}"
    detail: dict[str, Any] = {
        "ok": False,
        "target": str(target),
        "started": started.isoformat(),
        "error": error,
        "message": message,
    }
    if isinstance(exc, HostKeyError):
        detail.update(offered_host_key=exc.offered, pinned_host_key=exc.pinned)
    return detail


# -- the tunnel ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TunnelResult:
    """How a tunnel went; ``to_json`` is the ``remote.tunnel.close`` entry's detail."""

    counter: str
    target: str
    host_key: str | None
    local: str
    remote: str
    started: datetime
    ended: datetime
    connections: int
    failed_connections: int
    bytes_to_device: int
    bytes_from_device: int
    ended_by: str  # "stop", "interrupt", "connection lost", "error: ..."

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            started=self.started.isoformat(),
            ended=self.ended.isoformat(),
            duration_s=round((self.ended - self.started).total_seconds(), 3),
        )
        return data


class _Tally:
    """Counts shared by the relay threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.failed = 0
        self.to_device = 0
        self.from_device = 0

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def run_tunnel(
    target: SshTarget,
    known_hosts: Path,
    *,
    local_port: int,
    remote_host: str = "127.0.0.1",
    remote_port: int = 80,
    bind: str = "127.0.0.1",
    actor: str,
    store: Auditor,
    counter: str,
    stop_event: threading.Event,
    on_ready: Callable[[int], None],
    timeout_s: float = 10.0,
    now: Callable[[], datetime] = SYSTEM_CLOCK.now,
) -> TunnelResult:
    """Forward ``bind:local_port`` to ``remote_host:remote_port`` as seen from the counter.

    ``remote_host`` is resolved on the device (``127.0.0.1``: its own web interface).
    ``local_port=0`` picks a free port; ``on_ready(port)`` is called once the port listens and
    the SSH session is up. Runs until ``stop_event`` is set, Ctrl-C, or the SSH connection
    drops; then closes every connection and audits. ``bind`` must be a loopback address
    (``ValueError`` otherwise). Raises ``OSError`` when the local port cannot be had, and
    ``ProbeError`` (``HostKeyError``) when the session cannot start (audited).
    """
    if not _loopback(bind):
        raise ValueError(f"the tunnel listens on loopback only, not {bind!r}")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, local_port))
        listener.listen(16)
    except OSError:
        listener.close()
        raise
    port = int(listener.getsockname()[1])
    local, remote = f"{bind}:{port}", f"{remote_host}:{remote_port}"
    started = now()
    session = SshSession(target, known_hosts, timeout_s=timeout_s)
    try:
        session.open()
    except ProbeError as exc:
        listener.close()
        detail = _refused(target, exc, started) | {"local": local, "remote": remote}
        store.audit(now(), actor, "remote.tunnel.open", counter, detail)
        raise
    except KeyboardInterrupt:  # given up while connecting: nothing was opened
        listener.close()
        raise
    store.audit(
        started,
        actor,
        "remote.tunnel.open",
        counter,
        {
            "ok": True,
            "target": str(target),
            "host_key": session.host_key,
            "local": local,
            "remote": remote,
            "started": started.isoformat(),
        },
    )
    tally = _Tally()
    closing = threading.Event()
    live: dict[socket.socket, SshStream | None] = {}
    live_lock = threading.Lock()
    workers: list[threading.Thread] = []
    ended_by: str | None = None

    def forward(conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            stream = session.open_forward(remote_host, remote_port, (peer[0], peer[1]))
        except ProbeError as exc:
            with tally.lock:
                tally.failed += 1
                first = tally.failed == 1
            if first:  # once: a browser retrying a closed port must not flood the log
                log.warning("tunnel to %s %s: %s", counter, remote, exc.message)
            with live_lock:
                live.pop(conn, None)
            conn.close()
            return
        with live_lock:
            if closing.is_set():
                stream.close()
                conn.close()
                return
            live[conn] = stream
        try:
            _pump(conn, stream, closing, tally)
        finally:
            stream.close()
            conn.close()
            with live_lock:
                live.pop(conn, None)

    try:
        on_ready(port)
        while not stop_event.is_set():
            if not session.active:
                ended_by = "connection lost"
                break
            ready, _, _ = select.select([listener], [], [], TUNNEL_POLL_S)
            if not ready:
                continue
            try:
                conn, peer = listener.accept()
            except OSError as exc:
                log.warning("tunnel to %s: accept failed: %s", counter, exc)
                continue
            tally.add(connections=1)
            with live_lock:
                live[conn] = None
            worker = threading.Thread(
                target=forward, args=(conn, peer), name=f"tunnel-{counter}-{port}", daemon=True
            )
            workers = [w for w in workers if w.is_alive()] + [worker]
            worker.start()
        ended_by = ended_by or "stop"
    except KeyboardInterrupt:
        ended_by = "interrupt"
    finally:
        ended_by = ended_by or "error"  # something unexpected: it propagates after the audit
        closing.set()
        listener.close()
        with live_lock:
            open_now = list(live.items())
        for conn, stream in open_now:
            _shutdown(conn)  # wakes the relay's select; closing the fd alone would not
            if stream is not None:
                stream.close()
        for worker in workers:
            worker.join(timeout=5.0)
        session.close()
        ended = now()
        result = TunnelResult(
            counter=counter,
            target=str(target),
            host_key=session.host_key,
            local=local,
            remote=remote,
            started=started,
            ended=ended,
            connections=tally.connections,
            failed_connections=tally.failed,
            bytes_to_device=tally.to_device,
            bytes_from_device=tally.from_device,
            ended_by=ended_by,
        )
        store.audit(ended, actor, "remote.tunnel.close", counter, result.to_json())
    return result


def _pump(conn: socket.socket, stream: SshStream, closing: threading.Event, tally: _Tally) -> None:
    """Relay one connection both ways, half-closes included, until both sides are done."""
    local_open = remote_open = True
    while (local_open or remote_open) and not closing.is_set():
        watch: list[Any] = []
        if local_open:
            watch.append(conn)
        if remote_open:
            watch.append(stream)
        # The timeout only bounds how long a relay outlives the tunnel's closing.
        ready, _, _ = select.select(watch, [], [], 1.0)
        try:
            if local_open and conn in ready:
                data = conn.recv(CHUNK)
                if data:
                    stream.send(data)
                    tally.add(to_device=len(data))
                else:
                    local_open = False
                    stream.shutdown_write()
            if remote_open and stream in ready:
                data = stream.recv(CHUNK)
                if data:
                    conn.sendall(data)
                    tally.add(from_device=len(data))
                else:
                    remote_open = False
                    _shutdown(conn, socket.SHUT_WR)
                    if stream.closed:  # the device closed the connection outright
                        return
        except (ProbeError, OSError):
            return  # either side went away: the connection is over


def _shutdown(conn: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    try:
        conn.shutdown(how)
    except OSError:
        pass  # already disconnected


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
