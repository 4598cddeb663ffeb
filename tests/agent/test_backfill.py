"""A slow counter that holds less history than the agent asks for still gets its counts.

The first fetch asks ``history_days`` back in 24-hour calls. A counter answering each call late
is cut short by the cycle's probe deadline; before, a counter holding only the last days was
asked the same empty early days again every cycle and never reached its counts.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

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
