"""The count CSV: ``timestamp,counter,in,out``, one row per counter and interval start.

Exported count files are what a store manager holds when asking "is this a real data problem?",
and they are rarely clean: a header or none, Windows line ends, stray spaces, the same slot
twice (an export that overlaps a re-upload), rows out of order, and the repeated hour of a
daylight-saving night. This module reads them into ``CountSlot`` values and says in words what
it tolerated. What it cannot trust it refuses, with the line number: a timestamp without a UTC
offset (which of the two 01:30s of an October night?), a count that is not a whole number or
is negative. A missing row is missing data, never zero, so nothing is filled in here.

Implausible values are refused too, before they reach the store or a conversion that would
overflow: a count above ``MAX_COUNT`` in one slot (SQLite holds 64 bits; a door counts a few
thousand people an hour), a time outside ``PLAUSIBLE_FROM``..``PLAUSIBLE_UNTIL`` (year 0001 or
9999 cannot even be moved to UTC). The bounds are the counter API parser's own
(``agent.probes.counter_format``), repeated here because ``diagnostics`` imports nothing of
``agent``. Nothing but ``CountCsvError`` escapes for any text (tests/fuzz).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import numpy as np

from diagnostics.model import CountSlot, plural
from diagnostics.series import SLOT_LENGTHS

COLUMNS = ("timestamp", "counter", "in", "out")
MAX_LISTED = 10  # individual warnings of one kind before they are summarised
MAX_COUNT = 1_000_000  # per slot and direction
PLAUSIBLE_FROM = datetime(2000, 1, 1, tzinfo=UTC)  # no FootfallCam counted before this
PLAUSIBLE_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)
_WHOLE = re.compile(r"-?[0-9]+")  # not int()'s "1_000", "+5" or "٣"

# (counter, slot start) -> (in, out, the line it came from)
_Rows = dict[tuple[str, datetime], tuple[int, int, int]]


class CountCsvError(ValueError):
    """The file cannot be read as counts; the message names the line."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


def parse_counts_csv(
    text: str, known_serials: Collection[str] | None = None
) -> tuple[dict[str, list[CountSlot]], list[str]]:
    """Count slots by counter serial, oldest first, and warnings in words.

    ``known_serials``: rows for any other counter are left out with one warning per serial
    (None accepts every counter). The slot length is inferred from the spacing of the
    timestamps (15 minutes is typical, an hour is fine) and must divide an hour. Raises
    ``CountCsvError`` for a row it cannot trust.
    """
    warnings: list[str] = []
    rows: _Rows = {}
    unknown: Counter[str] = Counter()
    same = Counter[str]()
    clashes = 0
    out_of_order = 0
    last: dict[str, datetime] = {}
    order: tuple[str, ...] = COLUMNS
    first = True
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip().strip('"') for f in line.split(",")]
        if first:
            first = False
            names = tuple(f.lower() for f in fields)
            if set(names) == set(COLUMNS) and len(names) == len(COLUMNS):
                order = names
                continue
            if "timestamp" in names:
                raise CountCsvError(
                    number, f"expected the columns {','.join(COLUMNS)}, got {line!r}"
                )
        if len(fields) != len(COLUMNS):
            raise CountCsvError(
                number, f"expected 4 fields ({','.join(order)}), got {len(fields)}: {line!r}"
            )
        row = dict(zip(order, fields, strict=True))
        at = _timestamp(number, row["timestamp"])
        serial = row["counter"]
        if not serial:
            raise CountCsvError(number, "the counter serial is empty")
        count_in = _count(number, "in", row["in"])
        count_out = _count(number, "out", row["out"])
        if known_serials is not None and serial not in known_serials:
            unknown[serial] += 1
            continue
        if serial in last and at < last[serial]:
            out_of_order += 1
        last[serial] = max(at, last.get(serial, at))
        key = (serial, at)
        if key in rows:
            before = rows[key]
            if before[:2] == (count_in, count_out):
                same[serial] += 1
            else:
                clashes += 1
                if clashes <= MAX_LISTED:
                    warnings.append(
                        f"line {number}: counter {serial} at {at.isoformat()} was already given "
                        f"on line {before[2]} with different counts (in {before[0]}, out "
                        f"{before[1]}); kept the later line (in {count_in}, out {count_out})"
                    )
        rows[key] = (count_in, count_out, number)
    for serial, n in sorted(unknown.items()):
        warnings.append(
            f"ignored {plural(n, 'row')} for counter {serial}, which is not in the configuration"
        )
    if clashes > MAX_LISTED:
        warnings.append(
            f"{plural(clashes - MAX_LISTED, 'more duplicate row')} with different counts; "
            "the later line was kept each time"
        )
    for serial, n in sorted(same.items()):
        warnings.append(
            f"dropped {plural(n, 'duplicate row')} for counter {serial} with the same counts"
        )
    if out_of_order:
        warnings.append(f"{plural(out_of_order, 'row')} out of time order: sorted")
    minutes, note = _slot_length(rows)
    if note:
        warnings.append(note)
    return _slots(rows, minutes, warnings), warnings


def _timestamp(number: int, text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CountCsvError(number, f"not an ISO-8601 timestamp: {text!r}") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise CountCsvError(
            number,
            f"timestamp {text!r} has no UTC offset (such as +01:00 or "
            "Z): around a daylight-saving change it would be ambiguous",
        )
    # compared with the offset removed by hand: astimezone() overflows near year 1 and 9999
    offset = at.utcoffset() or timedelta(0)
    naive_utc = at.replace(tzinfo=None)
    if not (
        PLAUSIBLE_FROM.replace(tzinfo=None) + offset
        <= naive_utc
        < PLAUSIBLE_UNTIL.replace(tzinfo=None) + offset
    ):
        raise CountCsvError(
            number,
            f"timestamp {text!r} is not a plausible count time "
            f"({PLAUSIBLE_FROM.year}-{PLAUSIBLE_UNTIL.year - 1})",
        )
    return at


def _count(number: int, name: str, text: str) -> int:
    shown = text if len(text) <= 40 else text[:37] + "..."
    if not _WHOLE.fullmatch(text):
        raise CountCsvError(number, f"the {name!r} count must be a whole number, got {shown!r}")
    # digits counted before int(): Python refuses to convert more than 4,300 of them
    digits = text.lstrip("-").lstrip("0")
    value = int(text) if len(digits) <= 20 else (-1 if text.startswith("-") else MAX_COUNT + 1)
    if value < 0:
        raise CountCsvError(number, f"the {name!r} count must not be negative, got {shown}")
    if value > MAX_COUNT:
        raise CountCsvError(
            number, f"the {name!r} count {shown} is implausible (at most {MAX_COUNT} in one slot)"
        )
    return value


def _slot_length(rows: _Rows) -> tuple[int, str]:
    """The most common step between a counter's consecutive slots, in minutes."""
    by_serial: dict[str, list[float]] = {}
    for serial, at in rows:
        by_serial.setdefault(serial, []).append(at.timestamp())
    steps: Counter[int] = Counter()
    for stamps in by_serial.values():
        gaps = np.round(np.diff(np.sort(np.asarray(stamps))) / 60).astype(int)
        values, counts = np.unique(gaps, return_counts=True)
        steps.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    if not steps:
        return 15, "too few rows to infer the slot length; assumed 15 minutes" if rows else ""
    minutes = steps.most_common(1)[0][0]
    if minutes not in SLOT_LENGTHS:
        raise CountCsvError(
            None,
            f"cannot use a slot length of {minutes} min (inferred from "
            "the timestamps): it must divide an hour, such as 15 or 60",
        )
    return minutes, ""


def _slots(rows: _Rows, minutes: int, warnings: list[str]) -> dict[str, list[CountSlot]]:
    out: dict[str, list[CountSlot]] = {}
    off_grid: Counter[str] = Counter()
    anchor: dict[str, datetime] = {}
    for (serial, at), (count_in, count_out, _) in sorted(
        rows.items(), key=lambda kv: (kv[0][0], kv[0][1].timestamp())
    ):
        base = anchor.setdefault(serial, at)
        if (at - base) % timedelta(minutes=minutes):  # exact: float seconds lose microseconds
            off_grid[serial] += 1
            continue
        out.setdefault(serial, []).append(CountSlot(serial, at, minutes, count_in, count_out))
    for serial, n in sorted(off_grid.items()):
        warnings.append(
            f"ignored {plural(n, 'row')} for counter {serial} not starting on its "
            f"{minutes}-minute grid"
        )
    return out
