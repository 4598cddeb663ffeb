"""The simulated counter's login shell: what FootfallCam's remote-access staff meet over SSH.

A real counter is a Raspberry-Pi-based Linux box; support staff (and the agent's deep
diagnostics) log in and run a handful of read-only commands. This program stands in for that
box behind a real OpenSSH ``sshd``: it is run as the server's ``ForceCommand``, reads
``$SSH_ORIGINAL_COMMAND`` and answers the way the Pi would, byte for byte in the formats the
agent parses. Besides the read-only commands it answers the two remote fixes support may run
(``FIXES``: restart the counting service, reboot), which change the state file the way the
real fix changes the device. Anything else is refused with exit status 126 and a message, which
is how a locked-down device shell looks to a client. With no command (an
interactive login) it prints a prompt and answers the same commands line by line.

Run it as ``python3 -m simulator.shell --state FILE`` or, to start faster and without
``PYTHONPATH`` (sshd clears the environment), ``python3 -I path/to/simulator/shell.py --state
FILE``: it uses the standard library only and imports nothing else of the simulator.

The device's condition comes from a JSON state file, re-read for every command, so a test
scripts a fault by rewriting the file between two probes. Every key is optional:

=====================  ==========  ==========  =================================================
key                    type        default     meaning
=====================  ==========  ==========  =================================================
hostname               str         ffc-counter the prompt's host name (``hostname``)
clock_offset_s         number      0           device clock minus real time: clock skew
uptime_s               number      86400       seconds since the current boot
earlier_boots_ago_s    [number]    []          ages (seconds before now) of earlier boots in wtmp
disk_used_pct          number      41          use of the root filesystem, percent
disk_size_kb           int         30358348    size of the root filesystem in 1K blocks
temperature_c          number      52.1        SoC temperature
camera                 bool        true        whether ``/dev/video0`` exists
service                str         "active"    ``systemctl is-active`` of the counting service
last_event_ago_s       number|null 30          age of the last counted event; null: none ever
kernel_errors          [str]       []          ``dmesg`` lines at err level or worse
hang                   [str]       []          commands that hang until the client gives up
hang_s                 number      120         the longest a hang lasts (no orphans left behind)
outputs                {str: obj}  {}          verbatim answers: command -> {"stdout": str,
                                               "stderr": str, "exit": int}, for garbage tests
wedged                 bool        false       the counting service is stuck: a restart does
                                               not bring it back, only a reboot does
fixes                  [str]       []          the fixes run so far (appended by the shell), so
                                               a test sees what ran and that nothing ran twice
stored_counts          [[str,str,  []          the count slots the device still holds, each
                       int,int]]               [start ISO, serial, in, out], served as the count
                                               CSV by ``cat /var/lib/footfallcam/counts.csv``;
                                               empty: the device keeps no such file
=====================  ==========  ==========  =================================================

Ages are relative to the moment the command runs, so a state file written once stays true.
Times printed by the device are on its own (skewed) clock, in UTC.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

COUNTING_SERVICE = "footfallcam-counting"
LAST_EVENT_FILE = "/var/lib/footfallcam/last_event"
COUNTS_FILE = "/var/lib/footfallcam/counts.csv"
CAMERA_DEVICE = "/dev/video0"
KERNEL = "6.1.21-v8+"
REFUSED = 126
ALLOWED = (  # what `help` lists; `answer` is the allowlist itself
    "date -u +%s",
    "cat /proc/uptime",
    "last --time-format iso reboot",
    "df -P /",
    "cat /sys/class/thermal/thermal_zone0/temp",
    f"ls {CAMERA_DEVICE}",
    f"systemctl is-active {COUNTING_SERVICE}",
    f"stat -c %Y {LAST_EVENT_FILE}",
    "dmesg --level=err,crit,alert,emerg",
    f"cat {COUNTS_FILE}",
    "hostname",
    "uname -a",
)
RESTART = f"sudo systemctl restart {COUNTING_SERVICE}"
REBOOT = "sudo reboot"
FIXES = (RESTART, REBOOT)
BOOT_S = 20.0  # the uptime a rebooted device reports: it is just back


@dataclass(frozen=True)
class DeviceState:
    """One device's condition; ``write`` produces the JSON file this shell reads."""

    hostname: str = "ffc-counter"
    clock_offset_s: float = 0.0
    uptime_s: float = 86400.0
    earlier_boots_ago_s: list[float] = field(default_factory=list)
    disk_used_pct: float = 41.0
    disk_size_kb: int = 30358348
    temperature_c: float = 52.1
    camera: bool = True
    service: str = "active"
    last_event_ago_s: float | None = 30.0
    kernel_errors: list[str] = field(default_factory=list)
    hang: list[str] = field(default_factory=list)
    hang_s: float = 120.0
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    wedged: bool = False
    fixes: list[str] = field(default_factory=list)
    stored_counts: list[list[Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path | None) -> DeviceState:
        if path is None or not Path(path).exists():
            return cls()
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:  # a typo in a test's fault must not silently mean "healthy"
            raise ValueError(f"unknown state key {unknown[0]!r}")
        return cls(**data)

    def write(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)  # a command running right now never reads half a file


Answer = tuple[int, str, str]  # exit status, stdout, stderr


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).isoformat()


def _last(state: DeviceState, device_now: float) -> str:
    boots = sorted([state.uptime_s, *state.earlier_boots_ago_s])
    lines = []
    for i, age in enumerate(boots):
        start = device_now - age
        if i == 0:
            lines.append(f"reboot   system boot  {KERNEL:<16} {_iso(start)}   still running")
            continue
        end = device_now - boots[i - 1] - 30
        minutes = max(0, int(end - start) // 60)
        days, rest = divmod(minutes, 1440)
        hours = f"{rest // 60:02d}:{rest % 60:02d}"
        span = f"{days}+{hours}" if days else hours
        lines.append(f"reboot   system boot  {KERNEL:<16} {_iso(start)} - {_iso(end)}  ({span})")
    begins = device_now - max(boots) - 86400
    return "\n".join(lines) + f"\n\nwtmp begins {_iso(begins)}\n"


def _df(state: DeviceState) -> str:
    size = state.disk_size_kb
    used = int(size * state.disk_used_pct / 100)
    avail = size - used
    capacity = math.ceil(state.disk_used_pct)
    return (
        "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
        f"/dev/root      {size:>11} {used:>8} {avail:>9} {capacity:>7}% /\n"
    )


def _dmesg(state: DeviceState) -> str:
    n = len(state.kernel_errors)
    return "".join(
        f"[{state.uptime_s * (i + 1) / (n + 1):12.6f}] {line}\n"
        for i, line in enumerate(state.kernel_errors)
    )


def answer(command: str, state: DeviceState, now: float | None = None) -> Answer:
    """What the device prints for ``command`` (whitespace-normalised) at real time ``now``."""
    now = time.time() if now is None else now
    device_now = now + state.clock_offset_s
    cmd = " ".join(command.split())
    if cmd in state.outputs:
        out = state.outputs[cmd]
        return int(out.get("exit", 0)), str(out.get("stdout", "")), str(out.get("stderr", ""))
    if cmd == "date -u +%s":
        return 0, f"{int(device_now)}\n", ""
    if cmd == "cat /proc/uptime":
        return 0, f"{state.uptime_s:.2f} {state.uptime_s * 3.6:.2f}\n", ""
    if cmd == "last --time-format iso reboot":
        return 0, _last(state, device_now), ""
    if cmd == "df -P /":
        return 0, _df(state), ""
    if cmd == "cat /sys/class/thermal/thermal_zone0/temp":
        return 0, f"{round(state.temperature_c * 1000)}\n", ""
    if cmd == f"ls {CAMERA_DEVICE}":
        if state.camera:
            return 0, f"{CAMERA_DEVICE}\n", ""
        return 2, "", f"ls: cannot access '{CAMERA_DEVICE}': No such file or directory\n"
    if cmd.startswith("systemctl is-active "):
        unit = cmd.removeprefix("systemctl is-active ").removesuffix(".service")
        status = state.service if unit == COUNTING_SERVICE else "inactive"
        return (0 if status == "active" else 3), f"{status}\n", ""
    if cmd == f"stat -c %Y {LAST_EVENT_FILE}":
        if state.last_event_ago_s is None:
            return 1, "", f"stat: cannot statx '{LAST_EVENT_FILE}': No such file or directory\n"
        return 0, f"{int(device_now - state.last_event_ago_s)}\n", ""
    if cmd == "dmesg --level=err,crit,alert,emerg":
        return 0, _dmesg(state), ""
    if cmd == f"cat {COUNTS_FILE}":
        if not state.stored_counts:
            return 1, "", f"cat: {COUNTS_FILE}: No such file or directory\n"
        rows = "".join(
            f"{t},{serial},{n_in},{n_out}\n" for t, serial, n_in, n_out in state.stored_counts
        )
        return 0, "timestamp,counter,in,out\n" + rows, ""
    if cmd == "hostname":
        return 0, f"{state.hostname}\n", ""
    if cmd == "uname -a":
        return 0, f"Linux {state.hostname} {KERNEL} #1642 SMP PREEMPT aarch64 GNU/Linux\n", ""
    return REFUSED, "", f"ffc-sim: '{cmd}' is not allowed: this device shell is read-only\n"


def fix(command: str, state: DeviceState) -> tuple[Answer, DeviceState]:
    """What a remote fix prints and the device's condition after it.

    A restart brings a stopped or failed service back unless the service is wedged; a reboot
    starts a new boot (the current one joins the reboot history), clears a wedge and starts the
    service. Neither brings back a missing camera, a full disk or a hot SoC: hardware stays.
    """
    cmd = " ".join(command.split())
    fixes = [*state.fixes, cmd]
    if cmd == RESTART:
        if state.wedged:
            err = (
                f"Job for {COUNTING_SERVICE}.service failed because the control process exited "
                "with error code.\n"
            )
            return (1, "", err), replace(state, service="failed", fixes=fixes)
        return (0, "", ""), replace(state, service="active", last_event_ago_s=1.0, fixes=fixes)
    boots = [state.uptime_s, *state.earlier_boots_ago_s]
    after = replace(
        state,
        uptime_s=BOOT_S,
        earlier_boots_ago_s=boots,
        service="active",
        wedged=False,
        last_event_ago_s=1.0,
        fixes=fixes,
    )
    return (0, "The system is going down for reboot NOW!\n", ""), after


def _hang(limit_s: float) -> None:
    """Block like a stuck command, but end once the client has gone (our stdout's reader
    closed) so a test that gives up leaves no process behind; at most ``limit_s``."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)  # 0: report only errors and hang-ups
    deadline = time.monotonic() + limit_s
    while (left := deadline - time.monotonic()) > 0:
        if poller.poll(min(left, 0.5) * 1000):
            return


def _run(command: str, state_path: str | None) -> int:
    state = DeviceState.read(state_path)
    if " ".join(command.split()) in state.hang:
        _hang(state.hang_s)
        return 124
    if " ".join(command.split()) in FIXES:
        (status, out, err), after = fix(command, state)
        if state_path is not None:
            after.write(state_path)
    else:
        status, out, err = answer(command, state)
    sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.write(err)
    sys.stderr.flush()
    return status


def _interactive(state_path: str | None) -> int:
    user = os.environ.get("USER") or "pi"
    while True:
        host = DeviceState.read(state_path).hostname
        sys.stdout.write(f"{user}@{host}:~$ ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:  # end of input: the session closed
            sys.stdout.write("logout\n")
            return 0
        command = line.strip()
        if command in ("exit", "logout"):
            return 0
        if command == "help":
            allowed = "\n  ".join((*ALLOWED, *FIXES))
            sys.stdout.write(f"device shell; allowed:\n  {allowed}\n")
        elif command:
            _run(command, state_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="simulated FootfallCam device shell")
    parser.add_argument("--state", help="JSON file with the device's condition")
    args = parser.parse_args(argv)
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    if command:
        return _run(command, args.state)
    return _interactive(args.state)


if __name__ == "__main__":
    sys.exit(main())
