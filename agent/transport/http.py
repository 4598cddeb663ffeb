"""The one way this agent speaks HTTP: a session factory, bounded reads, and error mapping.

Counters sit on store networks that misbehave in every way: they refuse, hang, trickle, answer
HTML error pages or megabytes of garbage; helpdesks and chat servers go down mid-request. Every
call here has an explicit (connect, read) timeout and a response size cap, never retries on its
own (a POST sent twice is a ticket filed twice), and every library exception leaves as a
``ProbeError`` with a code from the closed list, so the rest of the agent never sees a
``requests`` exception.

Contract of ``request`` (``get`` is the same for a GET):

- HTTP statuses are returned in a ``Reply``, never raised: what a 401 or a 503 means is the
  caller's business, a 3xx included: redirects are followed only when asked, and ``get`` (the
  counters' client) never follows one — a counter that redirects is a finding, not a hop.
- ``deadline`` (a ``time.monotonic()`` value) is a total deadline for the whole exchange:
  connect, TLS handshake, status line, headers and body. It is enforced at the socket, not
  between reads: a watchdog thread shuts the request's socket down when it passes, so a peer
  that drips one byte a second, or hangs half-way through its headers, costs exactly the time
  left and no more. The (connect, read) timeouts still apply inside it. Headers are bounded
  by http.client (100 lines of at most 64 KiB each).
- Failures raise ``ProbeError``; ``ProbeError.sent`` says whether the request may have reached
  the server. ``sent=False``: refused (REFUSED), connect timeout (TIMEOUT), no route or no such
  host (UNREACHABLE), a failed TLS handshake or unusable CA file (TLS_ERROR), a request that
  cannot be made (BAD_RESPONSE: a bad URL or header), a ``deadline`` already passed
  (TIMEOUT). ``sent=True``: no answer in time (TIMEOUT), the connection dropped after sending
  or the answer broke off (BAD_RESPONSE), the ``deadline`` passed once connected (TIMEOUT),
  too many or too long header lines (BAD_RESPONSE), an answer larger than ``max_bytes``
  (BAD_RESPONSE, unless ``truncate``).
- Messages and ``detail`` never contain ``str()`` of a library exception: urllib3 puts the whole
  URL there, and URLs here carry counter passwords, API tokens and webhook secrets.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError

from diagnostics.model import ProbeError, ProbeErrorCode

USER_AGENT = "ffc-agent/0.1"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
_CHUNK = 65536

# For annotations elsewhere, so that no module outside ``agent/probes`` imports requests.
Session = requests.Session


def make_session(*, verify: bool | str = True) -> requests.Session:
    """A session that never retries on its own: the agent decides about retries.

    ``HTTPAdapter(max_retries=0)`` is urllib3's ``Retry(0, read=False)``: a request that failed
    after it was sent is never sent again, whatever its method."""
    session = requests.Session()
    adapter = _GuardedAdapter(max_retries=0, pool_connections=4, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.verify = verify
    session.trust_env = False  # a gateway's proxy variables must not reroute device traffic
    return session


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: its status, at most ``max_bytes`` of its body, and its headers (looked up
    case-insensitively). ``truncated`` is True when ``request(truncate=True)`` cut the body."""

    status: int
    body: bytes
    content_type: str
    elapsed_s: float
    headers: Mapping[str, str] = field(default_factory=dict, compare=False)
    truncated: bool = False


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    json: Any = None,
    data: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: tuple[float, float],
    max_bytes: int = DEFAULT_MAX_BYTES,
    auth: Any = None,
    deadline: float | None = None,
    allow_redirects: bool = False,
    truncate: bool = False,
) -> Reply:
    """Send one request and read at most ``max_bytes`` of the answer; see the module docstring.

    ``timeout`` is (connect, read) in seconds. ``deadline`` (a ``time.monotonic()`` value)
    bounds the whole exchange at the socket (see the module docstring), so a server that
    trickles one byte a second cannot hold a worker past it. With ``truncate`` an answer longer
    than ``max_bytes`` is cut there (for callers that need the status line and only a glimpse
    of the body) instead of raising.
    """
    started = time.monotonic()
    guard = None
    if deadline is not None:
        left = deadline - started
        if left <= 0:
            raise ProbeError(ProbeErrorCode.TIMEOUT, "the deadline passed before the request")
        timeout = (min(timeout[0], left), min(timeout[1], left))
        guard = _Guard(deadline)
        _WATCHDOG.watch(guard)
    _local.guard = guard
    try:
        return _exchange(
            session,
            method,
            url,
            started=started,
            guard=guard,
            max_bytes=max_bytes,
            truncate=truncate,
            params=dict(params) if params is not None else None,
            json=json,
            data=data,
            headers=dict(headers) if headers is not None else None,
            timeout=timeout,
            auth=auth,
            allow_redirects=allow_redirects,
        )
    finally:
        _local.guard = None
        if guard is not None:
            guard.close()


def _exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    started: float,
    guard: _Guard | None,
    max_bytes: int,
    truncate: bool,
    **kwargs: Any,
) -> Reply:
    try:
        resp = session.request(method, url, stream=True, **kwargs)
    except requests.exceptions.RequestException as exc:
        if guard is not None and guard.fired:
            raise guard.error() from None
        raise _request_error(exc) from None
    except OSError as exc:
        # requests checks ``verify``'s CA path before connecting and raises a bare OSError.
        raise ProbeError(
            ProbeErrorCode.TLS_ERROR, "the TLS CA file cannot be read", detail=_short(exc)
        ) from None
    with resp:
        try:
            body, truncated = _read_body(resp, max_bytes, guard, truncate)
        except ProbeError:
            if guard is not None and guard.fired:
                raise guard.error() from None
            raise
        if guard is not None and guard.fired:
            # a socket shut down mid-body reads as a clean end: the body may be cut short
            raise guard.error()
        return Reply(
            resp.status_code,
            body,
            resp.headers.get("Content-Type", ""),
            time.monotonic() - started,
            resp.headers.copy(),
            truncated,
        )


def get(
    session: requests.Session,
    url: str,
    *,
    params: dict[str, str] | None = None,
    timeout: tuple[float, float],
    max_bytes: int = DEFAULT_MAX_BYTES,
    auth: Any = None,
    deadline: float | None = None,
) -> Reply:
    """GET ``url`` and read at most ``max_bytes``; raise ProbeError on any failure, including
    an answer larger than ``max_bytes``. A redirect is returned as it came, never followed: a
    counter that sends the agent elsewhere (a captive portal, a login page on another host, a
    loop) is a fact to report, and following it would spend the deadline on hops and carry the
    counter's credentials to another host."""
    return request(
        session,
        "GET",
        url,
        params=params,
        timeout=timeout,
        max_bytes=max_bytes,
        auth=auth,
        deadline=deadline,
        allow_redirects=False,
    )


def _read_body(
    resp: requests.Response, max_bytes: int, guard: _Guard | None, truncate: bool
) -> tuple[bytes, bool]:
    declared = resp.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(chunk_size=min(_CHUNK, max_bytes + 1)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                if not truncate:
                    raise _too_large(max_bytes)
                return b"".join(chunks)[:max_bytes], True
            if guard is not None and time.monotonic() > guard.deadline:
                raise guard.error()
    except requests.exceptions.RequestException as exc:
        raise _body_error(exc) from None
    return b"".join(chunks), False


# -- the total deadline, at the socket ------------------------------------------------------------
#
# Why a watchdog and not a socket timeout: a socket timeout bounds each recv, so a peer that
# sends a byte just before each timeout holds the request for ever, and http.client reads the
# status line and headers with no deadline of its own. Setting the timeout from the remaining
# time before every recv would need a wrapper around the socket that http.client, urllib3 and
# ssl all accept; shutting the socket down from another thread is a documented way to wake a
# blocked recv (urllib3's own ``HTTPResponse.shutdown`` does it) and works the same in the TLS
# handshake, the status line, the headers and the body. The guard holds its own duplicate of
# each socket's descriptor, so it can never shut down a descriptor number that was closed and
# reused by another connection; the duplicates are closed when the request ends.


class _Guard:
    """One request's total deadline and the sockets it is enforced on."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self.done = False
        self._fds: set[int] = set()
        self._dups: list[socket.socket] = []
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self.done:
                return
            try:
                fd = sock.fileno()
                if fd < 0 or fd in self._fds:
                    return
                dup = socket.fromfd(fd, sock.family, sock.type)
            except OSError:
                return
            self._fds.add(fd)
            self._dups.append(dup)
            if self.fired:
                _shutdown(dup)

    @property
    def connected(self) -> bool:
        return bool(self._fds)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            for dup in self._dups:
                _shutdown(dup)

    def close(self) -> None:
        with self._lock:
            self.done = True
            for dup in self._dups:
                dup.close()
            self._dups.clear()

    def error(self) -> ProbeError:
        return ProbeError(
            ProbeErrorCode.TIMEOUT,
            "no complete answer before the deadline",
            sent=self.connected,
        )


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer or by us


class _Watchdog:
    """One daemon thread for the process: fires each guard at its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Guard]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, guard: _Guard) -> None:
        with self._cond:
            heapq.heappush(self._heap, (guard.deadline, next(self._ids), guard))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)  # finished in time: forget it
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                guard = heapq.heappop(self._heap)[2]
            guard.fire()


_WATCHDOG = _Watchdog()
_local = threading.local()  # the guard of the request this thread is making, if any


def _attach(sock: Any) -> None:
    guard = getattr(_local, "guard", None)
    if guard is not None and sock is not None:
        guard.attach(sock)


class _GuardedHTTPConnection(HTTPConnection):
    """urllib3's connection, showing its socket to the current request's guard: when it is
    made (before any TLS handshake) and when a kept-alive one is reused."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self.sock)
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self.sock)
        super().request(*args, **kwargs)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool,
            "https": _GuardedHTTPSPool,
        }


# -- errors ----------------------------------------------------------------------------------------


def _too_large(max_bytes: int) -> ProbeError:
    return ProbeError(
        ProbeErrorCode.BAD_RESPONSE, f"response larger than {max_bytes} bytes", sent=True
    )


def _request_error(exc: requests.exceptions.RequestException) -> ProbeError:
    """A failure before the answer's headers arrived; the order of the checks matters, since
    ``ConnectTimeout`` and ``SSLError`` are also ``ConnectionError``s."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ProbeError(ProbeErrorCode.TIMEOUT, "connect timed out", detail=_short(exc))
    if isinstance(exc, requests.exceptions.Timeout):
        return ProbeError(
            ProbeErrorCode.TIMEOUT,
            "no answer in time (read timed out)",
            detail=_short(exc),
            sent=True,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return ProbeError(
            ProbeErrorCode.TLS_ERROR,
            "TLS handshake failed: the certificate is not trusted or the server speaks no TLS",
            detail=_short(exc),
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return _connection_error(exc)
    if isinstance(
        exc,
        requests.exceptions.TooManyRedirects
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    ):
        # Only ever after a redirect was followed: requests went out.
        return ProbeError(
            ProbeErrorCode.BAD_RESPONSE, "invalid HTTP exchange", detail=_short(exc), sent=True
        )
    # A URL, header or body requests refuses to send (InvalidURL, InvalidHeader ...).
    return ProbeError(ProbeErrorCode.BAD_RESPONSE, "invalid HTTP request", detail=_short(exc))


def _connection_error(exc: requests.exceptions.ConnectionError) -> ProbeError:
    """Connecting failed (urllib3 gave up with ``MaxRetryError``: nothing was sent), or the
    connection broke after the request went out (a bare ``ProtocolError`` or ``OSError``)."""
    cause = exc.args[0] if exc.args else None
    if not isinstance(cause, MaxRetryError):
        chain = _chain(cause).lower()
        if "linetoolong" in chain or "httpexception" in chain:
            # http.client's bounds: more than 100 header lines, or a line over 64 KiB
            return ProbeError(
                ProbeErrorCode.BAD_RESPONSE,
                "the answer's status line or headers are too many or too long",
                detail=_short(exc),
                sent=True,
            )
        if "timeout" in chain or "timed out" in chain:
            return ProbeError(
                ProbeErrorCode.TIMEOUT, "no answer in time", detail=_short(exc), sent=True
            )
        if "closedpoolerror" in chain:
            return ProbeError(ProbeErrorCode.UNREACHABLE, "cannot connect", detail=_short(exc))
        return ProbeError(
            ProbeErrorCode.BAD_RESPONSE,
            "connection closed without an answer",
            detail=_short(exc),
            sent=True,
        )
    reason = cause.reason
    chain = _chain(reason).lower()
    if any(w in chain for w in ("gaierror", "nameresolution", "name or service", "nodename")):
        return ProbeError(ProbeErrorCode.UNREACHABLE, "host name not found", detail=_short(exc))
    if "refused" in chain:
        return ProbeError(ProbeErrorCode.REFUSED, "connection refused", detail=_short(exc))
    if "timed out" in chain or "timeout" in chain:
        return ProbeError(ProbeErrorCode.TIMEOUT, "connect timed out", detail=_short(exc))
    return ProbeError(ProbeErrorCode.UNREACHABLE, "cannot connect", detail=_short(exc))


def _body_error(exc: requests.exceptions.RequestException) -> ProbeError:
    """The answer's headers came, its body broke off: the request certainly arrived."""
    chain = _chain(exc).lower()
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return ProbeError(
            ProbeErrorCode.BAD_RESPONSE,
            "the answer's compressed body cannot be decoded",
            detail=_short(exc),
            sent=True,
        )
    if isinstance(exc, requests.exceptions.Timeout) or "timeout" in chain or "timed out" in chain:
        return ProbeError(
            ProbeErrorCode.TIMEOUT,
            "the answer stalled (read timed out)",
            detail=_short(exc),
            sent=True,
        )
    return ProbeError(
        ProbeErrorCode.BAD_RESPONSE, "the answer broke off", detail=_short(exc), sent=True
    )


def _chain(exc: BaseException | None) -> str:
    """The names of the exceptions inside ``exc`` and the OS's words for why, never its URL.

    urllib3 nests its reasons in ``args`` (``ProtocolError('Connection aborted.',
    ConnectionResetError(104, 'Connection reset by peer'))``), in ``reason`` and in the
    exception chain; socket errors carry ``strerror``. Those are read; messages that may hold a
    URL are not."""
    words: list[str] = []
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        words.append(type(item).__name__)
        if isinstance(item, OSError) and item.strerror:
            words.append(item.strerror)
        # urllib3 2 chains the socket error as ``__cause__``, urllib3 1.26 as ``__context__``
        todo += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return " ".join(words)


def _short(exc: BaseException) -> str:
    # Library messages can embed the full URL with its query string, which for the counter
    # API carries the password or token: keep only the exception class and drop the rest.
    return type(exc).__name__
