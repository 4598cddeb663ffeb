"""Fuzzing the count CSV importer: any text is slots or a ``CountCsvError``.

A store manager feeds ``ffc-agent analyze counts`` whatever the export tool wrote; the CLI
catches ``CountCsvError`` only. What comes back is judged by the series code and may be
stored, so: aware starts that convert to UTC, one slot length that divides an hour, every
slot on its counter's grid, oldest first, whole counts within 0..MAX_COUNT.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import example, given, settings
from hypothesis import strategies as st

from diagnostics import countcsv
from diagnostics.countcsv import CountCsvError, parse_counts_csv
from diagnostics.model import CountSlot
from diagnostics.series import SLOT_LENGTHS
from tests.fuzz.hostile import ODD_TEXTS, ODD_TIMES, utc_offset

SERIALS = ["FFC0001", "FFC0002"]


def check(text: str, known: Collection[str] | None = None) -> dict[str, list[CountSlot]] | None:
    try:
        slots, warnings = parse_counts_csv(text, known)
    except CountCsvError as exc:
        assert str(exc)
        return None
    assert all(isinstance(w, str) and w for w in warnings)
    lengths = {s.minutes for series in slots.values() for s in series}
    assert len(lengths) <= 1 and lengths <= set(SLOT_LENGTHS)
    for serial, series in slots.items():
        assert serial and series
        assert known is None or serial in known
        first = series[0].start
        for before, after in pairwise(series):
            assert before.start < after.start
        for slot in series:
            assert slot.counter == serial
            assert slot.start.utcoffset() is not None
            utc = slot.start.astimezone(UTC)  # must not overflow
            assert countcsv.PLAUSIBLE_FROM <= utc < countcsv.PLAUSIBLE_UNTIL
            assert (slot.start - first) % timedelta(minutes=slot.minutes) == timedelta(0)
            for count in (slot.count_in, slot.count_out):
                assert type(count) is int and 0 <= count <= countcsv.MAX_COUNT
    return slots


@settings(max_examples=200)
@given(text=st.text(max_size=400))
def test_any_text(text: str) -> None:
    check(text)


@settings(max_examples=200)
@given(text=st.text(alphabet=st.sampled_from(list('0123456789-:T+Z,.\n\r #"AF ')), max_size=300))
def test_any_text_of_csv_characters(text: str) -> None:
    check(text)


start = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2098, 1, 1)).map(
    lambda d: d.replace(minute=d.minute - d.minute % 15, second=0, microsecond=0)
)
offset = st.one_of(
    st.sampled_from([0, 60, -300, 345, 330, -210]).map(utc_offset),
    st.integers(-1439, 1439).map(utc_offset),
)
count_text = st.one_of(
    st.integers(0, 3000).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(ODD_TEXTS),
    st.sampled_from(["1000000", "1000001", "0" * 30 + "5", "-" + "9" * 30, "1.0", " 7 "]),
)


@st.composite
def csv_document(draw: st.DrawFn) -> tuple[str, list[str] | None]:
    base = draw(start)
    step = timedelta(minutes=draw(st.sampled_from([15, 15, 60, 7, 0])))
    rows = []
    for i in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:  # a hostile timestamp
            stamp = draw(st.sampled_from(ODD_TIMES))
        elif kind == 1:  # the repeated hour of a London autumn night, with and without offset
            stamp = draw(
                st.sampled_from(
                    ["2025-10-26T01:30:00+01:00", "2025-10-26T01:30:00+00:00", "2025-10-26T01:30"]
                )
            )
        else:
            at = (base + step * i).replace(tzinfo=draw(offset))
            if draw(st.integers(0, 9)) == 0:
                at += timedelta(seconds=draw(st.integers(1, 899)))  # off the grid
            stamp = at.isoformat()
        serial = draw(st.sampled_from([*SERIALS, "", "FFC\x00", "x" * 100, '"FFC0001"']))
        fields = [stamp, serial, draw(count_text), draw(count_text)]
        if draw(st.integers(0, 19)) == 0:
            fields.append("extra")
        rows.append(",".join(fields))
    if rows and draw(st.booleans()):
        rows.append(draw(st.sampled_from(rows)))  # a duplicate line
    rows = draw(st.permutations(rows))
    header = draw(
        st.sampled_from(
            ["timestamp,counter,in,out", "counter,timestamp,out,in", "TIMESTAMP,COUNTER,IN,OUT", ""]
        )
    )
    newline = draw(st.sampled_from(["\n", "\r\n", "\r", "\u2028"]))
    lines = [header, *rows] if header else list(rows)
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "# note", " "])))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    known = draw(st.sampled_from([None, SERIALS[:1], SERIALS]))
    return bom + newline.join(lines), known


@settings(max_examples=200)
@given(doc=csv_document())
# escaped on main as implausible data: year 0001 and 9999 (which cannot be moved to UTC)
@example(
    doc=("0001-01-01T00:00:00+01:00,A,1,2\n0001-01-01T00:15:00+01:00,A,1,2\n", None),
)
@example(doc=("9999-12-31T23:45:00-01:00,A,1,2\n9999-12-31T23:30:00-01:00,A,1,2\n", None))
# a 4,000-digit count reached the slots on main; int() also read "1_0" and "٣"
@example(doc=("2024-01-01T00:00:00+00:00,A,1" + "0" * 4000 + ",2\n", None))
@example(doc=("2024-01-01T00:00:00+00:00,A,1_0,٣\n", None))
def test_structured_documents(doc: tuple[str, list[str] | None]) -> None:
    text, known = doc
    check(text, known)


def test_what_main_accepted_is_refused_with_the_line() -> None:
    for text, words in (
        ("2024-01-01T00:00:00+00:00,A,1_0,2\n", "whole number"),
        ("2024-01-01T00:00:00+00:00,A,٣,2\n", "whole number"),
        ("2024-01-01T00:00:00+00:00,A,1000001,2\n", "implausible"),
        ("2024-01-01T00:00:00+00:00,A,-" + "9" * 30 + ",2\n", "negative"),
        ("0001-01-01T00:00:00+01:00,A,1,2\n", "plausible"),
        ("9999-12-31T23:45:00-01:00,A,1,2\n", "plausible"),
    ):
        try:
            parse_counts_csv(text)
        except CountCsvError as exc:
            assert exc.line == 1 and words in str(exc), (text[:40], str(exc))
        else:
            raise AssertionError(f"accepted {text[:40]!r}")


def test_leading_zeros_are_still_a_whole_number() -> None:
    slots, _ = parse_counts_csv("2024-01-01T00:00:00+00:00,A," + "0" * 30 + "5,0\n")
    assert slots["A"][0].count_in == 5


def test_a_microsecond_off_the_grid_is_off_the_grid() -> None:
    """The grid test is exact (timedeltas): float seconds kept a microsecond until 2100, but
    only just (a float's step near 4e9 s is 0.5 µs), and lost it near the year 9999."""
    text = "\n".join(
        [
            "2099-12-31T22:00:00+00:00,A,1,1",
            "2099-12-31T22:15:00+00:00,A,1,1",
            "2099-12-31T22:30:00.000001+00:00,A,1,1",
            "2099-12-31T22:45:00+00:00,A,1,1",
        ]
    )
    slots, warnings = parse_counts_csv(text)
    assert len(slots["A"]) == 3 and any("grid" in w for w in warnings)
