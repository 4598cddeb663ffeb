"""The agent's one HTTP client against real servers on 127.0.0.1.

What the sinks and the counter probe rely on: a status is returned, never raised; every failure
is a ``ProbeError`` whose ``sent`` says whether the request may have reached the server (the
outbox searches before re-filing only then); an answer is read to a size cap; a POST is sent
once, whatever goes wrong; and no error text carries the URL's secrets.

The server is a plain socket that reads one request per connection, counts it, and then does
what the test scripts: answer, hang, drop the connection, or cut its answer short.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.transport.http import Reply, get, make_session, request
from diagnostics.model import ProbeError, ProbeErrorCode
from tests.agent.sink_helpers import make_cert, wait_for

integration = pytest.mark.integration
SECRET = "s3cret-T0ken-in-the-query-77"  # planted: URLs carry tokens; errors must not
TIMEOUT = (2.0, 2.0)


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


Behaviour = Callable[[socket.socket, "Server"], None]


@dataclass
class Server:
    behaviour: Behaviour
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    listener: socket.socket = field(default_factory=socket.socket)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is over
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                conn.settimeout(10)
                seen = _read_request(conn)
            except (OSError, ValueError):
                return  # a refused TLS handshake, a client that went away
            self.seen.append(seen)
            try:
                self.behaviour(conn, self)
            except OSError:
                pass  # the client hung up mid-answer: often the very thing a test is about


def _read_request(conn: socket.socket) -> Seen:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("closed before the request was complete")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return Seen(method, path, body)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(behaviour, tls)
        server.listener.bind(("127.0.0.1", 0))
        server.listener.listen()
        threading.Thread(target=server.serve, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.listener.close()


def answer(
    status: int = 200, body: bytes = b"ok", headers: dict[str, str] | None = None
) -> Behaviour:
    def behaviour(conn: socket.socket, server: Server) -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    return behaviour


def hang(conn: socket.socket, server: Server) -> None:
    server.release.wait(30)


def drop(conn: socket.socket, server: Server) -> None:
    pass  # the request was read; the connection closes without a word


def cut_short(conn: socket.socket, server: Server) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little")


def chunked(size: int) -> Behaviour:
    def behaviour(conn: socket.socket, server: Server) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for _ in range(size // 1000):
            conn.sendall(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    return behaviour


def failing(call: Callable[[], Reply]) -> ProbeError:
    with pytest.raises(ProbeError) as info:
        call()
    assert SECRET not in f"{info.value} {info.value.detail} {info.value!r}"
    return info.value


# --- pure


def test_a_probe_error_has_sent_false_unless_told() -> None:
    assert ProbeError(ProbeErrorCode.TIMEOUT, "x").sent is False
    assert ProbeError(ProbeErrorCode.TIMEOUT, "x", sent=True).sent is True


# --- answers


@integration
def test_a_status_is_returned_with_its_headers_not_raised(serve: Callable[..., Server]) -> None:
    server = serve(answer(503, b'{"busy": true}', {"Retry-After": "30", "X-Thing": "a"}))
    with make_session() as session:
        reply = request(
            session,
            "POST",
            server.url + "/ticket",
            json={"a": 1},
            headers={"Accept": "application/json"},
            timeout=TIMEOUT,
        )
    assert (reply.status, reply.body, reply.truncated) == (503, b'{"busy": true}', False)
    assert reply.headers.get("retry-after") == "30"  # any case
    assert reply.headers["X-Thing"] == "a"
    assert [(s.method, s.path, s.body) for s in server.seen] == [("POST", "/ticket", b'{"a": 1}')]


@integration
def test_neither_request_nor_get_follows_a_redirect(serve: Callable[..., Server]) -> None:
    # a counter's redirect is a finding for the caller, never a hop (30 hops took 33 s)
    target = serve(answer(200, b"arrived"))
    server = serve(answer(302, b"", {"Location": target.url + "/there"}))
    with make_session() as session:
        reply = request(session, "POST", server.url, data=b"x", timeout=TIMEOUT)
        assert (reply.status, reply.headers["Location"]) == (302, target.url + "/there")
        got = get(session, server.url, timeout=TIMEOUT)
        assert (got.status, got.headers["Location"]) == (302, target.url + "/there")
        followed = request(session, "GET", server.url, timeout=TIMEOUT, allow_redirects=True)
    assert (followed.status, followed.body) == (200, b"arrived")
    assert [s.path for s in target.seen] == ["/there"]  # only when asked


@integration
def test_an_oversized_answer_raises_or_is_cut_as_asked(serve: Callable[..., Server]) -> None:
    with make_session() as session:
        declared = serve(answer(200, b"y" * 5000))
        error = failing(lambda: get(session, declared.url, timeout=TIMEOUT, max_bytes=4096))
        assert (error.code, error.sent) == (ProbeErrorCode.BAD_RESPONSE, True)

        undeclared = serve(chunked(20_000))  # no Content-Length: counted while reading
        error = failing(lambda: get(session, undeclared.url, timeout=TIMEOUT, max_bytes=4096))
        assert (error.code, error.sent) == (ProbeErrorCode.BAD_RESPONSE, True)
        assert "4096" in error.message

        cut = request(
            session, "GET", undeclared.url, timeout=TIMEOUT, max_bytes=4096, truncate=True
        )
        assert (cut.status, cut.body, cut.truncated) == (200, b"x" * 4096, True)


@integration
def test_an_answer_that_breaks_off_was_sent(serve: Callable[..., Server]) -> None:
    server = serve(cut_short)
    with make_session() as session:
        error = failing(lambda: request(session, "POST", server.url, data=b"x", timeout=TIMEOUT))
    assert (error.code, error.sent) == (ProbeErrorCode.BAD_RESPONSE, True)


@integration
def test_a_passed_deadline_sends_nothing(serve: Callable[..., Server]) -> None:
    server = serve(chunked(5000))
    with make_session() as session:
        error = failing(
            lambda: get(session, server.url, timeout=TIMEOUT, deadline=time.monotonic() - 1)
        )
    assert (error.code, error.sent) == (ProbeErrorCode.TIMEOUT, False)
    assert server.seen == []


def drip(prefix: bytes, then: bytes) -> Behaviour:
    """Send ``prefix`` at once, then ``then`` one byte every 0.2 s: each read has its byte
    well inside a 2 s read timeout, so only a total deadline stops it."""

    def behaviour(conn: socket.socket, server: Server) -> None:
        conn.sendall(prefix)
        for byte in then:
            if server.release.wait(0.2):
                return
            conn.sendall(bytes([byte]))

    return behaviour


@integration
@pytest.mark.parametrize(
    "prefix, then",
    [
        (b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 10),  # the status line
        (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"y" * 500),  # the headers
        (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", b"z" * 500),  # the body
        (b"HTTP/1.1 200 OK\r\n\r\n", b"z" * 500),  # a body read to the close
    ],
    ids=["status", "headers", "body", "body-to-close"],
)
def test_a_drip_is_stopped_at_the_total_deadline(
    serve: Callable[..., Server], prefix: bytes, then: bytes
) -> None:
    server = serve(drip(prefix, then))
    with make_session() as session:
        started = time.monotonic()
        error = failing(
            lambda: get(session, server.url, timeout=TIMEOUT, deadline=time.monotonic() + 1.0)
        )
        took = time.monotonic() - started
    assert (error.code, error.sent) == (ProbeErrorCode.TIMEOUT, True)
    assert took < 5  # 1 s deadline; before, each of these ran until the peer stopped


@integration
def test_a_tls_handshake_that_stalls_is_stopped_at_the_total_deadline(
    serve: Callable[..., Server],
) -> None:
    server = serve(drip(b"", b"\x16\x03\x01\x00\x40" + b"\x00" * 64), tls=None)
    url = server.url.replace("http://", "https://")
    with make_session() as session:
        started = time.monotonic()
        error = failing(lambda: get(session, url, timeout=TIMEOUT, deadline=time.monotonic() + 1))
        took = time.monotonic() - started
    assert error.code in (ProbeErrorCode.TIMEOUT, ProbeErrorCode.TLS_ERROR)
    assert took < 5


@integration
def test_too_many_headers_are_a_bad_response(serve: Callable[..., Server]) -> None:
    many = {f"X-H{i}": "v" for i in range(20_000)}
    server = serve(answer(200, b"ok", many))
    with make_session() as session:
        error = failing(
            lambda: get(session, server.url, timeout=TIMEOUT, deadline=time.monotonic() + 5)
        )
    assert (error.code, error.sent) == (ProbeErrorCode.BAD_RESPONSE, True)
    assert "headers" in error.message


# --- failures, and whether the request went out


@integration
def test_a_hung_server_is_a_read_timeout_after_sending_and_the_post_goes_once(
    serve: Callable[..., Server],
) -> None:
    server = serve(hang)
    with make_session() as session:
        error = failing(
            lambda: request(
                session, "POST", f"{server.url}/?token={SECRET}", data=b"x", timeout=(2.0, 0.3)
            )
        )
    assert (error.code, error.sent) == (ProbeErrorCode.TIMEOUT, True)
    wait_for(lambda: bool(server.seen))
    assert [s.method for s in server.seen] == ["POST"]


@integration
def test_a_dropped_connection_after_sending_is_not_retried(serve: Callable[..., Server]) -> None:
    server = serve(drop)
    with make_session() as session:
        error = failing(
            lambda: request(
                session, "POST", f"{server.url}/?token={SECRET}", json={}, timeout=TIMEOUT
            )
        )
        assert (error.code, error.sent) == (ProbeErrorCode.BAD_RESPONSE, True)
        failing(lambda: request(session, "PUT", server.url, json={}, timeout=TIMEOUT))
    assert [s.method for s in server.seen] == ["POST", "PUT"]  # each sent exactly once


@integration
def test_a_closed_port_is_refused_and_nothing_was_sent() -> None:
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/?token={SECRET}"
        with make_session() as session:
            error = failing(lambda: request(session, "POST", url, data=b"x", timeout=TIMEOUT))
    assert (error.code, error.sent) == (ProbeErrorCode.REFUSED, False)


@integration
def test_an_untrusted_certificate_is_a_tls_error_before_anything_is_sent(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    cert = make_cert(tmp_path / "tls")
    server = serve(answer(200, b"secure"), tls=cert.server_context())
    url = f"{server.url}/?token={SECRET}"
    with make_session() as session:  # verify is on by default
        error = failing(lambda: request(session, "POST", url, data=b"x", timeout=TIMEOUT))
    assert (error.code, error.sent) == (ProbeErrorCode.TLS_ERROR, False)
    assert server.seen == []

    with make_session(verify=str(cert.cert_file)) as session:
        reply = request(session, "POST", url, data=b"x", timeout=TIMEOUT)
    assert (reply.status, reply.body) == (200, b"secure")

    with make_session(verify=str(tmp_path / "missing.pem")) as session:
        error = failing(lambda: request(session, "GET", url, timeout=TIMEOUT))
    assert (error.code, error.sent) == (ProbeErrorCode.TLS_ERROR, False)
    assert len(server.seen) == 1


def test_a_request_that_cannot_be_made_was_not_sent() -> None:
    with make_session() as session:
        error = failing(lambda: request(session, "GET", f"no-scheme/{SECRET}", timeout=TIMEOUT))
    assert (error.code, error.sent) == (ProbeErrorCode.BAD_RESPONSE, False)
