"""The ladder and the evidence gate inside a real cycle: simulator, real sshd, the local sink."""

from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime

import pytest

from agent.app import make_runner
from agent.config import load_config
from agent.probes.ssh import SshTarget, enroll
from agent.rmas import Rmas
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite
from simulator.shell import RESTART, DeviceState

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@pytest.fixture
def world(tmp_path, sshd):
    clock = FakeClock(NOW)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter("FFC1", "Main door", "LDN01", base_rate=150.0)],
        seed=3,
        clock=clock,
    )
    with fleet:
        fleet.start()
        refs = tmp_path / "refs"
        fleet.write_references(refs)
        text = fleet.agent_config_toml(
            tmp_path / "state",
            refs,
            probe_timeout_seconds=3,
            agent={"confirm_checks": 1, "ssh_seconds": 0},
        )
        text = text.replace(
            "[[sinks]]",
            f'[counters.ssh]\nuser = "{sshd.user}"\nkey_file = "{sshd.client_key}"\n'
            f"port = {sshd.port}\n\n[[sinks]]",
        )
        path = tmp_path / "agent.toml"
        path.write_text(text + "\n[remediation]\nrecheck_seconds = 0\n")
        config = load_config(path)
        target = SshTarget.for_counter(config.counter("FFC1"))
        assert target is not None
        config.agent.state_dir.mkdir(parents=True, exist_ok=True)
        enroll(target, config.agent.state_dir / "known_hosts")
        with Store.open(config.agent.state_dir) as store:
            yield clock, fleet, config, store, sshd


def ffc1_tickets(result):
    return [t for t in result.tickets if t.counters == ["FFC1"]]


def test_a_service_the_restart_heals_files_no_ticket(world):
    clock, _fleet, config, store, sshd = world
    sshd.write_state(service="failed")
    result = make_runner(config, store, clock=clock).run_cycle()
    assert ffc1_tickets(result) == []
    assert DeviceState.read(sshd.state_file).fixes == [RESTART]
    # healed in the cycle that saw it: no incident stays open, the repair is on record
    assert [i for i in store.incidents(open_only=True) if i.subject == "FFC1"] == []
    [attempt] = Rmas(store).attempts("FFC1")
    assert attempt.outcome.value == "healed" and attempt.step.value == "restart_service"
    health = next(a for a in result.assessed if a.finding.check_id == "counter.device.health")
    assert health.finding.code == "healed"


def test_an_incident_the_ladder_heals_closes_with_a_note(world):
    clock, _fleet, config, store, sshd = world
    config = config.model_copy(
        update={"agent": config.agent.model_copy(update={"confirm_checks": 2})}
    )
    sshd.write_state(service="failed")
    runner = make_runner(config, store, clock=clock)
    runner.run_cycle()  # first sighting: suspected, the device is not touched
    assert DeviceState.read(sshd.state_file).fixes == []
    result = runner.run_cycle()
    assert ffc1_tickets(result) == []
    assert DeviceState.read(sshd.state_file).fixes == [RESTART]
    [inc] = [i for i in store.incidents() if i.subject == "FFC1"]
    assert inc.state == "resolved" and inc.ticket_key is None
    assert "healed by the remediation ladder" in store.transitions(inc.id)[-1]["reason"]


def test_camera_missing_with_a_clear_view_and_normal_counts_is_no_rma(world):
    clock, _fleet, config, store, sshd = world
    sshd.write_state(camera=False)
    result = make_runner(config, store, clock=clock).run_cycle()
    [ticket] = ffc1_tickets(result)
    assert "RMA" not in ticket.subject and ticket.category == "Technical Issue"
    assert Rmas(store).all() == []
    health = next(a for a in result.assessed if a.finding.check_id == "counter.device.health")
    assert health.finding.code == "hardware_unconfirmed"
    assert "probe problem" in health.finding.summary


def test_camera_missing_with_a_covered_view_is_an_rma_request(world):
    clock, fleet, config, store, sshd = world
    sshd.write_state(camera=False)
    fleet.set_fault("FFC1", "covered")
    result = make_runner(config, store, clock=clock).run_cycle()
    [ticket] = ffc1_tickets(result)
    assert ticket.subject.startswith("RMA request")
    [rma] = Rmas(store).all()
    assert rma.counter == "FFC1" and rma.state.value == "requested"
    assert "camera not present" in rma.reason
    # the full request follows on the ticket, once: what FootfallCam needs to approve it
    bodies = [
        json.loads(r[0])["body"]
        for r in store._db.execute("SELECT payload FROM outbox WHERE kind = 'message' ORDER BY id")
    ]
    [body] = [b for b in bodies if b.startswith("RMA request for counter")]
    assert body.startswith("RMA request for counter FFC1 (Main door) at site LDN01")
    # then each move, once, as a line of the ticket's task list
    assert [b.splitlines()[0] for b in bodies if b.startswith("Task: ")] == [
        f"Task: RMA {state} (RMA {rma.id})" for state in ("candidate", "remediating", "requested")
    ]
    for part in (
        "firmware:",
        "camera not present",
        "reboot the counter (SSH): not healed",
        "Last good count: 20",
        "SoC temperature: 52.1 °C",
        "What colour is the counter's LED",
    ):
        assert part in body, part
    # the ticket's bundle lists the fixes tried (no more "No remediation was tried")
    [bundle] = (config.agent.state_dir / "tickets").rglob("ffc-bundle-*.tar.gz")
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("report.html"))
        extracted = tar.extractfile(member)
        assert extracted is not None
        report = extracted.read().decode()
    assert "No remediation was tried" not in report
    assert "reboot the counter (SSH) (agent)" in report


def test_a_spent_reboot_budget_is_said_in_the_ticket(world):
    from datetime import timedelta

    from rma.ladder import Attempt, Outcome, Step

    clock, _fleet, config, store, sshd = world
    for hours in (2, 5):  # two reboots today already, in earlier incidents
        Rmas(store).record_attempt(
            Attempt("FFC1", Step.REBOOT, NOW - timedelta(hours=hours), Outcome.HEALED)
        )
    sshd.write_state(service="failed", wedged=True)
    result = make_runner(config, store, clock=clock).run_cycle()
    assert DeviceState.read(sshd.state_file).fixes == [RESTART]  # no third reboot
    [ticket] = ffc1_tickets(result)
    text = json.dumps(ticket.to_json())
    assert "repair budget spent for today" in text and "2 a day" in text


def test_a_counter_healed_three_times_in_two_weeks_becomes_an_rma_candidate(world):
    from datetime import timedelta

    from rma.ladder import Attempt, Outcome, Step

    clock, _fleet, config, store, sshd = world
    for days in (3, 9):
        Rmas(store).record_attempt(
            Attempt("FFC1", Step.RESTART_SERVICE, NOW - timedelta(days=days), Outcome.HEALED)
        )
    sshd.write_state(service="failed")
    result = make_runner(config, store, clock=clock).run_cycle()
    assert ffc1_tickets(result) == []  # healed again, and up
    [rma] = Rmas(store).all()
    assert rma.state.value == "candidate" and "repeat offender: healed 3 times" in rma.reason


def test_a_red_led_reported_on_site_tips_a_doubtful_fault_into_an_rma(world):
    from agent.rma_flow import RmaFlow

    clock, _fleet, config, store, sshd = world
    runner = make_runner(config, store, clock=clock)
    RmaFlow(runner).start("FFC1", actor="alice", reason="store says red", reports={"led": "red"})
    sshd.write_state(camera=False)  # with a clear view: alone it would not be an RMA
    result = runner.run_cycle()
    [ticket] = ffc1_tickets(result)
    assert ticket.subject.startswith("RMA request")
    [rma] = Rmas(store).all()
    assert rma.state.value == "requested"
    moves = Rmas(store).moves(rma.id)
    assert "red LED" in moves[-1].reason and moves[0].actor == "alice"


def test_a_candidate_the_ladder_heals_goes_back_to_candidate_with_its_moves_recorded(world):
    from agent.rma_flow import RmaFlow

    clock, _fleet, config, store, sshd = world
    runner = make_runner(config, store, clock=clock)
    RmaFlow(runner).start("FFC1", actor="alice", reason="the store saw it flicker")
    sshd.write_state(service="failed")
    result = runner.run_cycle()
    assert ffc1_tickets(result) == []
    assert DeviceState.read(sshd.state_file).fixes == [RESTART]
    [rma] = Rmas(store).all()
    moves = Rmas(store).moves(rma.id)
    assert [(m.to_state.value, m.actor) for m in moves] == [
        ("candidate", "alice"),
        ("remediating", "agent"),
        ("candidate", "agent"),
    ]
    assert "restart the counting service" in moves[1].reason
    assert moves[2].reason.startswith("healed by the remediation ladder")
    assert rma.state.value == "candidate"


def _patient(config, seconds: float = 120.0):
    """The config with the real default: a reboot gets ``seconds`` to come back."""
    return config.model_copy(
        update={"remediation": config.remediation.model_copy(update={"recheck_seconds": seconds})}
    )


def test_a_reboot_is_rechecked_by_the_next_cycle_not_waited_for(world):
    from datetime import timedelta

    from simulator.shell import REBOOT

    clock, _fleet, config, store, sshd = world
    config = _patient(config)
    sshd.write_state(service="failed", wedged=True)  # a restart cannot help, a reboot can
    runner = make_runner(config, store, clock=clock)
    result = runner.run_cycle()
    assert ffc1_tickets(result) == []  # nothing filed while the counter boots
    restart, reboot = Rmas(store).attempts("FFC1")
    assert (restart.step.value, restart.outcome.value) == ("restart_service", "failed")
    assert reboot.step.value == "reboot" and reboot.outcome.value == "pending"
    until = (NOW + timedelta(seconds=120)).isoformat(timespec="seconds")
    assert f"awaiting recheck until {until}" in reboot.detail
    health = next(a for a in result.assessed if a.finding.check_id == "counter.device.health")
    assert health.verdict is not None and health.verdict.decision.value == "pending"
    assert health.verdict.until == NOW + timedelta(seconds=120)
    clock.advance(timedelta(seconds=60))
    result = runner.run_cycle()  # the next cycle finds it back: healed, no ticket
    assert ffc1_tickets(result) == []
    _restart, reboot = Rmas(store).attempts("FFC1")
    assert reboot.outcome.value == "healed", reboot.detail
    assert DeviceState.read(sshd.state_file).fixes == [RESTART, REBOOT]
    audited = [
        r[0] for r in store._db.execute("SELECT action FROM audit WHERE action LIKE 'remediate.%'")
    ]
    assert audited == ["remediate.restart_service", "remediate.reboot", "remediate.reboot.recheck"]


def test_a_reboot_that_does_not_bring_it_back_is_not_healed_once_its_time_is_over(world):
    from datetime import timedelta

    from simulator.shell import REBOOT

    clock, fleet, config, store, sshd = world
    config = _patient(config)
    sshd.write_state(camera=False)
    fleet.set_fault("FFC1", "covered")
    runner = make_runner(config, store, clock=clock)
    assert ffc1_tickets(runner.run_cycle()) == []
    [rma] = Rmas(store).all()
    assert rma.state.value == "remediating"
    clock.advance(timedelta(seconds=60))
    assert ffc1_tickets(runner.run_cycle()) == []  # still within its 120 s: still waiting
    [reboot] = Rmas(store).attempts("FFC1")
    assert reboot.outcome.value == "pending"
    clock.advance(timedelta(seconds=70))
    [ticket] = ffc1_tickets(runner.run_cycle())
    assert ticket.subject.startswith("RMA request")
    [reboot] = Rmas(store).attempts("FFC1")
    assert reboot.outcome.value == "not_healed"
    assert "not back by" in reboot.detail and "camera is still not detected" in reboot.detail
    assert DeviceState.read(sshd.state_file).fixes == [REBOOT]  # sent once, never again
    [rma] = Rmas(store).all()
    assert rma.state.value == "requested"


def _switch(config, tmp_path, port_says: str):
    """The config with a PoE script and a port status script (real scripts, run for real)."""
    import stat

    def script(name: str, body: str) -> str:
        path = tmp_path / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    poe = script("poe.sh", 'echo "port of $1 power-cycled"')
    status = script("port-status.sh", f'echo "port of $1: {port_says}"')
    remediation = config.remediation.model_copy(
        update={"poe_command": (poe, "{serial}"), "port_status_command": (status, "{serial}")}
    )
    return config.model_copy(update={"remediation": remediation})


def test_unreachable_with_link_and_power_after_every_fix_is_an_rma_request(world, tmp_path):
    clock, fleet, config, store, _sshd = world
    config = _switch(config, tmp_path, "link=up power=on")
    fleet.set_fault("FFC1", "offline")
    result = make_runner(config, store, clock=clock).run_cycle()
    [rma] = Rmas(store).all()
    assert rma.state.value == "requested"
    assert "unreachable (switch port: link up, power on)" in rma.reason
    steps = [(a.step.value, a.outcome.value) for a in Rmas(store).attempts("FFC1")]
    assert steps[-1] == ("poe_cycle", "not_healed")
    offline = next(a for a in result.assessed if a.finding.check_id == "counter.offline")
    assert offline.finding.evidence["switch_port"]["output"] == "port of FFC1: link=up power=on"
    request = offline.finding.evidence["rma_request"]
    assert "Switch port (the store's switch, asked" in request
    assert "switch port: link up, power on" in request


def test_unreachable_with_its_link_down_is_a_cabling_problem_not_an_rma(world, tmp_path):
    clock, fleet, config, store, _sshd = world
    config = _switch(config, tmp_path, "link=down power=on")
    fleet.set_fault("FFC1", "offline")
    result = make_runner(config, store, clock=clock).run_cycle()
    assert Rmas(store).all() == []
    [ticket] = ffc1_tickets(result)
    assert "RMA" not in ticket.subject and ticket.category == "Technical Issue"
    offline = next(a for a in result.assessed if a.finding.check_id == "counter.offline")
    assert "cabling or switch problem for the store" in offline.finding.summary
    assert offline.finding.evidence["switch_port"]["link"] is False


def test_a_red_led_reported_alone_requests_no_rma(world):
    from agent.rma_flow import RmaFlow

    clock, _fleet, config, store, sshd = world
    runner = make_runner(config, store, clock=clock)
    RmaFlow(runner).start("FFC1", actor="alice", reason="store says red", reports={"led": "red"})
    result = runner.run_cycle()  # nothing wrong with the counter: the report stays a report
    assert ffc1_tickets(result) == []
    # a fault the ladder cannot finish today (the reboots are spent): not a failed ladder
    from datetime import timedelta

    from rma.ladder import Attempt, Outcome, Step

    for hours in (2, 5):
        Rmas(store).record_attempt(
            Attempt("FFC1", Step.REBOOT, NOW - timedelta(hours=hours), Outcome.HEALED)
        )
    sshd.write_state(service="failed", wedged=True)
    result = runner.run_cycle()
    [ticket] = ffc1_tickets(result)
    assert "RMA" not in ticket.subject and ticket.category == "Technical Issue"
    assert "needs corroboration" in json.dumps(ticket.to_json())
    [rma] = Rmas(store).all()
    assert rma.state.value == "remediating"  # the ladder is not done with it: no request


def test_an_rma_the_ladder_opened_is_cancelled_when_the_ladder_heals_the_counter(world):
    from simulator.shell import REBOOT

    clock, _fleet, config, store, sshd = world
    # a reboot loop holds before any fix: the ladder opens the candidate itself
    hours = [3600.0 * k for k in range(1, 7)]
    sshd.write_state(service="failed", wedged=True, uptime_s=600.0, earlier_boots_ago_s=hours)
    result = make_runner(config, store, clock=clock).run_cycle()
    assert ffc1_tickets(result) == []  # the reboot brought the service back
    assert DeviceState.read(sshd.state_file).fixes == [RESTART, REBOOT]
    [rma] = Rmas(store).all()
    moves = Rmas(store).moves(rma.id)
    assert [(m.to_state.value, m.actor) for m in moves] == [
        ("candidate", "agent"),
        ("remediating", "agent"),
        ("cancelled", "agent"),
    ]
    assert "reboot loop" in moves[0].reason
    assert moves[2].reason == "healed by the remediation ladder: reboot the counter (SSH)"
