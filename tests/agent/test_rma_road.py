"""The RMA road end to end by hand: a cycle requests the RMA, then `ffc-agent rma …` walks it.

The simulator's counters serve their 7 days of history; a real sshd stands in for the device
shell. The simulator runs on a fake clock set to the real time, because the commands read the
system clock (only the clock is faked, and only for the simulated world).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.config import load_config
from agent.delivery.outbox import Outbox  # noqa: F401 - the outbox table is what we read
from agent.probes.ssh import SshTarget, enroll
from agent.rma_flow import RmaFlow
from agent.rmas import Rmas
from agent.runner import Runner
from agent.store import Store
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
        Runner(config, store, clock=clock).run_cycle()
    code, stdout, _ = rma_cli(path, "list")
    [listed] = json.loads(stdout)
    rma_id = listed["id"]
    assert listed["state"] == "requested" and listed["counter"] == "FFC1"

    code, _, stderr = rma_cli(path, "advance", str(rma_id), "shipped", "--note", "too soon")
    assert code == 1 and "cannot move to shipped (allowed: approved, cancelled, rejected)" in stderr
    code, _, _ = rma_cli(path, "advance", str(rma_id), "approved", "--note", "RMA-4711 approved")
    assert code == 0
    code, _, stderr = rma_cli(path, "advance", str(rma_id), "shipped", "--note", "courier")
    assert code == 1 and "rescue the unit's data before shipping it" in stderr

    code, stdout, _ = rma_cli(path, "rescue", str(rma_id))
    assert code == 0
    rescued = json.loads(stdout)
    [gap] = [h for h in rescued["holes"] if h["start"] == hole.isoformat()]
    assert gap["slots"] == 4 and gap["end"] == (hole + timedelta(hours=1)).isoformat()
    assert rescued["held"] > 600 and "could not be recovered" in rescued["summary"]
    csv_lines = open(rescued["csv"]).read().splitlines()
    assert csv_lines[0] == "timestamp,counter,in,out" and len(csv_lines) == rescued["held"] + 1
    key = rescued["attached_to"]
    # rescued again (a rerun after a kill): nothing is pulled or attached twice
    code, again, _ = rma_cli(path, "rescue", str(rma_id))
    assert json.loads(again) == rescued
    assert len([m for m in messages(path, key) if m.startswith("Data rescued")]) == 1

    code, _, _ = rma_cli(path, "advance", str(rma_id), "shipped", "--note", "DHL 123")
    assert code == 0
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
        flow = RmaFlow(Runner(config, store, clock=clock), path)
        flow._closing_message(rma_id, "NEW1", clock.now())
    assert len([m for m in messages(path, key) if m.startswith("The replacement")]) == 1
