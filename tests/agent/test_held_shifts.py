"""An open level incident holds its counter to the level before the shift.

Once a fault is older than the days held back from the level's yardstick, the yardstick and
the counter's own baselines learn it, and the finding would end while the counter still
counts wrong. The runner therefore hands the count models the start of every open (or
recovering) level incident of the site, from the incident's last problem finding.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agent.app import make_runner
from agent.config import load_config
from agent.store import Store
from diagnostics.checks.counts_imbalance import CountImbalance
from diagnostics.checks.counts_level import CountLevel
from diagnostics.series import Hold
from diagnostics.share import HeldSplit
from simulator import FakeClock, Fleet, SimCounter, SimSite
from tests.agent.test_delivery_e2e import NOW, WEEK


def test_the_runner_hands_open_level_incidents_to_the_count_models(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter(s, f"Door {s}", "LDN01", base_rate=150.0) for s in ("H1", "H2", "H3")],
        seed=5,
        clock=clock,
    )
    with fleet:
        fleet.start()
        fleet.write_references(tmp_path / "refs")
        path = tmp_path / "agent.toml"
        path.write_text(fleet.agent_config_toml(tmp_path / "state", tmp_path / "refs"))
        config = load_config(path)
        with Store.open(tmp_path / "state") as store:
            runner = make_runner(config, store, clock=clock)
            start = NOW - timedelta(days=20)

            def incident(subject: str, finding: dict, check: str = CountLevel.id) -> int:
                return store.create_incident(
                    check_id=check,
                    site="LDN01",
                    subject=subject,
                    state="open",
                    code="under_count",
                    summary="counting at 0.60x",
                    at=NOW,
                    finding=finding,
                    reason="test",
                ).id

            # the finding kept the door's usual ratio to its peers, which stands in for its
            # baselines once the window holds nothing from before the shift
            incident("H1", {"evidence": {"start": start.isoformat(), "usual_ratio": 0.42}})
            incident("H2", {"evidence": {}})  # no start: nothing to hold
            closed = incident("H3", {"evidence": {"start": start.isoformat()}})
            store.update_incident(closed, at=NOW, state="resolved", reason="test")
            held = {"H1": Hold(start, 0.42)}
            assert runner.held_shifts("LDN01") == held
            assert runner.held_shifts("PAR01") == {}
            # each counter's evidence carries its site's: its peers' too, as a held peer is
            # no yardstick for the others
            for serial in ("H1", "H2"):
                assert runner.evidence(config.counter(serial), NOW).held == held
            # a ratio that is no ratio (an older finding, a damaged row) holds the start alone
            for bad in (None, "0.4", -1.0, 0, float("nan")):
                store.update_incident(
                    closed,
                    at=NOW,
                    state="open",
                    reason="test",
                    finding={"evidence": {"start": start.isoformat(), "usual_ratio": bad}},
                )
                assert runner.held_shifts("LDN01")["H3"] == Hold(start, None), bad
            # a held counter's finding names the start it was held since: when the detector
            # splits the fault into episodes, the hold stays with the first one's start
            later = (start + timedelta(days=9)).isoformat()
            since = {"start": later, "held_since": start.isoformat(), "usual_ratio": 0.5}
            store.update_incident(closed, at=NOW, finding={"evidence": since})
            assert runner.held_shifts("LDN01")["H3"] == Hold(start, 0.5)
            # an open imbalance incident holds its door to the usual IN share it named, since
            # the start its move was held since (or began)
            assert runner.held_splits("LDN01") == {}
            split = {"start": later, "held_since": start.isoformat(), "usual_share_in": 0.47}
            incident("H2", {"evidence": split}, CountImbalance.id)
            bad = {"start": later, "usual_share_in": "0.5"}
            incident("H1", {"evidence": bad}, CountImbalance.id)
            incident("H3", {"evidence": {"usual_share_in": 0.5}}, CountImbalance.id)  # no start
            assert runner.held_splits("LDN01") == {"H2": HeldSplit(start, 0.47)}
            held = runner.evidence(config.counter("H3"), NOW).held_split
            assert held == {"H2": HeldSplit(start, 0.47)}
