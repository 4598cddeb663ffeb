"""The one way this agent speaks SSH: a paramiko session with pinned host keys and bounded commands.

SSH into a counter is FootfallCam's remote-access channel (DESIGN.md §3): it runs only where
credentials are configured, runs read-only commands, and records every one of them. Three
things matter on site:

- **Host keys are pinned, never learned.** Keys live in the agent's own ``known_hosts`` in its
  state directory (never the user's ``~/.ssh``) and are checked with a ``RejectPolicy``. An
  unknown key is ``HOST_KEY_UNKNOWN``; a changed one is ``HOST_KEY_MISMATCH`` — a swapped
  device, or worse — and is refused, never written anywhere. Only ``enroll`` pins a key, on a
  person's deliberate command, and it shows the fingerprint as ``ssh-keygen -l`` does.
- **Everything is bounded.** Connect, banner, auth and channel-open timeouts are explicit; each
  command has its own timeout (a watchdog closes its channel) and an output size cap, so a hung
  device costs one timeout, never a worker.
- **Every command is recorded.** ``SshSession.records`` holds one dict per command (what ran,
  when, exit status, sizes, time taken) for the audit log. Commands are fixed strings chosen by
  the agent, and no output is recorded, so no secret can reach the log this way.

Remote-access sessions (``agent.remote``: ``ffc-agent remote shell`` and ``remote tunnel``) use
two more doors of the same session: ``open_shell`` (an interactive shell, with a pty or in plain
line mode) and ``open_forward`` (a ``direct-tcpip`` channel to a port on the device). Both hand
back an ``SshStream``, a byte stream with paramiko's errors already mapped, so this module stays
the only one that imports paramiko. What flows through those streams is recorded by the caller.

Library exceptions leave as ``ProbeError`` (``HostKeyError`` for the two host-key cases, which
also carries the fingerprints). A non-zero exit status is data for the caller to judge, except
126 and 127 (not allowed / not found), which are ``UNSUPPORTED``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, cast

from diagnostics.model import SYSTEM_CLOCK, Clock, ProbeError, ProbeErrorCode

if TYPE_CHECKING:
    import paramiko

    from agent.config import CounterConfig
else:

    class _Paramiko:
        """paramiko, imported on its first use: a gateway whose counters have no SSH never
        loads it (with cryptography and invoke, about 15 MiB of RSS). ``import`` is
        thread-safe: a probe thread that asks while another imports waits for the module."""

        def __getattr__(self, name: str) -> Any:
            import paramiko

            return getattr(paramiko, name)

    paramiko = _Paramiko()

log = logging.getLogger(__name__)
# paramiko logs every failed handshake with a traceback at ERROR, from its own thread, on every
# cycle a device is down; the failure is already mapped and reported once as a ProbeError.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

DEFAULT_MAX_OUTPUT = 64 * 1024  # bytes per stream; the read-only command set prints far less
UNSUPPORTED_STATUSES = (126, 127)  # "not allowed / not executable" and "command not found"


@dataclass(frozen=True, slots=True)
class SshTarget:
    """Where and as whom to log in. ``key_file`` is the private key (never logged)."""

    host: str
    port: int
    user: str
    key_file: Path

    @property
    def host_key_name(self) -> str:
        """The name the host is filed under in ``known_hosts``, as OpenSSH writes it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @classmethod
    def for_counter(cls, counter: CounterConfig) -> SshTarget | None:
        """The counter's SSH target, or None when SSH is not configured for it."""
        if counter.ssh is None or not counter.host:
            return None
        return cls(counter.host, counter.ssh.port, counter.ssh.user, Path(counter.ssh.key_file))


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One command's outcome. ``exit_status`` is None when there was none (cut off, or the
    connection dropped); output is decoded as UTF-8 with replacement characters."""

    command: str
    exit_status: int | None
    stdout: str
    stderr: str
    elapsed_s: float
    truncated: bool = False
    timed_out: bool = False


class HostKeyError(ProbeError):
    """The host key was unknown or changed; carries what was offered and what is pinned."""

    def __init__(
        self, code: ProbeErrorCode, message: str, *, offered: str, key_type: str, pinned: str | None
    ) -> None:
        super().__init__(code, message)
        self.offered = offered
        self.key_type = key_type
        self.pinned = pinned


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"{hostname} not found in known_hosts")
        self.key = key


class _PinnedOnly:
    """paramiko's ``RejectPolicy``, but keeping the key it rejected, so the finding can show
    it (paramiko only calls ``missing_host_key``; not a subclass, so that defining it does not
    import paramiko)."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> NoReturn:
        raise _UnknownHostKey(hostname, key)


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64, unpadded>``, the form ``ssh-keygen -l`` prints."""
    return str(key.fingerprint)


def pinned_fingerprint(target: SshTarget, known_hosts: Path) -> str | None:
    """The fingerprint pinned for ``target`` in ``known_hosts``, or None."""
    keys = _load_known_hosts(Path(known_hosts))
    entry = keys.lookup(target.host_key_name)
    if not entry:
        return None
    return fingerprint(next(iter(entry.values())))


def _load_known_hosts(path: Path) -> paramiko.HostKeys:
    """The agent's pinned keys; a damaged file is an error, never an empty list of pins."""
    keys = paramiko.HostKeys()
    try:
        if path.exists():
            keys.load(str(path))
    except (paramiko.hostkeys.InvalidHostKey, UnicodeDecodeError, OSError) as exc:
        raise ProbeError(
            ProbeErrorCode.HOST_KEY_UNKNOWN,
            f"{path} cannot be read ({type(exc).__name__}): repair or remove it, then enroll",
        ) from None
    return keys


class SshSession:
    """One logged-in session with a counter. Use as a context manager; closes in ``finally``.

    ``records`` collects one audit record per command run, whether it succeeded or not.
    """

    def __init__(
        self,
        target: SshTarget,
        known_hosts: Path,
        *,
        timeout_s: float = 10.0,
        max_output: int = DEFAULT_MAX_OUTPUT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.target = target
        self.clock = clock
        self.known_hosts = Path(known_hosts)
        self.timeout_s = timeout_s
        self.max_output = max_output
        self.records: list[dict[str, Any]] = []
        self.host_key: str | None = None
        self._client: paramiko.SSHClient | None = None

    def __enter__(self) -> SshSession:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect and log in; every failure is a ``ProbeError`` and leaves nothing open."""
        client = paramiko.SSHClient()
        try:
            # The agent's own file only: never load_system_host_keys (the user's ~/.ssh).
            # Parsed first by _load_known_hosts so that a damaged file is a ProbeError.
            _load_known_hosts(self.known_hosts)
            if self.known_hosts.exists():
                client.load_host_keys(str(self.known_hosts))
            client.set_missing_host_key_policy(cast("paramiko.MissingHostKeyPolicy", _PinnedOnly()))
            key = _load_key(self.target.key_file)
            t = self.timeout_s
            client.connect(
                self.target.host,
                port=self.target.port,
                username=self.target.user,
                pkey=key,
                timeout=t,
                banner_timeout=t,
                auth_timeout=t,
                channel_timeout=t,
                allow_agent=False,
                look_for_keys=False,
            )
            transport = client.get_transport()
            if transport is not None:
                self.host_key = fingerprint(transport.get_remote_server_key())
        except ProbeError:
            client.close()
            raise
        except (paramiko.SSHException, _UnknownHostKey, OSError, EOFError) as exc:
            client.close()
            raise _map_error(exc, self.target, self.known_hosts) from None
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, command: str, timeout_s: float) -> CommandResult:
        """Run ``command`` with its own timeout; record it; return what it printed.

        Raises ``ProbeError``: TIMEOUT when the command overran ``timeout_s``, UNSUPPORTED for
        exit status 126/127, BAD_RESPONSE when the session is gone. Any other exit status is
        returned for the caller to judge.
        """
        at = self.clock.now()
        started = time.monotonic()
        try:
            result = self._exec(command, timeout_s, started)
        except ProbeError as exc:
            self._record(command, at, time.monotonic() - started, error=str(exc))
            raise
        self._record(command, at, result.elapsed_s, result=result)
        if result.timed_out:
            raise ProbeError(
                ProbeErrorCode.TIMEOUT, f"'{command}' did not finish within {timeout_s:g}s"
            )
        if result.exit_status in UNSUPPORTED_STATUSES:
            raise ProbeError(
                ProbeErrorCode.UNSUPPORTED,
                f"'{command}' is not available on the device (exit {result.exit_status})",
                detail=_first_line(result.stderr),
            )
        return result

    @property
    def active(self) -> bool:
        """Whether the connection is still up (a long tunnel checks this between connections)."""
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def open_shell(self, term: str | None = "vt100", cols: int = 80, rows: int = 24) -> SshStream:
        """An interactive login shell; stderr is merged into the stream, as a terminal shows it.

        With ``term`` a pseudo-terminal of ``cols`` x ``rows`` is requested (for a person at a
        terminal: the device echoes and edits lines); ``term=None`` asks for none, so the shell
        reads plain lines (a script, a test, a pipe). Raises ``ProbeError`` (BAD_RESPONSE) when
        the session is gone or the device refuses the shell or the pty.
        """
        chan = self._open_session_channel()
        try:
            if term is not None:
                chan.get_pty(term=term, width=cols, height=rows)
            chan.set_combine_stderr(True)
            chan.invoke_shell()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            _close_quietly(chan)
            raise ProbeError(
                ProbeErrorCode.BAD_RESPONSE,
                f"{self.target}: the device refused an interactive shell",
                detail=_short(exc),
            ) from None
        return SshStream(chan)

    def open_forward(self, dest_host: str, dest_port: int, src: tuple[str, int]) -> SshStream:
        """A ``direct-tcpip`` channel: a TCP connection the device makes to ``dest_host:port``.

        ``src`` is the local peer the connection is for (sshd logs it). Raises ``ProbeError``:
        REFUSED when the device will not forward or nothing listens there, BAD_RESPONSE when
        the session is gone, TIMEOUT when the device does not answer in time.
        """
        transport = self._live_transport()
        try:
            chan = transport.open_channel(
                "direct-tcpip", (dest_host, dest_port), src, timeout=self.timeout_s
            )
        except paramiko.ChannelException as exc:
            # 1: administratively prohibited (forwarding off); 2: connect failed on the device
            raise ProbeError(
                ProbeErrorCode.REFUSED,
                f"{self.target}: the device did not open {dest_host}:{dest_port} ({exc.text})",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            code = ProbeErrorCode.TIMEOUT if "timeout" in str(exc).lower() else None
            raise ProbeError(
                code or ProbeErrorCode.BAD_RESPONSE,
                f"{self.target}: could not open a forwarding channel",
                detail=_short(exc),
            ) from None
        return SshStream(chan)

    def _live_transport(self) -> paramiko.Transport:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise ProbeError(ProbeErrorCode.BAD_RESPONSE, "the SSH session is not open")
        return transport

    def _open_session_channel(self) -> paramiko.Channel:
        transport = self._live_transport()
        try:
            return transport.open_session(timeout=self.timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ProbeError(
                ProbeErrorCode.BAD_RESPONSE, "could not open an SSH channel", detail=_short(exc)
            ) from None

    def _exec(self, command: str, timeout_s: float, started: float) -> CommandResult:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise ProbeError(ProbeErrorCode.BAD_RESPONSE, "the SSH session is not open")
        try:
            chan = transport.open_session(timeout=max(timeout_s, 0.1))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ProbeError(
                ProbeErrorCode.BAD_RESPONSE, "could not open an SSH channel", detail=_short(exc)
            ) from None
        expired = threading.Event()

        def expire() -> None:
            # Closing the channel wakes every wait below, exec_command's included.
            expired.set()
            _close_quietly(chan)

        watchdog = threading.Timer(max(timeout_s, 0.0), expire)
        watchdog.daemon = True
        watchdog.start()
        out, err = bytearray(), bytearray()
        truncated = False
        try:
            chan.exec_command(command)
            chan.shutdown_write()  # as `ssh host cmd </dev/null`: nothing waits on our stdin
            truncated = self._drain(chan, out, err)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not expired.is_set():
                raise ProbeError(
                    ProbeErrorCode.BAD_RESPONSE, f"'{command}' failed to run", detail=_short(exc)
                ) from None
        finally:
            watchdog.cancel()
            watchdog.join(5.0)  # a watchdog already firing finishes before the session moves on
            status = chan.exit_status if chan.exit_status_ready() else -1
            _close_quietly(chan)
        timed_out = expired.is_set()
        return CommandResult(
            command=command,
            exit_status=None if (timed_out or truncated or status < 0) else status,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            elapsed_s=time.monotonic() - started,
            truncated=truncated,
            timed_out=timed_out,
        )

    def _drain(self, chan: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
        """Read both streams until the command exits or the channel closes; True if cut off.

        Waits never spin: ``select`` on the channel wakes on data on either stream, on EOF and
        on close (the watchdog's included); after EOF only the exit status is still to come.
        """
        while True:
            if chan.recv_ready():
                out += chan.recv(32768)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(32768)
            elif chan.exit_status_ready():  # also set when the channel closes
                return False
            elif chan.eof_received:
                chan.status_event.wait(1.0)
            else:
                select.select([chan], [], [], 0.25)  # 0.25: bounds a race with the watchdog
            if len(out) > self.max_output or len(err) > self.max_output:
                del out[self.max_output :]
                del err[self.max_output :]
                _close_quietly(chan)
                return True

    def _record(
        self,
        command: str,
        at: datetime,
        elapsed_s: float,
        *,
        result: CommandResult | None = None,
        error: str = "",
    ) -> None:
        record: dict[str, Any] = {
            "at": at.isoformat(),
            "target": str(self.target),
            "command": command,
            "elapsed_s": round(elapsed_s, 3),
        }
        if result is not None:
            record.update(
                exit_status=result.exit_status,
                stdout_bytes=len(result.stdout.encode()),
                stderr_bytes=len(result.stderr.encode()),
                truncated=result.truncated,
                timed_out=result.timed_out,
            )
        if error:
            record["error"] = error
        self.records.append(record)
        log.debug("ssh %s: %s -> %s", self.target, command, record.get("exit_status", error))


class SshStream:
    """One SSH channel as a plain byte stream: an interactive shell or a forwarded connection.

    ``fileno`` makes it usable with ``select``. ``recv`` returns ``b""`` once the device is
    done sending (end of file, or the channel closed); ``send`` raises ``ProbeError``
    (BAD_RESPONSE) when the channel is gone. One reader and one writer may use it from two
    threads, as with a socket. ``close`` is safe to call twice, from any thread.
    """

    def __init__(self, chan: paramiko.Channel) -> None:
        self._chan = chan

    def __repr__(self) -> str:
        return f"SshStream(channel {self._chan.get_id()}, closed={self._chan.closed})"

    def fileno(self) -> int:
        return int(self._chan.fileno())

    def recv(self, nbytes: int = 32768) -> bytes:
        try:
            return bytes(self._chan.recv(nbytes))
        except (paramiko.SSHException, OSError, EOFError):
            return b""  # the connection died: for a reader, that is the end of the stream

    def send(self, data: bytes) -> None:
        try:
            self._chan.sendall(data)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ProbeError(
                ProbeErrorCode.BAD_RESPONSE, "the SSH channel is closed", detail=_short(exc)
            ) from None

    def shutdown_write(self) -> None:
        """Tell the device no more input comes (end of file on its side)."""
        try:
            self._chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError):
            pass  # already closed: nothing to tell

    def resize(self, cols: int, rows: int) -> None:
        """Follow the local terminal's new size (a shell opened with a pty)."""
        try:
            self._chan.resize_pty(width=cols, height=rows)
        except (paramiko.SSHException, OSError, EOFError):
            pass  # the session is ending; the next read says so

    @property
    def closed(self) -> bool:
        return bool(self._chan.closed)

    def exit_status(self, wait_s: float = 0.0) -> int | None:
        """The remote program's exit status, waiting up to ``wait_s`` for it; None if none came
        (the channel closed without one, or it is still running)."""
        if not self._chan.status_event.wait(max(wait_s, 0.0)):
            return None
        status = self._chan.exit_status
        return None if status is None or status < 0 else int(status)

    def close(self) -> None:
        _close_quietly(self._chan)


def enroll(target: SshTarget, known_hosts_path: Path, timeout: float = 10.0) -> str:
    """Fetch the counter's host key and pin it in ``known_hosts``; return its fingerprint.

    For ``ffc-agent enroll SERIAL``: a person's deliberate act, after a device was installed or
    replaced. Any key pinned before for this host is replaced. No login happens, so no key
    file is needed. The file is rewritten atomically with mode 0600.
    """
    known_hosts_path = Path(known_hosts_path)
    transport: paramiko.Transport | None = None
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise _map_error(exc, target, known_hosts_path) from None
    finally:
        if transport is not None:
            transport.close()
    keys = _load_known_hosts(known_hosts_path)
    while True:  # drop every older entry for the host, of any key type
        try:
            del keys[target.host_key_name]
        except KeyError:
            break
    keys.add(target.host_key_name, key.get_name(), key)
    known_hosts_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=known_hosts_path.parent)
    try:
        os.close(fd)
        keys.save(tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, known_hosts_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    printed = fingerprint(key)
    log.warning("pinned %s host key %s for %s", key.get_name(), printed, target.host_key_name)
    return printed


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(Path(path))
    except FileNotFoundError:
        raise ProbeError(ProbeErrorCode.AUTH_FAILED, f"SSH key file {path} not found") from None
    except PermissionError:
        raise ProbeError(ProbeErrorCode.AUTH_FAILED, f"SSH key file {path} unreadable") from None
    except (paramiko.SSHException, OSError, ValueError) as exc:
        # Never echo the exception text: it may quote the key file's content.
        raise ProbeError(
            ProbeErrorCode.AUTH_FAILED,
            f"SSH key file {path} is not a usable private key (encrypted or unknown type)",
            detail=type(exc).__name__,
        ) from None


def _map_error(exc: BaseException, target: SshTarget, known_hosts: Path) -> ProbeError:
    where = str(target)
    if isinstance(exc, paramiko.BadHostKeyException):
        offered, pinned = fingerprint(exc.key), fingerprint(exc.expected_key)
        return HostKeyError(
            ProbeErrorCode.HOST_KEY_MISMATCH,
            f"{target.host_key_name} offered host key {offered} ({exc.key.get_name()}), "
            f"but {pinned} is pinned: refused",
            offered=offered,
            key_type=exc.key.get_name(),
            pinned=pinned,
        )
    if isinstance(exc, _UnknownHostKey):
        offered = fingerprint(exc.key)
        return HostKeyError(
            ProbeErrorCode.HOST_KEY_UNKNOWN,
            f"{target.host_key_name} offered host key {offered} ({exc.key.get_name()}), "
            f"which is not pinned in {known_hosts}: refused",
            offered=offered,
            key_type=exc.key.get_name(),
            pinned=None,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        if "timeout" in str(exc).lower():
            return ProbeError(ProbeErrorCode.TIMEOUT, f"{where}: authentication timed out")
        return ProbeError(ProbeErrorCode.AUTH_FAILED, f"{where}: the key was refused")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        # socket errors, per paramiko's docs; its stubs only promise Exception
        codes = {e.errno for e in exc.errors.values() if isinstance(e, OSError)}
        if codes == {errno.EHOSTUNREACH}:
            return ProbeError(ProbeErrorCode.UNREACHABLE, f"{where}: no route to host")
        return ProbeError(ProbeErrorCode.REFUSED, f"{where}: connection refused")
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return ProbeError(ProbeErrorCode.TIMEOUT, f"{where}: no answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError(ProbeErrorCode.REFUSED, f"{where}: connection refused")
    if isinstance(exc, socket.gaierror):
        return ProbeError(ProbeErrorCode.UNREACHABLE, f"{where}: host name not found")
    if isinstance(exc, paramiko.SSHException):
        cause = exc.__cause__ or exc.__context__
        text = str(exc).lower()
        if "reset by peer" in text or "eof" in text:
            return ProbeError(ProbeErrorCode.BAD_RESPONSE, f"{where}: not an SSH server")
        # start_client returns quietly when its timeout passes mid-handshake; the next call
        # then says "No existing session": that, too, is a device that did not answer in time.
        if (
            isinstance(cause, TimeoutError)
            or "no existing session" in text
            or "timeout" in text
            or "timed out" in text
        ):
            return ProbeError(ProbeErrorCode.TIMEOUT, f"{where}: no SSH answer in time")
        return ProbeError(
            ProbeErrorCode.BAD_RESPONSE, f"{where}: SSH handshake failed", detail=_short(exc)
        )
    if isinstance(exc, EOFError | ConnectionResetError):
        return ProbeError(ProbeErrorCode.BAD_RESPONSE, f"{where}: connection closed by the device")
    return ProbeError(ProbeErrorCode.UNREACHABLE, f"{where}: cannot connect", detail=_short(exc))


def _close_quietly(chan: paramiko.Channel) -> None:
    try:
        chan.close()
    except (paramiko.SSHException, OSError, EOFError):
        pass  # the connection died meanwhile: nothing left to close


def _short(exc: BaseException) -> str:
    return type(exc).__name__


def _first_line(text: str, limit: int = 200) -> str:
    return text.strip().splitlines()[0][:limit] if text.strip() else ""
