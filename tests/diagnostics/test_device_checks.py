from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from diagnostics.checks.device import DeviceClock, DeviceHealth, SshHostKey
from diagnostics.model import Observation, ProbeError, ProbeErrorCode, Status
from tests.diagnostics.helpers import NOW, evidence

HEALTHY = {
    "uptime_s": 86400.0,
    "reboots_24h": 1,
    "disk_used_pct": 41.0,
    "temperature_c": 52.1,
    "camera_present": True,
    "counting_service": "active",
    "last_event_at": (NOW - timedelta(minutes=2)).isoformat(),
    "kernel_errors": [],
    "device_clock_offset_s": 0.4,
    "host_key": "SHA256:abc",
    "notes": [],
}


def ssh(at=NOW, **data):
    return Observation("FFC1", "ssh", at, True, {**HEALTHY, **data})


def ev(ssh_obs=None, api_data=None, configured=True, now=NOW):
    base = evidence((), now, extra={"ssh_configured": configured})
    obs = {"api": Observation("FFC1", "api", now, True, api_data or {})}
    if ssh_obs is not None:
        obs["ssh"] = ssh_obs
    return replace(base, observations=obs)


def health(obs, **options):
    [f] = DeviceHealth(DeviceHealth.Options(**options)).run(ev(obs))
    return f


# -- counter.device.clock ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "status"),
    [
        (0.0, Status.OK),
        (59.9, Status.OK),
        (-61, Status.WARN),
        (300, Status.WARN),
        (301, Status.FAIL),
        (-3600, Status.FAIL),
    ],
)
def test_clock_thresholds(offset, status):
    [f] = DeviceClock().run(ev(api_data={"clock_offset_s": offset}))
    assert f.status is status
    assert f.evidence["offset_s"] == offset and f.evidence["source"] == "api"
    assert ("behind" in f.summary) == (offset < 0)
    assert bool(f.remediation) == (status is not Status.OK)


def test_clock_falls_back_to_ssh_and_skips_without_either():
    [f] = DeviceClock().run(ev(ssh(device_clock_offset_s=-900.0), api_data={"model": "x"}))
    assert (f.status, f.code, f.evidence["source"]) == (Status.FAIL, "clock_skew", "ssh")
    [f] = DeviceClock().run(ev(ssh(device_clock_offset_s=None)))
    assert (f.status, f.code) == (Status.SKIP, "no_clock")
    [f] = DeviceClock(DeviceClock.Options(warn_s=10, fail_s=20)).run(
        ev(api_data={"clock_offset_s": 15})
    )
    assert f.status is Status.WARN


# -- counter.device.health --------------------------------------------------------------------


def test_healthy_device_is_ok_with_its_numbers():
    [f] = DeviceHealth().run(ev(ssh(), api_data={"model": "3D Pro2", "firmware": "4.3.1"}))
    assert (f.status, f.code) == (Status.OK, "healthy")
    assert f.evidence["disk_used_pct"] == 41.0 and f.evidence["temperature_c"] == 52.1
    assert (f.evidence["model"], f.evidence["firmware"]) == ("3D Pro2", "4.3.1")
    assert f.evidence["problems"] == [] and f.evidence["unknown"] == []
    assert (f.site, f.subject, f.remediation) == ("LDN01", "FFC1", "")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"camera_present": False}, Status.FAIL, "hardware_fault"),
        ({"counting_service": "failed"}, Status.FAIL, "counting_service_down"),
        ({"counting_service": "inactive"}, Status.FAIL, "counting_service_down"),
        ({"counting_service": "activating"}, Status.OK, "healthy"),
        ({"disk_used_pct": 89.9}, Status.OK, "healthy"),
        ({"disk_used_pct": 90.0}, Status.WARN, "disk_filling"),
        ({"disk_used_pct": 97.0}, Status.FAIL, "disk_full"),
        ({"temperature_c": 74.9}, Status.OK, "healthy"),
        ({"temperature_c": 75.0}, Status.WARN, "running_hot"),
        ({"temperature_c": 82.0}, Status.FAIL, "overheating"),
        ({"reboots_24h": 2}, Status.OK, "healthy"),
        ({"reboots_24h": 3}, Status.WARN, "frequent_reboots"),
        (
            {"kernel_errors": ["mmc0: timeout waiting for hardware interrupt."]},
            Status.WARN,
            "kernel_errors",
        ),
        ({"kernel_errors": ["hwmon hwmon1: Undervoltage detected!"]}, Status.WARN, "kernel_errors"),
        (
            {"kernel_errors": ["blk_update_request: I/O error, dev mmcblk0, sector 1"]},
            Status.WARN,
            "kernel_errors",
        ),
        (
            {"kernel_errors": ["usb 1-1: device descriptor read/64, error -71"]},
            Status.OK,
            "healthy",
        ),
    ],
)
def test_each_fault(data, status, code):
    f = health(ssh(**data))
    assert (f.status, f.code) == (status, code)
    if status is not Status.OK:
        assert f.remediation and f.evidence["problems"][0]["code"] == code
        key = next(iter(data))
        assert f.evidence[key] == data[key]


def test_the_worst_problem_decides_and_all_are_listed():
    f = health(ssh(disk_used_pct=92.0, temperature_c=83.0, reboots_24h=4))
    assert (f.status, f.code) == (Status.FAIL, "overheating")
    assert [p["code"] for p in f.evidence["problems"]] == [
        "disk_filling",
        "overheating",
        "frequent_reboots",
    ]
    assert "disk 92% used" in f.summary and "83 °C" in f.summary


def test_thresholds_are_options():
    f = health(ssh(temperature_c=70.0), temp_warn_c=65.0, temp_fail_c=68.0)
    assert f.code == "overheating"


def test_unknown_readings_are_listed_not_judged():
    f = health(ssh(temperature_c=None, camera_present=None, notes=["temperature: timeout"]))
    assert f.status is Status.OK
    assert f.evidence["unknown"] == ["temperature_c", "camera_present"]
    assert f.evidence["notes"] == ["temperature: timeout"]


def test_no_counted_event_for_hours_of_opening_time():
    # NOW is a Wednesday 15:30 in London, open 09:00-20:00
    f = health(ssh(last_event_at=(NOW - timedelta(hours=4)).isoformat()))
    assert (f.status, f.code) == (Status.WARN, "no_recent_events")
    assert "4.0 h of opening time" in f.summary
    f = health(ssh(last_event_at=(NOW - timedelta(hours=2)).isoformat()))
    assert f.status is Status.OK
    # 19:00 yesterday to 10:00 today: only two hours of that night were open hours
    morning = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    last = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
    [f] = DeviceHealth().run(ev(ssh(at=morning, last_event_at=last.isoformat()), now=morning))
    assert f.status is Status.OK


def test_skip_without_ssh_and_on_failed_or_old_readings():
    [f] = DeviceHealth().run(ev(None, configured=False))
    assert (f.status, f.code) == (Status.SKIP, "ssh_not_configured")
    assert "not configured" in f.summary
    [f] = DeviceHealth().run(ev(None))
    assert (f.status, f.code) == (Status.SKIP, "not_probed")
    failed = Observation.failed("FFC1", "ssh", NOW, ProbeError(ProbeErrorCode.TIMEOUT, "slow"))
    [f] = DeviceHealth().run(ev(failed))
    assert (f.status, f.code, f.evidence["error_code"]) == (Status.SKIP, "ssh_failed", "timeout")
    [f] = DeviceHealth().run(ev(ssh(at=NOW - timedelta(hours=7))))
    assert (f.status, f.code) == (Status.SKIP, "stale")


# -- counter.ssh.hostkey ----------------------------------------------------------------------


def hostkey_obs(code, **data):
    return Observation("FFC1", "ssh", NOW, False, {"commands": [], **data}, code, "refused")


def test_a_changed_host_key_fails_loudly():
    obs = hostkey_obs(
        ProbeErrorCode.HOST_KEY_MISMATCH,
        offered_host_key="SHA256:new",
        pinned_host_key="SHA256:old",
        host_key_type="ssh-ed25519",
    )
    [f] = SshHostKey().run(ev(obs))
    assert (f.status, f.code) == (Status.FAIL, "host_key_changed")
    assert "a swapped device, or worse" in f.summary and "not accepted" in f.summary
    assert "ffc-agent enroll FFC1" in f.summary
    assert f.evidence == {
        "offered": "SHA256:new",
        "pinned": "SHA256:old",
        "key_type": "ssh-ed25519",
    }
    assert "enroll" in f.remediation


def test_unknown_ok_and_other_host_key_states():
    [f] = SshHostKey().run(ev(hostkey_obs(ProbeErrorCode.HOST_KEY_UNKNOWN, offered_host_key="k")))
    assert (f.status, f.code, f.evidence["offered"]) == (Status.WARN, "host_key_unknown", "k")
    assert "not enrolled" in f.summary
    [f] = SshHostKey().run(ev(ssh()))
    assert (f.status, f.code, f.evidence["offered"]) == (Status.OK, "host_key_ok", "SHA256:abc")
    [f] = SshHostKey().run(ev(hostkey_obs(ProbeErrorCode.REFUSED)))
    assert (f.status, f.code) == (Status.SKIP, "ssh_failed")
    [f] = SshHostKey().run(ev(None, configured=False))
    assert (f.status, f.code) == (Status.SKIP, "ssh_not_configured")


def test_ids_are_stable():
    assert (DeviceClock.id, DeviceHealth.id, SshHostKey.id) == (
        "counter.device.clock",
        "counter.device.health",
        "counter.ssh.hostkey",
    )
    assert {DeviceClock.applies_to, DeviceHealth.applies_to, SshHostKey.applies_to} == {"counter"}
