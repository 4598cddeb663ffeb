"""``ffc-agent analyze audit``: a manual tally against the counts in the agent's own store."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from agent.config import load_config
from agent.store import Store
from diagnostics.model import CountSlot
from simulator import FakeClock
from tests.agent.test_attach import write_config

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SERIAL = "FC3D000101"


def setup(tmp_path: Path, factor_out: float) -> tuple[Path, Path]:
    """A store holding 15-minute slots from 09:00 to 13:00, and a tally of eight half hours
    of it: the counter is right on IN and counts ``factor_out`` of the OUT."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path)
    rows = ["start,end,in,out"]
    slots = []
    for i in range(8):
        start = T0 + timedelta(minutes=30 * i)
        tin, tout = 40 + 7 * i, 30 + 5 * i
        rows.append(
            f"{start.isoformat()},{(start + timedelta(minutes=30)).isoformat()},{tin},{tout}"
        )
        cout = round(tout * factor_out)
        for j, (a, b) in enumerate(((tin // 2, cout // 2), (tin - tin // 2, cout - cout // 2))):
            slots.append(CountSlot(SERIAL, start + timedelta(minutes=15 * j), 15, a, b))
    with Store.open(load_config(config).agent.state_dir) as store:
        store.add_slots(slots, T0 + timedelta(hours=5))
    tally = tmp_path / "manual.csv"
    tally.write_text("\n".join(rows) + "\n")
    return config, tally


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), obj={"clock": FakeClock(T0 + timedelta(days=1))})


def test_a_right_counter_passes_and_a_short_one_fails_with_a_file_to_attach(tmp_path: Path):
    config, tally = setup(tmp_path, factor_out=1.0)
    result = invoke(
        "analyze", "audit", str(tally), "--counter", SERIAL, "--config", str(config), "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "passes" and data["full_windows"] == 8
    assert [d["accuracy"] for d in data["directions"]] == [1.0, 1.0]

    config, tally = setup(tmp_path / "short", factor_out=0.85)
    report = tmp_path / "audit.csv"
    result = invoke(
        "analyze",
        "audit",
        str(tally),
        "--counter",
        SERIAL,
        "--config",
        str(config),
        "--output",
        str(report),
    )
    assert result.exit_code == 2, result.output  # fails: CRITICAL, as `check` would say
    assert "fails" in result.stdout and "OUT" in result.stdout
    assert "8 full windows, 0 partial" in result.stdout
    assert "tickets attach" in result.stderr
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 8 + 2
    assert rows[-1]["direction"] == "out" and rows[-1]["verdict"] == "fails"


def test_an_unknown_counter_or_a_bad_tally_is_refused(tmp_path: Path):
    config, tally = setup(tmp_path, factor_out=1.0)
    result = invoke("analyze", "audit", str(tally), "--counter", "NOPE", "--config", str(config))
    assert result.exit_code == 2 and "NOPE" in result.output
    tally.write_text("start,end,in,out\n2026-11-23T09:00:00,2026-11-23T09:30:00,1,1\n")
    result = invoke("analyze", "audit", str(tally), "--counter", SERIAL, "--config", str(config))
    assert result.exit_code == 65 and "line 2" in result.stderr


def test_a_counter_without_stored_counts_is_said_so_not_inconclusive(tmp_path: Path):
    config, tally = setup(tmp_path, factor_out=1.0)
    other = "FC3D000102"  # configured, but nothing of it is stored
    config.write_text(
        config.read_text() + f'\n[[counters]]\nserial = "{other}"\nname = "Side"\nsite = "LDN01"\n'
        'host = "127.0.0.1"\n'
    )
    args = ("analyze", "audit", str(tally), "--counter", other, "--config", str(config))
    result = invoke(*args)
    assert result.exit_code == 3, result.output
    assert f"{other} has no stored counts for these windows" in result.stderr
    assert "inconclusive" not in result.output and "window(s)" not in result.output
    as_json = invoke(*args, "--json")
    assert as_json.exit_code == 3
    error = json.loads(as_json.stdout)["error"]
    assert error.startswith(f"{other} has no stored counts for these windows")


def test_an_inconclusive_audit_exits_1(tmp_path: Path):
    config, tally = setup(tmp_path, factor_out=1.0)
    tally.write_text("\n".join(tally.read_text().splitlines()[:3]) + "\n")  # two windows
    args = ("analyze", "audit", str(tally), "--counter", SERIAL, "--config", str(config))
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert "2 full windows" in result.stdout and "inconclusive" in result.stdout
    assert json.loads(invoke(*args, "--json").stdout)["verdict"].startswith("inconclusive")
