"""The live view is judged when it changes, not every cycle.

Snapshots come on their own schedule (``snapshot_seconds``); between two of them the ring and
the reference are the same, and so is the judgement. The runner keeps the live-view checks'
findings of the last judgement and dates them now, and judges again when a snapshot arrives.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from agent.app import make_runner
from agent.config import parse_config
from agent.store import Store
from agent.views import _nbytes
from diagnostics import liveview as lv
from diagnostics.checks.base import Family
from simulator import FakeClock, Fleet, SimCounter, SimSite

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # a Wednesday afternoon: the store is open
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def live(result):
    return sorted(
        (a.finding for a in result.assessed if a.finding.check_id in LIVE_IDS),
        key=lambda f: (f.subject, f.check_id),
    )


LIVE_IDS: set[str] = set()


def test_the_live_view_is_judged_again_only_when_a_snapshot_arrives(tmp_path):
    clock = FakeClock(NOW)
    site = SimSite("LDN01", "London", "Europe/London", WEEK)
    counters = [SimCounter(f"C{i}", f"door {i}", "LDN01") for i in range(2)]
    with Fleet([site], counters, clock=clock, history_days=2) as fleet:
        settings = {"snapshot_seconds": 300, "cycle_seconds": 60}
        text = fleet.agent_config_toml(tmp_path / "state", probe_timeout_seconds=2, agent=settings)
        config = parse_config(tomllib.loads(text), base_dir=tmp_path)
        with Store.open(tmp_path / "state") as store:
            runner = make_runner(config, store, clock=clock, history_days=2)
            judged: list[str] = []
            for check in runner.checks:
                if check.family is Family.LIVEVIEW:
                    LIVE_IDS.add(check.id)
                    inner = check.run

                    def run(evidence, inner=inner):
                        judged.append(evidence.serial)
                        return inner(evidence)

                    check.run = run
            assert LIVE_IDS

            first = runner.run_cycle()
            assert sorted(judged) == sorted(["C0", "C1"] * len(LIVE_IDS))
            before = live(first)
            assert {f.subject for f in before} == {"C0", "C1"}

            judged.clear()
            clock.set(NOW + timedelta(seconds=60))  # no snapshot due yet
            second = runner.run_cycle()
            assert not [o for o in second.observations if o.probe == "snapshot"]
            assert judged == []  # nothing new to judge
            after = live(second)
            assert [f.at for f in after] == [NOW + timedelta(seconds=60)] * len(after)
            strip = [(f.check_id, f.subject, f.status, f.code, f.summary) for f in before]
            assert [(f.check_id, f.subject, f.status, f.code, f.summary) for f in after] == strip

            clock.set(NOW + timedelta(seconds=300))  # a new snapshot: judged again
            third = runner.run_cycle()
            assert len([o for o in third.observations if o.probe == "snapshot" and o.ok]) == 2
            assert sorted(judged) == sorted(["C0", "C1"] * len(LIVE_IDS))
            runner.close()


def test_a_reference_prepared_again_within_the_memory_budget_is_not_judged_again(
    tmp_path, monkeypatch
):
    clock = FakeClock(NOW)
    site = SimSite("LDN01", "London", "Europe/London", WEEK)
    counters = [SimCounter(f"C{i}", f"door {i}", "LDN01") for i in range(3)]
    with Fleet([site], counters, clock=clock, history_days=2) as fleet:
        fleet.write_references(tmp_path / "refs")  # configured tuning images
        settings = {"snapshot_seconds": 300, "cycle_seconds": 60}
        text = fleet.agent_config_toml(
            tmp_path / "state", tmp_path / "refs", probe_timeout_seconds=2, agent=settings
        )
        config = parse_config(tomllib.loads(text), base_dir=tmp_path)
        with Store.open(tmp_path / "state") as store:
            runner = make_runner(config, store, clock=clock, history_days=2)
            judged: list[str] = []
            for check in runner.checks:
                if check.family is Family.LIVEVIEW:
                    inner = check.run

                    def run(evidence, inner=inner):
                        judged.append(evidence.serial)
                        return inner(evidence)

                    check.run = run
            # room for one prepared reference: each counter's is let go for the next one's
            # and prepared again when its evidence is next gathered
            runner.views.budget = 1
            runner.run_cycle()
            assert {"C0", "C1", "C2"} <= set(judged)
            one = _nbytes(runner.views.reference(config.counter("C0"))[0])
            assert runner.views.prepared_bytes == one
            judged.clear()
            prepared: list[str] = []
            inner_prepare = lv.prepare_reference

            def counting(data):
                prepared.append("C?")
                return inner_prepare(data)

            monkeypatch.setattr(lv, "prepare_reference", counting)
            clock.set(NOW + timedelta(seconds=60))  # no snapshot due: nothing changed
            runner.run_cycle()
            assert runner.views.prepared_bytes == 0  # the references did not fit: none is kept
            assert judged == []  # the same file's reference, whichever copy: not judged again
            assert prepared == []  # and references let go are not prepared for nothing

            clock.set(NOW + timedelta(seconds=300))  # new snapshots: judged, so prepared
            runner.run_cycle()
            assert sorted(set(judged)) == ["C0", "C1", "C2"]
            assert len(prepared) == 3  # each of them: none was held
            runner.close()
