"""The counter's wire format, read tolerantly: token replies and count replies, JSON or XML.

FootfallCam does not publish the field names of its local API (DESIGN.md §3), so this is the
one module that knows them, and it knows several spellings of each. The alias tables below are
the place to correct when a real device answers differently; docs/counter-api.md describes the
format the simulator speaks and what must be confirmed against a real unit.

Pure: bytes in, values out, no I/O. Anything unusable (binary noise, an HTML error page,
truncated JSON or XML, a row without counts, a negative or non-numeric count) raises
``FormatError`` with a message fit for a ticket. So does anything implausible, before it can
reach the store or crash the agent: a count outside 0..MAX_COUNT per slot, a number of more
than MAX_DIGITS digits, NaN or an infinity, nesting deeper than MAX_DEPTH, a slot time outside
PLAUSIBLE_FROM..PLAUSIBLE_UNTIL. No input makes this module raise anything but
``FormatError``. Messages quote only a device's own error message, an HTML title or a bad
timestamp, never the body: a misrouted reply may carry secrets.

Timestamps without a UTC offset are read in the site's timezone. Slot starts come out in UTC,
because two site-local datetimes of the hour repeated when the clocks go back compare and hash
equal in Python and would collapse into one slot.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from diagnostics.model import CountSlot

MAX_BODY_BYTES = 4 * 1024 * 1024
# A door counts a few thousand people an hour at most; a million in one slot is a broken
# device or a hostile answer, and an unbounded integer does not fit SQLite's 64 bits.
MAX_COUNT = 1_000_000
MAX_DIGITS = 20  # any number in a reply: a count, an epoch time in ms, a resolution
MAX_DEPTH = 32  # nesting of JSON arrays and objects, or XML elements
MAX_TEXT = 128  # a serial, model or firmware string kept from a reply
PLAUSIBLE_FROM = datetime(2000, 1, 1, tzinfo=UTC)  # no FootfallCam counted before this
PLAUSIBLE_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)
MAX_SPAN = timedelta(hours=24)
RESOLUTIONS = (1, 5, 10, 15, 30, 60)

# Alias tables, compared after lower-casing and dropping everything but letters and digits
# ("Count_In" → "countin"). First match wins. Correct these against a real device.
TIMESTAMP_KEYS = ("timestamp", "datetime", "starttime", "start", "intervalstart", "periodstart",
                  "ts", "from", "time", "date")  # fmt: skip
IN_KEYS = ("in", "countin", "incount", "ins", "enter", "enters", "entry", "entries", "entered",
           "visitorin", "totalin")  # fmt: skip
OUT_KEYS = ("out", "countout", "outcount", "outs", "exit", "exits", "exited", "visitorout",
            "totalout")  # fmt: skip
ROWS_KEYS = ("data", "rows", "row", "counts", "count", "records", "record", "items", "result",
             "results", "slots", "slot", "intervals", "interval")  # fmt: skip
SERIAL_KEYS = ("serial", "serialnumber", "serialno", "sn", "deviceserial", "chipserial")
MODEL_KEYS = ("model", "devicemodel", "modelname", "product")
FIRMWARE_KEYS = ("firmware", "firmwareversion", "fw", "fwversion", "softwareversion", "version")
DEVICE_TIME_KEYS = ("devicetime", "currenttime", "servertime", "systemtime", "localtime", "now")
RESOLUTION_KEYS = ("resolutionmin", "resolution", "intervalmin", "interval", "period")
TOKEN_KEYS = ("accesstoken", "token", "apitoken")
TYPEID_IN, TYPEID_OUT = "3", "4"  # legacy 3D Plus XML

_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{8,512}")
_DATE_RE = re.compile(r"\d{4}-?\d{2}-?\d{2}")
_TIME_RE = re.compile(r"(\d{2}):?(\d{2})(?::?(\d{2}))?")


class FormatError(ValueError):
    """The reply cannot be used; the message says why, without quoting the body."""


@dataclass(frozen=True)
class CountsReply:
    """A parsed count reply: the device's own details and its slots, oldest first (UTC).

    ``partial`` is set by the client when the deadline cut a long fetch short after some
    24-hour calls were answered: the slots run up to where it stopped, ``reached`` (the end of
    the last call answered, so a fetch that found nothing yet can go on from there)."""

    serial: str | None
    model: str | None
    firmware: str | None
    device_time: datetime | None
    slots: tuple[CountSlot, ...]
    partial: bool = False
    reached: datetime | None = None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _pick(record: Mapping[str, Any], keys: Iterable[str]) -> Any:
    normed = {_norm(k): v for k, v in record.items()}
    for k in keys:
        if k in normed and normed[k] not in (None, ""):
            return normed[k]
    return None


# -- the text of a reply -------------------------------------------------------------------------


def _sniff(body: bytes) -> str:
    """'json', 'xml' or an error: whatever the device claims, look at what it sent."""
    if len(body) > MAX_BODY_BYTES:
        raise FormatError(f"reply too large ({len(body)} bytes)")
    head = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:512]
    if not head:
        raise FormatError("empty reply")
    if head[:1] in (b"{", b"[", b'"'):
        return "json"
    if head[:1] == b"<":
        low = head.lower()
        if b"<!doctype html" in low or b"<html" in low:
            title = re.search(rb"<title>([^<]{0,80})", body, re.I)
            what = f" ({title.group(1).decode('utf-8', 'replace').strip()})" if title else ""
            raise FormatError(f"an HTML page, not a counter reply{what}: a proxy or login page?")
        return "xml"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("binary garbage, not JSON or XML") from None
    raise FormatError("neither JSON nor XML")


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise FormatError(f"a number with {len(text.lstrip('-'))} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FormatError(f"a number out of range ({text[:40]})")
    return value


def _json_constant(name: str) -> float:
    raise FormatError(f"{name} is not a number a counter sends")


def _json(body: bytes) -> Any:
    try:
        doc = json.loads(
            body.decode("utf-8-sig"),
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except UnicodeDecodeError:
        raise FormatError("JSON reply is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"invalid or truncated JSON (line {exc.lineno}, col {exc.colno})"
        ) from None
    except RecursionError:
        raise FormatError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except FormatError:
        raise
    except ValueError as exc:  # what json itself cannot read; the body is never quoted
        raise FormatError(f"unreadable JSON ({type(exc).__name__})") from None
    _check_depth(doc)
    return doc


def _check_depth(doc: Any) -> None:
    """Refuse deep nesting before any recursive code walks it."""
    todo: list[tuple[Any, int]] = [(doc, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise FormatError(f"JSON nested more than {MAX_DEPTH} levels deep")
            values = item.values() if isinstance(item, dict) else item
            todo.extend((v, depth + 1) for v in values if isinstance(v, dict | list))


def _xml(body: bytes) -> ET.Element:
    if re.search(rb"<!\s*(DOCTYPE|ENTITY)", body, re.I):
        raise FormatError("XML with a DOCTYPE or ENTITY declaration is refused")
    try:
        root = ET.fromstring(body)  # noqa: S314 - DOCTYPE and ENTITY are refused above
    except ET.ParseError as exc:
        raise FormatError(f"invalid or truncated XML ({exc})") from None
    todo = [(root, 1)]
    while todo:
        el, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise FormatError(f"XML nested more than {MAX_DEPTH} levels deep")
        todo.extend((child, depth + 1) for child in el)
    return root


def _raise_if_error(record: Mapping[str, Any]) -> None:
    status = str(_pick(record, ("status", "result")) or "").lower()
    if status in ("error", "fail", "failed", "failure"):
        message = (
            _pick(record, ("message", "errormessage", "msg", "error", "reason")) or "no reason"
        )
        raise FormatError(f"the device reported an error: {str(message)[:200]}")


# -- values --------------------------------------------------------------------------------------


def _when(value: Any, tz: ZoneInfo, what: str) -> datetime:
    """A time from the reply, in the site's zone; FormatError unless between PLAUSIBLE_FROM
    and PLAUSIBLE_UNTIL (year 0001 or 9999 is a broken clock or a hostile answer, and near
    datetime's limits a conversion between zones overflows)."""
    if value is None or isinstance(value, bool):
        raise FormatError(f"{what}: not a time")
    if isinstance(value, int | float) or re.fullmatch(r"\d{10}|\d{13}", str(value).strip()):
        seconds = float(value)
        try:
            at = datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise FormatError(f"{what}: epoch time out of range") from None
        return _plausible(at, what).astimezone(tz)
    text = str(value).strip()[:64]
    if re.fullmatch(r"\d{14}", text):
        text = f"{text[:8]}T{text[8:]}"
    try:
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:
            at = at.replace(tzinfo=tz)  # device-local; a repeated DST hour reads as the first
        _plausible(at.astimezone(UTC), what)
        return at.astimezone(tz)
    except FormatError:
        raise
    except OverflowError:
        raise FormatError(f"{what}: implausible time {text[:40]!r}") from None
    except ValueError:
        raise FormatError(f"{what}: unreadable time {text[:40]!r}") from None


def _plausible(at: datetime, what: str) -> datetime:
    if not PLAUSIBLE_FROM <= at < PLAUSIBLE_UNTIL:
        raise FormatError(
            f"{what}: implausible time {at.isoformat()} (outside "
            f"{PLAUSIBLE_FROM.year}-{PLAUSIBLE_UNTIL.year - 1})"
        )
    return at


def _count(value: Any, what: str) -> int:
    if value is None:
        raise FormatError(f"{what} is missing")
    if isinstance(value, bool):
        raise FormatError(f"{what} is not a number")
    if isinstance(value, str):
        value = value.strip()[:64]
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{what} is not a number") from None
    if not math.isfinite(number):
        raise FormatError(f"{what} is out of range ({str(value)[:40]})")
    if number != int(number):
        raise FormatError(f"{what} is not a whole number")
    if number < 0:
        raise FormatError(f"{what} is negative ({int(number)})")
    if number > MAX_COUNT:
        raise FormatError(
            f"{what} is implausible ({str(value)[:40]}; at most {MAX_COUNT} in one slot)"
        )
    return int(number)


def _row_start(row: Mapping[str, Any], tz: ZoneInfo, n: int) -> datetime:
    day, clock = _pick(row, ("date",)), _pick(row, ("time",))
    if isinstance(day, str) and isinstance(clock, str):
        d, t = _DATE_RE.fullmatch(day.strip()), _TIME_RE.fullmatch(clock.strip())
        if d and t:  # separate date and time fields, e.g. "20260312" + "093000"
            digits = d.group(0).replace("-", "")
            hh, mm, ss = t.group(1), t.group(2), t.group(3) or "00"
            return _when(f"{digits[:4]}-{digits[4:6]}-{digits[6:]}T{hh}:{mm}:{ss}", tz, f"row {n}")
    value = _pick(row, TIMESTAMP_KEYS)
    if value is None:
        raise FormatError(f"row {n} has no timestamp")
    return _when(value, tz, f"row {n}")


def _slot(row: Any, n: int, serial: str, tz: ZoneInfo, minutes: int) -> CountSlot:
    if not isinstance(row, Mapping):
        raise FormatError(f"row {n} is not a record")
    local = _row_start(row, tz, n)
    # a slot off its own grid means the reply is not what this parser thinks it is (another
    # resolution, a clock in seconds): stored as is, it would sit beside the real slots
    if local.second or local.microsecond or (local.hour * 60 + local.minute) % minutes:
        raise FormatError(f"row {n} starts at {local:%H:%M:%S}, off the {minutes}-minute grid")
    start = local.astimezone(UTC)
    count_in = _count(_pick(row, IN_KEYS), f"row {n}: IN count")
    count_out = _count(_pick(row, OUT_KEYS), f"row {n}: OUT count")
    return CountSlot(serial, start, minutes, count_in, count_out)


def _minutes(meta: Mapping[str, Any], default: int) -> int:
    value = _pick(meta, RESOLUTION_KEYS)
    try:
        stated = int(str(value).strip()) if value is not None else 0
    except ValueError:
        stated = 0
    if stated == 0:
        return default
    if stated not in RESOLUTIONS:
        raise FormatError(f"the reply's resolution of {stated} minutes is not one the API offers")
    return stated


def _reply(meta: Mapping[str, Any], slots: Iterable[CountSlot], tz: ZoneInfo) -> CountsReply:
    try:
        device_time = _when(_pick(meta, DEVICE_TIME_KEYS), tz, "device time")
    except FormatError:
        device_time = None  # the counts are still good; a clock check will say it is missing
    unique = {s.start: s for s in slots}  # a repeated interval: the later row wins
    return CountsReply(
        serial=_text(_pick(meta, SERIAL_KEYS)),
        model=_text(_pick(meta, MODEL_KEYS)),
        firmware=_text(_pick(meta, FIRMWARE_KEYS)),
        device_time=device_time,
        slots=tuple(sorted(unique.values(), key=lambda s: s.start)),
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value).strip()[:MAX_TEXT]


# -- JSON and XML documents ----------------------------------------------------------------------


def _json_doc(doc: Any) -> tuple[dict[str, Any], list[Any]]:
    """(metadata, rows) from a decoded JSON reply."""
    if isinstance(doc, list):
        return {}, doc
    if not isinstance(doc, dict):
        raise FormatError("JSON reply is neither an object nor a list")
    _raise_if_error(doc)
    meta = {k: v for k, v in doc.items() if not isinstance(v, dict | list)}
    for value in doc.values():  # metadata one level down, e.g. {"device": {"serial": ...}}
        if isinstance(value, dict):
            meta.update({k: v for k, v in value.items() if not isinstance(v, dict | list)})
    for key, value in doc.items():
        if _norm(key) in ROWS_KEYS and isinstance(value, list):
            return meta, value
    for key, value in doc.items():
        if _norm(key) in ROWS_KEYS and isinstance(value, dict):
            inner_meta, rows = _json_doc(value)
            return inner_meta | meta, rows
    raise FormatError("no count rows in the reply (expected a list under 'data')")


def _leaf_record(el: ET.Element) -> dict[str, Any]:
    record: dict[str, Any] = dict(el.attrib)
    for child in el:
        if len(child) == 0 and not child.attrib:
            record[child.tag] = (child.text or "").strip()
    return record


def _xml_doc(root: ET.Element, tz: ZoneInfo) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, rows) from an XML reply, rows as plain records or legacy ``typeid`` pairs."""
    meta = _leaf_record(root)
    _raise_if_error(meta)
    records = (_leaf_record(el) for el in root.iter())
    rows = [r for r in records if _pick(r, IN_KEYS) is not None and _pick(r, OUT_KEYS) is not None]
    typed = _typeid_rows(root, tz)
    if rows or typed:
        return meta, rows + typed
    containers = [el for el in root.iter() if _norm(el.tag) in ROWS_KEYS]
    if containers or _pick(meta, SERIAL_KEYS) is not None:
        return meta, []  # a well-formed reply with no intervals yet
    raise FormatError("no count rows in the XML reply")


def _typeid_rows(root: ET.Element, tz: ZoneInfo) -> list[dict[str, Any]]:
    """Legacy 3D Plus XML: ``<Count typeid="3|4">`` elements, timed by themselves or a parent."""
    parents = {child: parent for parent in root.iter() for child in parent}
    by_time: dict[datetime, dict[str, Any]] = {}
    for el in root.iter():
        attrs = {_norm(k): v for k, v in el.attrib.items()}
        if "typeid" not in attrs:
            continue
        timed = _pick(el.attrib, TIMESTAMP_KEYS)
        parent = parents.get(el)
        if timed is None and parent is not None:
            timed = _pick(parent.attrib, TIMESTAMP_KEYS)
        if timed is None:
            raise FormatError("a typeid count has no time")
        value = _pick(el.attrib, ("value", "count", "val")) or (el.text or "").strip() or None
        start = _when(timed, tz, "typeid count")
        slot = by_time.setdefault(start, {"timestamp": start.isoformat()})
        if attrs["typeid"].strip() == TYPEID_IN:
            slot["in"] = value
        elif attrs["typeid"].strip() == TYPEID_OUT:
            slot["out"] = value
    return list(by_time.values())


def _parse(body: bytes, serial: str, tz: ZoneInfo, minutes: int) -> CountsReply:
    if _sniff(body) == "json":
        meta, rows = _json_doc(_json(body))
    else:
        meta, rows = _xml_doc(_xml(body), tz)
    size = _minutes(meta, minutes)
    return _reply(meta, (_slot(r, n, serial, tz, size) for n, r in enumerate(rows, 1)), tz)


# -- the public functions ------------------------------------------------------------------------


MAX_SNAPSHOT_PIXELS = 16_000_000  # a counter's camera frame is at most a few megapixels


def check_snapshot(body: bytes) -> tuple[int, int]:
    """(width, height) of a snapshot, read from its JPEG frame header without decoding it.

    FormatError unless it is a JPEG whose frame holds at most MAX_SNAPSHOT_PIXELS: a PNG, a
    page, or a small file declaring a 65,000 × 65,000 frame (a decompression bomb that would
    take gigabytes to decode on the gateway) is refused at the probe."""
    if not body.startswith(b"\xff\xd8"):
        kind = "a PNG image" if body.startswith(b"\x89PNG") else "not an image"
        raise FormatError(f"snapshot is not a JPEG image ({kind})")
    at = 2
    while at + 4 <= len(body):
        if body[at] != 0xFF:
            raise FormatError("snapshot is a damaged JPEG (no marker where one belongs)")
        marker = body[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        length = int.from_bytes(body[at + 2 : at + 4], "big")
        if marker in (*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), 0xCD, 0xCE, 0xCF):
            if at + 9 > len(body):
                break
            height = int.from_bytes(body[at + 5 : at + 7], "big")
            width = int.from_bytes(body[at + 7 : at + 9], "big")
            if width == 0 or height == 0:
                raise FormatError("snapshot JPEG declares an empty frame")
            if width * height > MAX_SNAPSHOT_PIXELS:
                raise FormatError(
                    f"snapshot JPEG declares {width}x{height} pixels (more than "
                    f"{MAX_SNAPSHOT_PIXELS}): a decompression bomb or a broken camera"
                )
            return width, height
        if marker == 0xDA or length < 2:  # image data before any frame header
            break
        at += 2 + length
    raise FormatError("snapshot is a damaged JPEG (no frame header)")


def parse_token(body: bytes) -> str:
    """The access token from an ``access_token.cgi`` reply (JSON, XML or plain text)."""
    kind = "text"
    try:
        kind = _sniff(body)
    except FormatError as exc:
        if "neither JSON nor XML" not in str(exc):
            raise
    if kind == "json":
        doc = _json(body)
        if isinstance(doc, str):
            token = doc
        elif isinstance(doc, dict):
            _raise_if_error(doc)
            record = {**doc, **next((v for v in doc.values() if isinstance(v, dict)), {})}
            token = _pick(record, TOKEN_KEYS)
        else:
            raise FormatError("token reply is not a JSON object")
    elif kind == "xml":
        root = _xml(body)
        record = {el.tag: (el.text or "").strip() for el in root.iter()} | dict(root.attrib)
        _raise_if_error(record)
        token = _pick(record, TOKEN_KEYS)
    else:
        token = body.decode("utf-8", "replace").strip()
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token.strip()):
        raise FormatError("no usable access token in the reply")
    return token.strip()


def parse_counts(
    body: bytes, *, data_type: str, serial: str, tz: ZoneInfo, minutes: int
) -> CountsReply:
    """An ``apiCount`` reply. ``data_type`` is a hint: the body's own shape decides.

    ``minutes`` is the resolution asked for; a resolution stated in the reply wins. Slots are
    labelled with the configured ``serial``; the reply's own serial is returned for the
    caller to compare (a swapped unit answers with a new one).
    """
    del data_type  # a device answering XML to a JSON request is still read
    return _parse(body, serial, tz, minutes)


def parse_legacy(body: bytes, *, data_type: str, serial: str, tz: ZoneInfo) -> CountsReply:
    """A 3D Plus ``/pi-cgi/data.json|xml`` reply: 15-minute slots; XML ``typeid`` 3 in, 4 out."""
    del data_type
    return _parse(body, serial, tz, 15)


def merge_replies(replies: Sequence[CountsReply]) -> CountsReply:
    """Several replies as one: slots in time order (a later reply wins a repeated interval),
    the device details of the latest reply that had them."""
    slots: dict[datetime, CountSlot] = {}
    serial = model = firmware = None
    device_time = None
    for reply in replies:
        slots.update({s.start: s for s in reply.slots})
        serial = reply.serial or serial
        model = reply.model or model
        firmware = reply.firmware or firmware
        device_time = reply.device_time or device_time
    ordered = tuple(sorted(slots.values(), key=lambda s: s.start))
    return CountsReply(serial, model, firmware, device_time, ordered)


def counts_query(
    start: datetime,
    end: datetime,
    *,
    tz: ZoneInfo,
    token: str,
    resolution_min: int = 15,
    data_type: str = "json",
) -> dict[str, str]:
    """The ``apiCount`` parameters for ``[start, end)``, in the device's local time.

    Raises ValueError for naive times, an empty range, more than 24 h, or a bad resolution.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("counts_query needs timezone-aware datetimes")
    if end <= start:
        raise ValueError("the end must be after the start")
    if end - start > MAX_SPAN:
        raise ValueError("the counter answers at most 24 hours per call")
    if resolution_min not in RESOLUTIONS:
        raise ValueError(f"resolution_min must be one of {RESOLUTIONS}")
    if data_type not in ("json", "xml"):
        raise ValueError("data_type must be json or xml")
    # the API speaks whole seconds: a range within one second (a fetch from the newest slot
    # start at that very second) would go out as an empty one, which a device refuses
    a = start.astimezone(tz).replace(microsecond=0)
    b = end.astimezone(tz)
    if b.microsecond:
        b = b.replace(microsecond=0) + timedelta(seconds=1)
    return {
        "data_type": data_type,
        "data_format": "hour" if resolution_min == 60 else "minute",
        "resolution_min": str(resolution_min),
        "date_start": a.strftime("%Y%m%d"),
        "time_start": a.strftime("%H%M%S"),
        "date_end": b.strftime("%Y%m%d"),
        "time_end": b.strftime("%H%M%S"),
        "access_token": token,
    }


def legacy_query(day: date) -> dict[str, str]:
    """The ``/pi-cgi/data.*`` parameters for one local day."""
    return {"date": day.strftime("%Y%m%d")}
