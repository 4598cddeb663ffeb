"""Fuzzing the SSH command outputs: ``device.parse`` never raises and returns sane readings.

``parse`` promises that a missing tool, an odd output or a timeout turns one value into None
with a note; a raise would fail the whole SSH observation of a device that answered. So any
exit status and any output, for any command, gives a dict with every key, and every reading
is finite and in its range (NaN passes every threshold check unnoticed). The clock command's
reader, ``_clock_offset``, is fuzzed too: its offset shifts every device time in ``parse``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.probes import device
from agent.probes.ssh import CommandResult
from tests.fuzz.hostile import ODD_TEXTS, ODD_TIMES, aware_now, odd_text

KEYS = {
    "uptime_s",
    "boots",
    "reboots_24h",
    "disk_used_pct",
    "temperature_c",
    "camera_present",
    "counting_service",
    "last_event_at",
    "kernel_errors",
}
NOW = datetime(2026, 3, 12, 9, 15, tzinfo=UTC)

number_text = st.one_of(
    st.sampled_from(ODD_TEXTS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["1773306900", "48312", "76.25", "temp=48.3'C", "temp=nan'C", "-273150"]),
)


@st.composite
def output(draw: st.DrawFn, name: str) -> str:
    """What the command might print: its own shape with hostile fields, or anything."""
    if name == "boots":
        lines = [
            f"reboot   system boot  6.1.21-v8+ {draw(st.sampled_from(ODD_TIMES))}   still running"
            for _ in range(draw(st.integers(0, 3)))
        ]
        lines.append(draw(st.sampled_from(["", "wtmp begins Thu Jan  1 00:00:00 1970"])))
        return "\n".join(lines)
    if name == "disk":
        used = draw(number_text)
        return (
            f"Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/root 1 1 1 {used}% /"
        )
    if name == "kernel":
        return "\n".join(f"[ {draw(number_text)}] {draw(odd_text)}" for _ in range(30))
    if name == "uptime":
        return f"{draw(number_text)} {draw(number_text)}"
    return draw(number_text)


@st.composite
def result(draw: st.DrawFn, name: str) -> CommandResult:
    stdout = draw(st.one_of(output(name), st.text(max_size=200)))
    stderr = draw(st.sampled_from(["", "ls: cannot access: No such file or directory", "x"]))
    status = draw(st.sampled_from([0, 0, 0, 1, 2, 3, 127, 255, -1, None]))
    return CommandResult(device.COMMANDS[name], status, stdout, stderr, 0.01)


@st.composite
def results(draw: st.DrawFn) -> dict[str, CommandResult]:
    names = draw(st.sets(st.sampled_from(list(device.COMMANDS))))
    return {name: draw(result(name)) for name in names}


offsets = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e10, 1e10),
    st.sampled_from([0.0, -1.77e9, 3.2e9, 1e300]),
)


def assert_well_formed(data: dict[str, Any]) -> None:
    assert KEYS <= set(data)
    json.dumps(data, allow_nan=False)  # finite, JSON-ready: it goes to the store and bundles
    for key in ("uptime_s", "disk_used_pct", "temperature_c"):
        value = data[key]
        assert value is None or (isinstance(value, float) and math.isfinite(value)), key
    if data["uptime_s"] is not None:
        assert data["uptime_s"] >= 0
    if data["disk_used_pct"] is not None:
        assert 0 <= data["disk_used_pct"] <= 100
    if data["temperature_c"] is not None:
        low, high = device.TEMPERATURE_RANGE_C
        assert low <= data["temperature_c"] <= high
    if data["boots"] is None:
        assert data["reboots_24h"] is None
    else:
        for boot in data["boots"]:
            assert datetime.fromisoformat(boot).utcoffset() == timedelta(0)
        assert 0 <= data["reboots_24h"] <= len(data["boots"])
    assert data["camera_present"] in (None, True, False)
    service = data["counting_service"]
    assert service is None or (isinstance(service, str) and service.isalpha())
    if data["last_event_at"] is not None:
        assert datetime.fromisoformat(data["last_event_at"]).utcoffset() == timedelta(0)
    kernel = data["kernel_errors"]
    assert kernel is None or (
        len(kernel) <= device.MAX_KERNEL_LINES and all(0 < len(line) <= 200 for line in kernel)
    )


@settings(max_examples=200)
@given(outputs=results(), offset_s=offsets, now=st.one_of(st.none(), aware_now))
# escaped on main: OverflowError from each of these
@example(outputs={"last_event": CommandResult("stat", 0, "1e300", "", 0.0)}, offset_s=0.0, now=NOW)
@example(
    outputs={"boots": CommandResult("last", 0, "reboot x 0001-01-01T00:00:00+01:00", "", 0.0)},
    offset_s=0.0,
    now=NOW,
)
@example(outputs={}, offset_s=float("inf"), now=NOW)
@example(outputs={}, offset_s=float("nan"), now=NOW)  # ValueError
# NaN and infinities were readings on main, which every threshold lets pass
@example(
    outputs={
        "temperature": CommandResult("cat", 0, "nan", "", 0.0),
        "disk": CommandResult("df", 0, "x\n/dev/root 1 1 1 inf% /", "", 0.0),
        "uptime": CommandResult("cat", 0, "-inf 3", "", 0.0),
    },
    offset_s=0.0,
    now=NOW,
)
def test_parse_never_raises(
    outputs: dict[str, CommandResult], offset_s: float | None, now: datetime | None
) -> None:
    notes: list[str] = []
    data = device.parse(outputs, offset_s, notes, now=now)
    assert_well_formed(data)
    assert all(isinstance(note, str) for note in notes)


@settings(max_examples=200)
@given(
    stdout=st.one_of(number_text, st.text(max_size=40)),
    status=st.sampled_from([0, 1, None]),
    sent=st.floats(1e9, 4e9),
)
@example(stdout="1e400", status=0, sent=1.77e9)  # became an infinite offset on main
@example(stdout="nan", status=0, sent=1.77e9)
@example(stdout="253402300799", status=0, sent=1.77e9)  # the year 9999: 8,000 years off
def test_clock_offset_is_none_or_plausible(stdout: str, status: int | None, sent: float) -> None:
    notes: list[str] = []
    offset = device._clock_offset(CommandResult("date", status, stdout, "", 0.1), sent, sent, notes)
    if offset is None:
        assert notes
        return
    assert math.isfinite(offset) and abs(offset) <= device.MAX_CLOCK_OFFSET_S
    assert_well_formed(device.parse({}, offset, notes, now=NOW))


def test_a_clock_of_1970_is_still_a_reading() -> None:
    """A Pi without a real-time clock boots in 1970: that offset is the finding, not noise."""
    notes: list[str] = []
    offset = device._clock_offset(CommandResult("date", 0, "60\n", "", 0.1), 1.77e9, 1.77e9, notes)
    assert offset is not None and offset < -1.7e9 and notes == []
