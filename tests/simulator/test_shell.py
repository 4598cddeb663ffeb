"""The simulated device shell: read-only allowlist, Pi-like answers, scripted faults."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulator.shell import ALLOWED, COUNTING_SERVICE, LAST_EVENT_FILE, DeviceState, answer

SCRIPT = Path(__file__).resolve().parents[2] / "simulator" / "shell.py"
T = 1_795_000_000.0  # a fixed "real" time


def run_shell(state: Path, command: str | None, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), "--state", str(state)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_healthy_device_answers_like_a_pi():
    s = DeviceState(uptime_s=3600, disk_used_pct=41.2, temperature_c=52.1)
    assert answer("date -u +%s", s, T) == (0, f"{int(T)}\n", "")
    assert answer("cat /proc/uptime", s, T)[1].split()[0] == "3600.00"
    status, out, _ = answer("df -P /", s, T)
    assert status == 0 and out.splitlines()[1].split()[4] == "42%"  # df rounds up
    assert answer("cat /sys/class/thermal/thermal_zone0/temp", s, T)[1] == "52100\n"
    assert answer("ls /dev/video0", s, T) == (0, "/dev/video0\n", "")
    assert answer(f"systemctl is-active {COUNTING_SERVICE}", s, T) == (0, "active\n", "")
    assert answer(f"stat -c %Y {LAST_EVENT_FILE}", s, T) == (0, f"{int(T - 30)}\n", "")
    assert answer("dmesg --level=err,crit,alert,emerg", s, T) == (0, "", "")
    status, out, _ = answer("last --time-format iso reboot", s, T)
    boot = datetime.fromtimestamp(T - 3600, UTC).isoformat()
    assert status == 0 and f"{boot}   still running" in out and "wtmp begins" in out


def test_every_allowed_command_is_answered():
    for command in ALLOWED:  # 1: `cat` of a file the device does not keep
        assert answer(command, DeviceState(), T)[0] in (0, 1, 2, 3), command


def test_faults_show_the_way_a_real_device_shows_them():
    s = DeviceState(
        clock_offset_s=-600,
        uptime_s=300,
        earlier_boots_ago_s=[4000, 9000],
        camera=False,
        service="failed",
        last_event_ago_s=None,
        kernel_errors=["mmc0: timeout waiting for hardware interrupt."],
    )
    assert answer("date -u +%s", s, T)[1] == f"{int(T - 600)}\n"
    status, _, err = answer("ls /dev/video0", s, T)
    assert status == 2 and "No such file or directory" in err
    assert answer(f"systemctl is-active {COUNTING_SERVICE}", s, T) == (3, "failed\n", "")
    assert answer(f"stat -c %Y {LAST_EVENT_FILE}", s, T)[0] == 1
    out = answer("last --time-format iso reboot", s, T)[1]
    assert sum(line.startswith("reboot") for line in out.splitlines()) == 3
    assert datetime.fromtimestamp(T - 600 - 9000, UTC).isoformat() in out  # on the device clock
    line = answer("dmesg --level=err,crit,alert,emerg", s, T)[1]
    assert line.startswith("[") and line.rstrip().endswith("hardware interrupt.")


def test_anything_else_is_refused_with_126():
    for command in ("rm -rf /", "reboot", "cat /etc/shadow", "df -P / ; reboot", "sudo -i"):
        status, out, err = answer(command, DeviceState(), T)
        assert status == 126 and out == "" and "not allowed" in err, command
    assert answer("systemctl is-active sshd", DeviceState(), T) == (3, "inactive\n", "")


def test_verbatim_outputs_script_garbage():
    s = DeviceState(outputs={"df -P /": {"stdout": "garbage", "exit": 0}})
    assert answer("df  -P   /", s, T) == (0, "garbage", "")


def test_state_file_round_trip_and_typos(tmp_path):
    path = tmp_path / "device.json"
    DeviceState(temperature_c=81.5, hang=["df -P /"]).write(path)
    assert DeviceState.read(path).temperature_c == 81.5
    assert DeviceState.read(tmp_path / "missing.json") == DeviceState()
    path.write_text('{"temprature_c": 90}')
    with pytest.raises(ValueError, match="temprature_c"):
        DeviceState.read(path)


def test_forced_command_over_the_cli(tmp_path):
    state = tmp_path / "device.json"
    DeviceState(hostname="ffc-door-1").write(state)
    done = run_shell(state, "hostname")
    assert (done.returncode, done.stdout) == (0, "ffc-door-1\n")
    done = run_shell(state, "shutdown -h now")
    assert done.returncode == 126 and "read-only" in done.stderr


def test_interactive_session_answers_line_by_line(tmp_path):
    state = tmp_path / "device.json"
    DeviceState(hostname="ffc-door-1").write(state)
    done = run_shell(state, None, stdin="hostname\nreboot\n\nhelp\nexit\nhostname\n")
    assert done.returncode == 0
    assert done.stdout.count("@ffc-door-1:~$ ") == 5  # stops at `exit`
    assert "ffc-door-1\n" in done.stdout and "df -P /" in done.stdout  # help lists commands
    assert "'reboot' is not allowed" in done.stderr
    assert run_shell(state, None, stdin="").stdout.endswith("logout\n")


def test_a_hung_command_ends_when_the_client_goes(tmp_path):
    state = tmp_path / "device.json"
    DeviceState(hang=["df -P /"], hang_s=300).write(state)
    env = dict(os.environ, SSH_ORIGINAL_COMMAND="df -P /")
    proc = subprocess.Popen(
        [sys.executable, "-I", str(SCRIPT), "--state", str(state)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)  # it hangs ...
    proc.stdout.close()  # ... until its reader goes away, well before hang_s
    assert proc.wait(timeout=60) == 124


def test_restart_heals_a_stopped_service_but_not_a_wedged_one() -> None:
    from simulator.shell import RESTART, DeviceState, fix

    (status, _, _), after = fix(RESTART, DeviceState(service="failed"))
    assert status == 0 and after.service == "active" and after.fixes == [RESTART]
    (status, _, err), after = fix(RESTART, DeviceState(service="failed", wedged=True))
    assert status == 1 and "failed" in err and after.service == "failed"


def test_reboot_clears_a_wedge_starts_a_new_boot_and_leaves_hardware_alone() -> None:
    from simulator.shell import REBOOT, DeviceState, fix

    before = DeviceState(service="failed", wedged=True, camera=False, uptime_s=5000.0)
    (status, _, _), after = fix(REBOOT, before)
    assert status == 0 and after.service == "active" and not after.wedged
    assert after.uptime_s < 60 and after.earlier_boots_ago_s == [5000.0]
    assert after.camera is False


def test_the_count_file_serves_the_slots_the_device_still_holds() -> None:
    from simulator.shell import COUNTS_FILE

    command = f"cat {COUNTS_FILE}"
    status, _, err = answer(command, DeviceState(), T)
    assert status == 1 and "No such file or directory" in err  # no count file kept
    held = [
        ["2026-11-23T10:00:00+00:00", "FFC1", 4, 3],
        ["2026-11-23T10:15:00+00:00", "FFC1", 0, 1],
    ]
    status, out, _ = answer(command, DeviceState(stored_counts=held), T)
    assert status == 0
    assert out.splitlines() == [
        "timestamp,counter,in,out",
        "2026-11-23T10:00:00+00:00,FFC1,4,3",
        "2026-11-23T10:15:00+00:00,FFC1,0,1",
    ]
