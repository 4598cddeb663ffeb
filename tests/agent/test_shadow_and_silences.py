"""Silences and shadow mode through the real cycle and the command line."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.commands.silence import parse_duration
from agent.config import load_config
from agent.delivery.sinks import LocalSink
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def site(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)  # the CLI's silences use the real clock
    clock = FakeClock(now)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter(f"C{i}", f"Door {i}", "LDN01", base_rate=100.0) for i in (1, 2, 3, 4, 5)],
        seed=5,
        clock=clock,
    )
    with fleet:
        fleet.start()
        fleet.set_fault("C2", "offline")
        fleet.set_fault("C3", "offline")
        text = fleet.agent_config_toml(
            tmp_path / "state", probe_timeout_seconds=2, agent={"confirm_checks": 1}
        )
        path = tmp_path / "agent.toml"
        path.write_text(text)
        yield clock, path


def cycle(path, clock):
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        result = make_runner(config, store, clock=clock).run_cycle()
    return {
        a.finding.subject: a for a in result.assessed if a.finding.check_id == "counter.offline"
    }, result


def test_a_silence_holds_findings_until_it_is_removed(site):
    clock, path = site
    added = invoke(
        "silence",
        "add",
        "C2",
        "--for",
        "2h",
        "--reason",
        "rewiring",
        "--config",
        str(path),
        "--json",
    )
    assert added.exit_code == 0, added.output
    silence_id = json.loads(added.stdout)["id"]
    listed = json.loads(invoke("silence", "list", "--config", str(path), "--json").output)
    assert [(s["id"], s["target"], s["reason"]) for s in listed] == [(silence_id, "C2", "rewiring")]
    clock.set(datetime.now(UTC))  # the silence began when the command ran
    found, result = cycle(path, clock)
    assert found["C2"].verdict.decision == "pending" and found["C2"].verdict.rule == "silenced"
    assert found["C3"].genuine
    assert [t.counters for t in result.tickets] == [["C3"]]

    removed = invoke("silence", "remove", str(silence_id), "--config", str(path))
    assert removed.exit_code == 0
    assert json.loads(invoke("silence", "list", "--config", str(path), "--json").output) == []
    found, result = cycle(path, clock)
    assert found["C2"].genuine and [t.counters for t in result.tickets] == [["C2"]]
    again = invoke("silence", "remove", str(silence_id), "--config", str(path))
    assert again.exit_code == 1 and "no silence" in again.output


def test_silence_mistakes_are_clear(site):
    _, path = site
    result = invoke("silence", "add", "NOPE", "--for", "2h", "--reason", "x", "--config", str(path))
    assert result.exit_code == 2 and "NOPE" in result.output
    result = invoke("silence", "add", "C1", "--for", "soon", "--reason", "x", "--config", str(path))
    assert result.exit_code == 2 and "duration" in result.output


def test_a_maintenance_window_starts_later(site):
    clock, path = site
    start = (clock.now() + timedelta(hours=1)).isoformat()
    result = invoke(
        "silence",
        "add",
        "LDN01",
        "--for",
        "1h",
        "--start",
        start,
        "--reason",
        "firmware upgrade",
        "--config",
        str(path),
    )
    assert result.exit_code == 0
    found, _ = cycle(path, clock)
    assert found["C2"].genuine  # not yet begun
    clock.set(clock.now() + timedelta(hours=1, minutes=5))
    found, _ = cycle(path, clock)
    assert found["C2"].verdict.rule == "silenced" and found["C3"].verdict.rule == "silenced"


def test_shadow_mode_decides_as_usual_but_files_nothing(site):
    clock, path = site
    path.write_text(
        path.read_text().replace(
            "confirm_checks = 1", 'confirm_checks = 1\nshadow_checks = ["counter.offline"]'
        )
    )
    empty = invoke("shadow", "report", "--config", str(path))  # nothing yet: two lines
    assert empty.exit_code == 0, empty.output
    lines = empty.stdout.splitlines()
    assert [line.split(" since ")[0] for line in lines] == [
        "nothing held back",
        "nothing ruled out as a false alarm",
    ]
    _, result = cycle(path, clock)
    assert result.tickets == []
    config = load_config(path)
    assert LocalSink(config.agent.state_dir / "tickets").list() == []
    report = invoke("shadow", "report", "--config", str(path), "--json")
    assert report.exit_code == 0, report.output
    data = json.loads(report.stdout)
    held = sorted(h["ticket"]["counters"][0] for h in data["would_have_filed"])
    assert held == ["C2", "C3"]
    assert all(
        "counter.offline runs in shadow mode" in h["why_held"] for h in data["would_have_filed"]
    )
    human = invoke("shadow", "report", "--config", str(path))
    assert human.exit_code == 0 and "Would have filed" in human.output
    assert data["ruled_out"] == []  # and no empty table for it under the held tickets
    assert "Ruled out as false alarms" not in human.stdout
    assert "nothing ruled out as a false alarm since" in human.stdout


def test_durations():
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("3d") == timedelta(days=3)
    for bad in ("", "2", "h", "2x", "0m", "2h and a bit"):
        with pytest.raises(ValueError):
            parse_duration(bad)
