"""The remediation ladder on a real counter: the simulator's API and a real sshd on 127.0.0.1."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest

from agent.app import make_runner
from agent.config import load_config
from agent.probes.ssh import SshTarget, enroll
from agent.remediate import Remediator
from agent.rmas import Rmas
from agent.store import Store
from diagnostics.model import Finding, Status
from rma.gate import Evidence, judge
from rma.ladder import Attempt, Outcome, Step
from simulator import FakeClock, Fleet, SimCounter, SimSite
from simulator.shell import REBOOT, RESTART, DeviceState

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def script(path, body: str):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


class Rig:
    def __init__(self, tmp_path, sshd, fleet, clock, remediation: str) -> None:
        self.sshd, self.fleet, self.clock = sshd, fleet, clock
        text = fleet.agent_config_toml(tmp_path / "state", probe_timeout_seconds=3)
        text = text.replace(
            "[[sinks]]",
            f'[counters.ssh]\nuser = "{sshd.user}"\nkey_file = "{sshd.client_key}"\n'
            f"port = {sshd.port}\n\n[[sinks]]",
        )
        self.path = tmp_path / "agent.toml"
        self.path.write_text(text + "\n[remediation]\nrecheck_seconds = 0\n" + remediation)
        self.config = load_config(self.path)
        self.counter = self.config.counter("FFC1")
        target = SshTarget.for_counter(self.counter)
        assert target is not None
        self.known_hosts = self.config.agent.state_dir / "known_hosts"
        self.config.agent.state_dir.mkdir(parents=True, exist_ok=True)
        enroll(target, self.known_hosts)
        self.store = Store.open(self.config.agent.state_dir)
        self.runner = make_runner(self.config, self.store, clock=clock)
        self.rmas = Rmas(self.store)
        self.fix = Remediator(
            self.config,
            self.rmas,
            clock=clock,
            client_for=self.runner._ladder_client,
            redactor=self.runner.redactor,
            known_hosts=self.known_hosts,
        )

    def fixes(self) -> list[str]:
        return DeviceState.read(self.sshd.state_file).fixes

    def audit(self) -> list[tuple[str, str, dict]]:
        rows = self.store._db.execute(
            "SELECT actor, action, detail FROM audit WHERE action LIKE 'remediate.%' ORDER BY id"
        ).fetchall()
        return [(a, b, json.loads(c)) for a, b, c in rows]


@pytest.fixture
def rig(tmp_path, sshd, request):
    clock = FakeClock(NOW)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter("FFC1", "Main door", "LDN01", base_rate=150.0)],
        seed=3,
        clock=clock,
    )
    extra = getattr(request, "param", "")  # extra [remediation] lines
    poe = script(tmp_path / "poe.sh", 'echo "port of $1 power-cycled"')
    extra = extra.replace("POE", str(poe))
    with fleet:
        fleet.start()
        r = Rig(tmp_path, sshd, fleet, clock, extra)
        try:
            yield r
        finally:
            r.store.close()


SINCE = NOW - timedelta(minutes=10)


def test_first_rung_heals_a_forgotten_token(rig):
    rig.runner.run_cycle()  # fetches and caches a token
    rig.fleet.rotate_token("FFC1")
    made, _plan = rig.fix.walk(rig.counter, "http_error", SINCE)
    assert [(a.step, a.outcome) for a in made] == [(Step.RENEW_TOKEN, Outcome.HEALED)]
    assert rig.fixes() == []  # nothing rougher was tried
    [(actor, action, detail)] = rig.audit()
    assert (actor, action, detail["outcome"]) == ("agent", "remediate.renew_token", "healed")


def test_a_stopped_service_is_healed_by_a_restart(rig):
    rig.sshd.write_state(service="failed")
    made, _ = rig.fix.walk(rig.counter, "counting_service_down", SINCE)
    assert [(a.step, a.outcome) for a in made] == [(Step.RESTART_SERVICE, Outcome.HEALED)]
    assert rig.fixes() == [RESTART]


def test_a_wedged_service_needs_a_reboot(rig):
    rig.sshd.write_state(service="failed", wedged=True, uptime_s=50000.0)
    made, _ = rig.fix.walk(rig.counter, "counting_service_down", SINCE)
    assert [(a.step, a.outcome) for a in made] == [
        (Step.RESTART_SERVICE, Outcome.FAILED),
        (Step.REBOOT, Outcome.HEALED),
    ]
    assert "exited 1" in made[0].detail
    assert rig.fixes() == [RESTART, REBOOT]
    assert DeviceState.read(rig.sshd.state_file).earlier_boots_ago_s == [50000.0]


@pytest.mark.parametrize("rig", ['poe_command = ["POE", "{serial}"]\n'], indirect=True)
def test_nothing_heals_a_missing_camera_and_the_gate_asks_for_an_rma(rig):
    rig.sshd.write_state(camera=False)
    made, plan = rig.fix.walk(rig.counter, "hardware_fault", SINCE)
    assert [(a.step, a.outcome) for a in made] == [
        (Step.REBOOT, Outcome.NOT_HEALED),
        (Step.POE_CYCLE, Outcome.NOT_HEALED),
    ]
    assert "port of FFC1 power-cycled" in made[1].detail
    assert "camera is still not detected" in made[0].detail
    assert plan.exhausted and "none healed" in plan.reason
    health = Finding(
        "counter.device.health",
        Status.FAIL,
        "hardware_fault",
        "camera",
        NOW,
        "LDN01",
        "FFC1",
        {"camera_present": False},
    )
    verdict = judge(Evidence((health,), ladder_exhausted=plan.exhausted))
    assert verdict.rma and verdict.held[0].code == "camera_missing"


def test_an_exhausted_budget_stops_the_reboots(rig):
    for hours in (3, 8):  # two reboots today, in earlier incidents
        rig.rmas.record_attempt(
            Attempt("FFC1", Step.REBOOT, NOW - timedelta(hours=hours), Outcome.HEALED)
        )
    rig.sshd.write_state(service="failed", wedged=True)
    made, plan = rig.fix.walk(rig.counter, "counting_service_down", SINCE)
    assert [a.step for a in made] == [Step.RESTART_SERVICE]
    assert plan.exhausted and plan.over_budget == (Step.REBOOT,)
    assert "budget" in plan.reason and "2 a day" in plan.reason
    assert rig.fixes() == [RESTART]  # no third reboot


@pytest.mark.parametrize("rig", ['poe_command = ["POE"]\npoe_timeout_seconds = 1\n'], indirect=True)
def test_a_poe_command_that_fails_or_hangs_is_recorded_and_the_ladder_moves_on(rig, tmp_path):
    script(tmp_path / "poe.sh", 'echo "switch said no: password=hunter2" >&2; exit 3')
    rig.sshd.write_state(camera=False)
    attempt = rig.fix.run_step(rig.counter, Step.POE_CYCLE, actor="alice")
    assert attempt.outcome is Outcome.FAILED and "exited 3" in attempt.detail
    script(tmp_path / "poe.sh", "sleep 600 & sleep 600")
    attempt = rig.fix.run_step(rig.counter, Step.POE_CYCLE, actor="alice")
    assert attempt.outcome is Outcome.FAILED
    assert "did not finish within 1s" in attempt.detail
    actors = {actor for actor, _, _ in rig.audit()}
    assert actors == {"alice"}


def test_dry_run_touches_nothing_and_is_audited(rig):
    rig.sshd.write_state(service="failed", wedged=True)
    made, _ = rig.fix.walk(rig.counter, "counting_service_down", SINCE, dry_run=True)
    assert [(a.step, a.outcome) for a in made] == [(Step.RESTART_SERVICE, Outcome.DRY_RUN)]
    assert rig.fixes() == []
    assert "would run 'sudo systemctl restart" in rig.audit()[0][2]["detail"]


def test_three_heals_in_two_weeks_make_a_repeat_offender(rig):
    for days in (2, 6):
        rig.rmas.record_attempt(
            Attempt("FFC1", Step.RESTART_SERVICE, NOW - timedelta(days=days), Outcome.HEALED)
        )
    assert not rig.fix.repeat_offender("FFC1")
    rig.sshd.write_state(service="failed")
    rig.fix.walk(rig.counter, "counting_service_down", SINCE)
    assert rig.fix.repeat_offender("FFC1")


def test_remote_fix_by_hand_asks_first_and_is_audited_as_the_person(rig):
    from click.testing import CliRunner

    from agent.cli import cli

    rig.sshd.write_state(service="failed")
    args = ["remote", "fix", "FFC1", "restart_service", "--config", str(rig.path)]
    refused = CliRunner().invoke(cli, args, input="n\n")
    assert refused.exit_code == 1 and rig.fixes() == []  # "no" at the prompt: nothing ran
    dry = CliRunner().invoke(cli, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0 and json.loads(dry.stdout)["outcome"] == "dry_run"
    assert rig.fixes() == []
    done = CliRunner().invoke(cli, [*args, "--yes", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert data["outcome"] == "healed" and data["actor"] not in ("", "agent")
    assert rig.fixes() == [RESTART]
    actions = [(action, detail["outcome"]) for _, action, detail in rig.audit()]
    assert actions == [
        ("remediate.restart_service", "dry_run"),
        ("remediate.restart_service", "healed"),
    ]
    # a step the counter cannot take (no poe_command): one line, or under --json a JSON error
    impossible = ["remote", "fix", "FFC1", "poe_cycle", "--config", str(rig.path), "--yes"]
    said = CliRunner().invoke(cli, impossible)
    assert said.exit_code == 1 and said.stdout == ""
    assert said.stderr.startswith("Error: remote fix: ") and "not possible on FFC1" in said.stderr
    as_json = CliRunner().invoke(cli, [*impossible, "--json"])
    assert as_json.exit_code == 1
    assert "not possible on FFC1" in json.loads(as_json.stdout)["error"]


def test_the_port_status_command_is_read_and_a_hang_or_garble_is_an_error(rig, tmp_path):
    status = tmp_path / "status.sh"
    assert rig.fix.port_status(rig.counter) is None  # none configured: no port facts
    rig.fix.settings = rig.fix.settings.model_copy(
        update={"port_status_command": (str(status), "{serial}"), "port_status_timeout_seconds": 1}
    )
    script(status, 'echo "{\\"link\\": true, \\"power\\": \\"on\\", \\"port\\": \\"$1\\"}"')
    port = rig.fix.port_status(rig.counter)
    assert port is not None and (port["link"], port["power"]) == (True, True)
    assert '"port": "FFC1"' in port["output"]
    script(status, "echo 'link=flaky token=s3cret'")
    port = rig.fix.port_status(rig.counter)
    assert port is not None and "not understood" in port["error"]
    assert "s3cret" not in port["output"]  # what the switch said is redacted
    script(status, "sleep 600 & sleep 600")
    port = rig.fix.port_status(rig.counter)
    assert port is not None and "did not finish within 1s" in port["error"]
    script(status, "echo down; exit 2")
    port = rig.fix.port_status(rig.counter)
    assert port is not None and port["error"] == "port status command exited 2"
