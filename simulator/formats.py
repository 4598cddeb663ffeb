"""The bytes a simulated counter sends: counts as JSON or XML, legacy 3D Plus replies, errors.

The real field names are not public (DESIGN.md §3); this layout is the project's documented
stand-in (docs/counter-api.md). The agent's parser, ``agent/probes/counter_format.py``, is
deliberately more tolerant than this writer, so when a real device differs, only the parser's
alias tables need correcting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from xml.etree import ElementTree as ET

Row = tuple[datetime, int, int]  # local interval start (aware), in, out

XML_HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    text: bytes = ET.tostring(root, encoding="utf-8")
    return XML_HEAD + text + b"\n"


def _sub(parent: ET.Element, tag: str, text: Any) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(text)
    return child


def counts_body(meta: dict[str, Any], rows: Sequence[Row], data_type: str) -> bytes:
    """A cgi-bin ``apiCount`` reply. ``meta`` holds serial, model, firmware, device_time ..."""
    if data_type == "xml":
        root = ET.Element("response", status="ok")
        for name, value in meta.items():
            _sub(root, name, value)
        data = ET.SubElement(root, "data")
        for start, count_in, count_out in rows:
            row = ET.SubElement(data, "row")
            _sub(row, "timestamp", iso(start))
            _sub(row, "in", count_in)
            _sub(row, "out", count_out)
        return _xml(root)
    body = {
        "status": "ok",
        **meta,
        "data": [{"timestamp": iso(s), "in": i, "out": o} for s, i, o in rows],
    }
    return json.dumps(body).encode("utf-8")


def legacy_body(meta: dict[str, Any], rows: Sequence[Row], data_type: str) -> bytes:
    """A 3D Plus ``/pi-cgi/data.json|xml`` reply; in XML, ``typeid`` 3 is IN and 4 is OUT."""
    if data_type == "xml":
        root = ET.Element("CountData", {k: str(v) for k, v in meta.items()})
        for start, count_in, count_out in rows:
            slot = ET.SubElement(root, "Slot", Time=iso(start))
            ET.SubElement(slot, "Count", typeid="3").text = str(count_in)
            ET.SubElement(slot, "Count", typeid="4").text = str(count_out)
        return _xml(root)
    body = {**meta, "Data": [{"Time": iso(s), "In": i, "Out": o} for s, i, o in rows]}
    return json.dumps(body).encode("utf-8")


def token_body(token: str) -> bytes:
    return json.dumps({"status": "ok", "access_token": token, "expires_in": 0}).encode()


def error_body(error: str, message: str, data_type: str = "json") -> bytes:
    if data_type == "xml":
        root = ET.Element("response", status="error")
        _sub(root, "error", error)
        _sub(root, "message", message)
        return _xml(root)
    return json.dumps({"status": "error", "error": error, "message": message}).encode()


def garbage_body(style: str, good: bytes, seed: int) -> bytes:
    """A 200 reply nobody can parse: noise, a web server's HTML page, or a cut-off reply."""
    if style == "html":
        return (
            b"<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>"
            b"<body><h1>500 Internal Server Error</h1><hr>lighttpd</body></html>\n"
        )
    if style == "truncated":
        return good[: max(1, len(good) // 2)]
    state = (seed * 2654435761 + 1) & 0xFFFFFFFF
    out = bytearray()
    for _ in range(512):  # a tiny LCG: reproducible noise without touching the traffic RNGs
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(0x80 | (state >> 16) & 0x7F)
    return b"\xff\xfe" + bytes(out)
