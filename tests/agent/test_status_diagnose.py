"""`ffc-agent status` (reads the state, probes nothing) and `ffc-agent diagnose COUNTER`."""

import json
import re
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.config import load_config
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

WEEK = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def invoke(*args, clock=None):
    return CliRunner().invoke(cli, list(args), obj={"clock": clock} if clock else None)


@pytest.fixture
def site(tmp_path, sshd):
    # the real clock: status and diagnose are run by people, now
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [
            SimCounter("C1", "Main door", "LDN01", base_rate=200.0),
            SimCounter("C2", "Side door", "LDN01", base_rate=150.0),
            SimCounter("C3", "Back door", "LDN01", base_rate=150.0),
        ],
        seed=4,
        clock=clock,
    )
    with fleet:
        fleet.start()
        fleet.set_fault("C2", "offline")
        fleet.write_references(tmp_path / "refs")
        text = fleet.agent_config_toml(
            tmp_path / "state",
            tmp_path / "refs",
            probe_timeout_seconds=2,
            agent={"confirm_checks": 1},
        )
        text = text.replace(
            "[[sinks]]",
            f"""[counters.ssh]
user = "{sshd.user}"
key_file = "{sshd.client_key}"
port = {sshd.port}

[[sinks]]""",
        )  # the last counter, C3, is reachable over SSH
        path = tmp_path / "agent.toml"
        path.write_text(text)
        yield clock, path, sshd, fleet


def test_status_shows_the_fleet_from_the_state_alone(site):
    clock, path, *_ = site
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        make_runner(config, store, clock=clock).run_cycle()
    result = invoke("status", "--config", str(path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by = {c["serial"]: c for c in data["counters"]}
    assert by["C1"]["reachable"] is True and by["C1"]["last_slot"]
    local = clock.now().astimezone(ZoneInfo("Europe/London"))
    if local.hour >= 1:  # just after the site's midnight no slot of today is complete yet
        assert by["C1"]["today"]["counted"] > 0 and by["C1"]["today"]["expected"] is not None
    assert by["C2"]["reachable"] is False and "refused" in by["C2"]["last_error"]
    [incident] = by["C2"]["incidents"]
    assert incident["check_id"] == "counter.offline" and incident["ticket"]
    assert data["gateway"]["status"] in ("ok", "warn", "fail")
    assert data["outbox"] == {"pending": {}, "failed": 0}
    human = invoke("status", "--config", str(path))
    assert human.exit_code == 0 and "C2" in human.output and "outbox" in human.output


def test_diagnose_runs_the_checklist_with_a_verdict_and_a_bundle(site, tmp_path):
    _clock, path, sshd, _fleet = site
    assert invoke("enroll", "C3", "--config", str(path)).exit_code == 0
    sshd.write_state(camera=False)
    result = invoke("diagnose", "C3", "--config", str(path), "--json", "-o", str(tmp_path / "b"))
    assert result.exit_code == 2, result.output  # faulty: CRITICAL, as `check` says it
    data = json.loads(result.stdout)
    assert data["verdict"] == "faulty" and data["exit_code"] == 2
    steps = {s["step"]: s for s in data["steps"]}
    assert steps["probe api"]["ok"] and steps["probe ssh"]["ok"] and steps["probe snapshot"]["ok"]
    assert not steps["counter.device.health"]["ok"]
    assert "camera" in steps["counter.device.health"]["detail"]
    # the time once in the name, from the bundle itself (not again in its key)
    name = Path(data["bundle"]).name
    assert re.fullmatch(r"ffc-bundle-LDN01-diagnose-C3-\d{8}T\d{6}Z\.tar\.gz", name), name
    with tarfile.open(data["bundle"]) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]  # under one folder
    assert "manifest.json" in names and "report.html" in names
    assert any(n.startswith("device/") for n in names)
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        [row] = store._db.execute("SELECT actor, target FROM audit WHERE action = 'diagnose'")
    assert row["target"] == "C3" and row["actor"]

    healthy = invoke("diagnose", "C1", "--config", str(path), "-o", str(tmp_path / "b"))
    assert healthy.exit_code == 0 and "C1: healthy" in healthy.output
    # C1 has no SSH: its health check is skipped, which is neither a pass nor a failure
    [health] = [line for line in healthy.output.splitlines() if "counter.device.health" in line]
    assert health.startswith("– ") and "✓" not in health, health
    offline = invoke("diagnose", "C2", "--config", str(path), "-o", str(tmp_path / "b"))
    assert offline.exit_code == 2 and "C2: faulty" in offline.output
    unknown = invoke("diagnose", "NOPE", "--config", str(path))
    assert unknown.exit_code == 2


def test_diagnose_calls_a_view_still_being_confirmed_suspect_not_healthy(site, tmp_path):
    clock, path, _sshd, fleet = site
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        make_runner(config, store, clock=clock).run_cycle()
    # five minutes on, C1's view is covered: one blocked snapshot of the three that confirm it
    clock.set(clock.now() + timedelta(minutes=5))
    fleet.set_fault("C1", "covered")
    fleet.refresh()
    b = str(tmp_path / "b")
    result = invoke("diagnose", "C1", "--config", str(path), "--json", "-o", b, clock=clock)
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "suspect" and data["exit_code"] == 1
    [view] = [s for s in data["steps"] if s["step"] == "counter.liveview.blocked"]
    assert view["status"] == "pending" and "awaiting confirmation" in view["detail"]
    human = invoke("diagnose", "C1", "--config", str(path), "-o", b, clock=clock)
    assert human.exit_code == 1
    assert "C1: suspect (awaiting confirmation)" in human.output
    assert "healthy" not in human.output


def fits_80_columns(text, *idents):
    """Every line within 80 columns, nothing cut to an ellipsis, each identifier whole."""
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text
    words = set(re.findall(r"[\w.:/-]+", text))
    for ident in idents:
        assert ident in words, (ident, text)


def test_status_incidents_and_check_at_80_columns_cut_no_identifier(site):
    clock, path, *_ = site
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        make_runner(config, store, clock=clock).run_cycle()
        [ticket] = [i.ticket_number for i in store.incidents(open_only=True) if i.subject == "C2"]
    assert ticket
    env = {"COLUMNS": "80"}
    status = CliRunner(env=env).invoke(cli, ["status", "--config", str(path)])
    assert status.exit_code == 0, status.output
    fits_80_columns(status.output, "C1", "C2", "C3", "LDN01", ticket)
    listed = CliRunner(env=env).invoke(cli, ["incidents", "--config", str(path)])
    assert listed.exit_code == 0, listed.output
    # the summary is not squeezed away, and the check id heading it reads whole
    fits_80_columns(listed.output, "C2", ticket, "refuses", "counter.offline")
    checked = CliRunner(env=env).invoke(cli, ["check", "--config", str(path)], obj={"clock": clock})
    assert checked.exit_code == 2, checked.output
    table = checked.output.split("\n", 1)[1]  # the plugin's status line is one long line
    fits_80_columns(table, "C1", "C2", "C3", "LDN01", "refuses")


def test_assess_from_the_store_names_missing_counts_and_an_unknown_live_view(site):
    clock, path, *_ = site
    config = load_config(path)
    with Store.open(config.agent.state_dir) as store:
        make_runner(config, store, clock=clock).run_cycle()
    result = CliRunner().invoke(cli, ["assess", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    # offline C2 sent nothing: the store has no counts for it (there is no file here)
    assert "warning: no stored counts for C2 (LDN01): not judged" in result.stderr
    assert "in the file" not in result.stderr
    data = json.loads(result.stdout)
    [offline] = [p for p in data["problems"] if p["counter"] == "C2"]
    [view] = [q for q in offline["checklist"] if q["question"] == "Is its live view clear?"]
    # an offline counter's view was never seen: not clear, unknown
    assert view["answer"].startswith("unknown, at ") and "no snapshot" in view["answer"]
    assert view["points_to"] == "unknown"
    # C3 (its SSH host key not yet enrolled) answers: its view was seen, and clear
    [online] = [p for p in data["problems"] if p["counter"] == "C3"]
    [clear] = [q for q in online["checklist"] if q["question"] == "Is its live view clear?"]
    assert clear["answer"].startswith("yes, at ") and "clear" in clear["answer"]


def test_bundle_create_names_the_bundle_with_one_timestamp(site, tmp_path, monkeypatch):
    _clock, path, *_ = site
    monkeypatch.chdir(tmp_path)  # the bundle is written to the working directory
    result = CliRunner().invoke(cli, ["bundle", "create", "C1", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert re.fullmatch(r"ffc-bundle-LDN01-manual-C1-\d{8}T\d{6}Z\.tar\.gz", data["path"])
    assert (tmp_path / data["path"]).stat().st_size == data["size"]
