"""The one way this agent speaks HTTP: a session factory, bounded reads, and error mapping.

Counters sit on store networks that misbehave in every way: they refuse, hang, trickle, answer
HTML error pages or megabytes of garbage. Every call here has an explicit (connect, read)
timeout and a response size cap, and every library exception leaves as a ``ProbeError`` with a
code from the closed list, so the rest of the agent never sees a ``requests`` exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from diagnostics.model import ProbeError, ProbeErrorCode

USER_AGENT = "ffc-agent/0.1"
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


def make_session(*, verify: bool | str = True) -> requests.Session:
    """A session that never retries on its own: the agent decides about retries."""
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
    status: int
    body: bytes
    content_type: str
    elapsed_s: float


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
    """GET ``url`` and read at most ``max_bytes``; raise ProbeError on any failure.

    ``deadline`` (a ``time.monotonic()`` value) bounds the whole read, so a device that
    trickles one byte a second cannot hold a worker past the cycle's deadline.
    HTTP error statuses are returned, not raised: the caller knows what 401 means for it.
    """
    started = time.monotonic()
    try:
        with session.get(url, params=params, timeout=timeout, stream=True, auth=auth) as resp:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > max_bytes:
                    raise ProbeError(
                        ProbeErrorCode.BAD_RESPONSE,
                        f"response larger than {max_bytes} bytes",
                    )
                if deadline is not None and time.monotonic() > deadline:
                    raise ProbeError(ProbeErrorCode.TIMEOUT, "response too slow: deadline passed")
                chunks.append(chunk)
            return Reply(
                resp.status_code,
                b"".join(chunks),
                resp.headers.get("Content-Type", ""),
                time.monotonic() - started,
            )
    except requests.exceptions.ConnectTimeout as exc:
        raise ProbeError(ProbeErrorCode.TIMEOUT, "connect timed out", detail=_short(exc)) from None
    except (requests.exceptions.ReadTimeout, requests.exceptions.Timeout) as exc:
        raise ProbeError(
            ProbeErrorCode.TIMEOUT, "no answer in time (read timed out)", detail=_short(exc)
        ) from None
    except requests.exceptions.SSLError as exc:
        raise ProbeError(
            ProbeErrorCode.BAD_RESPONSE, "TLS handshake failed", detail=_short(exc)
        ) from None
    except requests.exceptions.ConnectionError as exc:
        raise _connection_error(exc) from None
    except requests.exceptions.RequestException as exc:
        raise ProbeError(
            ProbeErrorCode.BAD_RESPONSE, "invalid HTTP exchange", detail=_short(exc)
        ) from None


def _connection_error(exc: requests.exceptions.ConnectionError) -> ProbeError:
    text = str(exc)
    lowered = text.lower()
    if "refused" in lowered:
        return ProbeError(ProbeErrorCode.REFUSED, "connection refused", detail=_short(exc))
    if "timed out" in lowered or "timeout" in lowered:
        return ProbeError(ProbeErrorCode.TIMEOUT, "no answer in time", detail=_short(exc))
    if any(w in lowered for w in ("name or service", "nodename", "getaddrinfo", "resolve")):
        return ProbeError(ProbeErrorCode.UNREACHABLE, "host name not found", detail=_short(exc))
    if any(w in lowered for w in ("remotedisconnected", "connection aborted", "reset by peer")):
        return ProbeError(
            ProbeErrorCode.BAD_RESPONSE, "connection closed without an answer", detail=_short(exc)
        )
    return ProbeError(ProbeErrorCode.UNREACHABLE, "cannot connect", detail=_short(exc))


def _short(exc: BaseException) -> str:
    # Library messages can embed the full URL with its query string, which for the counter
    # API carries the password or token: keep only the exception class and drop the rest.
    return type(exc).__name__
