"""`ffc-agent overview`: the open issues per site with their SLA and action plan, each
counter's data completeness, the RMAs in progress — as tables, JSON and an HTML page that a
real headless Chromium renders with its charts, no error and no request."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.app import App, make_runner
from agent.cli import cli
from agent.config import Config, load_config
from agent.overview import completeness
from agent.store import Store
from diagnostics.model import CountSlot
from rma.workflow import State
from simulator import FakeClock, Fleet, SimCounter, SimSite
from tests.agent.test_tickets_cli import cells
from tests.chromium import load

pytestmark = pytest.mark.integration

SECRET = "pl4nted-Secret-9f3c2a7d"  # the counters' password: never in any output
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # a Wednesday afternoon: London is open


def invoke(clock: FakeClock, *args: str, width: int = 80) -> str:
    result = CliRunner().invoke(cli, list(args), obj={"clock": clock}, terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.stdout


# --- completeness, from slots written straight into the store --------------------------------

STORE_TOML = """
[agent]
state_dir = "{state}"
cycle_seconds = 300

[[sites]]
code = "LDN01"
name = "London"
timezone = "Europe/London"
[sites.opening_hours]
mon = "09:00-17:00"
tue = "09:00-17:00"
wed = "09:00-17:00"
thu = "09:00-17:00"
fri = "09:00-17:00"
sat = "09:00-17:00"
sun = "09:00-17:00"

[[counters]]
serial = "A1"
name = "Main door"
site = "LDN01"
host = "127.0.0.1"

[[counters]]
serial = "B1"
name = "Side door"
site = "LDN01"
host = "127.0.0.1"

[[counters]]
serial = "N1"
name = "Never heard from"
site = "LDN01"
host = "127.0.0.1"
"""


def slots(serial: str, start: datetime, end: datetime, skip: tuple[datetime, datetime]) -> list:
    out, at = [], start
    while at < end:
        if not skip[0] <= at < skip[1]:
            out.append(CountSlot(serial, at, 15, 3, 2))
        at += timedelta(minutes=15)
    return out


def test_completeness_counts_the_opening_hours_slots_that_arrived(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(STORE_TOML.format(state=tmp_path / "state"))
    config = load_config(path)
    now = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # before opening; London is on UTC
    gap = (datetime(2026, 11, 20, 10, 0, tzinfo=UTC), datetime(2026, 11, 20, 11, 0, tzinfo=UTC))
    nothing = (now, now)
    with Store.open(config.agent.state_dir) as store:
        store.add_slots(slots("A1", now - timedelta(days=10), now, gap), now)
        store.add_slots(slots("B1", now - timedelta(days=3), now, nothing), now)
        rows = {r["serial"]: r for r in completeness(config, store, now)["LDN01"]}
    a7, a30 = rows["A1"]["windows"]["7d"], rows["A1"]["windows"]["30d"]
    # 7 days of 8 opening hours of 4 slots; the gap took 4 of them
    assert (a7["expected"], a7["recorded"], a7["ratio"]) == (224, 220, round(220 / 224, 4))
    # 30 days, but the counter's first slot was 10 days ago: from there
    assert (a30["expected"], a30["recorded"]) == (320, 316)
    # all slots, night included, that had ended two cycles before now
    assert (a7["all_expected"], a7["all_recorded"]) == (7 * 96 - 1, 7 * 96 - 1 - 4)
    b7, b30 = rows["B1"]["windows"]["7d"], rows["B1"]["windows"]["30d"]
    assert (b7["expected"], b7["recorded"], b7["ratio"]) == (96, 96, 1.0)
    assert b30 == b7 | {"days": 30}
    n7 = rows["N1"]["windows"]["7d"]
    assert rows["N1"]["first_slot"] is None and (n7["recorded"], n7["ratio"]) == (0, 0.0)
    assert n7["expected"] == 224


# --- the whole command on a simulated store -------------------------------------------------


@dataclass
class World:
    clock: FakeClock
    fleet: Fleet
    path: Path

    def config(self) -> Config:
        return load_config(self.path)

    def cycle(self) -> None:
        config = self.config()
        with Store.open(config.agent.state_dir) as store:
            make_runner(config, store, clock=self.clock).run_cycle()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = FakeClock(NOW)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [
            SimCounter("FFC00017A", "Main door", "LDN01", base_rate=200.0, password=SECRET),
            SimCounter("FFC00042B", "Side door", "LDN01", base_rate=150.0, password=SECRET),
        ],
        seed=4,
        clock=clock,
    )
    with fleet:
        fleet.start()
        fleet.set_fault("FFC00042B", "offline", since=NOW - timedelta(hours=1))
        text = fleet.agent_config_toml(
            tmp_path / "state",
            probe_timeout_seconds=2,
            agent={"confirm_checks": 1, "recover_checks": 1},
        )
        path = tmp_path / "agent.toml"
        assert SECRET in text
        path.write_text(text)
        yield World(clock, fleet, path)


def test_overview_shows_each_open_issue_with_its_sla_and_plan(world: World, tmp_path: Path) -> None:
    world.cycle()
    config = world.config()
    with App.open(config, world.clock) as app:
        app.rmas.start(
            "FFC00017A",
            site="LDN01",
            actor="test",
            reason="camera fault confirmed",
            at=NOW,
            state=State.CANDIDATE,
        )
        # a secret that found its way into a summary is scrubbed on the way out
        app.store._db.execute(
            "UPDATE incidents SET summary = summary || ? WHERE subject = 'FFC00042B'",
            (f" (login password={SECRET} refused; {SECRET})",),
        )
        app.store._db.commit()
    page = tmp_path / "overview.html"
    data = json.loads(
        invoke(world.clock, "overview", "--config", str(world.path), "--json", "--html", str(page))
    )
    assert data["version"] == 1 and data["scope"] == "this gateway" and data["helpdesk"] == []
    [site] = data["sites"]
    assert (site["code"], site["name"], site["here"]) == ("LDN01", "London", True)
    [issue] = site["issues"]
    assert issue["origin"] == "this gateway" and issue["counters"] == ["FFC00042B"]
    assert issue["incident"]["state"] == "open" and issue["kind"] == "technical"
    ticket = issue["ticket"]
    assert ticket["number"] == "L-000001" and ticket["status"] == "Open"
    assert ticket["category"] == "Technical Issue" and issue["stage"] == "first_line"
    assert issue["sla"]["category"]["due"] == (NOW + timedelta(days=1)).isoformat()
    assert issue["sla"]["lines"][0]["state"] == "current" and not issue["overdue"]
    assert issue["action"]["owner"] == "FootfallCam support"
    assert issue["action"]["next"].startswith("first line")
    # the gateway's own problems are the store's IT's, apart from the sites'
    for g in data["gateway"]["issues"]:
        assert g["site"] is None and g["stage"] == "store_it"
        assert g["action"]["owner"] == "store IT" and g["ticket"] is None
    [rma] = site["rmas"]
    assert (rma["counter"], rma["state"]) == ("FFC00017A", "candidate")
    counters = {c["serial"]: c["windows"] for c in site["counters"]}
    assert counters["FFC00017A"]["7d"]["ratio"] == 1.0  # the 28-day backfill, all there
    assert counters["FFC00042B"]["30d"]["ratio"] == 0.0  # offline from the first cycle
    totals = data["totals"]
    assert totals["open_issues"] == 1 + len(data["gateway"]["issues"])
    assert totals["rmas_in_progress"] == 1 and totals["by_stage"]["first_line"] == 1
    # the documented shape (README, Contracts), key for key
    assert set(data) == {"version", "at", "scope", "gateway", "sites", "helpdesk", "totals"}
    assert set(site) == {"code", "name", "here", "issues", "counters", "rmas"}
    assert set(issue) == {
        *("origin", "site", "counters", "title", "summary", "opened_at", "incident", "kind"),
        *("rma", "helpdesk", "ticket", "stage", "sla", "overdue", "action"),
    }
    assert set(issue["incident"]) == {"id", "check_id", "state", "opened_at", "resolved_at"}
    assert set(ticket) == {
        *("number", "sink", "key", "subject", "category", "status", "next_action", "stage"),
        *("requester", "created_at", "updated_at"),
    }
    assert set(issue["sla"]) == {
        *("category", "stage", "lines", "plan", "eta", "escalate_to", "running")
    }
    assert set(issue["sla"]["lines"][0]) == {
        *("stage", "label", "sla_days", "description", "state", "since", "due", "overdue")
    }
    assert set(issue["action"]) == {"owner", "next", "plan"}
    assert set(site["counters"][0]) == {"serial", "name", "first_slot", "minutes", "windows"}
    assert set(site["counters"][0]["windows"]["7d"]) == {
        *("days", "expected", "recorded", "ratio", "all_expected", "all_recorded")
    }
    assert set(rma) == {
        *("id", "counter", "state", "meaning", "opened_at", "updated_at", "new_serial")
    }
    assert set(data["totals"]) == {
        *("sites", "open_issues", "overdue", "from_other_gateways", "rmas_in_progress"),
        *("by_owner", "by_stage"),
    }
    text = json.dumps(data)
    assert SECRET not in text and "[REDACTED]" in issue["summary"]

    # tables at 80 columns: wrapped, never an identifier cut or shortened
    human = invoke(world.clock, "overview", "--config", str(world.path), width=80)
    assert max(len(line) for line in human.splitlines()) <= 80
    words = set(re.findall(r"[\w.:%/-]+", human))
    for ident in ("L-000001", "FFC00042B", "FFC00017A", "LDN01", "candidate"):
        assert ident in words, ident
    assert "Technical" in words and "OVERDUE" not in human
    # the support line and the category with their clocks, in the words tickets list uses
    [stage] = [c for row in cells(human) for c in row if c.startswith("First line")]
    assert stage == "First line · due 26 Nov 14:00 UTC category 1 d · due 26 Nov 14:00 UTC"
    assert "…" not in human and SECRET not in human

    # the page, as a browser shows it
    html = page.read_text()
    assert SECRET not in html
    loaded = load(
        page,
        {
            "text": "document.body.innerText",
            "stage_bars": "[...document.querySelectorAll('#chart-stages rect.bar')]"
            ".map(r => [r.dataset.site, r.dataset.stage, r.getBBox().width])",
            "completeness": "[...document.querySelectorAll('svg.completeness rect.bar')]"
            ".map(r => [r.dataset.counter, r.dataset.window, r.getBBox().width])",
            "issue_rows": "document.querySelectorAll('table.issues tr.issue').length",
            "scripts": "document.scripts.length",
        },
    )
    assert loaded.errors == [] and loaded.exceptions == []
    assert loaded.requests == [page.resolve().as_uri()]  # the page itself, nothing else
    v = loaded.values
    assert "Management overview" in v["text"] and "L-000001" in v["text"]
    assert "FootfallCam support" in v["text"] and "RMAs in progress" in v["text"]
    assert "First line · due 26 Nov 14:00 UTC\nCategory 1 d · due 26 Nov 14:00 UTC" in v["text"]
    assert v["scripts"] == 0
    assert [b[:2] for b in v["stage_bars"]] == [["LDN01", "first_line"]]
    assert v["stage_bars"][0][2] > 100  # drawn, not a sliver
    widths = {(c, w): px for c, w, px in v["completeness"]}
    assert widths[("FFC00017A", "7d")] > 500 and widths[("FFC00042B", "7d")] == 0
    assert v["issue_rows"] == 1 + len(data["gateway"]["issues"])


def test_after_recovery_the_ticket_waits_on_the_customer(world: World) -> None:
    world.cycle()
    world.fleet.clear_fault("FFC00042B")
    world.clock.advance(timedelta(minutes=15))
    world.cycle()
    data = json.loads(invoke(world.clock, "overview", "--config", str(world.path), "--json"))
    [issue] = data["sites"][0]["issues"]
    assert issue["incident"]["state"] == "resolved"
    assert issue["ticket"]["status"] == "Suggest To Close"
    assert issue["ticket"]["next_action"] == "Waiting on customer"
    assert issue["action"]["owner"] == "customer" and not issue["overdue"]
    # 7 days on, the portal has closed it by itself: no longer an open issue
    world.clock.advance(timedelta(days=7, minutes=1))
    later = json.loads(invoke(world.clock, "overview", "--config", str(world.path), "--json"))
    assert later["sites"][0]["issues"] == []


def test_all_gateways_needs_an_rt_destination(world: World) -> None:
    result = CliRunner().invoke(
        cli, ["overview", "--config", str(world.path), "--all-gateways"], obj={"clock": world.clock}
    )
    assert result.exit_code == 1
    assert "no RT destination" in result.output and "Traceback" not in result.output
