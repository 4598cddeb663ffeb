"""Hypothesis strategies for hostile input, shared by the fuzz tests of every parser.

Two kinds: unstructured (any bytes, any text) and structured (a well-formed document whose
values are hostile). JSON objects are built as ``Obj`` pair lists and written by ``dumps``
here, so a document can repeat a key, hold NaN or ``1e400``, and nest deeper than ``json``
would ever write on its own.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# Texts that have broken parsers before: digits that are not ASCII, a BOM, bidi controls,
# NUL, numbers beyond a float, and the words Python's float() accepts.
ODD_TEXTS = (
    "",
    " ",
    "\x00",
    "\ufeff",
    "\u202e",
    "٣",
    "²",
    "𝟘",
    "1_000",
    "+5",
    "-0",
    "0x10",
    "1e400",
    "-1e400",
    "1e-400",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "9" * 30,
    "9" * 5000,
    "null",
    "true",
    "[]",
    "{}",
    "<",
    "&amp;",
)
# Times at the edges: datetime's own limits, the epoch, a DST-ambiguous and a skipped local
# hour (Europe/London 2025), a compact device form, and nonsense.
ODD_TIMES = (
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59+14:00",
    "1970-01-01T00:00:00Z",
    "2025-10-26T01:30:00",  # happens twice in London
    "2025-10-26T01:30:00+01:00",
    "2025-10-26T01:30:00+00:00",
    "2025-03-30T01:30:00",  # never happens in London
    "2026-03-12T09:15:00",
    "2026-03-12T09:15:00+00:00",
    "2026-03-12T09:15:00.000001+00:00",
    "2026-03-12T09:15:00+05:45",
    "2026-03-12T09:15:00+23:59",
    "20260312091500",
    "00000000000000",
    "99991231235959",
    "2026-02-30T00:00:00",
    "2026-13-01",
    "T",
    "/Date(1773306900000)/",
    "/Date(" + "9" * 400 + ")/",
    "1773306900",
    "1773306900000",
    "9" * 13,
    "0",
    "-1",
)


class Obj(tuple[tuple[str, Any], ...]):
    """A JSON object as ordered pairs: keys may repeat."""


class Raw(str):
    """A JSON number written as is, e.g. ``1e400`` or ``-0``."""


def dumps(value: Any) -> str:
    """JSON text for ``value``, with ``Obj`` objects, ``Raw`` numbers, NaN and Infinity."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value)


def spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` as devices might spell it: ``countin`` as ``COUNTIN``, ``c_ountin-``..."""
    return st.sampled_from([name, name.upper(), name.capitalize(), f"{name[:1]}_{name[1:]}-"])


huge_ints = st.one_of(
    st.integers(min_value=2**31, max_value=10**30),
    st.integers(min_value=10**30, max_value=10**1000),
    st.integers(max_value=-1),
)
odd_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, -0.0, 1e300, 2.5e-324, 1.0e18]),
)
odd_numbers = st.one_of(
    huge_ints, odd_floats, st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("-0"), Raw("1E2")])
)
odd_text = st.one_of(st.sampled_from(ODD_TEXTS), st.text(max_size=40))
times_text = st.one_of(
    st.sampled_from(ODD_TIMES),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(st.none(), st.timezones(), st.just(UTC)),
    ).map(lambda d: d.isoformat()),
)
epochs = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1_773_306_900, 1_773_306_900_000, 253_402_300_799, 10**400]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(0, 5000),
    odd_numbers,
    odd_text,
    times_text,
    epochs,
)
any_json = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(odd_text, inner), max_size=4).map(lambda pairs: Obj(pairs)),
    ),
    max_leaves=12,
)
hostile = st.one_of(scalars, any_json)  # a value for any field: right type or not


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


aware_now = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2098, 12, 31), timezones=st.just(UTC)
)

# TOML: an emitter for structured-but-wrong configuration files (tomllib cannot write).
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(ODD_TEXTS[:-2]),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=3),
    ),
    max_leaves=8,
)


def toml_key(key: str) -> str:
    return json.dumps(key)  # a basic string is always a valid TOML key


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)  # TOML basic strings take JSON's escapes
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    """TOML text for a dict of tables, arrays of tables and top-level values."""
    lines: list[str] = []
    for key, value in data.items():
        if not isinstance(value, dict | list) or (
            isinstance(value, list) and not all(isinstance(v, dict) for v in value)
        ):
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{toml_key(key)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"[[{toml_key(key)}]]")
                lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def utc_offset(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))
