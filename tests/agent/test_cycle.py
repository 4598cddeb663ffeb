"""One agent cycle against simulated counters on 127.0.0.1: the vertical slice end to end."""

import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from agent.app import make_runner
from agent.config import parse_config
from agent.delivery.sinks import LocalSink
from agent.store import Store
from diagnostics.model import Decision, Status
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # a Wednesday afternoon: London is open
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def make_fleet(clock):
    today = NOW.date()
    sites = [
        SimSite("LDN01", "London", "Europe/London", WEEK),
        SimSite(
            "MCR02",
            "Manchester",
            "Europe/London",
            WEEK,
            closed_dates=(today - timedelta(days=1), today),
            closure_reason="refit",
        ),
    ]
    counters = [
        SimCounter("HEALTHY", "Main door", "LDN01", base_rate=200.0, group="front"),
        SimCounter("OFFLINE", "Side door", "LDN01", base_rate=150.0, group="front"),
        SimCounter("HUNG", "Mall door", "LDN01", base_rate=150.0),
        SimCounter("ZEROS", "Lift", "LDN01", base_rate=150.0),
        SimCounter("BADPASS", "Back door", "LDN01", base_rate=150.0, password="right"),
        SimCounter("GARBAGE", "Loading bay", "LDN01", base_rate=150.0),
        SimCounter("LEGACY", "Old unit", "LDN01", base_rate=150.0, api="pi-cgi"),
        SimCounter("CLOSED", "Main door", "MCR02", base_rate=150.0),
    ]
    return Fleet(sites, counters, seed=11, clock=clock)


@pytest.fixture
def world(tmp_path):
    clock = FakeClock(NOW)
    with make_fleet(clock) as fleet:
        fleet.start()
        fleet.set_fault("OFFLINE", "offline", since=NOW - timedelta(hours=1))
        fleet.set_fault("HUNG", "hung")
        fleet.set_fault("ZEROS", "zeros", since=NOW - timedelta(hours=4))
        fleet.set_fault("GARBAGE", "garbage")
        # these tests are about one cycle (see test_incidents); the live view every 5 minutes
        settings = {"confirm_checks": 1, "snapshot_seconds": 300}
        text = fleet.agent_config_toml(tmp_path / "state", probe_timeout_seconds=1, agent=settings)
        data = tomllib.loads(text)
        for counter in data["counters"]:
            if counter["serial"] == "BADPASS":
                counter["password"] = "wrong"
        config = parse_config(data, base_dir=tmp_path)
        with Store.open(tmp_path / "state") as store:
            yield clock, fleet, config, store


def by_counter(result, check_id):
    return {a.finding.subject: a for a in result.assessed if a.finding.check_id == check_id}


def test_one_cycle_finds_real_problems_and_rules_out_the_closed_store(world):
    clock, _fleet, config, store = world
    result = make_runner(config, store, clock=clock).run_cycle()
    offline = by_counter(result, "counter.offline")
    assert {s: a.finding.code for s, a in offline.items() if a.finding.problem} == {
        "OFFLINE": "refused",
        "HUNG": "timeout",
        "BADPASS": "auth_failed",
        "GARBAGE": "bad_response",
    }
    assert all(
        offline[s].finding.status is Status.OK for s in ("HEALTHY", "ZEROS", "LEGACY", "CLOSED")
    )
    counts = by_counter(result, "counter.counts.stopped")
    assert counts["ZEROS"].finding.code == "zero_run"
    assert counts["ZEROS"].verdict.decision is Decision.GENUINE
    assert counts["HEALTHY"].finding.status is Status.OK
    assert counts["LEGACY"].finding.status is Status.OK
    closed = counts["CLOSED"]
    assert closed.ruled_out and closed.verdict.rule == "store_closed"
    assert any("refit" in r for r in closed.verdict.reasons)
    # every counter that answered got its history, the hung one cost one timeout and no more
    assert store.watermark("HEALTHY") is not None and store.watermark("HUNG") is None
    assert {t.counters[0] for t in result.tickets} == {
        "OFFLINE",
        "HUNG",
        "BADPASS",
        "GARBAGE",
        "ZEROS",
    }


def test_nothing_is_filed_twice_and_recovery_resolves(world):
    clock, fleet, config, store = world
    runner = make_runner(config, store, clock=clock)
    first = runner.run_cycle()
    clock.set(NOW + timedelta(minutes=15))
    fleet.clear_fault("OFFLINE")
    fleet.refresh()
    second = runner.run_cycle()
    assert second.tickets == []
    # healthy once is "recovering"; twice in a row (recover_checks = 2) resolves it
    assert [(f.incident.subject, f.to_state) for f in second.flips] == [("OFFLINE", "recovering")]
    clock.set(NOW + timedelta(minutes=30))
    fleet.refresh()
    third = runner.run_cycle()
    resolved = [f for f in third.flips if f.to_state == "resolved"]
    assert [f.incident.subject for f in resolved] == ["OFFLINE"]
    assert third.tickets == []
    sink = LocalSink(config.agent.state_dir / "tickets")
    assert len(sink.list()) == len(first.tickets) == 5
    # the second cycle fetched only what was new since the watermark
    healthy = store.observations("HEALTHY", "api", limit=1)[0]
    assert healthy.ok and healthy.data["slots_received"] <= 2


def test_late_upload_fills_the_gap_with_its_arrival_time(world):
    clock, fleet, config, store = world
    runner = make_runner(config, store, clock=clock)
    runner.run_cycle()
    fleet.set_fault("HEALTHY", "held_back", since=NOW)
    clock.set(NOW + timedelta(hours=2))
    fleet.refresh()
    runner.run_cycle()
    held = store.slots("HEALTHY", NOW, NOW + timedelta(hours=2))
    assert held == []
    fleet.clear_fault("HEALTHY", "held_back")
    later = NOW + timedelta(hours=2, minutes=15)
    clock.set(later)
    fleet.refresh()
    runner.run_cycle()
    held = store.slots("HEALTHY", NOW, NOW + timedelta(hours=2))
    assert len(held) == 8
    assert all(s.arrived_at == later for s in held)


def test_live_view_learned_reference_then_confirmed_blockage(world):
    clock, fleet, config, store = world
    # this test counts snapshots one by one: on a loaded machine a snapshot that misses a 1 s
    # probe timeout would shift the count (the fault-free path, not what is tested here)
    agent = config.agent.model_copy(update={"probe_timeout_seconds": 5})
    fleet.clear_fault("HUNG", "hung")  # a hung counter would cost the whole 5 s every cycle
    runner = make_runner(config.model_copy(update={"agent": agent}), store, clock=clock)

    def liveview():
        result = runner.run_cycle()
        clock.set(clock.now() + timedelta(minutes=5))
        fleet.refresh()
        return by_counter(result, "counter.liveview.blocked")["HEALTHY"].finding

    # no reference image configured: the first good snapshots become the normal view
    first = liveview()
    assert first.status is Status.SKIP and first.code == "learning"
    liveview()
    learned = liveview()
    assert learned.status is Status.OK and "learned" in learned.evidence["reference"]
    assert (config.agent.state_dir / "references" / "HEALTHY.learned.png").exists()

    fleet.set_fault("HEALTHY", "covered")
    fleet.refresh()
    seen = [liveview() for _ in range(3)]
    # one odd snapshot raises nothing: the blockage must hold over three snapshots
    assert [f.status for f in seen] == [Status.OK, Status.OK, Status.FAIL]
    assert seen[0].code == "unconfirmed" and seen[2].code == "covered"
    assert seen[2].evidence["blocked_fraction"] >= 0.4


def test_assess_over_the_stored_data_with_its_checklist(world):
    from agent.commands.assess import Period, assess_period

    clock, _fleet, config, store = world
    runner = make_runner(config, store, clock=clock)
    runner.run_cycle()
    found, _ = assess_period(
        config, period=Period(NOW - timedelta(days=1), NOW + timedelta(minutes=1)), store=store
    )
    by = {(a.counter, a.check_id): a for a in found}
    zeros = by[("ZEROS", "counter.counts.stopped")]
    assert zeros.real and zeros.source == "counts"
    answers = {p.question: p for p in zeros.checklist}
    assert answers["Was the store open?"].points_to == "real"
    assert answers["Is the counter tuned?"].answer == "yes"
    assert answers["Did someone silence it?"].answer == "no"
    closed = by[("CLOSED", "counter.counts.stopped")]
    assert not closed.real and closed.verdict == "false_alarm"
    store_open = {p.question: p for p in closed.checklist}["Was the store open?"]
    assert store_open.points_to == "false_alarm" and "refit" in store_open.answer
    offline = by[("OFFLINE", "counter.offline")]
    assert offline.real and offline.source == "stored" and offline.kind == "refused"
    # one counter only
    only, _ = assess_period(
        config, period=Period(NOW - timedelta(days=1), NOW), store=store, counter="ZEROS"
    )
    assert {a.counter for a in only} <= {"ZEROS", None}


def test_a_check_that_crashes_or_hangs_is_an_agent_error_not_a_device_ticket(world):
    import threading

    from diagnostics.checks.base import Check

    release = threading.Event()

    class Crashes(Check):
        id = "counter.test.crashes"
        title = "crashes"

        def run(self, evidence):
            raise RuntimeError("boom")

    class Hangs(Check):
        id = "counter.test.hangs"
        title = "hangs"
        timeout_s = 0.5

        def run(self, evidence):
            release.wait(30)
            return []

    clock, _fleet, config, store = world
    try:
        result = make_runner(config, store, clock=clock, checks=[Crashes(), Hangs()]).run_cycle()
    finally:
        release.set()
    errors = [a for a in result.assessed if a.finding.status is Status.ERROR]
    assert {a.finding.check_id for a in errors} == {"counter.test.crashes", "counter.test.hangs"}
    assert all(a.verdict is None for a in errors)
    assert any("boom" in a.finding.summary for a in errors)
    assert any("overran" in a.finding.summary for a in errors)
    assert not any(t.counters and "test" in t.subject for t in result.tickets)
    assert not [i for i in store.incidents() if i.check_id.startswith("counter.test.")]


def test_an_unreachable_ticket_destination_is_a_gateway_finding(world, tmp_path):
    import socket

    from agent.config import parse_config

    clock, _fleet, config, store = world
    with socket.socket() as s:  # a port with nobody behind it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    for counter in data["counters"]:
        counter["password"] = (
            config.counter(counter["serial"]).password.get_secret_value()
            if config.counter(counter["serial"]).password
            else None
        )
    data["sinks"] = [
        {"type": "local"},
        {"type": "rt", "url": f"http://127.0.0.1:{port}", "token": "t"},
    ]
    with_rt = parse_config({k: v for k, v in data.items() if v is not None}, base_dir=tmp_path)
    result = make_runner(with_rt, store, clock=clock).run_cycle()
    [gw] = [a for a in result.assessed if a.finding.check_id == "gateway.health"]
    codes = [p["code"] for p in gw.finding.evidence["problems"]]
    assert "destination_unreachable" in codes
    assert f"127.0.0.1:{port}" in gw.finding.summary
    # the counters' own findings are still trusted: a dead helpdesk does not blind the agent
    offline = [
        a
        for a in result.assessed
        if a.finding.check_id == "counter.offline" and a.finding.subject == "OFFLINE"
    ]
    assert offline[0].genuine


def test_follow_up_recovered_suggest_close_auto_close_and_a_comeback(world):
    clock, fleet, config, store = world
    runner = make_runner(config, store, clock=clock)
    sink = LocalSink(config.agent.state_dir / "tickets")

    def cycle(at):
        clock.set(at)
        fleet.refresh()
        return runner.run_cycle()

    first = cycle(NOW)
    [old] = [t for t in first.tickets if t.counters == ["OFFLINE"]]
    # support works on it in the destination: the next sync reads the change back
    sink.set_status(old.number, "Revalidation In Progress", NOW)
    [change] = [c for c in runner.tickets.sync(NOW) if c.number == old.number]
    assert (change.before, change.after) == ("Open", "Revalidation In Progress")

    fleet.clear_fault("OFFLINE")
    cycle(NOW + timedelta(minutes=15))
    cycle(NOW + timedelta(minutes=30))  # healthy twice: resolved, the ticket is told
    healed = sink.get(old.number)
    assert healed.status == "Suggest To Close"
    assert "Recovered" in healed.messages[-1].body
    cycle(NOW + timedelta(days=7, minutes=31))  # a week in Suggest To Close closes it
    assert sink.get(old.number).status == "Closed"

    fleet.set_fault("OFFLINE", "offline")
    comeback = cycle(NOW + timedelta(days=8))
    [new] = [t for t in comeback.tickets if t.counters == ["OFFLINE"]]
    assert new.number != old.number
    assert any(old.number in m.body for m in sink.get(new.number).messages)
