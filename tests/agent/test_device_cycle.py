"""SSH device health inside the cycle, against a real sshd: enroll, judge, refuse a new key."""

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.config import load_config
from agent.probes.device import COMMANDS
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@pytest.fixture
def device(tmp_path, sshd):
    clock = FakeClock(NOW)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter("FFC1", "Main door", "LDN01", base_rate=150.0)],
        seed=3,
        clock=clock,
    )
    with fleet:
        fleet.start()
        text = fleet.agent_config_toml(
            tmp_path / "state",
            probe_timeout_seconds=3,
            agent={"confirm_checks": 1, "ssh_seconds": 0},  # about SSH, not confirmation
        )
        text = text.replace(
            "[[sinks]]",
            f"""[counters.ssh]
user = "{sshd.user}"
key_file = "{sshd.client_key}"
port = {sshd.port}

[[sinks]]""",
        )
        path = tmp_path / "agent.toml"
        # the ladder's reboot is checked at once, not by the next cycle: this is about SSH
        path.write_text(text + "\n[remediation]\nrecheck_seconds = 0\n")
        yield clock, path, sshd


def cycle(path, clock):
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        result = make_runner(config, store, clock=clock).run_cycle()
        audit = store._db.execute(
            "SELECT action, detail FROM audit WHERE action = 'ssh.command'"
        ).fetchall()
    return (
        {a.finding.check_id: a for a in result.assessed if a.finding.subject == "FFC1"},
        result,
        audit,
    )


def test_enroll_then_judge_then_refuse_a_swapped_key(device):
    clock, path, sshd = device
    found, _, _ = cycle(path, clock)
    assert found["counter.ssh.hostkey"].finding.code != "ok"
    assert found["counter.ssh.hostkey"].finding.status.value == "warn"  # not enrolled yet

    enrolled = CliRunner().invoke(cli, ["enroll", "FFC1", "--config", str(path), "--json"])
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout)["fingerprint"] == sshd.host_key_fingerprint

    found, _, audit = cycle(path, clock)
    assert found["counter.ssh.hostkey"].finding.status.value == "ok"
    assert found["counter.device.health"].finding.status.value == "ok"
    # every read-only command of the health check is in the audit log
    commands = {json.loads(d)["command"] for _, d in audit}
    assert set(COMMANDS.values()) <= commands

    sshd.write_state(camera=False)
    found, result, _ = cycle(path, clock)
    health = found["counter.device.health"]
    assert health.finding.code == "hardware_fault" and health.genuine
    [ticket] = [t for t in result.tickets if t.counters == ["FFC1"]]
    assert "RMA" in ticket.subject and ticket.category == "Technical Issue"

    known_hosts = load_config(path).agent.state_dir / "known_hosts"
    pinned = known_hosts.read_text()
    sshd.restart(new_host_key=True)
    found, _, _ = cycle(path, clock)
    hostkey = found["counter.ssh.hostkey"].finding
    assert hostkey.status.value == "fail" and hostkey.code == "host_key_changed"
    assert known_hosts.read_text() == pinned  # never accepted silently
