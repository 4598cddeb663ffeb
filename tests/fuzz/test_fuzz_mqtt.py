"""Fuzzing ``mqtt.parse_message``: any topic and payload is crossings or a ValueError.

The listener calls it from paho's network thread and catches only ValueError: anything else
would kill the callback for that message and, logged by paho, hide every later one. What it
returns must be safe to count and to hash for deduplication.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.probes import mqtt
from agent.probes.mqtt import Crossing, parse_message, slot_start
from tests.fuzz.hostile import Obj, any_json, dumps, epochs, hostile, odd_text, times_text

topics = st.one_of(
    st.just("/status/FFC0001"),
    st.text(max_size=40),
    st.sampled_from(["", "/", "//", "/status/", "/status/\x00", "/status/" + "A" * 65]),
)


def check(topic: str, payload: bytes) -> list[Crossing] | None:
    try:
        crossings = parse_message(topic, payload)
    except ValueError:
        return None
    assert isinstance(crossings, list) and crossings
    for c in crossings:
        assert isinstance(c, Crossing)
        assert isinstance(c.serial, str) and 0 < len(c.serial) <= 64 and c.serial.isprintable()
        for number in (c.metric, c.object_type):
            assert number is None or type(number) is int
        for text in (c.camera, c.roi, c.message_id):
            assert text is None or (isinstance(text, str) and text)
        if c.event_time is not None:
            assert c.event_time.utcoffset() == timedelta(0)
            assert 2000 <= c.event_time.year <= 2100
            start = slot_start(c.event_time)
            assert start.minute % mqtt.SLOT_MINUTES == 0 and start.second == 0
            assert start <= c.event_time < start + timedelta(minutes=mqtt.SLOT_MINUTES)
        assert isinstance(c.counted, bool)
        hash(c.dedup_key())
    return crossings


@settings(max_examples=200)
@given(topic=topics, payload=st.binary(max_size=400))
def test_any_bytes(topic: str, payload: bytes) -> None:
    check(topic, payload)


@settings(max_examples=200)
@given(topic=topics, doc=any_json)
def test_any_json(topic: str, doc: Any) -> None:
    check(topic, dumps(doc).encode())


def _spell(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from([key, key.upper(), f"{key[:1]}_{key[1:]}", key.capitalize()])


field_value = st.one_of(
    st.integers(0, 30),
    st.sampled_from(["1", " 2 ", "11", "21", "²", "٣", "-1", "--5", "9" * 30]),
    hostile,
)
time_value = st.one_of(times_text, epochs, hostile, st.just("/Date(1773306900000+0100)/"))


@st.composite
def crossing_message(draw: st.DrawFn) -> str:
    fields: list[tuple[str, Any]] = []
    for keys, values in (
        (mqtt.SERIAL_KEYS, st.one_of(st.just("FFC0001"), odd_text, hostile)),
        (mqtt.METRIC_KEYS, field_value),
        (mqtt.OBJECT_KEYS, field_value),
        (mqtt.CAMERA_KEYS, st.one_of(odd_text, hostile)),
        (mqtt.ROI_KEYS, field_value),
        (mqtt.TIME_KEYS, time_value),
        (mqtt.ID_KEYS, st.one_of(odd_text, hostile)),
    ):
        if draw(st.booleans()):
            fields.append((draw(st.sampled_from(keys).flatmap(_spell)), draw(values)))
    message = Obj(draw(st.permutations(fields)))
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return dumps(message)
    if shape == 1:
        return dumps([message, draw(hostile), message])  # a batch with a duplicate and junk
    nest = draw(st.sampled_from(mqtt.NEST_KEYS).flatmap(_spell))
    inner: Any = message if shape == 2 else [message, message]
    return dumps(Obj([("ChipSerial", draw(odd_text)), (nest, inner)]))


@settings(max_examples=200)
@given(topic=topics, text=crossing_message())
# escaped on main: a 400-digit epoch overflowed in "value / 1000" (OverflowError)
@example(topic="/status/X", text='{"MetricId":1,"EventTime":1' + "0" * 400 + "}")
@example(topic="/status/X", text='{"MetricId":1,"EventTime":"/Date(1' + "0" * 400 + ')/"}')
def test_structured_messages(topic: str, text: str) -> None:
    check(topic, text.encode())


def test_unicode_digits_are_garbage_not_an_int_error() -> None:
    """'²' passed str.isdigit() and then int() raised its own ValueError on main."""
    for value in ("²", "٣", "--5", "9" * 30):
        try:
            parse_message("/status/X", dumps(Obj([("MetricId", value)])).encode())
        except mqtt._Garbage as exc:
            assert "MetricId" in str(exc)
        else:
            raise AssertionError(f"{value!r} read as a metric")


def test_a_huge_event_time_is_no_time() -> None:
    (c,) = parse_message("/status/X", b'{"MetricId":1,"EventTime":1' + b"0" * 400 + b"}")
    assert c.event_time is None and c.counted


def test_an_int_beyond_json_digits_is_garbage() -> None:
    try:
        parse_message("/status/X", b'{"MetricId":1' + b"0" * 5000 + b"}")
    except mqtt._Garbage:
        pass
    else:
        raise AssertionError("read")


@settings(max_examples=50)
@given(depth=st.integers(1, 40_000), opener=st.sampled_from(["[", '{"data":']))
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    check("/status/X", (opener * depth + closer * depth).encode())


def test_a_dst_ambiguous_naive_time_is_taken_as_utc() -> None:
    (c,) = parse_message("/s/X", b'{"MetricId":1,"EventTime":"2025-10-26T01:30:00"}')
    assert c.event_time == datetime(2025, 10, 26, 1, 30, tzinfo=UTC)
