"""The simulated counters' MQTT push: one message per crossing, from the same traffic model.

A real counter can publish every crossing to an MQTT broker (QoS 0, topic ``/status/{serial}``;
DESIGN.md §3). The agent listens for liveness between polls and for live counts, so the
simulator must publish exactly the crossings its REST API reports: the visitor messages of a
window add up to ``Fleet.expected_counts`` for that window, minute by minute. Staff crossings
(``CombineObjectTypeId`` 21) come on top, a few an hour while the store is open, as a device
with staff exclusion reports them; they are never in the visitor counts.

A device that is ``offline`` or ``held_back`` (uplink lost) publishes nothing for those minutes,
and nothing is re-sent later: push is QoS 0. Counting faults (``zeros``, ``under_count`` ...)
show in the push as in the REST counts, since both come from what the device counted.

Two ways to publish: ``publish_window`` sends every crossing of a past window at once (tests,
deterministic from the fleet's seed, optionally with re-delivered duplicates and garbage), and
``start_live`` follows the fleet's clock, publishing each minute once it is complete (the demo).
One MQTT connection carries every counter's messages. The message format is in
docs/counter-api.md, "MQTT push".
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulator.fleet import Fleet
from simulator.traffic import key

log = logging.getLogger(__name__)

TOPIC = "/status/{serial}"
METRIC_IN, METRIC_OUT = 1, 2
VISITOR, STAFF = 11, 21
ROI_ID = 1  # the counting line across the door
STAFF_PER_HOUR = 3.0  # per direction, while the store is open
SILENT_FAULTS = ("offline", "held_back")  # the device cannot reach the broker
STOPPED_FAULTS = ("zeros",)  # the counting service counts nobody, staff included
GARBAGE = (
    b"\x00\xff\xfe binary noise",
    b'{"ChipSerial": "truncated", "MetricId": 1, "RoiId',
    b"[1, 2, 3]",
    b'"just a string"',
    b"<html><body>502 Bad Gateway</body></html>",
    b'{"MetricId": "in", "CombineObjectTypeId": 11}',
)


@dataclass(frozen=True, slots=True)
class PushEvent:
    """One crossing as the device publishes it."""

    serial: str
    at: datetime  # UTC, millisecond precision
    metric: int
    object_type: int
    message_id: str

    @property
    def camera(self) -> str:
        return f"{self.serial}-CAM1"

    def payload(self) -> bytes:
        return json.dumps(
            {
                "MessageId": self.message_id,
                "ChipSerial": self.serial,
                "CameraSerial": self.camera,
                "RoiId": ROI_ID,
                "MetricId": self.metric,
                "CombineObjectTypeId": self.object_type,
                "EventTime": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
            separators=(",", ":"),
        ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Published:
    """What ``publish_window`` sent: the truth a test compares the listener with."""

    visitors_in: int
    visitors_out: int
    staff_in: int
    staff_out: int
    duplicates: int
    garbage: int

    @property
    def messages(self) -> int:
        crossings = self.visitors_in + self.visitors_out + self.staff_in + self.staff_out
        return crossings + self.duplicates + self.garbage


def crossings(fleet: Fleet, serial: str, start: datetime, end: datetime) -> list[PushEvent]:
    """Every crossing the counter publishes for minutes starting in ``[start, end)``, in order.

    Pure and deterministic from the fleet's seed; only complete minutes (by the fleet's clock)
    are included, as in ``Fleet.expected_counts``.
    """
    visitors = fleet.expected_counts(serial, start, end, minutes=1)
    if not visitors:
        return []
    counter = next(c for c in fleet.counters if c.serial == serial)
    site = fleet.sites[counter.site]
    faults = fleet.faults(serial)
    epoch = np.array([int(m.timestamp()) for m, _, _ in visitors], dtype=np.int64)
    silent = np.zeros(epoch.shape, dtype=bool)
    stopped = np.zeros(epoch.shape, dtype=bool)
    for fault in faults:
        if fault.kind in SILENT_FAULTS:
            silent |= fault.mask(epoch)
        elif fault.kind in STOPPED_FAULTS:
            stopped |= fault.mask(epoch)
    events: list[PushEvent] = []
    for i, (minute, n_in, n_out) in enumerate(visitors):
        if silent[i]:
            continue
        rng = np.random.default_rng([fleet.seed, key(serial), int(epoch[i]) // 60, 21])
        local = minute.astimezone(site.tz)
        hours = site.hours_on(local.date())
        is_open = hours is not None and hours[0] <= local.hour * 60 + local.minute < hours[1]
        staff = rng.poisson(STAFF_PER_HOUR / 60, size=2) if is_open and not stopped[i] else (0, 0)
        kinds = (
            [(METRIC_IN, VISITOR)] * n_in
            + [(METRIC_OUT, VISITOR)] * n_out
            + [(METRIC_IN, STAFF)] * int(staff[0])
            + [(METRIC_OUT, STAFF)] * int(staff[1])
        )
        offsets = rng.integers(0, 60_000, size=len(kinds))
        for j, ((metric, object_type), ms) in enumerate(zip(kinds, offsets, strict=True)):
            at = minute.astimezone(UTC) + timedelta(milliseconds=int(ms))
            ident = f"{fleet.seed}:{serial}:{int(epoch[i])}:{j}".encode()
            message_id = hashlib.blake2b(ident, digest_size=8).hexdigest()
            events.append(PushEvent(serial, at, metric, object_type, message_id))
    events.sort(key=lambda e: e.at)
    return events


class Publisher:
    """Publishes a fleet's crossings to a broker. A context manager; ``close()`` is idempotent."""

    def __init__(
        self,
        fleet: Fleet,
        host: str,
        port: int,
        *,
        topic: str = TOPIC,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.fleet = fleet
        self.host, self.port, self.topic = host, port, topic
        self.timeout_s = timeout_s
        self._connected = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"ffc-sim-{fleet.seed}-{id(self):x}",
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._live: threading.Thread | None = None
        self._stop_live = threading.Event()
        self._started = False

    def __repr__(self) -> str:
        return f"Publisher({self.host}:{self.port}, {self.fleet!r})"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self._connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()

    def connect(self) -> Publisher:
        """Connect and wait until the broker accepts; ``ConnectionError`` if it does not."""
        if not self._started:
            self._started = True
            self._client.connect(self.host, self.port, keepalive=30)
            self._client.loop_start()
        if not self._connected.wait(self.timeout_s):
            raise ConnectionError(f"broker {self.host}:{self.port} did not accept the publisher")
        return self

    def close(self) -> None:
        self.stop_live()
        if self._started:
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()

    def __enter__(self) -> Publisher:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publishing ------------------------------------------------------------------------

    def topic_for(self, serial: str) -> str:
        return self.topic.format(serial=serial)

    def send(self, serial: str, payloads: Sequence[bytes]) -> None:
        """Publish raw payloads on the counter's topic (QoS 0) and wait until they are sent."""
        infos = [self._client.publish(self.topic_for(serial), p, qos=0) for p in payloads]
        deadline = time.monotonic() + self.timeout_s
        for info in infos:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                raise ConnectionError(
                    f"broker {self.host}:{self.port}: {mqtt.error_string(info.rc)}"
                )
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise ConnectionError(f"broker {self.host}:{self.port}: message not sent in time")

    def publish_window(
        self,
        serial: str,
        start: datetime,
        end: datetime,
        *,
        duplicates: int = 0,
        garbage: int = 0,
    ) -> Published:
        """Publish all crossings of ``[start, end)`` now.

        ``duplicates``: re-send that many of the crossings (spread over the window, each right
        after its original), as a device re-sending after a reconnect does. ``garbage``: that
        many unreadable messages on the counter's topic, before the crossings.
        """
        events = crossings(self.fleet, serial, start, end)
        spread = np.linspace(0, len(events) - 1, min(duplicates, len(events)), dtype=int)
        again = set(spread.tolist())
        payloads = [GARBAGE[i % len(GARBAGE)] for i in range(garbage)]
        for i, event in enumerate(events):
            payloads.append(event.payload())
            if i in again:
                payloads.append(event.payload())
        self.send(serial, payloads)

        def n(metric: int, object_type: int) -> int:
            return sum(1 for e in events if e.metric == metric and e.object_type == object_type)

        return Published(
            visitors_in=n(METRIC_IN, VISITOR),
            visitors_out=n(METRIC_OUT, VISITOR),
            staff_in=n(METRIC_IN, STAFF),
            staff_out=n(METRIC_OUT, STAFF),
            duplicates=len(again),
            garbage=garbage,
        )

    # -- live, by the fleet's clock --------------------------------------------------------

    def start_live(self, interval_s: float = 1.0) -> None:
        """Publish every counter's crossings as the fleet's clock completes each minute."""
        if self._live is not None:
            return
        self.connect()
        self._stop_live.clear()
        self._live = threading.Thread(
            target=self._run_live, args=(interval_s,), name="sim-push", daemon=True
        )
        self._live.start()

    def stop_live(self) -> None:
        self._stop_live.set()
        if self._live is not None:
            self._live.join(timeout=10)
            self._live = None

    def _run_live(self, interval_s: float) -> None:
        cursor = _minute(self.fleet.clock.now())
        while not self._stop_live.wait(interval_s):
            now = _minute(self.fleet.clock.now())
            if now <= cursor:
                continue
            for counter in self.fleet.counters:
                events = crossings(self.fleet, counter.serial, cursor, now)
                try:
                    self.send(counter.serial, [e.payload() for e in events])
                except ConnectionError as exc:  # QoS 0: what cannot be sent now is lost
                    log.warning("push for %s lost: %s", counter.serial, exc)
            cursor = now


def _minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)
