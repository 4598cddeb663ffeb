"""Hostile counters on 127.0.0.1: every way a counter's HTTP API can misbehave, as real sockets.

The simulator (``simulator/``) is a well-behaved FootfallCam speaking HTTP through a server
framework; what is here cannot be written that way: status lines and headers dripped a byte at
a time, 20,000 headers, a Content-Length that lies, half-closed and reset connections, TLS
spoken to a plain port, compression bombs. Each ``Hostile`` behaviour is a function given the
accepted socket and the request line; it answers the token and counts calls as a counter
would, and misbehaves where it is told to.

``CORPUS`` names each behaviour and what the agent must make of it: the probe it shows up on
(``api`` or ``snapshot``) and the ``ProbeErrorCode`` value of that observation. Used by
``tests/agent/test_hostile.py`` (the assertions) and ``bench/hostile.py`` (the figures).
Nothing here ever connects anywhere: it only listens on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import io
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

TOKEN = b'{"access_token": "hostile-token-0123456789"}'
DRIP_EVERY_S = 0.1  # each byte arrives well inside any read timeout: only a deadline stops it

Behaviour = Callable[[socket.socket, str, "Hostile"], None]


@dataclass(frozen=True)
class Case:
    name: str
    behaviour: Behaviour
    probe: str  # where the finding shows: "api" or "snapshot"
    code: str  # the ProbeErrorCode value expected on that observation
    scheme: str = "http"
    why: str = ""


@dataclass
class Hostile:
    """One hostile counter: a listener on 127.0.0.1:0 and a behaviour per connection."""

    behaviour: Behaviour
    stop: threading.Event = field(default_factory=threading.Event)
    listener: socket.socket = field(default_factory=socket.socket)
    connections: int = 0

    def __post_init__(self) -> None:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        threading.Thread(target=self._serve, name="hostile", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def close(self) -> None:
        self.stop.set()
        self.listener.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                self.behaviour(conn, _request_line(conn), self)
            except OSError:
                pass  # the agent hung up: that is its right


def _request_line(conn: socket.socket) -> str:
    """Read the request head (or whatever the client sends first) and return its first line."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if not data.startswith((b"GET", b"POST", b"PUT", b"HEAD")):
            break  # not HTTP (a TLS ClientHello): answer what a plain server would
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def _path(line: str) -> str:
    parts = line.split(" ")
    return parts[1].split("?", 1)[0] if len(parts) > 1 else ""


def head(status: int = 200, headers: dict[str, str] | None = None, length: int | None = None):
    lines = [f"HTTP/1.1 {status} X", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reply(conn: socket.socket, body: bytes, status: int = 200, **headers: str) -> None:
    conn.sendall(head(status, {k.replace("_", "-"): v for k, v in headers.items()}, len(body)))
    conn.sendall(body)


def counts_body(row: str) -> bytes:
    return (
        '{"serial": "HOSTILE", "device_time": "2026-11-25T14:00:00Z", "data": [' + row + "]}"
    ).encode()


def _row(count_in: str = "1", ts: str = '"2026-11-25T13:00:00Z"') -> str:
    return f'{{"timestamp": {ts}, "in": {count_in}, "out": 1}}'


GOOD_COUNTS = counts_body(_row())


def everywhere(answer: Callable[[socket.socket, Hostile], None]) -> Behaviour:
    """Misbehave on every request, the token call included."""

    def behaviour(conn: socket.socket, line: str, server: Hostile) -> None:
        answer(conn, server)

    return behaviour


def at_counts(body: bytes) -> Behaviour:
    """A good token; this body for the counts."""

    def behaviour(conn: socket.socket, line: str, server: Hostile) -> None:
        token = _path(line).endswith("access_token.cgi")
        reply(conn, TOKEN if token else body, content_type="application/json")

    return behaviour


def at_snapshot(body: bytes, content_type: str) -> Behaviour:
    """A good token and good counts; this body at the snapshot path."""

    def behaviour(conn: socket.socket, line: str, server: Hostile) -> None:
        if _path(line).endswith("access_token.cgi"):
            reply(conn, TOKEN)
        elif _path(line).endswith("apiCount.cgi"):
            reply(conn, GOOD_COUNTS)
        else:
            reply(conn, body, content_type=content_type)

    return behaviour


# -- the behaviours ------------------------------------------------------------------------------


def hang(conn: socket.socket, server: Hostile) -> None:
    server.stop.wait(30)


def half_close(conn: socket.socket, server: Hostile) -> None:
    conn.shutdown(socket.SHUT_WR)  # FIN without a word, and keep the socket open
    server.stop.wait(30)


def reset(conn: socket.socket, server: Hostile) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def silent_close(conn: socket.socket, server: Hostile) -> None:
    pass


def garbage(conn: socket.socket, server: Hostile) -> None:
    conn.sendall(bytes(range(256)) * 64)


def plain_http(conn: socket.socket, server: Hostile) -> None:
    # a plain HTTP server answering a TLS ClientHello: 400 and close
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def drip(prefix: bytes, rest: bytes) -> Callable[[socket.socket, Hostile], None]:
    def answer(conn: socket.socket, server: Hostile) -> None:
        conn.sendall(prefix)
        for byte in rest:
            if server.stop.wait(DRIP_EVERY_S):
                return
            conn.sendall(bytes([byte]))

    return answer


def many_headers(n: int) -> Callable[[socket.socket, Hostile], None]:
    def answer(conn: socket.socket, server: Hostile) -> None:
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(n))
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\n{}")

    return answer


def long_header(conn: socket.socket, server: Hostile) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n{}")


def length_longer(conn: socket.socket, server: Hostile) -> None:
    conn.sendall(head(200, length=10_000) + TOKEN)  # promises 10,000 bytes, sends 46, closes


def length_shorter(conn: socket.socket, server: Hostile) -> None:
    conn.sendall(head(200, length=5) + TOKEN)  # the reply is cut at 5 bytes: '{"acc'


def huge_chunked(conn: socket.socket, server: Hostile) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(160):  # 10 MiB, past the 4 MiB cap
        conn.sendall(b"10000\r\n" + chunk + b"\r\n")
    conn.sendall(b"0\r\n\r\n")


BOMB_MIB = 64  # of zeros, 16 times the 4 MiB cap, about 64 KiB on the wire


def _bomb(encoding: str) -> bytes:
    zeros = b"\0" * (1 << 20)
    if encoding == "gzip":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
            for _ in range(BOMB_MIB):
                gz.write(zeros)
        return buf.getvalue()
    comp = zlib.compressobj(9)
    return b"".join([*(comp.compress(zeros) for _ in range(BOMB_MIB)), comp.flush()])


def bomb(encoding: str) -> Callable[[socket.socket, Hostile], None]:
    body = _bomb(encoding)  # made once, before any counter is probed

    def answer(conn: socket.socket, server: Hostile) -> None:
        conn.sendall(head(200, {"Content-Encoding": encoding}, len(body)) + body)

    return answer


def status(
    code: int, body: bytes = b"", **headers: str
) -> Callable[[socket.socket, Hostile], None]:
    def answer(conn: socket.socket, server: Hostile) -> None:
        reply(conn, body, code, **headers)

    return answer


def token_then_401(conn: socket.socket, line: str, server: Hostile) -> None:
    if _path(line).endswith("access_token.cgi"):
        reply(conn, TOKEN)
    else:
        reply(conn, b"", 401)  # every token it handed out is refused, a fresh one too


def redirect_to_self(conn: socket.socket, line: str, server: Hostile) -> None:
    reply(conn, b"", 302, Location=f"http://127.0.0.1:{server.port}{_path(line)}")


LOGIN_PAGE = (
    b"<!DOCTYPE html><html><head><title>Router login</title></head>"
    b"<body><form>password <input type=password></form></body></html>"
)
LAUGHS = (  # the counter API's XML format, with ten levels of ten-fold entities: 10^9 "lol"s
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10))
    + b']><CountData><Slot Time="2026-11-25T13:00:00Z"><Count typeid="3">&lol9;</Count>'
    b'<Count typeid="4">1</Count></Slot></CountData>'
)


def jpeg_bomb() -> bytes:
    """A real 8x8 JPEG whose frame header then claims 65,000 x 65,000 pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "JPEG")
    small = buf.getvalue()
    at = small.index(b"\xff\xc0")
    return small[: at + 5] + (65000).to_bytes(2, "big") * 2 + small[at + 9 :]


def png_bomb() -> bytes:
    """A PNG of 30,000 x 30,000 one-bit pixels, all zero: 113 KB that decode to 900 MB."""
    width = height = 30_000
    raw = zlib.compress((b"\0" + b"\0" * (width // 8)) * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x01\x00\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


CORPUS: list[Case] = [
    # -- the connection
    Case("hang", everywhere(hang), "api", "timeout", why="accepts, never answers"),
    Case("half_close", everywhere(half_close), "api", "bad_response", why="FIN, no answer"),
    Case("reset", everywhere(reset), "api", "bad_response", why="RST after the request"),
    Case("silent_close", everywhere(silent_close), "api", "bad_response", why="closes, no word"),
    Case("tls_to_plain", everywhere(plain_http), "api", "tls_error", scheme="https"),
    Case("binary_garbage", everywhere(garbage), "api", "bad_response", why="not HTTP at all"),
    # -- slow drips: each byte in time, the whole never
    Case(
        "drip_status",
        everywhere(drip(b"", b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n" + TOKEN)),
        "api",
        "timeout",
    ),
    Case(
        "drip_headers",
        everywhere(drip(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"y" * 1000 + b"\r\n\r\n")),
        "api",
        "timeout",
    ),
    Case(
        "drip_body",
        everywhere(drip(head(200, length=len(TOKEN) * 40), TOKEN * 40)),
        "api",
        "timeout",
    ),
    # -- the head
    Case("headers_20000", everywhere(many_headers(20_000)), "api", "bad_response"),
    Case("header_200k_line", everywhere(long_header), "api", "bad_response"),
    Case("content_length_longer", everywhere(length_longer), "api", "bad_response"),
    Case("content_length_shorter", everywhere(length_shorter), "api", "bad_response"),
    # -- the body
    Case("chunked_10mib", everywhere(huge_chunked), "api", "bad_response"),
    Case("gzip_bomb", everywhere(bomb("gzip")), "api", "bad_response", why="64 MiB of zeros"),
    Case("deflate_bomb", everywhere(bomb("deflate")), "api", "bad_response"),
    Case(
        "invalid_utf8",
        at_counts(b'{"data": [{"timestamp": "\xff\xfe", "in": 1}]}'),
        "api",
        "bad_response",
    ),
    Case("html_login_page", everywhere(status(200, LOGIN_PAGE)), "api", "bad_response"),
    Case("xml_billion_laughs", at_counts(LAUGHS), "api", "bad_response"),
    Case("empty_200", everywhere(status(200)), "api", "bad_response"),
    # -- statuses
    Case("http_401_loop", everywhere(status(401)), "api", "auth_failed"),
    Case("http_401_after_token", token_then_401, "api", "auth_failed"),
    Case("http_500", everywhere(status(500, b"Internal Server Error")), "api", "http_error"),
    Case("http_503", everywhere(status(503, b"", Retry_After="3600")), "api", "http_error"),
    Case("redirect_loop", redirect_to_self, "api", "redirect"),
    Case(
        "redirect_other_host",
        everywhere(status(302, Location="http://portal.example.invalid/login?next=%2F")),
        "api",
        "redirect",
    ),
    # -- absurd numbers and times
    Case("count_1e20", at_counts(counts_body(_row("99999999999999999999"))), "api", "bad_response"),
    Case("count_5000_digits", at_counts(counts_body(_row("9" * 5000))), "api", "bad_response"),
    Case("count_negative", at_counts(counts_body(_row("-7"))), "api", "bad_response"),
    Case("count_1e400", at_counts(counts_body(_row("1e400"))), "api", "bad_response"),
    Case("count_nan", at_counts(counts_body(_row("NaN"))), "api", "bad_response"),
    Case("nesting_100000", at_counts(b"[" * 100_000 + b"]" * 100_000), "api", "bad_response"),
    Case(
        "year_0001",
        at_counts(counts_body(_row(ts='"0001-01-01T00:00:00+14:00"'))),
        "api",
        "bad_response",
    ),
    Case(
        "year_9999",
        at_counts(counts_body(_row(ts='"9999-12-31T23:59:59-12:00"'))),
        "api",
        "bad_response",
    ),
    Case(
        "far_future",
        at_counts(counts_body(_row(ts='"2090-01-01T00:00:00Z"'))),
        "api",
        "bad_response",
    ),
    # -- the snapshot
    Case("jpeg_bomb", at_snapshot(jpeg_bomb(), "image/jpeg"), "snapshot", "bad_response"),
    Case("png_bomb", at_snapshot(png_bomb(), "image/png"), "snapshot", "bad_response"),
]


@contextmanager
def hostile_counters(cases: list[Case]) -> Iterator[dict[str, Hostile]]:
    """One listening hostile counter per case, keyed by the case's name."""
    servers = {case.name: Hostile(case.behaviour) for case in cases}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


def serial_of(case: Case) -> str:
    # underscores: "-AFTER-TOKEN refuses" would read as a command-line flag and its value
    return "X_" + case.name.upper()


def counter_entries(cases: list[Case], servers: dict[str, Hostile], site: str) -> list[dict]:
    """``[[counters]]`` tables for the hostile counters, to add to a parsed config dict."""
    return [
        {
            "serial": serial_of(case),
            "name": case.name,
            "site": site,
            "host": "127.0.0.1",
            "port": servers[case.name].port,
            "scheme": case.scheme,
            "username": "admin",
            "password": "pw",
        }
        for case in cases
    ]
