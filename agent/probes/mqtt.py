"""The counters' MQTT push: a subscriber for liveness between polls and live counts.

A counter can push one MQTT message per crossing (DESIGN.md §3; the message format this project
reads is written down in docs/counter-api.md, "MQTT push"). Push is QoS 0: whatever is sent
while the agent, the broker or the link is away is lost, so push is only ever a liveness signal
("this counter spoke 40 seconds ago") and a live count for the current quarter hour; the REST
export stays the record and fills every gap.

``PushListener`` owns one paho-mqtt client with its own network thread. It connects in the
background, reconnects with backoff on its own, and never raises into the caller: a broker that
is down, refuses the credentials or drops the link is *state* (``link()``: a ProbeErrorCode and
the reason), which ``push_evidence`` carries to the push check. Each message is parsed tolerantly;
garbage is counted and skipped, and the same event delivered twice (a device or broker
re-sending after a reconnect) is counted once. The runner reads a frozen copy per cycle with
``snapshot()`` and puts ``push_evidence(...)`` into ``CounterEvidence.extra["push"]``.

Logging is on transitions only: connected, link lost (once, with the reason), the first
unreadable message. Passwords never reach a log line or a repr.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import ssl
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from diagnostics.model import SYSTEM_CLOCK, Clock, ProbeErrorCode

if TYPE_CHECKING:
    from agent.config import MqttConfig

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "/status/+"
SLOT_MINUTES = 15
MAX_PAYLOAD = 64 * 1024  # one crossing is ~250 bytes; anything near this is not a crossing
MAX_SERIALS = 10_000  # a chain-wide broker must not grow our memory without bound
MAX_DEDUP_KEYS = 50_000  # ten minutes of a very busy site; ~15 MB at most

# The message format's names, compared after lower-casing and removing "_" and "-"; the first
# key present wins. Correct these against a real device (docs/counter-api.md, "MQTT push").
SERIAL_KEYS = ("chipserial", "serial", "serialnumber", "deviceserial", "deviceid")
CAMERA_KEYS = ("cameraserial", "camera", "cameraid")
ROI_KEYS = ("roiid", "roi", "regionid")
METRIC_KEYS = ("metricid", "metric")
OBJECT_KEYS = ("combineobjecttypeid", "objecttypeid", "objecttype")
TIME_KEYS = ("eventtime", "endtime", "eventdatetime", "time", "timestamp", "starttime")
ID_KEYS = ("messageid", "eventid", "msgid", "uuid", "id")
NEST_KEYS = ("data", "payload", "event", "events")
METRIC_IN, METRIC_OUT = 1, 2
VISITOR, STAFF = 11, 21

# at most 15 digits: milliseconds until the year 33658, and never an int too large for a float
_DOTNET_DATE = re.compile(r"/Date\((-?\d{1,15})(?:[+-]\d{4})?\)/")
_INT_TEXT = re.compile(r"\s*-?[0-9]{1,18}\s*")


# --- the state the runner reads ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkState:
    """The listener's connection to the broker: one for all counters."""

    broker: str  # host:port, never credentials
    connected: bool
    since: datetime  # connected since, or disconnected since (the listener's start at first)
    error_code: ProbeErrorCode | None = None  # why the last attempt or the link failed
    error: str = ""
    last_connected_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PushSlot:
    """Live counts of one 15-minute slot (UTC start), by the events' own times."""

    start: datetime
    visitors_in: int = 0
    visitors_out: int = 0
    staff_in: int = 0
    staff_out: int = 0


@dataclass(frozen=True, slots=True)
class PushState:
    """What the push told the agent about one counter, copied at one moment."""

    serial: str
    link: LinkState
    last_message_at: datetime | None = None  # arrival of the last readable message (liveness)
    last_event_at: datetime | None = None  # the device's own time of its last crossing
    messages: int = 0  # readable messages, duplicates excluded
    crossings: int = 0  # visitor and staff crossings counted
    duplicates: int = 0
    garbage: int = 0
    ignored: int = 0  # readable, but not a visitor or staff crossing (a status message ...)
    slots: tuple[PushSlot, ...] = ()  # oldest first

    def slot(self, at: datetime) -> PushSlot:
        """The live counts of the slot containing ``at`` (zeros if nothing arrived for it)."""
        start = slot_start(at)
        for s in self.slots:
            if s.start == start:
                return s
        return PushSlot(start)


def slot_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(minute=at.minute - at.minute % SLOT_MINUTES, second=0, microsecond=0)


def push_evidence(state: PushState, now: datetime, *, recent_slots: int = 4) -> dict[str, Any]:
    """``CounterEvidence.extra["push"]``: JSON-ready facts for checks, bundles and status.

    ``silent_since`` is when the current silence began *as far as the agent could hear*: the
    last message, or the moment the link came up if that was later (nothing could be heard
    while the link was down, so that time is not held against the device).
    """
    link = state.link
    silent_since = state.last_message_at
    if link.connected and (silent_since is None or link.since > silent_since):
        silent_since = link.since
    live = state.slot(now)
    return {
        "broker": link.broker,
        "connected": link.connected,
        "link_since": link.since.isoformat(),
        "link_error_code": str(link.error_code) if link.error_code else None,
        "link_error": link.error,
        "last_message_at": _iso(state.last_message_at),
        "seconds_since": (
            round((now - state.last_message_at).total_seconds(), 1)
            if state.last_message_at
            else None
        ),
        "silent_since": _iso(silent_since) if link.connected else None,
        "last_event_at": _iso(state.last_event_at),
        "live_slot_start": live.start.isoformat(),
        "live_in": live.visitors_in,
        "live_out": live.visitors_out,
        "staff_in": live.staff_in,
        "staff_out": live.staff_out,
        "messages": state.messages,
        "duplicates": state.duplicates,
        "garbage": state.garbage,
        "ignored": state.ignored,
        "recent_slots": [
            [s.start.isoformat(), s.visitors_in, s.visitors_out, s.staff_in, s.staff_out]
            for s in state.slots[-recent_slots:]
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- parsing one message ---------------------------------------------------------------------


class _Garbage(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Crossing:
    """One parsed message. ``metric``/``object_type`` None: not a crossing (liveness only)."""

    serial: str
    metric: int | None
    object_type: int | None
    camera: str | None = None
    roi: str | None = None
    event_time: datetime | None = None
    message_id: str | None = None

    @property
    def counted(self) -> bool:
        return self.metric in (METRIC_IN, METRIC_OUT) and self.object_type in (VISITOR, STAFF)

    def dedup_key(self) -> tuple[Any, ...] | None:
        """The event's identity; None when it has neither a time nor an id to tell it by."""
        if self.event_time is None and self.message_id is None:
            return None
        when = self.event_time.isoformat() if self.event_time else None
        return (
            self.serial,
            self.camera,
            self.roi,
            self.metric,
            self.object_type,
            when,
            self.message_id,
        )


def parse_message(topic: str, payload: bytes) -> list[Crossing]:
    """The crossings in one message; raise ``ValueError`` for garbage.

    A message is a JSON object (or a list of them, or an object whose ``data``/``events``
    holds them, with the outer fields shared). The serial comes from the body, else from the
    topic's last level.
    """
    if len(payload) > MAX_PAYLOAD:
        raise _Garbage(f"payload of {len(payload)} bytes")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError beyond JSONDecodeError: an integer of more than 4,300 digits
        raise _Garbage("not JSON") from None
    topic_serial = next((p for p in reversed(topic.split("/")) if p), None)
    items = _items(body)
    if not items:
        raise _Garbage("not a JSON object")
    return [_crossing(item, topic_serial) for item in items]


def _items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return [i for b in body if isinstance(b, dict) for i in _items(b)]
    if not isinstance(body, dict):
        return []
    flat = {_norm(k): v for k, v in body.items() if isinstance(k, str)}
    for key in NEST_KEYS:
        inner = flat.get(key)
        outer = {k: v for k, v in flat.items() if k != key}
        if isinstance(inner, dict):
            return [{**outer, **{_norm(k): v for k, v in inner.items()}}]
        if isinstance(inner, list) and inner and all(isinstance(i, dict) for i in inner):
            return [{**outer, **{_norm(k): v for k, v in i.items()}} for i in inner]
    return [flat]


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _first(item: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if item.get(key) is not None:
            return item[key]
    return None


def _crossing(item: Mapping[str, Any], topic_serial: str | None) -> Crossing:
    serial = _text(_first(item, SERIAL_KEYS)) or topic_serial
    if not serial or len(serial) > 64 or not serial.isprintable():
        raise _Garbage("no counter serial in the topic or the body")
    metric_raw, object_raw = _first(item, METRIC_KEYS), _first(item, OBJECT_KEYS)
    metric = _int(metric_raw)
    object_type = _int(object_raw)
    if metric_raw is not None and metric is None:
        raise _Garbage(f"MetricId {metric_raw!r}")
    if object_raw is not None and object_type is None:
        raise _Garbage(f"CombineObjectTypeId {object_raw!r}")
    if metric is not None and object_raw is None:
        object_type = VISITOR  # a device without staff exclusion need not say "visitor"
    return Crossing(
        serial=serial,
        metric=metric,
        object_type=object_type,
        camera=_text(_first(item, CAMERA_KEYS)),
        roi=_text(_first(item, ROI_KEYS)),
        event_time=_time(_first(item, TIME_KEYS)),
        message_id=_text(_first(item, ID_KEYS)),
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return str(value).strip() or None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)  # ASCII digits only: "²" and "٣" pass isdigit() but are no id
    return None


def _time(value: Any) -> datetime | None:
    """ISO-8601 (naive taken as UTC), epoch seconds or milliseconds, or .NET ``/Date(ms)/``."""
    when: datetime | None = None
    if isinstance(value, str):
        text = value.strip()
        if m := _DOTNET_DATE.fullmatch(text):
            value = int(m.group(1)) / 1000
        elif re.fullmatch(r"\d+(\.\d+)?", text):
            value = float(text)
        else:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:  # an int of 400 digits overflows already in the division
            seconds = value / 1000 if value > 1e11 else value
            when = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if when is None or not 2000 <= when.year <= 2100:
        return None
    return when.astimezone(UTC)


# --- per-counter bookkeeping (under the listener's lock) -------------------------------------


@dataclass
class _Counter:
    last_message_at: datetime | None = None
    last_event_at: datetime | None = None
    messages: int = 0
    crossings: int = 0
    duplicates: int = 0
    garbage: int = 0
    ignored: int = 0
    slots: dict[datetime, list[int]] = field(default_factory=dict)  # [v_in, v_out, s_in, s_out]


# --- the listener ------------------------------------------------------------------------------


class PushListener:
    """One MQTT subscription for all counters; thread-safe; never raises after construction.

    ``topic`` may hold ``{serial}``: with ``serials`` given, one subscription per counter
    (what a chain-wide broker wants), else ``{serial}`` becomes the ``+`` wildcard. With
    ``serials`` given, messages about other counters are dropped uncounted.
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        topic: str = DEFAULT_TOPIC,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | Path | None = None,
        clock: Clock | None = None,
        client_id: str | None = None,
        serials: Iterable[str] | None = None,
        dedup_window: timedelta = timedelta(minutes=10),
        keep: timedelta = timedelta(hours=24),
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 120.0,
        keepalive_s: int = 60,
    ) -> None:
        self.broker = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._serials = frozenset(serials) if serials is not None else None
        self._topics = _topics(topic, self._serials)
        self._dedup_window, self._keep = dedup_window, keep
        self._lock = threading.Lock()
        self._counters: dict[str, _Counter] = {}
        self._seen: OrderedDict[tuple[Any, ...], datetime] = OrderedDict()
        self._warned_garbage = False
        self._started = self._stopped = False
        now = self._clock.now()
        self._link = LinkState(self.broker, False, now)
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"ffc-agent-{secrets.token_hex(6)}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            try:
                context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as exc:
                self._set_down(ProbeErrorCode.BAD_RESPONSE, f"cannot load the CA file: {exc}")
                self._stopped = True  # nothing to start: the state says why
            else:
                self._client.tls_set_context(context)
        self._client.reconnect_delay_set(
            min_delay=max(1, round(reconnect_min_s)), max_delay=max(1, round(reconnect_max_s))
        )
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def __repr__(self) -> str:
        return f"PushListener({self.broker}, topics={list(self._topics)})"

    @classmethod
    def from_config(
        cls, config: MqttConfig, *, serials: Iterable[str] | None = None, clock: Clock | None = None
    ) -> PushListener:
        """A listener for the ``[mqtt]`` table (not started)."""
        return cls(
            config.host,
            config.port,
            topic=config.topic,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            tls=config.tls,
            ca_file=config.ca_file,
            clock=clock,
            serials=serials,
        )

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> PushListener:
        """Connect in the background; returns at once (see ``link()`` for how it goes)."""
        if self._started or self._stopped:
            return self
        self._started = True
        try:
            self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        except (ValueError, OSError) as exc:
            self._set_down(ProbeErrorCode.UNREACHABLE, f"bad broker address: {exc}")
            return self
        self._client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect and join the network thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
        with self._lock:
            if self._link.connected:
                self._link = LinkState(self.broker, False, self._clock.now())

    def __enter__(self) -> PushListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the runner reads -------------------------------------------------------------

    def link(self) -> LinkState:
        with self._lock:
            return self._link

    def snapshot(self, serials: Iterable[str] = ()) -> dict[str, PushState]:
        """A frozen copy per counter heard from, plus an empty state for each of ``serials``."""
        now = self._clock.now()
        with self._lock:
            self._prune(now)
            link = self._link
            out = {s: self._state(s, c, link) for s, c in self._counters.items()}
        for serial in serials:
            out.setdefault(serial, PushState(serial, link))
        return out

    def _state(self, serial: str, c: _Counter, link: LinkState) -> PushState:
        slots = tuple(PushSlot(start, *c.slots[start]) for start in sorted(c.slots))
        return PushState(
            serial,
            link,
            c.last_message_at,
            c.last_event_at,
            c.messages,
            c.crossings,
            c.duplicates,
            c.garbage,
            c.ignored,
            slots,
        )

    # -- paho callbacks (the network thread) -----------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            value = getattr(reason, "value", 0)
            code = ProbeErrorCode.AUTH_FAILED if value in (134, 135) else ProbeErrorCode.HTTP_ERROR
            self._set_down(code, f"broker refused the connection: {reason}")
            return
        for topic in self._topics:
            client.subscribe(topic, qos=0)
        now = self._clock.now()
        with self._lock:
            self._link = LinkState(self.broker, True, now, last_connected_at=now)
        log.info(
            "MQTT push: connected to %s, listening on %s", self.broker, ", ".join(self._topics)
        )

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its ``except OSError`` and does not pass the exception;
        # the handler's exception is still the current one, and it says refused vs timeout.
        exc = sys.exc_info()[1]
        self._set_down(*_connect_error(exc))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._stopped:
            return
        with self._lock:
            known = self._link.error_code is not None and not self._link.connected
        if not known:  # an auth refusal also ends in a disconnect: keep its reason
            self._set_down(ProbeErrorCode.UNREACHABLE, f"connection to the broker lost ({reason})")

    def _set_down(self, code: ProbeErrorCode, message: str) -> None:
        now = self._clock.now()
        with self._lock:
            was = self._link
            since = now if was.connected else was.since
            self._link = LinkState(self.broker, False, since, code, message, was.last_connected_at)
        if was.connected or was.error_code != code:
            log.warning("MQTT push: no connection to %s: %s", self.broker, message)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = self._clock.now()
        topic = msg.topic if isinstance(msg.topic, str) else ""
        try:
            crossings = parse_message(topic, bytes(msg.payload))
        except ValueError as exc:
            self._garbage(topic, str(exc))
            return
        with self._lock:
            for crossing in crossings:
                self._count(crossing, now)

    def _garbage(self, topic: str, reason: str) -> None:
        serial = next((p for p in reversed(topic.split("/")) if p), None)
        with self._lock:
            counter = self._counter(serial) if serial else None
            if counter is not None:  # a message naming no counter is only logged
                counter.garbage += 1
            first, self._warned_garbage = not self._warned_garbage, True
        if first:
            log.warning("MQTT push: skipping unreadable messages (first on %r: %s)", topic, reason)

    def _counter(self, serial: str) -> _Counter | None:
        if self._serials is not None and serial not in self._serials:
            return None
        counter = self._counters.get(serial)
        if counter is None and len(self._counters) < MAX_SERIALS:
            counter = self._counters[serial] = _Counter()
        return counter

    def _count(self, crossing: Crossing, now: datetime) -> None:
        counter = self._counter(crossing.serial)
        if counter is None:
            return
        key = crossing.dedup_key()
        if key is not None:
            if key in self._seen and now - self._seen[key] <= self._dedup_window:
                counter.duplicates += 1
                return
            self._seen[key] = now
            self._seen.move_to_end(key)
            self._expire(now)
        counter.last_message_at = now
        counter.messages += 1
        if not crossing.counted:
            counter.ignored += 1
            return
        when = crossing.event_time or now
        if counter.last_event_at is None or when > counter.last_event_at:
            counter.last_event_at = when
        start = slot_start(when)
        if start < now - self._keep:
            return  # a replay of old events: liveness, but not a live count
        cell = counter.slots.setdefault(start, [0, 0, 0, 0])
        column = 0 if crossing.metric == METRIC_IN else 1
        cell[column + (2 if crossing.object_type == STAFF else 0)] += 1
        counter.crossings += 1

    def _prune(self, now: datetime) -> None:
        oldest = now - self._keep
        for counter in self._counters.values():
            for start in [s for s in counter.slots if s < oldest]:
                del counter.slots[start]
        self._expire(now)

    def _expire(self, now: datetime) -> None:
        """Forget events older than the window (oldest first), and the oldest beyond the cap."""
        while self._seen:
            key, seen = next(iter(self._seen.items()))
            if now - seen <= self._dedup_window and len(self._seen) <= MAX_DEDUP_KEYS:
                break
            del self._seen[key]


def _topics(topic: str, serials: frozenset[str] | None) -> tuple[str, ...]:
    if "{serial}" not in topic:
        return (topic,)
    if not serials:
        return (topic.replace("{serial}", "+"),)
    return tuple(topic.replace("{serial}", s) for s in sorted(serials))


def _connect_error(exc: BaseException | None) -> tuple[ProbeErrorCode, str]:
    if isinstance(exc, ssl.SSLError):
        return ProbeErrorCode.BAD_RESPONSE, "TLS handshake with the broker failed"
    if isinstance(exc, ConnectionRefusedError):
        return ProbeErrorCode.REFUSED, "connection refused (is the broker running?)"
    if isinstance(exc, TimeoutError):
        return ProbeErrorCode.TIMEOUT, "no answer from the broker in time"
    if isinstance(exc, socket.gaierror):
        return ProbeErrorCode.UNREACHABLE, "broker host name not found"
    return ProbeErrorCode.UNREACHABLE, f"cannot connect to the broker ({type(exc).__name__})"
