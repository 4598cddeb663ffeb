"""Issue 14: what the store can fix is first the store's, and a ticket waits out a reboot.

A covered or blocked view is a message to the store (requester, CC), and a ticket to
FootfallCam only when it stays blocked past the grace period; an offline counter is ticketed
once it has been down longer than a reboot, with its reachability and last good data; and after
the agent suggests closing, the next action is the customer's. Real simulated counters on
127.0.0.1, the real SMTP server, the local ticket store; only the clock is faked."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.config import load_config
from agent.delivery.sinks import LocalSink
from agent.runner import Runner
from agent.store import Store
from rma.tickets import NextAction, TicketStatus
from simulator import FakeClock, Fleet, SimCounter, SimSite
from tests.agent.test_delivery_e2e import (
    NOW,
    WEEK,
    fresh_serial,
    notifications_toml,
    smtp,  # noqa: F401  (the fixture)
)

STEP = timedelta(minutes=5)


@contextlib.contextmanager
def world(
    tmp_path: Path, serial: str, fault: str, agent: dict[str, Any], extra_toml: str = ""
) -> Iterator[tuple[FakeClock, Fleet, Runner, Path]]:
    """One counter with ``fault`` from now on, checked every 5 minutes, filing locally."""
    clock = FakeClock(NOW)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter(serial, "Side door", "LDN01", base_rate=150.0)],
        seed=11,
        clock=clock,
    )
    with fleet:
        fleet.start()
        fleet.write_references(tmp_path / "refs")
        fleet.set_fault(serial, fault)
        state = tmp_path / "state"
        text = fleet.agent_config_toml(
            state,
            tmp_path / "refs",
            probe_timeout_seconds=2,
            agent={"confirm_checks": 1, "snapshot_seconds": 300, **agent},
        )
        path = tmp_path / "agent.toml"
        path.write_text(text + "\n" + extra_toml)
        with Store.open(state) as store:
            yield clock, fleet, make_runner(load_config(path), store, clock=clock), state


def step(clock: FakeClock, fleet: Fleet, runner: Runner) -> list[Any]:
    clock.set(clock.now() + STEP)
    fleet.refresh()
    return runner.run_cycle().tickets


def states(runner: Runner, serial: str) -> list[str]:
    return [i.state for i in runner.store.incidents() if i.subject == serial]


def local_tickets(state: Path) -> list[Any]:
    return LocalSink(state / "tickets").list()


def test_an_offline_ticket_waits_out_a_reboot_and_carries_reachability(tmp_path: Path) -> None:
    serial = fresh_serial("W")
    agent = {"offline_ticket_minutes": 10}
    with world(tmp_path, serial, "offline", agent) as (clock, fleet, runner, state):
        assert runner.run_cycle().tickets == []  # 14:00, down 0 minutes
        assert step(clock, fleet, runner) == []  # 14:05: a reboot takes this long
        assert states(runner, serial) == ["open"]
        # and a person asking sees why there is no ticket yet, and until when
        config = str(tmp_path / "agent.toml")
        listed = CliRunner().invoke(
            cli, ["incidents", "--config", config, "--json"], obj={"clock": clock}
        )
        [held] = [r["ticket_held"] for r in json.loads(listed.stdout) if r["subject"] == serial]
        assert held["why"] == "ruling out a reboot"
        assert datetime.fromisoformat(held["until"]) == NOW + 2 * STEP
        shown = CliRunner().invoke(
            cli, ["status", "--config", config, "--json"], obj={"clock": clock}
        )
        [counter] = [c for c in json.loads(shown.stdout)["counters"] if c["serial"] == serial]
        assert [i["ticket_held"] for i in counter["incidents"]] == [held]
        [ticket] = step(clock, fleet, runner)  # 14:10: ten minutes down
    how = ticket.comment.how
    assert "Reachability from the gateway: it answers ping" in how  # 127.0.0.1 does
    assert "port" in how and "refused" in how
    assert "first seen failing at 14:00" in how
    assert "What colour is the counter's LED" in how
    assert "SSH not configured: deep checks unavailable" in ticket.comment.which_device
    [filed] = local_tickets(state)
    assert filed.key == ticket.key


def test_a_counter_back_within_the_wait_gets_no_ticket(tmp_path: Path) -> None:
    serial = fresh_serial("R")
    agent = {"offline_ticket_minutes": 10}
    with world(tmp_path, serial, "offline", agent) as (clock, fleet, runner, state):
        runner.run_cycle()
        fleet.clear_fault(serial)  # it rebooted
        for _ in range(4):
            assert step(clock, fleet, runner) == []
        assert states(runner, serial) == ["resolved"]
    assert local_tickets(state) == []


def test_a_covered_view_asks_the_store_first_and_files_after_the_grace(
    smtp: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    # a fixed serial: the simulated scene, and so the live view's verdict on each snapshot,
    # follows from it (a random one drew, about once in a hundred snapshots, a cover the
    # analysis calls a moved camera)
    serial = "V01COVERED"
    agent = {"blocked_view_grace_minutes": 30}
    with world(tmp_path, serial, "covered", agent, notifications_toml(smtp)) as env:
        clock, fleet, runner, state = env
        filed = runner.run_cycle().tickets
        for _ in range(5):  # blocked from 14:00, confirmed over 3 snapshots (14:10), 14:25
            filed += step(clock, fleet, runner)
        assert filed == [] and local_tickets(state) == []
        [incident] = [i for i in runner.store.incidents() if i.subject == serial]
        assert incident.state == "open"
        assert incident.ticket_key is None
        mails = [r.message for r in smtp.mailbox.received]
        [asked] = [m for m in mails if "Action for the store" in m["Subject"]]  # once only
        body = asked.get_content()
        assert "store-it@example.com" in asked["To"]
        assert "remove what covers" in body  # the check's own remediation
        assert "a ticket goes to FootfallCam support" in body
        while not filed and clock.now() < NOW + timedelta(hours=2):
            filed = step(clock, fleet, runner)
    [ticket] = filed
    assert ticket.created_at == NOW + timedelta(minutes=30)  # blocked since 14:00, + 30
    assert "live view covered since 25 Nov 14:00" in ticket.subject  # not where the ring is
    assert "re-tune" in ticket.comment.what
    # the unit as its API reports itself (the simulator's model and firmware), and the access
    device = ticket.comment.which_device
    assert "As the device reports itself: model FootfallCam" in device
    assert f"firmware 4.3.1, serial {serial}." in device
    assert "Remote access: SSH not configured: deep checks unavailable" in device
    assert "Is anything covering or standing in front of the counter" in ticket.comment.how


def test_after_suggest_to_close_the_next_action_is_the_customers(tmp_path: Path) -> None:
    serial = fresh_serial("S")
    with world(tmp_path, serial, "offline", {}) as env:
        clock, fleet, runner, state = env
        assert len(runner.run_cycle().tickets) == 1
        fleet.clear_fault(serial)
        for _ in range(3):
            step(clock, fleet, runner)
    [filed] = local_tickets(state)
    assert filed.status is TicketStatus.SUGGEST_TO_CLOSE
    assert filed.next_action is NextAction.WAITING_ON_CUSTOMER
    body = filed.messages[-1].body
    assert body.startswith("Recovered: healthy on 2 checks in a row.")
    assert "recovered:" not in body.lower().replace("recovered: healthy", "")
    assert "the next step is the customer's" in body


def test_a_blocked_view_whose_counts_suffer_is_ticketed_at_once(tmp_path: Path) -> None:
    from agent.incidents import Policy, apply
    from diagnostics.model import Assessed, Decision, Finding, Status, Verdict

    serial = "C01COVERED"  # fixed, as above
    with world(tmp_path, serial, "covered", {"blocked_view_grace_minutes": 240}) as env:
        clock, fleet, runner, _state = env
        runner.run_cycle()
        for _ in range(2):
            assert step(clock, fleet, runner) == []
        [view] = [i for i in runner.store.incidents() if i.subject == serial]
        hold = runner.tickets.held(view, clock.now())
        assert hold is not None and hold.until == NOW + timedelta(hours=4)
        # the counter's counts stop too: support must hear now, not in four hours
        stopped = Finding(
            check_id="counter.counts.stopped",
            status=Status.FAIL,
            code="zero_run",
            summary="no counts for 2.0 h of opening time",
            at=clock.now(),
            site="LDN01",
            subject=serial,
        )
        genuine = [Assessed(stopped, Verdict(Decision.GENUINE, ("no rule explains it",)))]
        cycle = runner.store.begin_cycle(clock.now())
        runner.store.add_findings(cycle, genuine)
        with runner.store.transaction():
            apply(runner.store, genuine, clock.now(), Policy(confirm_checks=1))
        assert "open" in states(runner, serial)[1:]
        assert runner.tickets.held(view, clock.now()) is None


@contextlib.contextmanager
def dark_site(tmp_path: Path) -> Iterator[tuple[FakeClock, Fleet, Runner, Path, list[str]]]:
    """Both counters of LDN01 offline from now on; MCR02's three answer (two of five down is
    not a storm: one site finding), checked every 5 minutes with the real reboot wait."""
    clock = FakeClock(NOW)
    dark = [fresh_serial("D"), fresh_serial("D")]
    lit = [fresh_serial("L") for _ in range(3)]
    fleet = Fleet(
        [
            SimSite("LDN01", "London", "Europe/London", WEEK),
            SimSite("MCR02", "Manchester", "Europe/London", WEEK),
        ],
        [SimCounter(s, f"Door {s}", "LDN01", base_rate=150.0) for s in dark]
        + [SimCounter(s, f"Door {s}", "MCR02", base_rate=150.0) for s in lit],
        seed=11,
        clock=clock,
    )
    with fleet:
        fleet.start()
        for serial in dark:
            fleet.set_fault(serial, "offline")
        state = tmp_path / "state"
        agent = {"confirm_checks": 1, "offline_ticket_minutes": 10}
        text = fleet.agent_config_toml(state, probe_timeout_seconds=2, agent=agent)
        path = tmp_path / "agent.toml"
        path.write_text(text)
        with Store.open(state) as store:
            yield clock, fleet, make_runner(load_config(path), store, clock=clock), state, dark


def site_incidents(runner: Runner) -> list[Any]:
    return [i for i in runner.store.incidents() if i.site == "LDN01" and not i.subject]


def of_ldn01(tickets: list[Any]) -> list[Any]:
    """The dark site's tickets (MCR02's simulated traffic may raise its own)."""
    return [t for t in tickets if t.site == "LDN01"]


def test_a_whole_site_gone_dark_waits_out_a_reboot_too(tmp_path: Path) -> None:
    with dark_site(tmp_path) as (clock, fleet, runner, state, dark):
        first = runner.run_cycle()  # 14:00: the site's switch went down
        assert of_ldn01(first.tickets) == []
        [site] = site_incidents(runner)
        assert site.state == "open"
        [waiting] = [w for w in first.waiting if w.incident.site == "LDN01"]
        assert waiting.incident.id == site.id
        assert waiting.held.why == "ruling out a reboot" and waiting.ask == ""
        assert waiting.held.until == NOW + 2 * STEP
        assert of_ldn01(step(clock, fleet, runner)) == []  # 14:05: a switch reboots this fast
        config = str(tmp_path / "agent.toml")
        listed = CliRunner().invoke(
            cli, ["incidents", "--config", config, "--json"], obj={"clock": clock}
        )
        [row] = [r for r in json.loads(listed.stdout) if r["id"] == site.id]
        assert row["ticket_held"] == {
            "why": "ruling out a reboot",
            "until": (NOW + 2 * STEP).isoformat(),
        }
        assert not any(i.subject in dark for i in runner.store.incidents())  # one, the site's
        [ticket] = of_ldn01(step(clock, fleet, runner))  # 14:10: ten minutes dark
    assert ticket.created_at == NOW + 2 * STEP
    assert (ticket.issue_level, ticket.site) == ("site", "LDN01")
    assert "outage since 25 Nov 14:00" in ticket.subject, ticket.subject
    assert "Every counter of site LDN01 is offline at once (2 refused)" in ticket.comment.what
    [filed] = of_ldn01(local_tickets(state))
    assert filed.key == ticket.key


def test_a_site_back_within_the_wait_gets_no_ticket(tmp_path: Path) -> None:
    with dark_site(tmp_path) as (clock, fleet, runner, state, dark):
        runner.run_cycle()
        assert [i.state for i in site_incidents(runner)] == ["open"]
        for serial in dark:
            fleet.clear_fault(serial)  # the router came back
        for _ in range(3):
            assert of_ldn01(step(clock, fleet, runner)) == []
        assert [i.state for i in site_incidents(runner)] == ["resolved"]
    assert of_ldn01(local_tickets(state)) == []


def storm_incidents(runner: Runner) -> list[Any]:
    from diagnostics.checks.outages import GatewayStorm

    return [i for i in runner.store.incidents() if i.check_id == GatewayStorm.id]


def test_a_storm_that_passes_recovers_its_incident(tmp_path: Path) -> None:
    """Three of four counters down at once is a storm (no tickets, one gateway incident for a
    person); once a second one answers, two of four cannot be a storm, and the incident
    recovers through the good checks, as any other does."""
    clock = FakeClock(NOW)
    ldn = [fresh_serial("S"), fresh_serial("S")]
    mcr = [fresh_serial("T"), fresh_serial("T")]
    fleet = Fleet(
        [
            SimSite("LDN01", "London", "Europe/London", WEEK),
            SimSite("MCR02", "Manchester", "Europe/London", WEEK),
        ],
        [SimCounter(s, f"Door {s}", "LDN01", base_rate=150.0) for s in ldn]
        + [SimCounter(s, f"Door {s}", "MCR02", base_rate=150.0) for s in mcr],
        seed=11,
        clock=clock,
    )
    with fleet:
        fleet.start()
        down = [*ldn, mcr[0]]
        for serial in down:
            fleet.set_fault(serial, "offline")
        state = tmp_path / "state"
        text = fleet.agent_config_toml(state, probe_timeout_seconds=2, agent={"confirm_checks": 1})
        path = tmp_path / "agent.toml"
        path.write_text(text)
        with Store.open(state) as store:
            runner = make_runner(load_config(path), store, clock=clock)
            assert runner.run_cycle().tickets == []  # 14:00: the storm
            [storm] = storm_incidents(runner)
            assert storm.state == "open" and storm.subject == "gateway"
            assert "3 of 4 counters failed at once" in storm.summary
            assert step(clock, fleet, runner) == []  # 14:05: still three down
            assert [i.state for i in storm_incidents(runner)] == ["open"]

            fleet.clear_fault(mcr[0])  # MCR02's switch is back; LDN01 is still dark
            step(clock, fleet, runner)
            [storm] = storm_incidents(runner)
            assert storm.state == "recovering"
            step(clock, fleet, runner)
            [storm] = storm_incidents(runner)
            assert storm.state == "resolved"
            assert storm.resolved_at == NOW + 3 * STEP
            flips = [(t["from_state"], t["to_state"]) for t in runner.store.transitions(storm.id)]
            assert flips == [(None, "open"), ("open", "recovering"), ("recovering", "resolved")]
            # what is left is one dark site, an incident of its own, not the storm's
            assert [i.state for i in site_incidents(runner)] == ["open"]
    assert not any(t.subject.startswith("gateway") for t in local_tickets(state))
