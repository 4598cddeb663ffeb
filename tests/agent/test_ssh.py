"""SSH probes against a real OpenSSH sshd whose ForceCommand is the simulated device shell.

Host keys are pinned in the agent's own known_hosts: unknown and changed keys are refused (and
never written), ``enroll`` pins deliberately; commands are read-only, bounded and recorded;
every device fault is read back and judged by the checks.
"""

from __future__ import annotations

import socket
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

import paramiko
import pytest

from agent.probes.device import COMMANDS, probe_device_ssh
from agent.probes.ssh import HostKeyError, SshSession, SshTarget, enroll, pinned_fingerprint
from diagnostics.calendar import Hours, SiteCalendar
from diagnostics.checks.base import CounterEvidence
from diagnostics.checks.device import DeviceClock, DeviceHealth, SshHostKey
from diagnostics.model import ProbeError, ProbeErrorCode, Status
from tests.sshd import keygen

pytestmark = pytest.mark.integration

ALWAYS_OPEN = SiteCalendar("UTC", (Hours(dtime(0), dtime.max),) * 7)


def target(sshd, key=None) -> SshTarget:
    return SshTarget(sshd.host, sshd.port, sshd.user, key or sshd.client_key)


def probe(sshd, known_hosts, timeout_s=5.0, budget_s=60.0):
    return probe_device_ssh(
        target(sshd),
        known_hosts,
        counter="FFC1",
        timeout_s=timeout_s,
        deadline=time.monotonic() + budget_s,
    )


def judge(check, obs):
    ev = CounterEvidence(
        serial="FFC1",
        name="Main door",
        site="LDN01",
        calendar=ALWAYS_OPEN,
        now=obs.at,
        observations={"ssh": obs},
        extra={"ssh_configured": True},
    )
    [finding] = check.run(ev)
    return finding


@pytest.fixture
def known_hosts(tmp_path):
    return tmp_path / "state" / "known_hosts"


@pytest.fixture
def enrolled(sshd, known_hosts):
    enroll(target(sshd), known_hosts, timeout=10)
    return known_hosts


def test_enroll_pins_the_key_with_ssh_keygens_fingerprint(sshd, known_hosts):
    printed = enroll(target(sshd), known_hosts, timeout=10)
    assert printed == sshd.host_key_fingerprint  # what `ssh-keygen -l` shows
    assert pinned_fingerprint(target(sshd), known_hosts) == printed
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in known_hosts.read_text()
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600


def test_unknown_key_is_refused_and_nothing_is_written(sshd, known_hosts):
    with pytest.raises(HostKeyError) as caught:
        SshSession(target(sshd), known_hosts, timeout_s=5).open()
    assert caught.value.code is ProbeErrorCode.HOST_KEY_UNKNOWN
    assert caught.value.offered == sshd.host_key_fingerprint and caught.value.pinned is None
    assert not known_hosts.exists()
    obs = probe(sshd, known_hosts)
    assert not obs.ok and obs.error_code is ProbeErrorCode.HOST_KEY_UNKNOWN
    finding = judge(SshHostKey(), obs)
    assert (finding.status, finding.code) == (Status.WARN, "host_key_unknown")
    assert "ffc-agent enroll FFC1" in finding.summary
    assert finding.evidence["offered"] == sshd.host_key_fingerprint
    assert judge(DeviceHealth(), obs).status is Status.SKIP


def test_pinned_key_works_and_returns_parsed_data(sshd, enrolled):
    sshd.write_state(uptime_s=7200, disk_used_pct=41, temperature_c=52.1, last_event_ago_s=30)
    obs = probe(sshd, enrolled)
    assert obs.ok, obs.error
    d = obs.data
    assert d["uptime_s"] == 7200.0
    assert d["reboots_24h"] == 1  # the current boot
    assert d["disk_used_pct"] == 41.0
    assert d["temperature_c"] == 52.1
    assert d["camera_present"] is True
    assert d["counting_service"] == "active"
    assert d["kernel_errors"] == []
    assert abs(d["device_clock_offset_s"]) < 5
    age = datetime.now(UTC) - datetime.fromisoformat(d["last_event_at"])
    assert timedelta(seconds=20) < age < timedelta(minutes=5)
    assert d["host_key"] == sshd.host_key_fingerprint
    assert d["notes"] == []
    assert judge(DeviceHealth(), obs).code == "healthy"
    assert judge(SshHostKey(), obs).status is Status.OK
    assert judge(DeviceClock(), obs).status is Status.OK


def test_every_command_is_recorded(sshd, enrolled):
    obs = probe(sshd, enrolled)
    records = obs.data["commands"]
    assert [r["command"] for r in records] == list(COMMANDS.values())
    for r in records:
        assert r["target"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
        assert r["exit_status"] in (0, 3) and r["timed_out"] is False
        assert datetime.fromisoformat(r["at"]).tzinfo is not None
        assert "stdout" not in r  # sizes only: outputs stay out of the audit log
    assert str(sshd.client_key) not in str(records)


def test_changed_host_key_is_refused_and_never_written(sshd, enrolled):
    old = sshd.host_key_fingerprint
    pinned_file = enrolled.read_text()
    sshd.restart(new_host_key=True)  # same address and port, another device
    new = sshd.host_key_fingerprint
    assert new != old
    with pytest.raises(HostKeyError) as caught:
        with SshSession(target(sshd), enrolled, timeout_s=5) as session:
            session.run("hostname", 5)
    assert caught.value.code is ProbeErrorCode.HOST_KEY_MISMATCH
    assert (caught.value.offered, caught.value.pinned) == (new, old)
    obs = probe(sshd, enrolled)
    assert obs.error_code is ProbeErrorCode.HOST_KEY_MISMATCH and obs.data["commands"] == []
    assert enrolled.read_text() == pinned_file  # never accepted, never written
    finding = judge(SshHostKey(), obs)
    assert (finding.status, finding.code) == (Status.FAIL, "host_key_changed")
    assert "swapped device" in finding.summary and "ffc-agent enroll FFC1" in finding.summary
    assert (finding.evidence["offered"], finding.evidence["pinned"]) == (new, old)

    assert enroll(target(sshd), enrolled, timeout=10) == new  # a person's deliberate act
    assert enrolled.read_text().count(f"[127.0.0.1]:{sshd.port}") == 1
    assert probe(sshd, enrolled).ok


def test_a_wrong_client_key_is_auth_failed(sshd, enrolled, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(ProbeError) as caught:
        SshSession(target(sshd, stranger), enrolled, timeout_s=5).open()
    assert caught.value.code is ProbeErrorCode.AUTH_FAILED
    with pytest.raises(ProbeError) as caught:
        SshSession(target(sshd, tmp_path / "no-such-key"), enrolled, timeout_s=5).open()
    assert caught.value.code is ProbeErrorCode.AUTH_FAILED


def test_nothing_listening_is_refused(sshd, enrolled):
    sshd.stop()
    with pytest.raises(ProbeError) as caught:
        SshSession(target(sshd), enrolled, timeout_s=5).open()
    assert caught.value.code is ProbeErrorCode.REFUSED
    with pytest.raises(ProbeError) as caught:
        enroll(target(sshd), enrolled, timeout=5)
    assert caught.value.code is ProbeErrorCode.REFUSED


def test_a_command_outside_the_allowlist_is_refused(sshd, enrolled):
    with SshSession(target(sshd), enrolled, timeout_s=5) as session:
        with pytest.raises(ProbeError) as caught:
            session.run("rm -rf /var/lib/footfallcam", 5)
        assert caught.value.code is ProbeErrorCode.UNSUPPORTED
        ok = session.run("hostname", 5)  # the session survives a refusal
        assert (ok.exit_status, ok.stdout) == (0, "ffc-counter\n")
    assert [r["exit_status"] for r in session.records] == [126, 0]


def test_a_hung_command_hits_its_own_timeout(sshd, enrolled):
    sshd.write_state(hang=["df -P /"], hang_s=120)
    with SshSession(target(sshd), enrolled, timeout_s=5) as session:
        with pytest.raises(ProbeError) as caught:
            session.run("df -P /", 1.0)
        assert caught.value.code is ProbeErrorCode.TIMEOUT
        assert session.run("hostname", 5).exit_status == 0
    assert session.records[0]["timed_out"] is True
    assert session.records[0]["exit_status"] is None

    obs = probe(sshd, enrolled, timeout_s=1.0)
    assert obs.ok and obs.data["disk_used_pct"] is None
    assert any(n.startswith("disk: timeout") for n in obs.data["notes"])
    assert obs.data["temperature_c"] == 52.1  # the rest of the device still answers
    assert judge(DeviceHealth(), obs).evidence["unknown"] == ["disk_used_pct"]


def test_output_is_capped(sshd, enrolled):
    sshd.write_state(outputs={"df -P /": {"stdout": "x" * 200_000}})
    with SshSession(target(sshd), enrolled, timeout_s=5, max_output=4096) as session:
        result = session.run("df -P /", 10)
    assert result.truncated and len(result.stdout) == 4096 and result.exit_status is None
    assert session.records[0]["truncated"] is True


def test_no_command_starts_after_the_probe_deadline(sshd, enrolled):
    obs = probe(sshd, enrolled, budget_s=0.0)
    assert obs.ok and obs.data["commands"] == []
    assert obs.data["uptime_s"] is None and obs.data["camera_present"] is None
    assert len(obs.data["notes"]) == len(COMMANDS)
    assert all("deadline passed" in n for n in obs.data["notes"])


def test_each_device_fault_is_read_and_judged(sshd, enrolled):
    sshd.write_state(
        clock_offset_s=-900,
        uptime_s=600,
        earlier_boots_ago_s=[3 * 3600, 9 * 3600, 40 * 3600],
        disk_used_pct=98.2,
        temperature_c=83.4,
        camera=False,
        service="failed",
        last_event_ago_s=6 * 3600,
        kernel_errors=[
            "mmc0: timeout waiting for hardware interrupt.",
            "hwmon hwmon1: Undervoltage detected!",
            "usb 1-1.2: device descriptor read/64, error -71",
        ],
    )
    obs = probe(sshd, enrolled)
    d = obs.data
    assert d["reboots_24h"] == 3  # 40 h ago is outside the window
    assert d["disk_used_pct"] == 99.0  # df's capacity, rounded up
    assert d["temperature_c"] == 83.4
    assert d["camera_present"] is False
    assert d["counting_service"] == "failed"
    assert -905 < d["device_clock_offset_s"] < -895
    # the last event is placed on the gateway's clock, the device's skew removed
    age = datetime.now(UTC) - datetime.fromisoformat(d["last_event_at"])
    assert timedelta(hours=5, minutes=55) < age < timedelta(hours=6, minutes=5)
    assert len(d["kernel_errors"]) == 3

    health = judge(DeviceHealth(), obs)
    assert (health.status, health.code) == (Status.FAIL, "hardware_fault")
    codes = [p["code"] for p in health.evidence["problems"]]
    assert codes == [
        "hardware_fault",
        "counting_service_down",
        "disk_full",
        "overheating",
        "frequent_reboots",
        "no_recent_events",
        "kernel_errors",
    ]
    assert "usb 1-1.2" not in health.summary  # only storage and power errors are raised
    clock = judge(DeviceClock(), obs)
    assert (clock.status, clock.code, clock.evidence["source"]) == (
        Status.FAIL,
        "clock_skew",
        "ssh",
    )


@pytest.fixture
def silent_server():
    """A TCP server that accepts and then says nothing (a hung device), or talks HTTP."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        accepted: list[socket.socket] = []

        def serve():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                accepted.append(conn)
                if len(accepted) > 1:  # from the second connection on: not an SSH server
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    conn.close()

        threading.Thread(target=serve, daemon=True).start()
        yield server.getsockname()[1]
    for conn in accepted:
        conn.close()


def test_a_silent_device_times_out_and_a_stranger_is_a_bad_response(silent_server, tmp_path):
    hung = SshTarget("127.0.0.1", silent_server, "pi", tmp_path / "unused")
    with pytest.raises(ProbeError) as caught:
        enroll(hung, tmp_path / "known_hosts", timeout=0.5)
    assert caught.value.code is ProbeErrorCode.TIMEOUT
    with pytest.raises(ProbeError) as caught:
        enroll(hung, tmp_path / "known_hosts", timeout=5)
    assert caught.value.code is ProbeErrorCode.BAD_RESPONSE
    assert not (tmp_path / "known_hosts").exists()


def test_an_interactive_login_gets_a_prompt_and_the_same_allowlist(sshd, enrolled):
    # Remote-access staff (issue 6) land here; paramiko is used directly, with the pinned key.
    client = paramiko.SSHClient()
    client.load_host_keys(str(enrolled))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host,
        sshd.port,
        sshd.user,
        key_filename=str(sshd.client_key),
        timeout=10,
        allow_agent=False,
        look_for_keys=False,
    )
    try:
        chan = client.invoke_shell()
        chan.settimeout(10)
        chan.sendall(b"hostname\nreboot\nexit\n")
        seen = b""
        while not chan.exit_status_ready() or chan.recv_ready():
            data = chan.recv(4096)
            if not data:
                break
            seen += data
        text = seen.decode()
        assert chan.recv_exit_status() == 0
        assert f"{sshd.user}@ffc-counter:~$ " in text
        assert ":~$ ffc-counter\n" in text.replace("\r", "")
        assert "'reboot' is not allowed" in text
    finally:
        client.close()


def test_a_damaged_known_hosts_is_an_error_not_an_empty_pin_list(sshd, known_hosts):
    known_hosts.parent.mkdir(parents=True)
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAA!!notbase64\n")
    for attempt in (
        lambda: SshSession(target(sshd), known_hosts, timeout_s=5).open(),
        lambda: enroll(target(sshd), known_hosts, timeout=5),
    ):
        with pytest.raises(ProbeError) as caught:
            attempt()
        assert caught.value.code is ProbeErrorCode.HOST_KEY_UNKNOWN
        assert "cannot be read" in caught.value.message
    assert "notbase64" in known_hosts.read_text()  # left for a person to look at
