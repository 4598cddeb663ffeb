"""The counter wire-format parser: real simulator bytes, field-name variants, and garbage."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from agent.probes import counter_format as fmt
from simulator import FakeClock, Fleet, SimCounter, SimSite

LONDON = ZoneInfo("Europe/London")
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 12, 14, 7, 30, tzinfo=UTC)
HOURS = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat")}


@pytest.fixture
def fleet() -> Fleet:
    sites = [
        SimSite("LDN01", "London", "Europe/London", HOURS),
        SimSite("PAR01", "Paris", "Europe/Paris", HOURS),
    ]
    counters = [
        SimCounter("FFC0001", "Main door", "LDN01", password="pw1"),
        SimCounter("FFC0003", "Legacy", "PAR01", password="pw3", api="pi-cgi"),
    ]
    return Fleet(sites, counters, seed=11, clock=FakeClock(NOW))


def device_reply(fleet: Fleet, serial: str, path: str, query: dict[str, str], auth=None) -> bytes:
    """The exact bytes the simulated device would send, without a socket."""
    reply = fleet.request(serial, path, urlencode(query), auth)
    assert reply.status == 200, reply.body
    return reply.body


def sim_token(fleet: Fleet) -> str:
    body = device_reply(
        fleet, "FFC0001", "/cgi-bin/access_token.cgi", {"username": "admin", "password": "pw1"}
    )
    return fmt.parse_token(body)


# -- real simulator output --------------------------------------------------------------------


@pytest.mark.parametrize("data_type", ["json", "xml"])
def test_counts_from_the_simulator_match_what_the_device_holds(fleet, data_type):
    start, end = NOW - timedelta(hours=6), NOW
    params = fmt.counts_query(
        start, end, tz=LONDON, token=sim_token(fleet), resolution_min=15, data_type=data_type
    )
    body = device_reply(fleet, "FFC0001", "/cgi-bin/apiCount.cgi", params)
    reply = fmt.parse_counts(body, data_type=data_type, serial="FFC0001", tz=LONDON, minutes=15)
    assert (reply.serial, reply.model, reply.firmware) == (
        "FFC0001",
        "FootfallCam 3D Pro2",
        "4.3.1",
    )
    assert reply.device_time == NOW
    expected = fleet.expected_counts("FFC0001", start, end)
    assert [(s.start, s.count_in, s.count_out) for s in reply.slots] == expected
    assert {s.minutes for s in reply.slots} == {15} and {s.counter for s in reply.slots} == {
        "FFC0001"
    }
    assert all(
        s.start.tzinfo is not None and s.start.utcoffset() == timedelta(0) for s in reply.slots
    )


def test_an_hourly_reply_states_its_resolution_and_it_wins(fleet):
    params = fmt.counts_query(
        NOW - timedelta(hours=5), NOW, tz=LONDON, token=sim_token(fleet), resolution_min=60
    )
    assert params["data_format"] == "hour"
    body = device_reply(fleet, "FFC0001", "/cgi-bin/apiCount_cgi", params)
    reply = fmt.parse_counts(body, data_type="json", serial="FFC0001", tz=LONDON, minutes=15)
    assert {s.minutes for s in reply.slots} == {60} and len(reply.slots) == 4


@pytest.mark.parametrize("data_type", ["json", "xml"])
def test_legacy_replies_from_the_simulator(fleet, data_type):
    auth = "Basic " + base64.b64encode(b"admin:pw3").decode()
    body = device_reply(
        fleet, "FFC0003", f"/pi-cgi/data.{data_type}", fmt.legacy_query(date(2026, 3, 11)), auth
    )
    reply = fmt.parse_legacy(body, data_type=data_type, serial="FFC0003", tz=PARIS)
    start = datetime(2026, 3, 11, tzinfo=PARIS)
    expected = fleet.expected_counts("FFC0003", start, start + timedelta(days=1))
    assert [(s.start, s.count_in, s.count_out) for s in reply.slots] == expected
    assert len(reply.slots) == 96 and reply.serial == "FFC0003"


def test_the_repeated_autumn_hour_stays_two_slots(fleet):
    fleet.clock.set(datetime(2026, 10, 27, tzinfo=UTC))
    params = {"date_start": "20261025", "data_format": "hour", "access_token": sim_token(fleet)}
    body = device_reply(fleet, "FFC0001", "/cgi-bin/apiCount.cgi", params)
    reply = fmt.parse_counts(body, data_type="json", serial="FFC0001", tz=LONDON, minutes=60)
    assert len(reply.slots) == 25
    assert len({s.start for s in reply.slots}) == 25


def test_the_token_reply_of_the_simulator(fleet):
    assert fmt.parse_token(b'{"status": "ok", "access_token": "abcdef123456"}') == "abcdef123456"
    assert len(sim_token(fleet)) == 40


# -- variants a real device may send ----------------------------------------------------------


def one(body: object, **kwargs) -> fmt.CountsReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return fmt.parse_counts(raw, data_type="json", serial="C1", tz=LONDON, minutes=15, **kwargs)


@pytest.mark.parametrize(
    "reply",
    [
        {"data": [{"timestamp": "2026-03-12T09:07:13", "in": 3, "out": 2}]},
        {"data": [{"timestamp": "2026-03-12T09:05:00", "in": 3, "out": 2}]},
        {"resolution": 7, "data": [{"timestamp": "2026-03-12T09:00:00", "in": 3, "out": 2}]},
    ],
)
def test_a_slot_off_the_grid_of_an_offered_resolution_is_refused(reply):
    # stored as is, an off-grid slot would sit beside the real ones and double the counts
    with pytest.raises(fmt.FormatError, match=r"grid|resolution"):
        one(reply)


@pytest.mark.parametrize(
    "row",
    [
        {"timestamp": "2026-03-12T09:00:00+00:00", "in": 3, "out": 2},
        {"Timestamp": "2026-03-12T09:00:00Z", "In": "3", "Out": "2"},
        {"time": "2026-03-12 09:00:00", "count_in": 3, "count_out": 2.0},
        {"Date": "20260312", "Time": "090000", "Enter": 3, "Exit": 2, "extra": [1, 2]},
        {"date": "2026-03-12", "time": "09:00", "CountIn": 3, "CountOut": 2},
        {"start": 1773306000, "ins": 3, "outs": 2},
        {"DateTime": "20260312T090000", "entries": 3, "exits": 2, "staff": 1},
    ],
)
def test_field_name_and_value_variants(row):
    reply = one({"Data": [row], "SerialNumber": "X9", "fw": "1.0"})
    (slot,) = reply.slots
    assert slot.start == datetime(2026, 3, 12, 9, tzinfo=UTC)
    assert (slot.count_in, slot.count_out, slot.minutes) == (3, 2, 15)
    assert reply.serial == "X9" and reply.firmware == "1.0"


def test_a_time_without_offset_is_read_in_the_site_timezone():
    reply = one({"data": [{"timestamp": "2026-07-01T09:00:00", "in": 1, "out": 1}]})
    assert reply.slots[0].start == datetime(2026, 7, 1, 8, tzinfo=UTC)  # BST is UTC+1


def test_shapes_of_the_document():
    row = {"timestamp": "2026-03-12T09:00:00+00:00", "in": 1, "out": 0}
    assert len(one([row]).slots) == 1  # a bare list
    nested = one({"result": {"serial": "S", "records": [row]}, "device": {"model": "M"}})
    assert (len(nested.slots), nested.serial, nested.model) == (1, "S", "M")
    assert one({"status": "ok", "data": []}).slots == ()  # nothing yet is not an error


def test_rows_come_out_in_time_order_without_duplicates():
    rows = [
        {"timestamp": "2026-03-12T09:15:00+00:00", "in": 1, "out": 1},
        {"timestamp": "2026-03-12T09:00:00+00:00", "in": 2, "out": 2},
        {"timestamp": "2026-03-12T09:15:00+00:00", "in": 5, "out": 4},
    ]
    slots = one({"data": rows}).slots
    assert [(s.start.minute, s.count_in) for s in slots] == [(0, 2), (15, 5)]


def test_xml_variants_with_attributes_and_flat_typeid_counts():
    attrs = (
        b'<counts serial="Z1"><interval start="2026-03-12T09:00:00+00:00" in="4" out="3"/></counts>'
    )
    (slot,) = fmt.parse_counts(attrs, data_type="xml", serial="C", tz=LONDON, minutes=15).slots
    assert (slot.count_in, slot.count_out) == (4, 3)
    flat = (
        b'<Data><Count time="2026-03-12T09:00:00" typeid="3" value="7"/>'
        b'<Count time="2026-03-12T09:00:00" typeid="4" value="6"/></Data>'
    )
    (slot,) = fmt.parse_legacy(flat, data_type="xml", serial="C", tz=LONDON).slots
    assert (slot.count_in, slot.count_out, slot.minutes) == (7, 6, 15)


def test_a_json_body_answering_an_xml_request_is_still_read():
    body = json.dumps({"data": [{"timestamp": "2026-03-12T09:00:00Z", "in": 1, "out": 1}]})
    assert fmt.parse_counts(body.encode(), data_type="xml", serial="C", tz=LONDON, minutes=15)


def test_token_variants():
    assert fmt.parse_token(b"  tok_ABC123.xyz\n") == "tok_ABC123.xyz"
    assert fmt.parse_token(b'{"data": {"Token": "abcdefgh12"}}') == "abcdefgh12"
    assert fmt.parse_token(b"<r><access_token>abcdefgh12</access_token></r>") == "abcdefgh12"
    assert fmt.parse_token(b'"abcdefgh12"') == "abcdefgh12"


# -- garbage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x80\x81\x99garbage", "binary"),
        (b"<!DOCTYPE html><html><title>502 Bad Gateway</title></html>", "502 Bad Gateway"),
        (b'{"data": [{"timestamp": "2026-03-12T09:00:00Z", "in": 1', "truncated JSON"),
        (b"<response><data><row><in>1</in>", "truncated XML"),
        (b"hello world", "neither JSON nor XML"),
        (b'{"status": "error", "message": "invalid access_token"}', "invalid access_token"),
        (b'{"serial": "X"}', "no count rows"),
        (b'{"data": [{"timestamp": "2026-03-12T09:00:00Z", "in": 1}]}', "OUT count is missing"),
        (b'{"data": [{"timestamp": "2026-03-12T09:00:00Z", "in": "x", "out": 1}]}', "not a number"),
        (b'{"data": [{"timestamp": "2026-03-12T09:00:00Z", "in": -1, "out": 1}]}', "negative"),
        (b'{"data": [{"timestamp": "2026-03-12T09:00:00Z", "in": 1.5, "out": 1}]}', "whole"),
        (b'{"data": [{"timestamp": "2026-03-12T09:00:00Z", "in": true, "out": 1}]}', "number"),
        (b'{"data": [{"timestamp": "yesterday", "in": 1, "out": 1}]}', "unreadable time"),
        (b'{"data": [{"in": 1, "out": 1}]}', "no timestamp"),
        (b'{"data": [7]}', "not a record"),
        (b'"just a string"', "neither an object nor a list"),
        (b"<a><b>no counts here</b></a>", "no count rows"),
    ],
)
def test_unusable_replies_raise_a_clear_format_error(body, why):
    with pytest.raises(fmt.FormatError, match=why):
        one(body)


def _row(count_in: str = "1", ts: str = '"2026-03-12T09:00:00Z"') -> bytes:
    return f'{{"data": [{{"timestamp": {ts}, "in": {count_in}, "out": 1}}]}}'.encode()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        # issue 10: one of these made `check` exit 3 (SQLite overflow) or crashed the probe
        (_row("99999999999999999999"), "implausible .*at most 1000000"),
        (_row('"99999999999999999999"'), "implausible"),
        (_row("1000001"), "implausible"),
        (_row("9" * 5000), "5000 digits"),
        (_row('"' + "9" * 5000 + '"'), "out of range|implausible"),
        (_row("1e400"), "out of range"),
        (_row("-1e400"), "out of range"),
        (_row("NaN"), "NaN is not a number"),
        (_row("Infinity"), "Infinity is not a number"),
        (_row(ts='"0001-01-01T00:00:00+14:00"'), "implausible time"),
        (_row(ts='"0001-01-01T00:00:00"'), "implausible time"),
        (_row(ts='"9999-12-31T23:59:59-12:00"'), "implausible time"),
        (_row(ts='"9999-12-31T23:59:59"'), "implausible time"),
        (_row(ts='"1970-01-01T00:00:00Z"'), "implausible time"),
        (_row(ts="0"), "implausible time"),
        (_row(ts="253402300799"), "implausible time|out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 32"),
        (b'{"data": ' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 32"),
        (b"<a>" * 100_000 + b"</a>" * 100_000, "nested more than 32"),
    ],
)
def test_implausible_replies_are_a_clear_format_error_never_a_crash(body, why):
    with pytest.raises(fmt.FormatError, match=why):
        one(body)


def test_an_implausible_device_time_is_dropped_and_the_counts_kept():
    body = b'{"device_time": "9999-12-31T23:59:59", "data": []}'
    assert one(body).device_time is None


def test_long_device_strings_are_cut():
    body = b'{"model": "' + b"m" * 100_000 + b'", "data": []}'
    assert len(one(body).model) == fmt.MAX_TEXT


def _jpeg(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, "JPEG")
    return buf.getvalue()


def test_a_snapshot_is_checked_from_its_frame_header_without_decoding():
    assert fmt.check_snapshot(_jpeg(640, 480)) == (640, 480)
    small = _jpeg(8, 8)
    at = small.index(b"\xff\xc0")  # the frame header: claim 65,000 x 65,000 pixels
    bomb = small[: at + 5] + (65000).to_bytes(2, "big") * 2 + small[at + 9 :]
    with pytest.raises(fmt.FormatError, match="65000x65000 pixels"):
        fmt.check_snapshot(bomb)
    with pytest.raises(fmt.FormatError, match="a PNG image"):
        fmt.check_snapshot(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(fmt.FormatError, match="damaged JPEG"):
        fmt.check_snapshot(b"\xff\xd8" + b"\x00" * 100)


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test extra
    given = None

if given is not None:
    _json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=30)
        | st.sampled_from(["2026-03-12T09:00:00", "0001-01-01T00:00:00", "20260312093000"]),
        lambda kids: (
            st.lists(kids, max_size=4)
            | st.dictionaries(
                st.sampled_from(["data", "in", "out", "timestamp", "date", "time", "serial", "x"]),
                kids,
                max_size=5,
            )
        ),
        max_leaves=30,
    )

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_json_values)
    def test_any_json_reply_is_parsed_or_a_format_error(doc):
        body = json.dumps(doc, allow_nan=True).encode()
        for parse in (one, fmt.parse_token):
            try:
                parse(body)
            except fmt.FormatError:
                pass

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_any_bytes_are_parsed_or_a_format_error(body):
        for parse in (one, fmt.parse_token, fmt.check_snapshot):
            try:
                parse(body)
            except fmt.FormatError:
                pass
        try:
            fmt.check_snapshot(b"\xff\xd8" + body)
        except fmt.FormatError:
            pass


def test_xml_entity_declarations_are_refused():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;">]><data><row in="&lol2;" out="1"/></data>'
    )
    with pytest.raises(fmt.FormatError, match="DOCTYPE or ENTITY"):
        fmt.parse_counts(bomb, data_type="xml", serial="C", tz=LONDON, minutes=15)


def test_a_legacy_slot_without_its_out_count_is_refused():
    body = (
        b'<CountData><Slot Time="2026-03-12T09:00:00Z"><Count typeid="3">1</Count></Slot>'
        b"</CountData>"
    )
    with pytest.raises(fmt.FormatError, match="OUT count is missing"):
        fmt.parse_legacy(body, data_type="xml", serial="C", tz=LONDON)


def test_bad_token_replies_never_echo_the_body():
    for body in (
        b'{"status": "ok"}',
        b'{"access_token": "has spaces in it"}',
        b"\xff\xfe",
        b'{"status": "error", "message": "bad password"}',
        b"<html>login</html>",
    ):
        with pytest.raises(fmt.FormatError) as caught:
            fmt.parse_token(body)
        assert "has spaces" not in str(caught.value)


def test_oversized_replies_are_refused():
    with pytest.raises(fmt.FormatError, match="too large"):
        one(b"[" + b" " * fmt.MAX_BODY_BYTES + b"]")


# -- queries and merging ----------------------------------------------------------------------


def test_counts_query_speaks_device_local_time():
    start = datetime(2026, 7, 1, 8, tzinfo=UTC)
    params = fmt.counts_query(start, start + timedelta(hours=24), tz=LONDON, token="t0k3n123")
    assert params == {
        "data_type": "json",
        "data_format": "minute",
        "resolution_min": "15",
        "date_start": "20260701",
        "time_start": "090000",
        "date_end": "20260702",
        "time_end": "090000",
        "access_token": "t0k3n123",
    }


@pytest.mark.parametrize(
    ("start", "end", "kwargs", "why"),
    [
        (NOW, NOW + timedelta(hours=24, seconds=1), {}, "24 hours"),
        (NOW, NOW, {}, "after the start"),
        (NOW.replace(tzinfo=None), NOW + timedelta(hours=1), {}, "timezone-aware"),
        (NOW, NOW + timedelta(hours=1), {"resolution_min": 7}, "resolution_min"),
        (NOW, NOW + timedelta(hours=1), {"data_type": "csv"}, "data_type"),
    ],
)
def test_counts_query_refuses_what_the_device_would(start, end, kwargs, why):
    with pytest.raises(ValueError, match=why):
        fmt.counts_query(start, end, tz=LONDON, token="t0k3n123", **kwargs)


def test_merge_replies_orders_slots_and_keeps_the_latest_details():
    a = one({"serial": "S1", "data": [{"timestamp": "2026-03-12T10:00Z", "in": 1, "out": 1}]})
    b = one(
        {
            "firmware": "2",
            "data": [
                {"timestamp": "2026-03-12T09:00Z", "in": 2, "out": 2},
                {"timestamp": "2026-03-12T10:00Z", "in": 3, "out": 3},
            ],
        }
    )
    merged = fmt.merge_replies([a, b])
    assert [s.count_in for s in merged.slots] == [2, 3]
    assert (merged.serial, merged.firmware) == ("S1", "2")
    assert fmt.merge_replies([]).slots == ()


def test_a_range_within_one_second_still_asks_for_a_whole_second():
    # diagnose at 21:45:00.4 fetches from the newest slot, 21:45:00: both were sent as 214500
    start = datetime(2026, 12, 4, 21, 45, tzinfo=UTC)
    params = fmt.counts_query(
        start, start + timedelta(milliseconds=400), tz=LONDON, token="t", resolution_min=15
    )
    assert (params["time_start"], params["time_end"]) == ("214500", "214501")
