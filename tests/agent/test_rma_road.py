"""The RMA road end to end by hand: a cycle requests the RMA, then `ffc-agent rma …` walks it.

The simulator's counters serve their 7 days of history; a real sshd stands in for the device
shell. The simulator runs on a fake clock set to the real time, because the commands read the
system clock (only the clock is faked, and only for the simulated world).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from agent.app import App, make_runner
from agent.cli import cli
from agent.config import load_config
from agent.delivery.outbox import Outbox  # noqa: F401 - the outbox table is what we read
from agent.probes.ssh import SshTarget, enroll
from agent.rma_flow import RmaFlow
from agent.rmas import Rmas
from agent.store import Store
from diagnostics.model import SYSTEM_CLOCK
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

WEEK = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def floor15(at: datetime) -> datetime:
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


@pytest.fixture
def road(tmp_path, sshd):
    now = floor15(datetime.now(UTC))
    clock = FakeClock(now)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [
            SimCounter("FFC1", "Main door", "LDN01", base_rate=150.0),
            SimCounter("NEW1", "Spare", "LDN01", base_rate=150.0),
        ],
        seed=3,
        clock=clock,
    )
    with fleet:
        fleet.start()
        # a known hole: the counter was off for an hour two days ago
        hole = now - timedelta(days=2)
        clock.set(hole + timedelta(hours=1))
        fleet.set_fault("FFC1", "offline", since=hole)
        fleet.clear_fault("FFC1", "offline")
        clock.set(now)
        fleet.refresh()
        refs = tmp_path / "refs"
        fleet.write_references(refs)
        text = fleet.agent_config_toml(
            tmp_path / "state",
            refs,
            probe_timeout_seconds=3,
            agent={"confirm_checks": 1, "ssh_seconds": 0},
        )
        ssh = (
            f'[counters.ssh]\nuser = "{sshd.user}"\nkey_file = "{sshd.client_key}"\n'
            f"port = {sshd.port}\n\n"
        )
        # NEW1 is the spare in FootfallCam's stock, not one of the agent's counters
        first, second = text.split('serial = "NEW1"')
        head = first.rpartition("[[counters]]")[0]
        text = head + ssh + "[[sinks]]" + second.partition("[[sinks]]")[2]
        path = tmp_path / "agent.toml"
        path.write_text(
            text + "\n[remediation]\nrecheck_seconds = 0\nrma_counts_verify_hours = 0\n"
        )
        config = load_config(path)
        target = SshTarget.for_counter(config.counter("FFC1"))
        assert target is not None
        config.agent.state_dir.mkdir(parents=True, exist_ok=True)
        enroll(target, config.agent.state_dir / "known_hosts")
        yield clock, fleet, path, sshd, hole


def load_rma_ticket(path) -> str:
    """The ticket key FFC1's fault was filed under (the RMA's ticket)."""
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        [key] = {i.ticket_key for i in store.incidents() if i.subject == "FFC1" and i.ticket_key}
        return str(key)


def rma_cli(path, *args):
    result = CliRunner().invoke(cli, ["rma", *args, "--config", str(path), "--json"])
    return result.exit_code, result.stdout, result.stderr


def messages(path, key):
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        rows = store._db.execute(
            "SELECT payload FROM outbox WHERE key = ? AND kind = 'message'", (key,)
        ).fetchall()
    return [json.loads(r[0])["body"] for r in rows]


def test_rma_requested_rescued_shipped_replaced_verified(road):
    clock, fleet, path, sshd, hole = road
    sshd.write_state(camera=False)
    fleet.set_fault("FFC1", "covered")
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        make_runner(config, store, clock=clock).run_cycle()
    code, stdout, _ = rma_cli(path, "list")
    [listed] = json.loads(stdout)
    rma_id = listed["id"]
    assert listed["state"] == "requested" and listed["counter"] == "FFC1"

    # the moves so far are lines of the ticket's task list, posted with the request
    key = load_rma_ticket(path)
    requested = [
        m for m in messages(path, key) if m.startswith(f"Task: RMA requested (RMA {rma_id})")
    ]
    [line] = requested
    moved = datetime.fromisoformat(
        next(
            m
            for m in json.loads(rma_cli(path, "show", str(rma_id))[1])["moves"]
            if m["to"] == "requested"
        )["at"]
    )
    assert f"Status: open\nDue: {(moved + timedelta(days=1)).date().isoformat()}\n" in line
    assert "Type: support operation" in line and "by agent" in line
    code, _, stderr = rma_cli(path, "advance", str(rma_id), "shipped", "--note", "too soon")
    assert code == 1 and "cannot move to shipped (allowed: approved, cancelled, rejected)" in stderr
    code, _, _ = rma_cli(path, "advance", str(rma_id), "approved", "--note", "RMA-4711 approved")
    assert code == 0
    status = CliRunner().invoke(cli, ["status", "--config", str(path), "--json"])
    [ffc1] = [c for c in json.loads(status.stdout)["counters"] if c["serial"] == "FFC1"]
    assert ffc1["rma"] == {"id": rma_id, "state": "approved"}
    [approved] = [m for m in messages(path, key) if m.startswith("Task: RMA approved")]
    shown = json.loads(rma_cli(path, "show", str(rma_id))[1])
    at = datetime.fromisoformat(next(m["at"] for m in shown["moves"] if m["to"] == "approved"))
    assert f"Due: {(at + timedelta(days=3)).date().isoformat()}" in approved
    # shipping runs the rescue first: the returned unit's data would be lost
    code, stdout, _ = rma_cli(path, "advance", str(rma_id), "shipped", "--note", "DHL 123")
    assert code == 0 and json.loads(stdout)["state"] == "shipped"
    code, stdout, _ = rma_cli(path, "rescue", str(rma_id))  # by hand: already done
    assert code == 0
    rescued = json.loads(stdout)
    [gap] = [h for h in rescued["holes"] if h["start"] == hole.isoformat()]
    assert gap["slots"] == 4 and gap["end"] == (hole + timedelta(hours=1)).isoformat()
    assert rescued["held"] > 600 and "could not be recovered" in rescued["summary"]
    with open(rescued["csv"]) as fh:
        csv_lines = fh.read().splitlines()
    assert csv_lines[0] == "timestamp,counter,in,out" and len(csv_lines) == rescued["held"] + 1
    key = rescued["attached_to"]
    assert len([m for m in messages(path, key) if m.startswith("Data rescued")]) == 1
    # the replacement answers at the old unit's address: point FFC1's port at NEW1's server
    text = path.read_text()
    text = text.replace(f"port = {fleet.port('FFC1')}", f"port = {fleet.port('NEW1')}")
    path.write_text(text)
    code, stdout, _ = rma_cli(path, "verify-replacement", str(rma_id), "--serial", "WRONG")
    assert code == 1
    checks = {c["check"]: c["ok"] for c in json.loads(stdout)["checks"]}
    assert checks == {"answers": True, "serial": False}
    code, stdout, _ = rma_cli(path, "verify-replacement", str(rma_id), "--serial", "NEW1")
    assert code == 0, stdout
    result = json.loads(stdout)
    assert result["verified"]
    assert {c["check"] for c in result["checks"]} >= {"answers", "serial", "enrolled", "reference"}
    assert 'serial = "NEW1"' in path.read_text()  # the configuration moved
    [closing] = [m for m in messages(path, key) if m.startswith("The replacement unit NEW1")]
    assert "4 slots could not be recovered" in closing or "could not be recovered" in closing

    code, stdout, _ = rma_cli(path, "show", str(rma_id))
    shown = json.loads(stdout)
    assert [m["to"] for m in shown["moves"]] == [
        "candidate",
        "remediating",
        "requested",
        "approved",
        "shipped",
        "replaced",
        "verified",
    ]
    assert all(m["actor"] for m in shown["moves"])
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        assert Rmas(store).predecessors("NEW1") == ["FFC1"]
        # verified twice (a rerun): the closing message is not posted again
        flow = RmaFlow(make_runner(config, store, clock=clock), path)
        flow._closing_message(rma_id, "NEW1", clock.now())
    assert len([m for m in messages(path, key) if m.startswith("The replacement")]) == 1


def killed(path, crash_at: str, *args: str) -> int:
    """Run `ffc-agent rma …` in its own process, killed (SIGKILL) at ``crash_at``."""
    env = {**os.environ, "FFC_AGENT_TEST_CRASH_AT": crash_at}
    cmd = [sys.executable, "-m", "agent", "rma", *args, "--config", str(path), "--json"]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=240, check=False).returncode


def test_a_kill_at_each_step_resumes_and_nothing_is_done_twice(road):
    clock, fleet, path, sshd, _hole = road
    sshd.write_state(camera=False)
    fleet.set_fault("FFC1", "covered")
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        make_runner(config, store, clock=clock).run_cycle()
    [listed] = json.loads(rma_cli(path, "list")[1])
    rma_id = str(listed["id"])
    # killed after the move, before its task line was posted: the next command posts it
    assert killed(path, "rma.advance.moved", "advance", rma_id, "approved", "--note", "ok") == (
        -signal.SIGKILL
    )
    assert json.loads(rma_cli(path, "show", rma_id)[1])["state"] == "approved"
    for step in ("rma.rescue.pulled", "rma.rescue.written"):
        assert killed(path, step, "rescue", rma_id) == -signal.SIGKILL, step
    code, stdout, _ = rma_cli(path, "rescue", rma_id)
    assert code == 0
    key = json.loads(stdout)["attached_to"]
    assert rma_cli(path, "advance", rma_id, "shipped", "--note", "DHL")[0] == 0
    text = path.read_text()
    path.write_text(text.replace(f"port = {fleet.port('FFC1')}", f"port = {fleet.port('NEW1')}"))
    for step in ("rma.verify.enrolled", "rma.verify.checked", "rma.verify.advanced"):
        rc = killed(path, step, "verify-replacement", rma_id, "--serial", "NEW1")
        assert rc == -signal.SIGKILL, step
    code, stdout, _ = rma_cli(path, "verify-replacement", rma_id, "--serial", "NEW1")
    assert code == 0 and json.loads(stdout)["verified"], stdout
    bodies = messages(path, key)
    assert len([m for m in bodies if m.startswith("Data rescued")]) == 1
    assert len([m for m in bodies if m.startswith("The replacement unit NEW1")]) == 1
    tasks = [m.splitlines()[0] for m in bodies if m.startswith("Task: ")]
    assert tasks == [
        f"Task: RMA {state} (RMA {rma_id})"
        for state in (
            "candidate",
            "remediating",
            "requested",
            "approved",
            "shipped",
            "replaced",
            "verified",
        )
    ]
    moves = [m["to"] for m in json.loads(rma_cli(path, "show", rma_id)[1])["moves"]]
    assert moves == [
        "candidate",
        "remediating",
        "requested",
        "approved",
        "shipped",
        "replaced",
        "verified",
    ]
    # and the ticket's own task list holds one line per state, each past one done
    config = load_config(path)
    with App.open(config, clock) as app:
        # the `rma` commands ran in their own processes, on the real clock
        app.tickets.deliver(max(clock.now(), SYSTEM_CLOCK.now()))
        [ticket] = [t for t in app.sinks[0].list() if t.key == key]
    assert [(t.task, t.status) for t in ticket.tasks] == [
        (f"RMA {state}", "done") for state in moves
    ]


def check_killed(path, crash_at: str) -> int:
    """Run one cycle (`ffc-agent check`) in its own process, killed (SIGKILL) at ``crash_at``."""
    env = {**os.environ, "FFC_AGENT_TEST_CRASH_AT": crash_at}
    cmd = [sys.executable, "-m", "agent", "check", "--config", str(path), "--json"]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=240, check=False).returncode


def test_the_ladder_moves_the_candidate_through_remediating_and_a_kill_resumes_it(road):
    from simulator.shell import REBOOT, DeviceState

    clock, fleet, path, sshd, _hole = road
    sshd.write_state(camera=False)
    fleet.set_fault("FFC1", "covered")
    # killed after the candidate is opened, after it moved to remediating, after the reboot
    for step in ("rma.ladder.candidate", "rma.ladder.remediating", "remediate.reboot.recorded"):
        assert check_killed(path, step) == -signal.SIGKILL, step
    assert DeviceState.read(sshd.state_file).fixes == [REBOOT]
    [listed] = json.loads(rma_cli(path, "list")[1])
    assert listed["state"] == "remediating"
    clock.set(datetime.now(UTC))  # the killed runs used the real clock: carry on from there
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        make_runner(config, store, clock=clock).run_cycle()
        rmas = Rmas(store)
        [rma] = rmas.all()
        moves = rmas.moves(rma.id)
        [reboot] = rmas.attempts("FFC1")  # resumed: the reboot was not run again
        assert reboot.step.value == "reboot"
    assert DeviceState.read(sshd.state_file).fixes == [REBOOT]
    assert rma.state.value == "requested"
    assert [m.to_state.value for m in moves] == ["candidate", "remediating", "requested"]
    assert all(m.actor == "agent" for m in moves)
    assert "suspected hardware fault: camera not present" in moves[0].reason
    assert "safe remote fixes come first" in moves[1].reason
    assert "every safe fix tried" in moves[2].reason


def test_the_rescue_pulls_the_devices_count_file_over_ssh_and_names_the_slots_lost(road):
    _clock, _fleet, path, sshd, hole = road
    slot = timedelta(minutes=15)
    # the device's own file holds the first half of the hour its API lost, and two slots the
    # API served too (with other numbers: the API's stay, the file only fills what is missing)
    served = hole - 2 * slot
    sshd.write_state(
        stored_counts=[
            [served.isoformat(), "FFC1", 999, 999],
            [(served + slot).isoformat(), "FFC1", 999, 999],
            [hole.isoformat(), "FFC1", 7, 5],
            [(hole + slot).isoformat(), "FFC1", 3, 4],
        ]
    )
    code, stdout, _ = rma_cli(path, "start", "FFC1")
    assert code == 0
    rma_id = str(json.loads(stdout)["id"])
    code, stdout, _ = rma_cli(path, "rescue", rma_id)
    assert code == 0, stdout
    rescued = json.loads(stdout)
    assert "SSH count file (4 slots, 2 not held before)" in rescued["sources"]
    lost = [
        h for h in rescued["holes"] if hole <= datetime.fromisoformat(h["start"]) < hole + 4 * slot
    ]
    [gap] = lost
    assert gap == {
        "start": (hole + 2 * slot).isoformat(),
        "end": (hole + 4 * slot).isoformat(),
        "slots": 2,
    }
    assert f"{(hole + 2 * slot).isoformat(timespec='minutes')} to " in rescued["summary"]
    with open(rescued["csv"]) as fh:
        rows = fh.read().splitlines()
    assert (
        f"{hole.isoformat()},FFC1,7,5" in rows and f"{(hole + slot).isoformat()},FFC1,3,4" in rows
    )
    assert not [r for r in rows if r.endswith(",999,999")]  # the API's numbers were kept


def test_the_rescue_says_when_the_device_keeps_no_count_file(road):
    _clock, _fleet, path, _sshd, hole = road
    code, stdout, _ = rma_cli(path, "start", "FFC1")
    rma_id = str(json.loads(stdout)["id"])
    code, stdout, _ = rma_cli(path, "rescue", rma_id)
    assert code == 0
    rescued = json.loads(stdout)
    assert any("SSH: no count file on the device" in n for n in rescued["notes"])
    assert [h["slots"] for h in rescued["holes"] if h["start"] == hole.isoformat()] == [4]


def test_a_unit_that_cannot_be_reached_is_not_rescued_until_its_loss_is_accepted(road):
    clock, fleet, path, sshd, _hole = road
    fleet.set_fault("FFC1", "offline")
    sshd.stop()  # nothing answers: neither the API nor SSH
    code, stdout, _ = rma_cli(path, "start", "FFC1")
    rma_id = str(json.loads(stdout)["id"])
    code, stdout, _ = rma_cli(path, "rescue", rma_id)
    assert code == 1
    tried = json.loads(stdout)
    assert tried["reached"] is False
    assert any(n.startswith("local API:") for n in tried["notes"])
    assert any(n.startswith("SSH:") for n in tried["notes"])
    config = load_config(path)
    with App.open(config, clock) as app:
        assert not app.rmas.done(int(rma_id), "rescue")
        said = app.store._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'message' AND payload LIKE '%rescue%'"
        ).fetchone()[0]
    assert said == 0  # no "Data rescued" on the ticket for a rescue that read nothing
    human = CliRunner().invoke(cli, ["rma", "rescue", rma_id, "--config", str(path)])
    assert human.exit_code == 1 and "--accept-loss" in human.stdout

    code, stdout, _ = rma_cli(path, "rescue", rma_id, "--accept-loss")
    assert code == 0
    with App.open(config, clock) as app:
        assert app.rmas.done(int(rma_id), "rescue")
