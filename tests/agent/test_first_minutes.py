"""A newcomer's first ten minutes: the demo, the incident list, the README's commands as typed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.app import App
from agent.cli import cli
from agent.commands.common import CONFIG_ENV
from agent.config import load_config
from agent.delivery.sinks.base import content_type
from diagnostics.model import Finding, Status
from rma.tickets import Ticket

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 26, 14, 30, tzinfo=UTC)

CONFIG = """
[agent]
state_dir = "state"
requester = "it@example.com"

[[sites]]
code = "LDN01"
name = "London"
timezone = "Europe/London"
opening_hours = { mon = "09:00-17:30" }

[[counters]]
serial = "FFC0001"
name = "Main door"
site = "LDN01"
host = "127.0.0.1"
"""


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ffc-agent.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def add_incident(config: Path, check_id: str, site: str, subject: str, state: str) -> int:
    cfg = load_config(config)
    finding = Finding(check_id, Status.FAIL, "x", f"{check_id} is failing", NOW, site, subject)
    with App.open(cfg) as app:
        inc = app.store.create_incident(
            check_id=check_id,
            site=site,
            subject=subject,
            state=state,
            code="x",
            summary=finding.summary,
            at=NOW - timedelta(hours=1),
            finding=finding.to_json(),
            reason="test",
        )
    return inc.id


# --- the demo


@pytest.mark.integration
def test_demo_is_about_its_store_and_leaves_nothing_behind(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "TMPDIR": str(scratch)},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    # the machine the demo runs on is not a problem of the simulated store
    assert not any(f["check_id"].startswith("gateway.") for f in data["findings"])
    assert {f["verdict"] for f in data["findings"]} <= {"genuine", "pending"}
    assert {f["verdict"] for f in data["ruled_out"]} == {"false_alarm"}
    assert {f["counter"] for f in data["ruled_out"]} == {"FFC2001"}
    # every ticket lists what is attached to it, as filed
    assert data["tickets"]
    for ticket in data["tickets"]:
        names = [a["name"] for a in ticket["attachments"]]
        assert any(n.endswith(".tar.gz") for n in names), ticket["number"]
        bundle = next(a for a in ticket["attachments"] if a["name"].endswith(".tar.gz"))
        assert bundle["content_type"] == "application/gzip"
        assert bundle["size"] > 0 and len(bundle["sha256"]) == 64
    # without --state-dir, nothing is left in the temporary directory
    assert list(scratch.iterdir()) == []
    assert data["state_dir"] is None


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_demo_stopped_by_a_signal_leaves_nothing_behind(tmp_path: Path, sig: int) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "demo", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
        cwd=tmp_path,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # said once the state directory and the fleet exist
        assert "simulated store" in first, first
        assert [p.name[:15] for p in scratch.iterdir()] == ["ffc-agent-demo-"]
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert list(scratch.iterdir()) == []


def test_a_gzipped_tar_is_labelled_gzip() -> None:
    assert content_type("ffc-bundle-LDN01.tar.gz") == "application/gzip"
    assert content_type("estimate-FFC1004.csv") == "text/csv"
    assert content_type("noise") == "application/octet-stream"


# --- incidents and tickets


def test_incidents_lists_open_ones_with_their_ids(config: Path) -> None:
    gateway = add_incident(config, "gateway.health", "", "", "open")
    counter = add_incident(config, "counter.offline", "LDN01", "FFC0001", "open")
    done = invoke("incidents", "--config", str(config), "--json")
    assert done.exit_code == 0, done.output
    rows = json.loads(done.stdout)
    assert [r["id"] for r in rows] == [gateway, counter]
    assert rows[0]["ticketed"] is False and rows[1]["ticketed"] is True
    assert rows[1]["subject"] == "FFC0001" and rows[1]["check_id"] == "counter.offline"
    table = invoke("incidents", "--config", str(config))
    assert table.exit_code == 0
    assert "counter.offline" in table.stdout and "gateway.health" in table.stdout


def test_incidents_all_includes_resolved_ones(config: Path) -> None:
    add_incident(config, "counter.offline", "LDN01", "FFC0001", "resolved")
    assert json.loads(invoke("incidents", "--config", str(config), "--json").stdout) == []
    every = json.loads(invoke("incidents", "--all", "--config", str(config), "--json").stdout)
    assert [r["state"] for r in every] == ["resolved"]
    assert "no open incidents" in invoke("incidents", "--config", str(config)).stdout


def test_incidents_is_a_listed_command() -> None:
    done = invoke("--help")
    assert re.search(r"^\s+incidents\s", done.stdout, flags=re.M)


def test_preview_of_a_gateway_incident_says_why_there_is_no_ticket(config: Path) -> None:
    gateway = add_incident(config, "gateway.health", "", "", "open")
    done = invoke("tickets", "preview", str(gateway), "--config", str(config))
    assert done.exit_code == 1
    assert "KeyError" not in done.output and "unknown site" not in done.output
    assert "gateway" in done.output and "no support ticket" in done.output
    missing = invoke("tickets", "preview", "99", "--config", str(config))
    assert missing.exit_code == 1 and "ffc-agent incidents" in missing.output


def test_tickets_show_takes_the_bare_number(tmp_path: Path) -> None:
    from agent.delivery.sinks import LocalSink

    sink = LocalSink(tmp_path / "state" / "tickets")
    ticket = Ticket.from_json(
        {
            "key": "ffc-test-1",
            "issue_level": "counter",
            "counter_unassigned": False,
            "site": "LDN01",
            "counters": ["FFC0001"],
            "subject": "Counter FFC0001 offline",
            "category": "Technical Issue",
            "occurred_on": "2026-06-26",
            "comment": {"what": "w", "where": "w", "when": "w", "which_device": "w", "how": "w"},
            "requester": "it@example.com",
            "created_at": NOW.isoformat(),
            "updated_at": NOW.isoformat(),
        }
    )
    filed = sink.file(ticket)
    assert filed.number == "L-000001"
    state = str(tmp_path / "state")
    for number in ("L-000001", "1", "000001"):
        done = invoke("tickets", "show", number, "--state-dir", state, "--json")
        assert done.exit_code == 0, (number, done.output)
        assert json.loads(done.stdout)["number"] == "L-000001"
    assert invoke("tickets", "show", "2", "--state-dir", state).exit_code == 1


def _ticket(n: int, attachments: list[dict[str, object]] | None = None) -> Ticket:
    return Ticket.from_json(
        {
            "key": f"ffc-test-{n}",
            "issue_level": "counter",
            "counter_unassigned": False,
            "site": "LDN01",
            "counters": ["FFC0001"],
            "subject": f"Counter FFC0001 problem {n}",
            "category": "Technical Issue",
            "occurred_on": "2026-06-26",
            "comment": {"what": "w", "where": "w", "when": "w", "which_device": "w", "how": "w"},
            "requester": "it@example.com",
            "created_at": NOW.isoformat(),  # one cycle files them all at the same time
            "updated_at": NOW.isoformat(),
            "attachments": attachments or [],
        }
    )


def test_tickets_list_is_newest_first_when_one_cycle_filed_several(tmp_path: Path) -> None:
    from agent.delivery.sinks import LocalSink

    sink = LocalSink(tmp_path / "state" / "tickets")
    for n in range(1, 5):
        sink.file(_ticket(n))
    done = invoke("tickets", "list", "--state-dir", str(tmp_path / "state"), "--json")
    assert [r["number"] for r in json.loads(done.stdout)] == [
        "L-000004",
        "L-000003",
        "L-000002",
        "L-000001",
    ]


def test_tickets_show_wraps_attachment_lines_at_80_columns(tmp_path: Path) -> None:
    from agent.delivery.sinks import LocalSink

    digest = "a5c6572ef6da64133448b2791b061926ae605a348bf5e69fe85ffb569c6d4493"
    name = "ffc-bundle-LDN01-ffc-c25112d3b51c866b-20261204T152000Z.tar.gz"
    sink = LocalSink(tmp_path / "state" / "tickets")
    sink.file(
        _ticket(
            1,
            [{"name": name, "content_type": "application/gzip", "size": 40000, "sha256": digest}],
        )
    )
    done = CliRunner().invoke(
        cli, ["tickets", "show", "1", "--state-dir", str(tmp_path / "state")], env={"COLUMNS": "80"}
    )
    assert done.exit_code == 0, done.output
    flat = "".join(done.output.split())  # wrapped is fine, cut is not
    assert name in flat and "application/gzip" in flat and digest in flat


def test_preview_of_a_filed_incident_shows_its_ticket_number(config: Path) -> None:
    incident = add_incident(config, "counter.offline", "LDN01", "FFC0001", "open")
    with App.open(load_config(config)) as app:
        app.store.set_incident_ticket(incident, "ffc-test-1", "L-000007")
    done = invoke("tickets", "preview", str(incident), "--config", str(config), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["ticket"]["number"] == "L-000007"


def test_tickets_sync_speaks_in_sentences(config: Path) -> None:
    done = invoke("tickets", "sync", "--config", str(config))
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == ["delivered 0 tickets", "no status changes, nothing waiting"]
    assert "[]" not in done.output and "{}" not in done.output


def test_tickets_sync_beside_a_delivering_service_says_so(config: Path) -> None:
    import fcntl

    with App.open(load_config(config)) as app:
        lock = app.outbox.lock_path
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the service holds it mid-pass
        done = invoke("tickets", "sync", "--config", str(config), "--json")
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["delivering_elsewhere"] is True
        said = invoke("tickets", "sync", "--config", str(config)).output
        assert "another ffc-agent process" in said
    finally:
        os.close(fd)
    done = invoke("tickets", "sync", "--config", str(config), "--json")
    assert json.loads(done.stdout)["delivering_elsewhere"] is False


# --- config check, as the README types it


def test_config_check_without_file_checks_the_configured_one(config: Path) -> None:
    done = invoke("config", "check", env={CONFIG_ENV: str(config)})
    assert done.exit_code == 0, done.output
    assert f"{config}: OK (1 site, 1 counter, 1 sink)" in done.output
    flag = invoke("config", "check", "--config", str(config))
    assert flag.exit_code == 0 and "OK" in flag.output


def test_a_missing_config_names_the_ways_to_give_one(tmp_path: Path) -> None:
    nowhere = tmp_path / "etc" / "ffc-agent.toml"
    for args in (["config", "check"], ["status"], ["incidents"]):
        done = invoke(*args, env={CONFIG_ENV: str(nowhere)})
        assert done.exit_code == 78, args
        assert str(nowhere) in done.output
        assert "--config" in done.output and CONFIG_ENV in done.output


def test_simulate_help_lists_every_fault_kind_and_says_it_blocks() -> None:
    from simulator.faults import FAULT_KINDS

    done = invoke("simulate", "--help")
    assert done.exit_code == 0
    text = " ".join(done.stdout.split())
    for kind in FAULT_KINDS:
        assert re.search(rf"\b{kind}\b", text), kind
    assert "Blocks until Ctrl-C" in text


def test_readme_commands_table_names_the_incidents_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| `incidents [--all] [--json]` |" in readme
    assert "`config check [FILE] / config example`" in readme


# --- wording


def test_status_does_not_say_no_twice(config: Path) -> None:
    from diagnostics.model import Observation, ProbeError, ProbeErrorCode

    with App.open(load_config(config)) as app:
        error = ProbeError(ProbeErrorCode.TIMEOUT, "no answer in time")
        app.store.add_observation(Observation.failed("FFC0001", "api", NOW, error))
    done = invoke("status", "--config", str(config))
    assert done.exit_code == 0, done.output
    text = " ".join(done.stdout.split())
    assert "no no" not in text
    assert "no (last" in text and "no answer in" in text  # the cell wraps in a narrow table


def test_silence_list_shows_minutes_not_microseconds(config: Path) -> None:
    added = invoke(
        "silence", "add", "FFC0001", "--for", "2h", "--reason", "refit", "--config", str(config)
    )
    assert added.exit_code == 0, added.output
    done = invoke("silence", "list", "--config", str(config))
    assert done.exit_code == 0, done.output
    assert "FFC0001" in done.stdout
    assert not re.search(r"\d\d:\d\d:\d\d\.\d+", done.stdout)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", done.stdout)


@pytest.mark.integration
def test_simulate_counts_in_words_and_removes_its_reference_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import tempfile
    import threading

    from simulator import run_standalone

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stop = threading.Event()
    stop.set()  # serve, print, and stop at once
    config = io.StringIO()
    assert run_standalone(counters=1, out=config, stop=stop) == 0
    assert "simulating 1 counter on 127.0.0.1" in capsys.readouterr().err
    refs = re.search(r'reference_image = "([^"]+)"', config.getvalue())
    assert refs and Path(refs.group(1)).parent.parent == tmp_path
    assert list(tmp_path.iterdir()) == []  # the ffc-sim-refs-* folder went with the fleet
