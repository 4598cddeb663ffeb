"""Fuzzing the counter API's wire format: apiCount and pi-cgi replies (JSON, XML), the token.

``counter_format`` promises that no reply makes it raise anything but ``FormatError``, and
that what it returns is fit for the store: UTC slot starts in a plausible time, whole counts
within 0..MAX_COUNT, one slot per start, oldest first. The transport engineer's branch
(``transport``) hardens this module; until it is merged the tests that find an escape here
are marked xfail (not strict), and each names the input that escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.probes import counter_format as fmt
from diagnostics.model import CountSlot
from tests.fuzz.hostile import (
    Obj,
    any_json,
    dumps,
    epochs,
    hostile,
    nested,
    odd_numbers,
    odd_text,
    spellings,
    times_text,
)

# The bounds the hardened parser states (counter_format.MAX_COUNT and PLAUSIBLE_*); the same
# figures here until that branch is merged.
MAX_COUNT = getattr(fmt, "MAX_COUNT", 1_000_000)
PLAUSIBLE_FROM = getattr(fmt, "PLAUSIBLE_FROM", datetime(2000, 1, 1, tzinfo=UTC))
PLAUSIBLE_UNTIL = getattr(fmt, "PLAUSIBLE_UNTIL", datetime(2100, 1, 1, tzinfo=UTC))
ZONES = [ZoneInfo(z) for z in ("Europe/London", "UTC", "Asia/Kathmandu", "America/St_Johns")]
SERIAL = "FFC0001"

ESCAPES = (
    "escapes found by fuzzing, fixed on the transport branch (counter_format hardening): "
    "see the @example inputs; merge, then drop this mark"
)


def assert_well_formed(reply: fmt.CountsReply, minutes: int | None = None) -> None:
    assert isinstance(reply, fmt.CountsReply)
    starts = [s.start for s in reply.slots]
    assert starts == sorted(set(starts)), "one slot per start, oldest first"
    for slot in reply.slots:
        assert isinstance(slot, CountSlot)
        assert slot.counter == SERIAL
        assert slot.start.tzinfo is not None and slot.start.utcoffset() == timedelta(0)
        assert PLAUSIBLE_FROM <= slot.start < PLAUSIBLE_UNTIL
        assert type(slot.minutes) is int and 0 < slot.minutes <= 1440
        if minutes is not None:
            assert slot.minutes == minutes
        for count in (slot.count_in, slot.count_out):
            assert type(count) is int and 0 <= count <= MAX_COUNT
    for text in (reply.serial, reply.model, reply.firmware):
        assert text is None or isinstance(text, str)
    if reply.device_time is not None:
        assert reply.device_time.tzinfo is not None
        reply.device_time.astimezone(UTC)  # must not overflow


def counts(body: bytes, tz: ZoneInfo, *, legacy: bool = False) -> fmt.CountsReply | None:
    """The reply, or None for a FormatError; anything else fails the test."""
    try:
        if legacy:
            reply = fmt.parse_legacy(body, data_type="json", serial=SERIAL, tz=tz)
        else:
            reply = fmt.parse_counts(body, data_type="json", serial=SERIAL, tz=tz, minutes=15)
    except fmt.FormatError:
        return None
    assert_well_formed(reply, 15 if legacy else None)
    return reply


# -- structured documents ------------------------------------------------------------------


def _key(names: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(names).flatmap(spellings)


good_time = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
    lambda d: d.replace(minute=d.minute - d.minute % 15, second=0, microsecond=0).isoformat()
)
count_value = st.one_of(st.integers(0, 3000), st.integers(0, 3000).map(str), odd_numbers, hostile)
time_value = st.one_of(good_time, times_text, epochs, hostile)


@st.composite
def json_row(draw: st.DrawFn) -> Obj:
    pairs: list[tuple[str, Any]] = []
    if draw(st.booleans()):
        pairs.append((draw(_key(fmt.TIMESTAMP_KEYS)), draw(time_value)))
    else:  # separate date and time fields
        pairs.append(("date", draw(st.sampled_from(["20260312", "2026-03-12", "00010101"]))))
        pairs.append(("time", draw(st.sampled_from(["093000", "09:30", "25:61:61", "0130"]))))
    if draw(st.booleans()):
        pairs.append((draw(_key(fmt.IN_KEYS)), draw(count_value)))
    pairs.append((draw(_key(fmt.OUT_KEYS)), draw(count_value)))
    pairs.append((draw(_key(fmt.IN_KEYS)), draw(count_value)))  # maybe a duplicate key
    if draw(st.booleans()):
        pairs.append((draw(odd_text), draw(hostile)))
    return Obj(draw(st.permutations(pairs)))


@st.composite
def json_reply(draw: st.DrawFn) -> str:
    rows = draw(st.lists(json_row(), max_size=6))
    meta = [
        (draw(_key(keys)), draw(st.one_of(odd_text, hostile)))
        for keys in (fmt.SERIAL_KEYS, fmt.DEVICE_TIME_KEYS, fmt.RESOLUTION_KEYS, fmt.MODEL_KEYS)
        if draw(st.booleans())
    ]
    shape = draw(st.integers(0, 3))
    rows_key = draw(_key(fmt.ROWS_KEYS))
    if shape == 0:
        return dumps(rows)
    if shape == 1:
        return dumps(Obj([*meta, (rows_key, rows)]))
    if shape == 2:  # metadata and rows one level down
        return dumps(Obj([("device", Obj(meta)), (rows_key, Obj([("data", rows)]))]))
    status = draw(st.sampled_from(["ok", "error", "FAIL", None]))
    return dumps(Obj([("status", status), ("message", draw(hostile)), (rows_key, rows)]))


@st.composite
def xml_reply(draw: st.DrawFn) -> str:
    def attr(name: str, value: Any) -> str:
        return f" {name}={quoteattr(str(value))}"

    rows = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):  # a plain record, fields as child elements or attributes
            fields = [
                (draw(_key(fmt.TIMESTAMP_KEYS)), draw(time_value)),
                (draw(_key(fmt.IN_KEYS)), draw(count_value)),
                (draw(_key(fmt.OUT_KEYS)), draw(count_value)),
            ]
            if draw(st.booleans()):
                rows.append("<row" + "".join(attr(k, v) for k, v in fields) + "/>")
            else:
                inner = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields)
                rows.append(f"<row>{inner}</row>")
        else:  # legacy 3D Plus: <Count typeid="3|4"> under a timed parent
            typeid = draw(st.sampled_from(["3", "4", " 3 ", "5", ""]))
            value = draw(count_value)
            rows.append(
                f"<Interval{attr('start', draw(time_value))}>"
                f"<Count{attr('typeid', typeid)}{attr('value', value)}/></Interval>"
            )
    serial = attr("serial", draw(odd_text)) if draw(st.booleans()) else ""
    return f"<reply{serial}><data>{''.join(rows)}</data></reply>"


# -- the tests -----------------------------------------------------------------------------


@settings(max_examples=200)
@given(body=st.binary(max_size=600), tz=st.sampled_from(ZONES), legacy=st.booleans())
@example(body=b"\xef\xbb\xbf   ", tz=ZONES[0], legacy=False)
@example(body=b"<html><title>Login</title>", tz=ZONES[0], legacy=False)
def test_any_bytes_are_counts_or_a_format_error(body: bytes, tz: ZoneInfo, legacy: bool) -> None:
    counts(body, tz, legacy=legacy)


@settings(max_examples=200)
@given(doc=any_json, tz=st.sampled_from(ZONES))
def test_any_json_value_is_counts_or_a_format_error(doc: Any, tz: ZoneInfo) -> None:
    counts(dumps(doc).encode(), tz)


@settings(max_examples=200)
@given(text=json_reply(), tz=st.sampled_from(ZONES), legacy=st.booleans())
# escaped on main: a 400-digit count overflowed float() (OverflowError)
@example(
    text='{"data":[{"timestamp":"2026-03-12T09:15:00","in":1' + "0" * 400 + ',"out":2}]}',
    tz=ZONES[0],
    legacy=False,
)
# not plausible on main: year 0001, read in London's local mean time, became 00:01:15 UTC
@example(
    text='{"data":[{"timestamp":"0001-01-01T00:00:00","in":1,"out":2}]}', tz=ZONES[0], legacy=True
)
# not bounded on main: 1e300 people in a quarter hour reached the slot as an int of 301 digits
@example(
    text='{"data":[{"timestamp":"2026-03-12T09:15:00","in":1e300,"out":2}]}',
    tz=ZONES[0],
    legacy=False,
)
# escaped on main: a time at datetime's edge overflowed astimezone (OverflowError)
@example(
    text='{"data":[{"timestamp":"9999-12-31T23:59:59-01:00","in":1,"out":2}]}',
    tz=ZONES[0],
    legacy=False,
)
def test_structured_json_replies(text: str, tz: ZoneInfo, legacy: bool) -> None:
    counts(text.encode(), tz, legacy=legacy)


@settings(max_examples=200)
@given(text=xml_reply(), tz=st.sampled_from(ZONES), legacy=st.booleans())
@example(
    text='<r><i start="2026-03-12T09:15:00"><Count typeid="3" value="1e400"/></i></r>',
    tz=ZONES[0],
    legacy=True,
)
# not bounded on main: 2**31 people in a quarter hour
@example(
    text='<r><row timestamp="2026-03-12T09:15:00" in="2147483648" out="1"/></r>',
    tz=ZONES[0],
    legacy=False,
)
# escaped on main: OverflowError moving year 9999 into UTC
@example(
    text='<r><i start="9999-12-31T23:59:59-01:00"><Count typeid="4" value="1"/></i></r>',
    tz=ZONES[0],
    legacy=True,
)
def test_structured_xml_replies(text: str, tz: ZoneInfo, legacy: bool) -> None:
    counts(text.encode(), tz, legacy=legacy)


@settings(max_examples=60)
@given(
    depth=st.integers(1, 50_000),
    shape=st.sampled_from(["[", "{", "x"]),
    wrapped=st.booleans(),
)
# escaped on main: RecursionError from json.loads
@example(depth=100_000, shape="[", wrapped=False)
@example(depth=5_000, shape="{", wrapped=True)
def test_deep_nesting_is_a_format_error(depth: int, shape: str, wrapped: bool) -> None:
    if shape == "[":
        text = nested(depth)
    elif shape == "{":
        text = '{"a":' * depth + "1" + "}" * depth
    else:
        text = nested(depth, "<a>", "</a>")
    body = ('{"data":' + text + "}" if wrapped and shape != "x" else text).encode()
    counts(body, ZONES[0])
    try:
        fmt.parse_token(body)
    except fmt.FormatError:
        pass


# -- the token answer --------------------------------------------------------------------------

token_value = st.one_of(
    st.from_regex(r"[A-Za-z0-9._~+/=-]{8,64}", fullmatch=True),
    hostile,
    odd_text,
)


@st.composite
def token_reply(draw: st.DrawFn) -> bytes:
    key = draw(_key(fmt.TOKEN_KEYS))
    value = draw(token_value)
    shape = draw(st.integers(0, 4))
    if shape == 0:
        text = dumps(Obj([(key, value), *draw(st.lists(st.tuples(odd_text, hostile), max_size=2))]))
    elif shape == 1:
        text = dumps(Obj([("result", Obj([(key, value)])), ("status", draw(hostile))]))
    elif shape == 2:
        text = dumps(value)
    elif shape == 3:
        text = f"<reply><{key}>{escape(str(value))}</{key}></reply>"
    else:
        text = str(value)
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=200)
@given(body=st.one_of(st.binary(max_size=300), token_reply()))
# escaped on main: RecursionError (nesting) and a bare ValueError (a 5,000-digit int)
@example(body=b'{"a":' * 100_000)
@example(body=b'{"token":1' + b"0" * 5000 + b"}")
def test_token_is_a_token_or_a_format_error(body: bytes) -> None:
    try:
        token = fmt.parse_token(body)
    except fmt.FormatError:
        return
    assert isinstance(token, str)
    assert 8 <= len(token) <= 512 and token == token.strip() and token.isascii()
    assert token.isprintable()


# -- the slot grid: a slot off the grid of a resolution the API offers is refused -------------


@settings(max_examples=50)
@given(
    at=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    resolution=st.integers(1, 1440),
    tz=st.sampled_from(ZONES),
)
@example(at=datetime(2026, 3, 12, 9, 7, 13, 500000), resolution=15, tz=ZONES[0])
@example(at=datetime(2026, 3, 12, 9, 0), resolution=7, tz=ZONES[0])
def test_slots_lie_on_the_grid_of_a_supported_resolution(
    at: datetime, resolution: int, tz: ZoneInfo
) -> None:
    text = dumps(
        Obj([("resolution", resolution), ("data", [{"ts": at.isoformat(), "in": 1, "out": 1}])])
    )
    reply = counts(text.encode(), tz)
    for slot in reply.slots if reply else ():
        assert slot.minutes in fmt.RESOLUTIONS
        local = slot.start.astimezone(tz)
        assert local.second == local.microsecond == 0
        assert (local.hour * 60 + local.minute) % slot.minutes == 0
