"""Deep device health over SSH: the read-only commands support would type, parsed into numbers.

Where FootfallCam's remote access is configured (DESIGN.md §3), the agent logs into the counter
and asks what its HTTP API cannot say: how long it has been up and how often it rebooted, how
full its disk is, how hot it runs, whether the camera is still there, whether the counting
service runs, when it last counted someone, what the kernel complained about, and its clock.

Every command is a fixed, read-only string from ``COMMANDS``, run with its own timeout inside
the cycle's deadline and recorded (``data["commands"]``, for the audit log). Parsing is
tolerant: a missing tool, an odd output or a timeout turns that one value into ``None`` with a
line in ``data["notes"]``; only a failure to log in fails the observation.

Assumptions to correct against a real device: the counting service's unit name and the file
whose modification time is the last counted event (``simulator.shell`` answers the same).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.probes.ssh import CommandResult, HostKeyError, SshSession, SshTarget
from diagnostics.model import SYSTEM_CLOCK, Clock, Observation, ProbeError, ProbeErrorCode

PROBE = "ssh"
COUNTING_SERVICE = "footfallcam-counting"
LAST_EVENT_FILE = "/var/lib/footfallcam/last_event"
COUNTS_FILE = "/var/lib/footfallcam/counts.csv"  # the slots the device still holds (count CSV)
COUNT_EXPORT = f"cat {COUNTS_FILE}"
COUNT_EXPORT_MAX = 8 * 1024 * 1024  # bytes: weeks of 15-minute slots, far more than a device keeps
CAMERA_DEVICE = "/dev/video0"
MAX_KERNEL_LINES = 20

# name -> command. The clock is read first: it corrects the device times read after it.
OUTPUT_KEEP = 2048  # characters of each command's output kept for the bundle

COMMANDS: dict[str, str] = {
    "clock": "date -u +%s",
    "uptime": "cat /proc/uptime",
    "boots": "last --time-format iso reboot",
    "disk": "df -P /",
    "temperature": "cat /sys/class/thermal/thermal_zone0/temp",
    "camera": f"ls {CAMERA_DEVICE}",
    "service": f"systemctl is-active {COUNTING_SERVICE}",
    "last_event": f"stat -c %Y {LAST_EVENT_FILE}",
    "kernel": "dmesg --level=err,crit,alert,emerg",
}

_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:?\d\d|Z)")
_DMESG_TIME = re.compile(r"^\[\s*\d+\.\d+\]\s*")
_MISSING = "No such file or directory"
# A Pi without a real-time clock boots in 1970 until NTP answers: an offset of 56 years is a
# real reading. A century is not, and beyond it a shifted datetime can leave datetime's range.
MAX_CLOCK_OFFSET_S = 100 * 365 * 86400
TEMPERATURE_RANGE_C = (-60.0, 150.0)  # a Pi's SoC sensor; outside it is a broken reading


class Unparseable(ValueError):
    """An output the parser cannot read; the value becomes None with a note."""


def probe_device_ssh(
    target: SshTarget,
    known_hosts: Path,
    *,
    counter: str,
    timeout_s: float,
    deadline: float,
    now: datetime | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Observation:
    """Log into the counter and read its health; never raises for device trouble.

    ``deadline`` is a ``time.monotonic()`` value for the whole probe; each command gets
    ``timeout_s`` or what is left of it. The observation's ``at`` is ``now`` (the cycle's
    time); the clock offset is measured against the gateway's real clock (``clock``).
    """
    at = now or clock.now()
    started = time.monotonic()
    connect_timeout = max(0.5, min(timeout_s, deadline - started))
    session = SshSession(target, known_hosts, timeout_s=connect_timeout, clock=clock)
    try:
        session.open()
    except ProbeError as exc:
        failed: dict[str, Any] = {"commands": []}
        if isinstance(exc, HostKeyError):  # what the device offered, for the finding
            failed.update(
                offered_host_key=exc.offered, pinned_host_key=exc.pinned, host_key_type=exc.key_type
            )
        elapsed = time.monotonic() - started
        return Observation(counter, PROBE, at, False, failed, exc.code, exc.message, elapsed)
    results: dict[str, CommandResult] = {}
    notes: list[str] = []
    offset_s: float | None = None
    try:
        for name, command in COMMANDS.items():
            left = deadline - time.monotonic()
            if left <= 0:
                notes.append(f"{name}: not run, the probe's deadline passed")
                continue
            sent = time.time()
            try:
                results[name] = session.run(command, min(timeout_s, left))
            except ProbeError as exc:
                notes.append(f"{name}: {exc}")
                continue
            if name == "clock":
                offset_s = _clock_offset(results[name], sent, time.time(), notes)
    finally:
        session.close()
    data = parse(results, offset_s, notes, now=clock.now())
    data.update(
        device_clock_offset_s=offset_s,
        host_key=session.host_key,
        notes=notes,
        commands=session.records,
        # what each command printed, short, for the diagnostics bundle (redacted there)
        outputs=[
            {
                "command": r.command,
                "exit_status": r.exit_status,
                "stdout": r.stdout[:OUTPUT_KEEP],
                "stderr": r.stderr[:OUTPUT_KEEP],
                "elapsed_s": round(r.elapsed_s, 3),
            }
            for r in results.values()
        ],
    )
    return Observation(counter, PROBE, at, True, data, elapsed_s=time.monotonic() - started)


def _clock_offset(result: CommandResult, sent: float, got: float, notes: list[str]) -> float | None:
    try:
        device = _number(_ok(result))
    except (Unparseable, ValueError):
        notes.append(f"clock: cannot read {_excerpt(result.stdout)}")
        return None
    # The device printed whole seconds somewhere between sending and receiving: compare with
    # the middle, and keep one decimal (the round trip bounds the precision anyway).
    offset = round(device + 0.5 - (sent + got) / 2, 1)
    if abs(offset) > MAX_CLOCK_OFFSET_S:
        notes.append(f"clock: implausible device time {_excerpt(result.stdout)}")
        return None
    return offset


def parse(
    results: dict[str, CommandResult],
    offset_s: float | None,
    notes: list[str],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Every value from the commands' outputs; None (with a note) for what cannot be read.

    ``reboots_24h`` counts the boots in wtmp during the device's last 24 hours, the current
    boot included; ``last_event_at`` is on the gateway's clock (the device's skew removed).
    """
    offset = offset_s if offset_s is not None and _plausible_offset(offset_s) else 0.0
    device_now = (now or SYSTEM_CLOCK.now()) + timedelta(seconds=offset)
    data: dict[str, Any] = {}

    def value(name: str, key: str, parser: Any) -> None:
        data[key] = None
        result = results.get(name)
        if result is None:
            return
        try:
            data[key] = parser(result)
        except (Unparseable, ValueError, IndexError, OverflowError) as exc:
            notes.append(
                f"{name}: cannot read {_excerpt(result.stdout or result.stderr)}"
                + (f" ({exc})" if str(exc) else "")
            )

    value("uptime", "uptime_s", _uptime)
    value("boots", "boots", _boots)
    data["reboots_24h"] = (
        None
        if data["boots"] is None
        else sum(
            datetime.fromisoformat(b) >= device_now - timedelta(hours=24) for b in data["boots"]
        )
    )
    value("disk", "disk_used_pct", _disk)
    value("temperature", "temperature_c", _temperature)
    value("camera", "camera_present", _camera)
    value("service", "counting_service", _service)
    value("last_event", "last_event_at", lambda r: _last_event(r, offset))
    value("kernel", "kernel_errors", _kernel)
    return data


def _plausible_offset(offset_s: float) -> bool:
    return math.isfinite(offset_s) and abs(offset_s) <= MAX_CLOCK_OFFSET_S


def _number(text: str) -> float:
    """A finite float: "nan", "inf" and "1e400" are no reading."""
    number = float(text)
    if not math.isfinite(number):
        raise Unparseable("not a finite number")
    return number


def _ok(result: CommandResult) -> str:
    if result.exit_status != 0:
        raise Unparseable(f"exit status {result.exit_status}")
    return result.stdout


def _uptime(result: CommandResult) -> float:
    seconds = _number(_ok(result).split()[0])
    if seconds < 0:
        raise Unparseable("negative uptime")
    return round(seconds, 1)


def _boots(result: CommandResult) -> list[str]:
    boots = []
    for line in _ok(result).splitlines():
        if line.startswith("reboot") and (m := _ISO.search(line)):
            boots.append(datetime.fromisoformat(m.group(0)).astimezone(UTC).isoformat())
    if not boots and "wtmp begins" not in result.stdout:
        raise Unparseable("no boot records")
    return boots


def _disk(result: CommandResult) -> float:
    lines = [line for line in _ok(result).splitlines() if line.strip()]
    for field in reversed(lines[-1].split()):
        if field.endswith("%"):
            used = _number(field[:-1])
            if not 0 <= used <= 100:
                raise Unparseable(f"capacity {used}% is not a percentage")
            return used
    raise Unparseable("no capacity column")


def _temperature(result: CommandResult) -> float:
    text = _ok(result).strip()
    if text.startswith("temp="):  # vcgencmd measure_temp: temp=48.3'C
        celsius = _number(text[5:].rstrip("'C"))
    else:
        raw = _number(text)
        celsius = round(raw / 1000 if raw > 200 else raw, 1)  # sysfs gives millidegrees
    low, high = TEMPERATURE_RANGE_C
    if not low <= celsius <= high:
        raise Unparseable(f"{celsius} °C is no reading of a working sensor")
    return celsius


def _camera(result: CommandResult) -> bool:
    if result.exit_status == 0:
        return True
    if _MISSING in result.stderr:
        return False
    raise Unparseable(f"exit status {result.exit_status}")


def _service(result: CommandResult) -> str:
    words = result.stdout.split()  # is-active exits 3 for inactive: the word is the answer
    if len(words) != 1 or not words[0].isalpha():
        raise Unparseable("expected one word")
    return words[0]


def _last_event(result: CommandResult, offset: float) -> str | None:
    if result.exit_status != 0 and _MISSING in result.stderr:
        raise Unparseable("no counted event recorded on the device")
    device_epoch = _number(_ok(result))
    try:
        return datetime.fromtimestamp(device_epoch - offset, UTC).isoformat()
    except (OverflowError, OSError):  # beyond datetime's or the platform's time_t range
        raise Unparseable("time out of range") from None


def _kernel(result: CommandResult) -> list[str]:
    lines = [_DMESG_TIME.sub("", line).strip() for line in _ok(result).splitlines()]
    return [line[:200] for line in lines if line][-MAX_KERNEL_LINES:]


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def stored_counts_ssh(target: SshTarget, known_hosts: Path, *, timeout_s: float) -> str:
    """The count file the device keeps (the project's count CSV), read over SSH.

    For the data rescue before a unit is returned. Raises ``ProbeError``: the session's own
    failures, or UNSUPPORTED when the device keeps no such file (or will not show it).
    """
    with SshSession(target, known_hosts, timeout_s=timeout_s, max_output=COUNT_EXPORT_MAX) as s:
        result = s.run(COUNT_EXPORT, timeout_s)
    if result.exit_status != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        why = said[-1] if said else f"exit status {result.exit_status}"
        raise ProbeError(ProbeErrorCode.UNSUPPORTED, f"no count file on the device ({why})")
    return result.stdout
