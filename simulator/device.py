"""One simulated counter's brain: its data, its faults and its answers, without sockets.

``Device.handle`` turns a request (path, query, Authorization header) into a response, so the
wire format can be produced and tested without a server; ``server.py`` only adds the network
and the timing faults (hung, slow). What the device holds is decided here: complete slots
only, nothing older than ``history_days``, nothing recorded while it was powered off, and slots
held back by an uplink outage lost once they are older than a week at upload time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qs

import numpy as np

from simulator import formats
from simulator.faults import (
    LIVEVIEW_KINDS,
    FaultBook,
    apply_counting,
    held_minutes,
)
from simulator.images import Scene, to_jpeg
from simulator.model import Clock, SimCounter, SimSite
from simulator.query import BadRequest, parse_count_params, parse_date
from simulator.traffic import Traffic, day_bounds, key

LEGACY_MINUTES = 15
COUNT_PATHS = ("/cgi-bin/apiCount.cgi", "/cgi-bin/apiCount_cgi")
TOKEN_PATHS = ("/cgi-bin/access_token.cgi", "/cgi-bin/access_token_cgi")
LEGACY_PATHS = {"/pi-cgi/data.json": "json", "/pi-cgi/data.xml": "xml"}


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, body: bytes, data_type: str = "json") -> Response:
    ctype = "application/xml" if data_type == "xml" else "application/json"
    return Response(status, ctype, body)


def _error(status: int, message: str, data_type: str = "json") -> Response:
    error = {400: "bad_request", 401: "unauthorized", 404: "not_found"}[status]
    return _json(status, formats.error_body(error, message, data_type), data_type)


class Device:
    """A counter's state and behaviour. Thread-safe: many handler threads call ``handle``."""

    def __init__(
        self,
        counter: SimCounter,
        site: SimSite,
        traffic: Traffic,
        clock: Clock,
        *,
        seed: int,
        history_days: int,
        stopping: threading.Event,
    ) -> None:
        self.counter = counter
        self.site = site
        self.traffic = traffic
        self.clock = clock
        self.seed = seed
        self.history_days = history_days
        self.stopping = stopping
        self.faults = FaultBook()
        self.token_generation = 0  # bumped when the device forgets the tokens it issued
        self.release = threading.Event()  # set to let hung handlers go
        self._scene: Scene | None = None
        self._lock = threading.Lock()
        self.held = 0  # handlers currently hung, for tests and the status line
        self.held_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Device({self.counter.serial!r})"

    # -- the data the device holds -------------------------------------------------------------

    def slots(
        self, start: datetime, end: datetime, minutes: int
    ) -> list[tuple[datetime, int, int]]:
        """Interval starts in ``[start, end)`` (UTC) with in/out, as the device holds them now.

        UTC, because two site-local datetimes of a repeated DST hour compare and hash equal.
        """
        now = self.clock.now()
        tz = self.site.tz
        today = now.astimezone(tz).date()
        oldest_day = today - timedelta(days=self.history_days)
        oldest = day_bounds(oldest_day, tz)[0].timestamp()
        history = self.faults.history()
        rows: list[tuple[datetime, int, int]] = []
        day = max(start.astimezone(tz).date(), oldest_day)
        last = min((end - timedelta(microseconds=1)).astimezone(tz).date(), today)
        while day <= last:
            dc = self.traffic.day(self.counter, day)
            epoch = dc.epoch_minutes()
            ins, outs = apply_counting(history, epoch, dc.ins, dc.outs, dc.u_in, dc.u_out)
            have = (epoch + 60 <= now.timestamp()) & (epoch >= oldest)
            have &= ~held_minutes(history, epoch, now)
            k = dc.minutes // minutes
            cut = k * minutes
            sums_in = ins[:cut].reshape(k, minutes).sum(axis=1)
            sums_out = outs[:cut].reshape(k, minutes).sum(axis=1)
            complete = have[:cut].reshape(k, minutes).all(axis=1)
            for i in np.flatnonzero(complete):
                slot = dc.start + timedelta(minutes=int(i) * minutes)
                if start <= slot < end:
                    rows.append((slot, int(sums_in[i]), int(sums_out[i])))
            day += timedelta(days=1)
        return rows

    def _local(self, rows: list[tuple[datetime, int, int]]) -> list[tuple[datetime, int, int]]:
        tz = self.site.tz
        return [(start.astimezone(tz), count_in, count_out) for start, count_in, count_out in rows]

    def meta(self, data_format: str, minutes: int) -> dict[str, object]:
        return {
            "serial": self.counter.serial,
            "model": self.counter.device_model,
            "firmware": self.counter.device_firmware,
            "device_time": formats.iso(self.clock.now().astimezone(self.site.tz)),
            "timezone": self.site.timezone,
            "data_format": data_format,
            "resolution_min": minutes,
        }

    # -- the live view -------------------------------------------------------------------------

    def scene(self) -> Scene:
        with self._lock:
            if self._scene is None:
                self._scene = Scene(key(f"{self.seed}/{self.counter.serial}"))
            return self._scene

    def snapshot_jpeg(self, at: datetime | None = None) -> bytes:
        """The live view at ``at`` (default now): more people when the door is busy."""
        at = at or self.clock.now()
        local = at.astimezone(self.site.tz)
        dc = self.traffic.day(self.counter, local.date())
        minute = min(dc.minutes - 1, int((at - dc.start).total_seconds() // 60))
        busy = int(dc.ins[minute] + dc.outs[minute])
        shot = int(at.timestamp())
        rng = np.random.default_rng([self.seed, key(self.counter.serial), shot])
        people = min(8, int(rng.poisson(0.4 * busy + (0.3 if busy else 0.0))))
        effects = []
        for kind in sorted(LIVEVIEW_KINDS):
            fault = self.faults.active(kind, at)
            if fault is not None:
                effects.append((kind, fault.params))
        return to_jpeg(self.scene().snapshot(shot, people, effects))

    def reference_jpeg(self) -> bytes:
        return to_jpeg(self.scene().reference())

    # -- auth ----------------------------------------------------------------------------------

    def token(self) -> str:
        c = self.counter
        material = f"{self.seed}|{c.serial}|{c.username}|{c.password}".encode()
        if self.token_generation:  # generation 0 keeps the token every earlier run saw
            material += f"|{self.token_generation}".encode()
        return hashlib.sha256(material).hexdigest()[:40]

    def credentials_ok(self, username: str, password: str) -> bool:
        user_ok = hmac.compare_digest(username.encode(), self.counter.username.encode())
        pass_ok = hmac.compare_digest(password.encode(), self.counter.password.encode())
        return user_ok and pass_ok

    def basic_ok(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return self.credentials_ok(user, password)

    # -- requests ------------------------------------------------------------------------------

    def handle(self, path: str, query: str, authorization: str | None = None) -> Response:
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        cgi = self.counter.api == "cgi-bin"
        if path == self.counter.snapshot_path:
            return Response(200, "image/jpeg", self.snapshot_jpeg())
        if path == "/reference.jpg":
            return Response(200, "image/jpeg", self.reference_jpeg())
        if cgi and path in TOKEN_PATHS:
            return self._garble(self._token(params))
        if cgi and path in COUNT_PATHS:
            return self._garble(self._counts(params))
        if not cgi and path in LEGACY_PATHS:
            return self._garble(self._legacy(params, LEGACY_PATHS[path], authorization))
        return _error(404, f"no such resource: {path}")

    def _garble(self, response: Response) -> Response:
        fault = self.faults.active("garbage", self.clock.now())
        if fault is None:
            return response
        body = formats.garbage_body(str(fault.params["style"]), response.body, self.seed)
        return Response(200, "application/json", body)

    def _token(self, params: dict[str, str]) -> Response:
        if not self.credentials_ok(params.get("username", ""), params.get("password", "")):
            return _error(401, "invalid username or password")
        return _json(200, formats.token_body(self.token()))

    def _counts(self, params: dict[str, str]) -> Response:
        data_type = params.get("data_type", "json").lower()
        if data_type not in ("json", "xml"):
            return _error(400, "data_type must be json or xml")
        token = params.get("access_token", "")
        if not token:
            return _error(401, "access_token missing", data_type)
        if not hmac.compare_digest(token.encode(), self.token().encode()):
            return _error(401, "invalid access_token", data_type)
        try:
            start, end, data_format, minutes = parse_count_params(params, self.site)
        except BadRequest as exc:
            return _error(400, str(exc), data_type)
        rows = self._local(self.slots(start, end, minutes))
        body = formats.counts_body(self.meta(data_format, minutes), rows, data_type)
        return _json(200, body, data_type)

    def _legacy(self, params: dict[str, str], data_type: str, auth: str | None) -> Response:
        if not self.basic_ok(auth):
            response = _error(401, "login required", data_type)
            response.headers["WWW-Authenticate"] = 'Basic realm="3D Plus"'
            return response
        tz = self.site.tz
        text = params.get("date") or self.clock.now().astimezone(tz).strftime("%Y%m%d")
        try:
            day = parse_date(text, "date")
        except BadRequest as exc:
            return _error(400, str(exc), data_type)
        start, n = day_bounds(day, tz)
        rows = self._local(self.slots(start, start + timedelta(minutes=n), LEGACY_MINUTES))
        meta = {
            "SerialNumber": self.counter.serial,
            "Model": self.counter.device_model,
            "FirmwareVersion": self.counter.device_firmware,
            "DeviceTime": formats.iso(self.clock.now().astimezone(tz)),
            "Date": day.strftime("%Y%m%d"),
            "Interval": LEGACY_MINUTES,
        }
        return _json(200, formats.legacy_body(meta, rows, data_type), data_type)
