"""Issue 9 end to end: a counter's IN/OUT fault is one data-accuracy ticket about the counter,
not a second "whole site is down" ticket about the site it unbalances."""

import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from agent.app import make_runner
from agent.config import parse_config
from agent.store import Store
from rma.tickets import Category
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # a Wednesday afternoon: London is open
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def test_a_counters_imbalance_files_one_ticket_about_the_counter(tmp_path):
    clock = FakeClock(NOW)
    sites = [SimSite("LDN01", "London", "Europe/London", WEEK)]
    counters = [
        SimCounter("SKEWED", "Main door", "LDN01", base_rate=300.0),
        SimCounter("FINE", "Side door", "LDN01", base_rate=300.0),
    ]
    with Fleet(sites, counters, seed=5, clock=clock) as fleet:
        fleet.start()
        # OUT counted at 60 % since three days ago: the counter 25 % apart, the site about 11 %
        fleet.set_fault("SKEWED", "imbalance", since=NOW - timedelta(days=3), factor=0.6)
        text = fleet.agent_config_toml(
            tmp_path / "state", probe_timeout_seconds=1, agent={"confirm_checks": 1}
        )
        config = parse_config(tomllib.loads(text), base_dir=tmp_path)
        with Store.open(tmp_path / "state") as store:
            result = make_runner(config, store, clock=clock).run_cycle()

    found = {(a.finding.check_id, a.finding.subject): a for a in result.assessed}
    counter = found[("counter.counts.imbalance", "SKEWED")]
    assert counter.finding.problem and counter.genuine
    site = found[("site.counts.imbalance", None)]
    assert site.finding.problem, site.finding.summary
    assert site.ruled_out and site.verdict.rule == "explained_by_counter"
    assert [(t.issue_level, t.counters, t.category) for t in result.tickets] == [
        ("counter", ["SKEWED"], Category.DATA_ACCURACY_ISSUE)
    ]
    assert "IN/OUT imbalance" in result.tickets[0].subject
