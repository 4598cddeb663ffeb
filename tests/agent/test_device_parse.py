"""Parsing the device's command outputs: right on what a Pi prints, tolerant of anything else."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.probes.device import COMMANDS, parse
from agent.probes.ssh import CommandResult
from simulator.shell import DeviceState, answer

T = 1_795_000_000.0
NOW = datetime.fromtimestamp(T, UTC)


def results(state: DeviceState, **override: tuple[int | None, str, str]):
    out = {}
    for name, command in COMMANDS.items():
        status, stdout, stderr = override.get(name) or answer(command, state, T)
        out[name] = CommandResult(command, status, stdout, stderr, 0.01)
    return out


def test_what_the_simulated_pi_prints_is_read_back():
    state = DeviceState(
        uptime_s=5000.5,
        earlier_boots_ago_s=[20_000, 200_000],
        disk_used_pct=91.3,
        temperature_c=76.25,
        service="inactive",
        last_event_ago_s=120,
        kernel_errors=["EXT4-fs error (device mmcblk0p2): bad block"],
    )
    notes: list[str] = []
    d = parse(results(state), 0.0, notes, now=NOW)
    assert notes == []
    assert d["uptime_s"] == 5000.5
    assert d["reboots_24h"] == 2
    assert len(d["boots"]) == 3
    assert d["disk_used_pct"] == 92.0
    assert d["temperature_c"] == 76.2  # 76250 millidegrees, rounded to 0.1 (banker's)
    assert d["camera_present"] is True
    assert d["counting_service"] == "inactive"
    assert d["last_event_at"] == datetime.fromtimestamp(T - 120, UTC).isoformat()
    assert d["kernel_errors"] == ["EXT4-fs error (device mmcblk0p2): bad block"]


def test_garbage_becomes_none_with_a_note_never_a_crash():
    garbage = (0, "\x00\x01<html>oops</html>", "")
    override = {name: garbage for name in COMMANDS if name != "kernel"}
    notes: list[str] = []
    d = parse(results(DeviceState(), **override), None, notes, now=NOW)
    for key in (
        "uptime_s",
        "boots",
        "reboots_24h",
        "disk_used_pct",
        "temperature_c",
        "counting_service",
        "last_event_at",
    ):
        assert d[key] is None, key
    assert d["camera_present"] is True  # `ls` succeeded: the file is there, whatever it printed
    assert len(notes) == 6 and all("cannot read" in n for n in notes)


def test_failures_and_missing_commands():
    override = {
        "uptime": (1, "", "cat: /proc/uptime: Permission denied\n"),
        "kernel": (1, "", "dmesg: read kernel buffer failed: Operation not permitted\n"),
        "camera": (2, "", "ls: cannot access '/dev/video0': Input/output error\n"),
        "disk": (None, "Filesystem 1024-blocks", ""),  # cut off: no exit status
    }
    state = DeviceState(last_event_ago_s=None)
    r = results(state, **override)
    del r["temperature"]  # never ran (timed out, or the deadline passed)
    notes: list[str] = []
    d = parse(r, 0.0, notes, now=NOW)
    assert d["uptime_s"] is None and d["kernel_errors"] is None
    assert d["camera_present"] is None  # an I/O error is not "missing"
    assert d["disk_used_pct"] is None and d["temperature_c"] is None
    assert d["last_event_at"] is None
    assert any("no counted event" in n for n in notes)
    assert any("Operation not permitted" in n for n in notes)


def test_device_skew_is_removed_from_its_times():
    state = DeviceState(clock_offset_s=3600, last_event_ago_s=60, uptime_s=1000)
    d = parse(results(state), 3600.0, [], now=NOW)
    assert d["last_event_at"] == datetime.fromtimestamp(T - 60, UTC).isoformat()
    assert d["reboots_24h"] == 1


def test_vcgencmd_style_temperature_and_df_with_spaces():
    r = results(DeviceState())
    r["temperature"] = CommandResult("vcgencmd measure_temp", 0, "temp=48.3'C\n", "", 0.0)
    r["disk"] = CommandResult(
        "df -P /",
        0,
        "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
        "/dev/mapper/root fs 100 97 3 97% /\n",
        "",
        0.0,
    )
    d = parse(r, 0.0, [], now=NOW)
    assert (d["temperature_c"], d["disk_used_pct"]) == (48.3, 97.0)
