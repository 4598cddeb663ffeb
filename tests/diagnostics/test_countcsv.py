"""The count CSV reader: tolerant of real exports, strict about what it cannot trust."""

from datetime import UTC, datetime

import pytest

from diagnostics.countcsv import CountCsvError, parse_counts_csv


def test_header_whitespace_crlf_and_order():
    text = (
        "timestamp, counter, in, out\r\n"
        " 2026-11-02T09:15:00+00:00 , A , 3 , 1 \r\n"
        "2026-11-02T09:00:00+00:00,A,5,4\r\n"
        "\r\n"
        "2026-11-02T09:00:00Z,B,0,0\r\n"
    )
    slots, warnings = parse_counts_csv(text, {"A", "B"})
    assert [s.count_in for s in slots["A"]] == [5, 3]  # sorted
    assert slots["A"][0].start == datetime(2026, 11, 2, 9, tzinfo=UTC)
    assert slots["A"][0].minutes == 15
    assert slots["B"][0].total == 0  # a zero row is a zero, not missing
    assert any("out of time order" in w for w in warnings)


def test_no_header_and_columns_by_name():
    rows = "2026-11-02T09:00:00+01:00,A,1,2\n2026-11-02T10:00:00+01:00,A,3,4\n"
    slots, _ = parse_counts_csv(rows)
    assert slots["A"][1].minutes == 60  # inferred from the spacing
    slots, _ = parse_counts_csv("counter,out,in,timestamp\nA,2,1,2026-11-02T09:00:00+01:00\n")
    assert (slots["A"][0].count_in, slots["A"][0].count_out) == (1, 2)


def test_duplicates_kept_once_and_disagreements_named():
    text = (
        "timestamp,counter,in,out\n"
        "2026-11-02T09:00:00+00:00,A,5,4\n"
        "2026-11-02T09:00:00+00:00,A,5,4\n"
        "2026-11-02T09:15:00+00:00,A,1,1\n"
        "2026-11-02T09:15:00+00:00,A,2,2\n"
    )
    slots, warnings = parse_counts_csv(text)
    assert len(slots["A"]) == 2 and slots["A"][1].count_in == 2  # the later line wins
    assert any("dropped 1 duplicate row for counter A with the same counts" in w for w in warnings)
    assert any(w.startswith("line 5:") and "different counts" in w for w in warnings)


def test_unknown_counters_are_a_warning_not_a_crash():
    text = "2026-11-02T09:00:00Z,A,1,1\n2026-11-02T09:00:00Z,X9,1,1\n2026-11-02T09:15:00Z,X9,1,1\n"
    slots, warnings = parse_counts_csv(text, {"A"})
    assert set(slots) == {"A"}
    assert any(
        "ignored 2 rows for counter X9, which is not in the configuration" in w for w in warnings
    )


def test_the_repeated_autumn_hour_is_two_slots_with_their_offsets():
    # 2026-10-25 in London: 01:00-02:00 happens in BST (+01:00) and then in GMT (+00:00)
    times = [
        "00:45+01:00",
        "01:00+01:00",
        "01:15+01:00",
        "01:30+01:00",
        "01:45+01:00",
        "01:00+00:00",
        "01:15+00:00",
        "01:30+00:00",
        "01:45+00:00",
        "02:00+00:00",
    ]
    text = "\n".join(f"2026-10-25T{t},A,1,0" for t in times)
    slots, warnings = parse_counts_csv(text)
    assert len(slots["A"]) == 10 and not warnings
    gaps = {(b.start - a.start).seconds for a, b in zip(slots["A"], slots["A"][1:], strict=False)}
    assert gaps == {900}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("2026-11-02T09:00:00,A,1,1", "no UTC offset"),
        ("yesterday,A,1,1", "not an ISO-8601 timestamp"),
        ("2026-11-02T09:00:00Z,A,1.5,1", "whole number"),
        ("2026-11-02T09:00:00Z,A,-1,1", "must not be negative"),
        ("2026-11-02T09:00:00Z,A,1", "expected 4 fields"),
        ("2026-11-02T09:00:00Z,,1,1", "serial is empty"),
    ],
)
def test_rows_it_cannot_trust_are_refused_with_the_line(line, words):
    text = f"timestamp,counter,in,out\n2026-11-02T08:45:00Z,A,1,1\n{line}\n"
    with pytest.raises(CountCsvError) as err:
        parse_counts_csv(text)
    assert err.value.line == 3 and str(err.value).startswith("line 3:")
    assert words in str(err.value)


def test_a_wrong_header_and_an_odd_slot_length_are_refused():
    with pytest.raises(CountCsvError, match="expected the columns"):
        parse_counts_csv("timestamp,serial,in,out\n2026-11-02T09:00:00Z,A,1,1\n")
    rows = "2026-11-02T09:00:00Z,A,1,1\n2026-11-02T09:07:00Z,A,1,1\n"
    with pytest.raises(CountCsvError, match="slot length"):
        parse_counts_csv(rows)


def test_rows_off_the_grid_are_left_out_with_a_warning():
    rows = "".join(f"2026-11-02T09:{m:02d}:00Z,A,1,1\n" for m in (0, 15, 30, 45, 50))
    slots, warnings = parse_counts_csv(rows)
    assert len(slots["A"]) == 4
    assert "ignored 1 row for counter A not starting on its 15-minute grid" in warnings
