"""Many simulated counters served by one thread: a light network face for large-fleet benches.

``Fleet.start`` gives every counter its own ``ThreadingHTTPServer`` polling every 50 ms, which
is right for tests (each device opens, closes and rebinds its socket on its own) but costs a
thread per device and a thread per held request: at 1,000 counters the simulator alone took
more than the two cores of the bench box and starved the agent it was meant to measure.

``LiteFleet`` serves the same devices (``Device.handle`` answers, so the wire format and the
data are the simulator's own) from one asyncio loop in one thread: one listening socket per
counter, ``hung`` counters accept and read the request and never answer (the connection stays
open until the client gives up), ``slow`` ones answer after their delay without holding a
thread. Drawing a live-view image costs about 70 ms, more than everything else a counter
answers in a day of cycles, so ``images`` snapshots are drawn once before serving (the first
counters' scenes) and counter *i* is sent image *i* mod ``images`` every time: the pictures are
real JPEGs of the simulator's scenes but never change (a bench that needs changing or faulty
images uses ``Fleet.start``).
Faults are read from the fleet's fault book at each request (``Fleet.set_fault`` works as
usual); ``offline`` and ``held_back`` are not served differently here (the sockets stay
open). Request lines are never logged: the query string holds credentials.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from simulator.device import Response
from simulator.fleet import Fleet
from simulator.model import SimCounter, SimSite
from simulator.server import HOST

MAX_HEAD = 65536


class LiteFleet:
    """A ``Fleet`` whose counters are served from one thread; a context manager.

    The sockets are bound before the fleet is built, so each ``SimCounter`` carries its port
    and ``fleet.agent_config_toml`` works as for a started fleet."""

    def __init__(
        self,
        sites: Sequence[SimSite],
        counters: Sequence[SimCounter],
        seed: int = 7,
        history_days: int = 35,
        images: int = 4,
    ) -> None:
        self._socks: dict[str, socket.socket] = {}
        placed = []
        try:
            for c in counters:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((HOST, c.port))
                sock.listen(128)
                sock.setblocking(False)
                self._socks[c.serial] = sock
                placed.append(_with_port(c, sock.getsockname()[1]))
        except OSError:
            self._close_sockets()
            raise
        self.fleet = Fleet(sites, placed, seed=seed, history_days=history_days)
        drawn = [self.fleet.snapshot(c.serial) for c in placed[: max(1, images)]]
        self._images = {
            c.serial: (c.snapshot_path, Response(200, "image/jpeg", drawn[i % len(drawn)]))
            for i, c in enumerate(placed)
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def write_references(self, directory: str | Path) -> dict[str, Path]:
        """Each counter's tuning image: the picture it is served (so its view is healthy), one
        file per counter as ``Fleet.agent_config_toml(reference_dir=...)`` names them."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for serial, (_path, response) in self._images.items():
            paths[serial] = folder / f"{serial}.jpg"
            paths[serial].write_bytes(response.body)
        return paths

    def __enter__(self) -> Fleet:
        self.start()
        return self.fleet

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sim-lite", daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._socks.values():
            sock.close()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers = []
        for serial, sock in self._socks.items():

            async def answer(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, serial: str = serial
            ) -> None:
                await self._answer(serial, reader, writer)

            servers.append(await asyncio.start_server(answer, sock=sock))
        self._ready.set()
        await self._stop.wait()
        for server in servers:
            server.close()

    async def _answer(
        self, serial: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or parts[0] != "GET":
                return
            auth = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "authorization":
                    auth = value.strip()
            now = datetime.now(UTC)
            active = {f.kind: f for f in self.fleet.faults(serial) if f.active(now)}
            if "hung" in active:
                await reader.read()  # never answer; wait for the client to give up
                return
            if "slow" in active:
                await asyncio.sleep(float(active["slow"].params["delay"]))
            url = urlsplit(parts[1])
            path, image = self._images[serial]
            if url.path == path:
                response = image
            else:
                response = self.fleet.request(serial, url.path, url.query, auth)
            writer.write(_wire(response))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        except asyncio.CancelledError:  # the fleet stops: drop the connection unanswered
            return
        finally:
            writer.close()


def _with_port(counter: SimCounter, port: int) -> SimCounter:
    return replace(counter, port=port)


def _wire(response: Response) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
    head = [
        f"HTTP/1.0 {response.status} {reason.get(response.status, 'Status')}",
        "Server: lighttpd/1.4.59",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body
