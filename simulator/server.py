"""The network face of a simulated counter: one HTTP server per device on 127.0.0.1.

A real counter that is powered off refuses connections; one whose web service has locked up
accepts the connection and never answers; one on a congested store network answers late. The
agent's timeouts, deadlines and error mapping are only tested if the simulator does exactly
that, so ``offline`` closes the listening socket (and reopens it on the same port), ``hung``
holds the request on a ``threading.Event`` until the fault is cleared or the fleet stops, and
``slow`` waits before answering. Request logs never carry the query string: it holds passwords
and tokens.
"""

from __future__ import annotations

import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from simulator.device import Device

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    device: Device

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):  # the client gave up (e.g. timed out on a hang)
            log.debug("%s: client went away: %s", self.device.counter.serial, exc)
            return
        log.exception("%s: error while answering a request", self.device.counter.serial)


class Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "lighttpd/1.4.59"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout = 15  # an idle client must not pin a thread forever

    def do_GET(self) -> None:
        device = self.server.device
        now = device.clock.now()
        if device.faults.active("hung", now) and not self._hold(device):
            return
        slow = device.faults.active("slow", device.clock.now())
        if slow and device.stopping.wait(float(slow.params["delay"])):
            return
        url = urlsplit(self.path)
        response = device.handle(url.path, url.query, self.headers.get("Authorization"))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _hold(self, device: Device) -> bool:
        """Hang until the fault clears (then answer) or the fleet stops (then never answer)."""
        with device.held_lock:
            device.held += 1
        try:
            while not device.stopping.is_set() and device.faults.active("hung", device.clock.now()):
                # the timeout only matters for a fake clock moving past the fault's end
                device.release.wait(1.0)
        finally:
            with device.held_lock:
                device.held -= 1
        if device.stopping.is_set():
            self.close_connection = True
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        # the request line is args[0]; cut the query string, it holds credentials and tokens
        if args and isinstance(args[0], str):
            args = (args[0].split("?", 1)[0], *args[1:])
        log.debug("%s %s", self.server.device.counter.serial, format % args)


class CounterServer:
    """Binds, serves, unbinds and rebinds one device's HTTP server on a fixed port."""

    def __init__(self, device: Device, port: int = 0) -> None:
        self.device = device
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def listening(self) -> bool:
        return self._server is not None

    def up(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            server = _Server((HOST, self.port), Handler)
            server.device = self.device
            self.port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"sim-{self.device.counter.serial}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        log.debug("%s listening on %s:%d", self.device.counter.serial, HOST, self.port)

    def down(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        log.debug("%s stopped listening", self.device.counter.serial)
