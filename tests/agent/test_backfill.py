"""A slow counter that holds less history than the agent asks for still gets its counts.

The first fetch asks ``history_days`` back in 24-hour calls. A counter answering each call late
is cut short by the cycle's probe deadline; before, a counter holding only the last days was
asked the same empty early days again every cycle and never reached its counts.
"""

from __future__ import annotations

import itertools
import tomllib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agent.app import make_runner
from agent.config import parse_config
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
HISTORY_DAYS = 12  # asked for; the device holds one day


def test_a_slow_first_fetch_goes_on_where_it_stopped(tmp_path):
    clock = FakeClock(NOW)
    site = SimSite("LDN01", "London", "Europe/London", WEEK)
    with Fleet(
        [site], [SimCounter("SLOW", "Main door", "LDN01")], clock=clock, history_days=1
    ) as fleet:
        fleet.set_fault("SLOW", "slow", delay=0.4)
        text = fleet.agent_config_toml(tmp_path / "state", probe_timeout_seconds=2)
        config = parse_config(tomllib.loads(text), base_dir=tmp_path)
        with Store.open(tmp_path / "state") as store:
            runner = make_runner(config, store, clock=clock, history_days=HISTORY_DAYS)
            counter = config.counters[0]
            first = runner.plan(counter, NOW).fetch_from
            assert first <= NOW - timedelta(days=HISTORY_DAYS)

            result = runner.run_cycle()
            (api,) = [o for o in result.observations if o.probe == "api"]
            assert api.ok and api.data.get("partial") and api.data["slots_received"] == 0
            assert store.watermark("SLOW") is None
            # the next cycle asks from where this one stopped, not from the start again
            resumed = runner.plan(counter, NOW).fetch_from
            assert first + timedelta(days=1) <= resumed < NOW

            for _ in range(HISTORY_DAYS):  # at least a day further each cycle
                if store.watermark("SLOW") is not None:
                    break
                before = runner.plan(counter, NOW).fetch_from
                runner.run_cycle()
                after = runner.plan(counter, NOW).fetch_from
                assert store.watermark("SLOW") is not None or after > before
            mark = store.watermark("SLOW")
            assert mark is not None and NOW - mark <= timedelta(hours=1)
            runner.close()


def test_a_backfill_is_shared_out_over_cycles_and_ends_whole(tmp_path):
    """A cycle fetches at most ``backfill_slots`` of history across the fleet: with room for
    two counters' day each, two counters holding five days of the eight asked for skip the
    empty days at once, then fill in a day a cycle each, oldest first, and end with every
    slot the devices hold and the live one, with no gap."""
    clock = FakeClock(NOW)
    site = SimSite("LDN01", "London", "Europe/London", WEEK)
    counters = [SimCounter(f"C{i}", f"door {i}", "LDN01") for i in (1, 2)]
    with Fleet([site], counters, clock=clock, history_days=5) as fleet:
        text = fleet.agent_config_toml(tmp_path / "state", probe_timeout_seconds=2)
        config = parse_config(tomllib.loads(text), base_dir=tmp_path)
        with Store.open(tmp_path / "state") as store:
            runner = make_runner(config, store, clock=clock, history_days=8)
            runner.backfill_slots = 2 * 96  # a day each for two counters
            since = runner.plan(config.counters[0], NOW).fetch_from
            marks = []
            for _ in range(12):
                result = runner.run_cycle()
                api = [o for o in result.observations if o.probe == "api"]
                assert len(api) == 2 and all(o.ok for o in api)
                marks.append(store.watermark("C1"))
                if not any(o.data.get("partial") for o in api):
                    break
            # the three empty days cost no cycle: the first one already stored a day
            assert marks[0] is not None and marks[0] < NOW - timedelta(days=3)
            # a day a cycle: the newest slot held moved on by about a day each time
            days = [m for m in marks if m is not None]
            assert len(days) >= 5
            assert all(
                timedelta(hours=20) <= b - a <= timedelta(hours=28)
                for a, b in itertools.pairwise(days[:4])
            )
            assert NOW - days[-1] <= timedelta(minutes=30)
            for serial in ("C1", "C2"):
                starts = store.slot_columns([serial], since)[serial].start
                assert (np.diff(starts) == 15 * 60).all()  # no gap left between the pieces
                first = datetime.fromtimestamp(int(starts[0]), UTC)
                last = datetime.fromtimestamp(int(starts[-1]), UTC)
                assert first <= NOW - timedelta(days=4)  # from the device's oldest days
                assert NOW - last <= timedelta(minutes=30)  # to the live slot
            runner.close()


def test_a_few_counters_fetch_their_whole_history_at_once_and_many_share_the_budget():
    from agent.runner import BACKFILL_SLOTS, Plan, _backfill_shares

    month = NOW - timedelta(days=28)
    few = {f"C{i}": Plan(fetch_from=month) for i in range(6)}
    assert _backfill_shares(few, NOW, BACKFILL_SLOTS) == few  # 6 x 2,688 slots fit
    many = {f"C{i}": Plan(fetch_from=month) for i in range(1000)}
    many["LIVE"] = Plan(fetch_from=NOW - timedelta(minutes=15))  # not behind: untouched
    shared = _backfill_shares(many, NOW, BACKFILL_SLOTS)
    assert shared["LIVE"] == many["LIVE"]
    assert {p.max_slots for s, p in shared.items() if s != "LIVE"} == {BACKFILL_SLOTS // 1000}
    crowd = {f"C{i}": Plan(fetch_from=month) for i in range(5000)}
    shared = _backfill_shares(crowd, NOW, BACKFILL_SLOTS)
    assert {p.max_slots for p in shared.values()} == {96}  # at least a day's slots each
