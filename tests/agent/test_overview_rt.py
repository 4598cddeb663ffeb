"""`ffc-agent overview --all-gateways`: the whole chain from the shared helpdesk.

Two gateways — two configurations, two state directories, two sites — file into one real
Request Tracker. Each gateway's overview then reads RT for every ticket the agents filed (by
the key custom field), merges its own with its incidents and marks the other gateway's; a
person at the helpdesk acting on a ticket changes who acts next. The RT token never shows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.config import load_config
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite
from tests.agent.test_delivery_e2e import fresh_serial, rt_sinks_toml
from tests.rt import RtServer

pytestmark = pytest.mark.integration

WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
LOCAL_SINK = '[[sinks]]\ntype = "local"\n'


@dataclass
class Gateway:
    site: str
    serial: str
    clock: FakeClock
    path: Path

    def overview(self, *args: str) -> dict[str, Any]:
        result = CliRunner().invoke(
            cli,
            ["overview", "--config", str(self.path), "--json", *args],
            obj={"clock": self.clock},
        )
        assert result.exit_code == 0, result.output
        data: dict[str, Any] = json.loads(result.stdout)
        return data


@contextlib.contextmanager
def gateway(tmp_path: Path, rt: RtServer, site: str) -> Iterator[Gateway]:
    """A gateway watching one site, whose one counter is offline; one cycle files its ticket
    into RT."""
    serial = fresh_serial("OV")
    clock = FakeClock(NOW)
    fleet = Fleet(
        [SimSite(site, f"Store {site}", "Europe/London", WEEK)],
        [SimCounter(serial, "Front door", site, base_rate=150.0)],
        seed=11,
        clock=clock,
    )
    with fleet:
        fleet.start()
        fleet.set_fault(serial, "offline", since=NOW - timedelta(hours=1))
        tmp_path.mkdir()
        text = fleet.agent_config_toml(
            tmp_path / "state", probe_timeout_seconds=2, agent={"confirm_checks": 1}
        )
        path = tmp_path / "agent.toml"
        path.write_text(text.replace(LOCAL_SINK, rt_sinks_toml(tmp_path, rt)))
        config = load_config(path)
        with Store.open(config.agent.state_dir) as store:
            make_runner(config, store, clock=clock).run_cycle()
        yield Gateway(site, serial, clock, path)


def issues_at(data: dict[str, Any], site: str) -> list[dict[str, Any]]:
    return [i for s in data["sites"] if s["code"] == site for i in s["issues"]]


def test_one_overview_shows_the_whole_chain(rt_server: RtServer, tmp_path: Path) -> None:
    north, south = f"N{fresh_serial('')}", f"S{fresh_serial('')}"
    with (
        gateway(tmp_path / "a", rt_server, north) as a,
        gateway(tmp_path / "b", rt_server, south) as b,
    ):
        [mine] = issues_at(a.overview(), north)
        number = mine["ticket"]["number"]
        assert number and number.isdigit() and mine["helpdesk"] is None
        assert issues_at(a.overview(), south) == []  # the state alone knows its own site

        chain = a.overview("--all-gateways")
        assert chain["scope"] == "all gateways"
        [read] = chain["helpdesk"]
        assert read["sink"] == "helpdesk" and read["error"] is None and read["tickets"] >= 2
        [here] = issues_at(chain, north)
        assert here["origin"] == "this gateway" and here["helpdesk"] == "helpdesk"
        assert here["incident"]["state"] == "open" and here["ticket"]["number"] == number
        assert here["counters"] == [a.serial]
        [there] = issues_at(chain, south)
        assert there["origin"] == "another gateway" and there["incident"] is None
        assert there["counters"] == [b.serial] and there["site"] == south
        assert there["ticket"]["category"] == "Technical Issue"
        assert there["stage"] == "first_line" and there["action"]["owner"] == "FootfallCam support"
        [site_b] = [s for s in chain["sites"] if s["code"] == south]
        assert site_b["here"] is False and site_b["counters"] == []
        assert chain["totals"]["from_other_gateways"] >= 1

        # the other gateway sees the same chain from its side
        other = b.overview("--all-gateways")
        assert issues_at(other, south)[0]["origin"] == "this gateway"
        assert issues_at(other, north)[0]["origin"] == "another gateway"

        # support asks the store a question on the south ticket: the ball is the customer's
        south_id = there["ticket"]["number"]
        reply = rt_server.api("PUT", f"ticket/{south_id}", json={"Status": "stalled"})
        assert reply.status_code == 200, reply.text
        [asked] = issues_at(a.overview("--all-gateways"), south)
        assert asked["ticket"]["next_action"] == "Waiting on customer"
        assert asked["action"]["owner"] == "customer" and not asked["overdue"]

        # and once resolved at the helpdesk, it is no open issue of the chain any more
        rt_server.api("PUT", f"ticket/{south_id}", json={"Status": "resolved"})
        assert issues_at(a.overview("--all-gateways"), south) == []

        # a day and a half later, the north ticket's SLA has passed: chase support
        a.clock.advance(timedelta(days=1, hours=12))
        [late] = issues_at(a.overview("--all-gateways"), north)
        assert late["overdue"] and late["sla"]["category"]["overdue"]
        assert late["action"]["owner"] == "customer" and "chase support" in late["action"]["next"]

        for g in (a, b):
            for args in ((), ("--all-gateways",)):
                result = CliRunner().invoke(
                    cli, ["overview", "--config", str(g.path), *args], obj={"clock": g.clock}
                )
                assert result.exit_code == 0, result.output
                assert rt_server.agent_token not in result.output
        assert rt_server.agent_token not in json.dumps(chain)


def test_an_unreachable_helpdesk_is_one_line_and_the_local_view_stays(
    rt_server: RtServer, tmp_path: Path
) -> None:
    site = f"X{fresh_serial('')}"
    with gateway(tmp_path / "a", rt_server, site) as a:
        text = a.path.read_text().replace(rt_server.url, "http://127.0.0.1:9")
        a.path.write_text(text)
        data = a.overview("--all-gateways")
        [read] = data["helpdesk"]
        assert read["tickets"] is None and "127.0.0.1:9" in read["error"]
        [issue] = issues_at(data, site)  # as last known here
        assert issue["origin"] == "this gateway" and issue["helpdesk"] is None
