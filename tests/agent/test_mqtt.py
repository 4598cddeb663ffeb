"""agent.probes.mqtt against a real mosquitto: live counts, duplicates, garbage, reconnects.

The simulator publishes a window of crossings from the same traffic model its REST API serves,
so the listener's live visitor counts must equal ``Fleet.expected_counts`` for that window,
slot by slot. The pure tests (message parsing, the evidence, the ``[mqtt]`` config table) need
no broker.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, parse_config
from agent.probes.mqtt import (
    LinkState,
    PushListener,
    PushSlot,
    PushState,
    parse_message,
    push_evidence,
)
from diagnostics.calendar import Hours, SiteCalendar
from diagnostics.checks.base import CounterEvidence
from diagnostics.checks.push import PushSilent
from diagnostics.model import ProbeErrorCode, Status
from simulator import FakeClock, Fleet, SimCounter, SimSite
from simulator.push import GARBAGE, Publisher, crossings
from tests.mosquitto import Mosquitto

NOW = datetime(2024, 3, 6, 15, 0, tzinfo=UTC)  # a Wednesday afternoon
START = datetime(2024, 3, 6, 11, 0, tzinfo=UTC)
END = datetime(2024, 3, 6, 13, 0, tzinfo=UTC)
HOURS = {d: "08:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
SECRET = "s3cr3t-Mqtt-planted"

integration = pytest.mark.integration


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = 15.0) -> None:
    """Wait on a condition with a deadline (no fixed sleeps)."""
    gate = threading.Event()
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        gate.wait(0.02)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def fleet(clock: FakeClock) -> Fleet:
    site = SimSite("LDN01", "London", opening_hours=HOURS)
    counters = [
        SimCounter("FC1", "Entrance", "LDN01", base_rate=240),
        SimCounter("FC2", "Side door", "LDN01", base_rate=90),
    ]
    return Fleet([site], counters, seed=5, clock=clock)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def listener(broker: Mosquitto, clock: FakeClock) -> Iterator[PushListener]:
    push = PushListener(broker.host, broker.port, clock=clock, reconnect_max_s=1).start()
    wait_for(lambda: push.link().connected, "the listener to connect")
    yield push
    push.stop()


def heard(push: PushListener, serial: str) -> int:
    state = push.snapshot([serial])[serial]
    return state.messages + state.duplicates + state.garbage


def slots_15(fleet: Fleet, serial: str) -> dict[datetime, tuple[int, int]]:
    return {s: (i, o) for s, i, o in fleet.expected_counts(serial, START, END, minutes=15)}


# --- against a real broker ---------------------------------------------------------------------


@integration
def test_live_counts_equal_the_simulators_crossings(broker, listener, fleet) -> None:
    with Publisher(fleet, broker.host, broker.port) as publisher:
        sent = {s: publisher.publish_window(s, START, END) for s in ("FC1", "FC2")}
    for serial, published in sent.items():
        wait_for(lambda s=serial, p=published: heard(listener, s) >= p.messages, "all messages")
    states = listener.snapshot()
    for serial, published in sent.items():
        state = states[serial]
        live = {s.start: (s.visitors_in, s.visitors_out) for s in state.slots}
        assert live == slots_15(fleet, serial)  # visitors only, slot by slot
        assert published.visitors_in > 50
        assert sum(s.staff_in for s in state.slots) == published.staff_in
        assert sum(s.staff_out for s in state.slots) == published.staff_out
        assert published.staff_in + published.staff_out > 0  # staff exist, and are kept apart
        assert (state.duplicates, state.garbage, state.ignored) == (0, 0, 0)
        assert state.last_message_at == NOW  # arrival time, by the listener's clock
        assert state.last_event_at is not None and START <= state.last_event_at < END


@integration
def test_duplicates_count_once_and_garbage_is_counted_and_skipped(broker, listener, fleet) -> None:
    with Publisher(fleet, broker.host, broker.port) as publisher:
        published = publisher.publish_window("FC1", START, END, duplicates=9, garbage=12)
    assert published.duplicates == 9 and published.garbage == 12
    wait_for(lambda: heard(listener, "FC1") >= published.messages, "all messages")
    state = listener.snapshot()["FC1"]
    assert state.duplicates == 9
    assert state.garbage == 12
    live = {s.start: (s.visitors_in, s.visitors_out) for s in state.slots}
    assert live == slots_15(fleet, "FC1")


@integration
def test_a_redelivery_after_the_window_counts_again(broker, listener, fleet, clock) -> None:
    event = crossings(fleet, "FC1", START, END)[0]
    with Publisher(fleet, broker.host, broker.port) as publisher:
        publisher.send("FC1", [event.payload()])
        wait_for(lambda: listener.snapshot(["FC1"])["FC1"].messages == 1, "the first message")
        publisher.send("FC1", [event.payload()])
        wait_for(lambda: listener.snapshot(["FC1"])["FC1"].duplicates == 1, "the duplicate")
        clock.advance(timedelta(minutes=11))  # past the 10-minute de-duplication window
        publisher.send("FC1", [event.payload()])
        wait_for(lambda: listener.snapshot(["FC1"])["FC1"].messages == 2, "the late re-send")
    assert listener.snapshot()["FC1"].duplicates == 1


@integration
def test_broker_down_at_start_then_up_connects_by_itself(tmp_path, fleet, clock) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")  # port chosen, nothing listening yet
    push = PushListener(broker.host, broker.port, clock=clock, reconnect_max_s=1).start()
    try:
        wait_for(lambda: push.link().error_code is not None, "the first failed attempt")
        assert push.link().error_code is ProbeErrorCode.REFUSED
        assert push.link().connected is False
        evidence = push_evidence(push.snapshot(["FC1"])["FC1"], NOW)
        assert evidence["connected"] is False and evidence["silent_since"] is None
        broker.start()
        wait_for(lambda: push.link().connected, "the listener to reconnect by itself")
        assert push.link().error_code is None
        with Publisher(fleet, broker.host, broker.port) as publisher:
            published = publisher.publish_window("FC2", START, START + timedelta(minutes=30))
        wait_for(lambda: heard(push, "FC2") >= published.messages, "messages after reconnect")
        assert sum(s.visitors_in for s in push.snapshot()["FC2"].slots) == published.visitors_in
        broker.stop()  # and a broker that goes away mid-run is state, not an exception
        wait_for(lambda: not push.link().connected, "the listener to notice")
        assert push.link().error_code is not None
    finally:
        push.stop()
        broker.stop()


@integration
def test_wrong_password_is_auth_failed(tmp_path, clock, fleet) -> None:
    with Mosquitto(tmp_path / "mosquitto", users={"agent": SECRET}) as broker:
        wrong = PushListener(
            broker.host, broker.port, username="agent", password="not-it", reconnect_max_s=1
        ).start()
        try:
            wait_for(lambda: wrong.link().error_code is not None, "the refusal")
            link = wrong.link()
            assert link.error_code is ProbeErrorCode.AUTH_FAILED
            assert not link.connected
            text = f"{link.error} {wrong!r} {link!r}"
            assert "not-it" not in text
        finally:
            wrong.stop()
        right = PushListener(
            broker.host, broker.port, username="agent", password=SECRET, clock=clock
        ).start()
        try:
            wait_for(lambda: right.link().connected, "the right password to be accepted")
            with Publisher(
                fleet, broker.host, broker.port, username="agent", password=SECRET
            ) as publisher:
                published = publisher.publish_window("FC1", START, START + timedelta(minutes=15))
            wait_for(lambda: heard(right, "FC1") >= published.messages, "the messages")
            assert SECRET not in repr(right)
        finally:
            right.stop()


@integration
def test_stop_is_clean(broker, clock) -> None:
    before = {t.ident for t in threading.enumerate()}
    push = PushListener(broker.host, broker.port, clock=clock, client_id="ffc-stop-test").start()
    wait_for(lambda: push.link().connected, "the listener to connect")
    push.stop()
    push.stop()  # idempotent
    assert {t.ident for t in threading.enumerate() if t.is_alive()} <= before
    assert push.link().connected is False
    # a clean MQTT DISCONNECT, not a dropped socket
    wait_for(lambda: "Client ffc-stop-test disconnected." in broker.log(), "the broker's log")


@integration
def test_serial_topics_subscribe_only_to_configured_counters(broker, clock, fleet) -> None:
    push = PushListener(
        broker.host, broker.port, topic="/status/{serial}", serials=["FC2"], clock=clock
    ).start()
    try:
        wait_for(lambda: push.link().connected, "the listener to connect")
        with Publisher(fleet, broker.host, broker.port) as publisher:
            publisher.publish_window("FC1", START, START + timedelta(minutes=30))
            fc2 = publisher.publish_window("FC2", START, START + timedelta(minutes=30))
        wait_for(lambda: heard(push, "FC2") >= fc2.messages, "FC2's messages")
        assert set(push.snapshot()) == {"FC2"}
    finally:
        push.stop()


@integration
def test_the_live_publisher_follows_the_fleets_clock(broker, listener, fleet, clock) -> None:
    clock.set(datetime(2024, 3, 6, 12, 0, 30, tzinfo=UTC))
    with Publisher(fleet, broker.host, broker.port) as publisher:
        publisher.start_live(interval_s=0.05)
        clock.advance(timedelta(minutes=3))  # three minutes complete: 12:00, 12:01, 12:02
        window = (datetime(2024, 3, 6, 12, 0, tzinfo=UTC), datetime(2024, 3, 6, 12, 3, tzinfo=UTC))
        want = {s: len(crossings(fleet, s, *window)) for s in ("FC1", "FC2")}
        for serial, n in want.items():
            wait_for(lambda s=serial, n=n: heard(listener, s) >= n, f"{serial}'s live push")
    assert want["FC1"] > 0
    assert {s: listener.snapshot()[s].messages for s in want} == want


# --- the simulator's crossings, pure ------------------------------------------------------------


def test_crossings_are_deterministic_and_add_up_to_the_rest_counts(fleet) -> None:
    events = crossings(fleet, "FC1", START, END)
    assert events == crossings(fleet, "FC1", START, END)
    assert [e.at for e in events] == sorted(e.at for e in events)
    per_minute: dict[datetime, list[int]] = {}
    for e in events:
        if e.object_type == 11:
            cell = per_minute.setdefault(e.at.replace(second=0, microsecond=0), [0, 0])
            cell[e.metric - 1] += 1
    rest = {m: [i, o] for m, i, o in fleet.expected_counts("FC1", START, END, 1) if i or o}
    assert per_minute == rest
    assert len({e.message_id for e in events}) == len(events)


def test_a_device_without_uplink_pushes_nothing_and_never_resends(fleet) -> None:
    noon = datetime(2024, 3, 6, 12, 0, tzinfo=UTC)
    fleet.set_fault("FC1", "held_back", since=noon)
    fleet.clear_fault("FC1")  # back at 15:00: REST uploads the held counts, push lost them
    assert sum(i for _, i, _ in fleet.expected_counts("FC1", noon, END)) > 0
    events = crossings(fleet, "FC1", START, END)
    assert events and all(e.at < noon for e in events)


# --- parsing, pure -------------------------------------------------------------------------------


def test_the_simulators_message_parses() -> None:
    payload = (
        b'{"MessageId":"ab12","ChipSerial":"FC1","CameraSerial":"FC1-CAM1","RoiId":1,'
        b'"MetricId":2,"CombineObjectTypeId":21,"EventTime":"2024-03-06T12:00:02.142Z"}'
    )
    [c] = parse_message("/status/FC1", payload)
    assert (c.serial, c.camera, c.roi, c.metric, c.object_type) == ("FC1", "FC1-CAM1", "1", 2, 21)
    assert c.event_time == datetime(2024, 3, 6, 12, 0, 2, 142000, tzinfo=UTC)
    assert c.message_id == "ab12" and c.counted


@pytest.mark.parametrize(
    "when",
    [
        '"2024-03-06T12:00:02"',  # naive: UTC
        '"2024-03-06T13:00:02+01:00"',
        "1709726402",
        "1709726402000",
        '"1709726402"',
        '"/Date(1709726402000)/"',
    ],
)
def test_event_times_in_several_spellings(when: str) -> None:
    payload = f'{{"chip_serial": "FC9", "metric_id": "1", "event_time": {when}}}'.encode()
    [c] = parse_message("/status/FC1", payload)
    assert c.serial == "FC9"  # the body wins over the topic
    assert c.event_time == datetime(2024, 3, 6, 12, 0, 2, tzinfo=UTC)
    assert c.object_type == 11  # no object type: a visitor


def test_serial_from_the_topic_and_nested_events() -> None:
    payload = b'{"CameraSerial": "C", "data": [{"MetricId": 1}, {"MetricId": 2, "RoiId": 3}]}'
    found = parse_message("/status/FC7", payload)
    assert [(c.serial, c.camera, c.metric, c.roi) for c in found] == [
        ("FC7", "C", 1, None),
        ("FC7", "C", 2, "3"),
    ]


def test_a_status_message_is_readable_but_not_a_crossing() -> None:
    [c] = parse_message("/status/FC1", b'{"ChipSerial": "FC1", "Uptime": 1234}')
    assert c.metric is None and not c.counted


@pytest.mark.parametrize("payload", [*GARBAGE, b"", b"x" * 70_000, b"{}"])
def test_garbage_raises_value_error(payload: bytes) -> None:
    topic = "" if payload == b"{}" else "/status/FC1"  # {} with no topic names no counter
    with pytest.raises(ValueError):
        parse_message(topic, payload)


def test_evidence_counts_silence_from_the_link_when_it_came_up_later() -> None:
    up = NOW - timedelta(minutes=5)
    link = LinkState("127.0.0.1:1883", True, up)
    heard_at = NOW - timedelta(hours=2)
    slot = PushSlot(datetime(2024, 3, 6, 15, 0, tzinfo=UTC), 4, 3, 1, 0)
    state = PushState(
        "FC1", link, last_message_at=heard_at, messages=8, duplicates=2, slots=(slot,)
    )
    ev = push_evidence(state, NOW + timedelta(minutes=1))
    assert ev["silent_since"] == up.isoformat()
    assert ev["seconds_since"] == 7260.0
    assert (ev["live_in"], ev["live_out"], ev["staff_in"], ev["duplicates"]) == (4, 3, 1, 2)
    down = push_evidence(PushState("FC1", LinkState("b:1", False, up)), NOW)
    assert down["connected"] is False and down["silent_since"] is None
    assert down["last_message_at"] is None and down["live_in"] == 0


def test_an_unreadable_ca_file_is_state_not_an_exception(tmp_path: Path) -> None:
    push = PushListener("127.0.0.1", 1, tls=True, ca_file=tmp_path / "missing.pem").start()
    link = push.link()
    assert link.error_code is ProbeErrorCode.BAD_RESPONSE
    assert "CA file" in link.error and not link.connected
    push.stop()


def test_push_evidence_feeds_the_push_check() -> None:
    week = tuple([Hours(dt_time(8), dt_time(20))] * 7)
    calendar = SiteCalendar("Europe/London", week)
    link = LinkState("127.0.0.1:1883", True, NOW - timedelta(hours=2))
    state = PushState("FC1", link, last_message_at=NOW - timedelta(minutes=40))
    extra = {"push": push_evidence(state, NOW)}
    ev = CounterEvidence("FC1", "Entrance", "LDN01", calendar, NOW, extra=extra)
    [finding] = PushSilent().run(ev)
    assert finding.status is Status.WARN and "no live push for 40 min" in finding.summary
    down = replace(state, link=LinkState("127.0.0.1:1883", False, NOW, ProbeErrorCode.REFUSED))
    ev = replace(ev, extra={"push": push_evidence(down, NOW)})
    [finding] = PushSilent().run(ev)
    assert finding.status is Status.SKIP and "127.0.0.1:1883" in finding.summary


# --- the [mqtt] table, pure ----------------------------------------------------------------------


def minimal(**mqtt: Any) -> dict[str, Any]:
    return {
        "sites": [
            {
                "code": "LDN01",
                "name": "London",
                "timezone": "Europe/London",
                "opening_hours": {"mon": "09:00-17:00"},
            }
        ],
        "mqtt": mqtt,
    }


def errors(data: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kwargs)
    return info.value.lines


def test_mqtt_table_is_optional_with_defaults() -> None:
    data = minimal()
    del data["mqtt"]
    assert parse_config(data).mqtt is None
    mqtt = parse_config(minimal(host="broker.local")).mqtt
    assert mqtt is not None
    assert (mqtt.port, mqtt.topic, mqtt.tls, mqtt.username) == (1883, "/status/+", False, None)
    assert parse_config(minimal(host="b", tls=True)).mqtt.port == 8883  # type: ignore[union-attr]


def test_mqtt_password_from_a_file_is_secret(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pw").write_text(SECRET + "\n")
    config = parse_config(
        minimal(host="b", username="agent", password_file="mqtt.pw"), base_dir=tmp_path
    )
    assert config.mqtt is not None and config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == SECRET
    assert SECRET in config.secret_values()
    assert SECRET not in repr(config) and SECRET not in config.model_dump_json()
    listener = PushListener.from_config(config.mqtt, serials=["FC1"])
    assert SECRET not in repr(listener) and listener.broker == "b:1883"


@pytest.mark.parametrize(
    ("mqtt", "line"),
    [
        ({"host": "b", "colour": 1}, "mqtt.colour: unknown key"),
        ({}, "mqtt.host: missing required key"),
        ({"host": "mqtt://b"}, "mqtt.host: expected a host name or IP address (not a URL)"),
        ({"host": "b", "port": 0}, "mqtt.port: must be at least 1"),
        ({"host": "b", "topic": "/status/#/x"}, "mqtt.topic: '#' may only be the whole last"),
        ({"host": "b", "topic": "/status/a+"}, "mqtt.topic: '+' must be a whole level"),
        ({"host": "b", "ca_file": "ca.pem"}, "mqtt.ca_file: needs tls = true"),
        ({"host": "b", "password": SECRET}, "mqtt.username: missing: a password needs"),
        ({"host": "b", "password": 5}, "mqtt.password: expected a string"),
        ({"host": "b", "password_file": "nope"}, "mqtt.password_file: cannot read"),
    ],
)
def test_mqtt_table_errors(mqtt: dict[str, Any], line: str, tmp_path: Path) -> None:
    lines = errors(minimal(**copy.deepcopy(mqtt)), base_dir=tmp_path)
    assert any(found.startswith(line) for found in lines), lines
    assert not any(SECRET in found for found in lines)
