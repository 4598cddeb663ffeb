"""The one way this agent speaks HTTP: a session factory, bounded reads, and error mapping.

Counters sit on store networks that misbehave in every way: they refuse, hang, trickle, answer
HTML error pages or megabytes of garbage; helpdesks and chat servers go down mid-request. Every
call here has an explicit (connect, read) timeout and a response size cap, never retries on its
own (a POST sent twice is a ticket filed twice), and every library exception leaves as a
``ProbeError`` with a code from the closed list, so the rest of the agent never sees a
``requests`` exception.

Contract of ``request`` (``get`` is the same for a GET):

- HTTP statuses are returned in a ``Reply``, never raised: what a 401 or a 503 means is the
  caller's business. Redirects are not followed unless asked (``get`` follows them).
- Failures raise ``ProbeError``; ``ProbeError.sent`` says whether the request may have reached
  the server. ``sent=False``: refused (REFUSED), connect timeout (TIMEOUT), no route or no such
  host (UNREACHABLE), a failed TLS handshake or unusable CA file (TLS_ERROR), a request that
  cannot be made (BAD_RESPONSE: a bad URL or header). ``sent=True``: no answer in time
  (TIMEOUT), the connection dropped after sending or the answer broke off (BAD_RESPONSE), the
  ``deadline`` passed while reading (TIMEOUT), an answer larger than ``max_bytes``
  (BAD_RESPONSE, unless ``truncate``).
- Messages and ``detail`` never contain ``str()`` of a library exception: urllib3 puts the whole
  URL there, and URLs here carry counter passwords, API tokens and webhook secrets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
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
    adapter = HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=4)
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
    bounds reading the body, so a server that trickles one byte a second cannot hold a worker
    past the cycle's deadline. With ``truncate`` an answer longer than ``max_bytes`` is cut
    there (for callers that need the status line and only a glimpse of the body) instead of
    raising.
    """
    started = time.monotonic()
    try:
        resp = session.request(
            method,
            url,
            params=dict(params) if params is not None else None,
            json=json,
            data=data,
            headers=dict(headers) if headers is not None else None,
            timeout=timeout,
            stream=True,
            auth=auth,
            allow_redirects=allow_redirects,
        )
    except requests.exceptions.RequestException as exc:
        raise _request_error(exc) from None
    except OSError as exc:
        # requests checks ``verify``'s CA path before connecting and raises a bare OSError.
        raise ProbeError(
            ProbeErrorCode.TLS_ERROR, "the TLS CA file cannot be read", detail=_short(exc)
        ) from None
    with resp:
        body, truncated = _read_body(resp, max_bytes, deadline, truncate)
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
    """GET ``url`` (following redirects) and read at most ``max_bytes``; raise ProbeError on
    any failure, including an answer larger than ``max_bytes``."""
    return request(
        session,
        "GET",
        url,
        params=params,
        timeout=timeout,
        max_bytes=max_bytes,
        auth=auth,
        deadline=deadline,
        allow_redirects=True,
    )


def _read_body(
    resp: requests.Response, max_bytes: int, deadline: float | None, truncate: bool
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
            if deadline is not None and time.monotonic() > deadline:
                raise ProbeError(
                    ProbeErrorCode.TIMEOUT, "response too slow: deadline passed", sent=True
                )
    except requests.exceptions.RequestException as exc:
        raise _body_error(exc) from None
    return b"".join(chunks), False


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
