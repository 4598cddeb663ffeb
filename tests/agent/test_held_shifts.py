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
from diagnostics.checks.counts_level import CountLevel
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

            def incident(subject: str, finding: dict) -> int:
                return store.create_incident(
                    check_id=CountLevel.id,
                    site="LDN01",
                    subject=subject,
                    state="open",
                    code="under_count",
                    summary="counting at 0.60x",
                    at=NOW,
                    finding=finding,
                    reason="test",
                ).id

            incident("H1", {"evidence": {"start": start.isoformat()}})
            incident("H2", {"evidence": {}})  # no start: nothing to hold
            closed = incident("H3", {"evidence": {"start": start.isoformat()}})
            store.update_incident(closed, at=NOW, state="resolved", reason="test")
            assert runner.held_shifts("LDN01") == {"H1": start}
            assert runner.held_shifts("PAR01") == {}
            # each counter's evidence carries its site's: its peers' too, as a held peer is
            # no yardstick for the others
            for serial in ("H1", "H2"):
                assert runner.evidence(config.counter(serial), NOW).held == {"H1": start}
