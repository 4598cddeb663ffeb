"""An id no check declares any more (an old one in the database) crashes nothing: it is shown,
never ticketed; a ticket already filed for it is still followed up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.app import make_runner
from agent.commands.assess import Period, assess_period
from agent.commands.status import fleet_status
from agent.config import parse_config
from agent.incidents import OPEN
from agent.store import Store
from diagnostics.checks import check_for
from diagnostics.model import Finding, Status

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
OLD = "counter.counts.under_count"  # never emitted by any check of this version


def _config(state: Path):
    return parse_config(
        {
            "agent": {"state_dir": str(state)},
            "sites": [
                {
                    "code": "LDN01",
                    "name": "London",
                    "timezone": "Europe/London",
                    "opening_hours": {"wed": "09:00-20:00"},
                }
            ],
            "counters": [{"serial": "FC1", "name": "Entrance", "site": "LDN01"}],
        }
    )


def _incident(store: Store, check_id: str, code: str) -> None:
    finding = Finding(check_id, Status.FAIL, code, "something", NOW, site="LDN01", subject="FC1")
    store.create_incident(
        check_id=check_id,
        site="LDN01",
        subject="FC1",
        state=OPEN,
        code=code,
        summary="something",
        at=NOW,
        finding=finding.to_json(),
        reason="test",
    )


def test_an_old_id_is_shown_but_never_ticketed_and_nothing_crashes(tmp_path: Path) -> None:
    assert check_for(OLD) is None
    config = _config(tmp_path / "state")
    with Store.open(tmp_path / "state") as store:
        _incident(store, OLD, "drop")
        _incident(store, "counter.counts.level", "under_count")
        runner = make_runner(config, store)
        queued = runner.tickets.queue(NOW, [])
        [ticket] = queued  # the level incident's, not the old id's
        assert "under-counting" in ticket.subject
        status = fleet_status(runner.app, NOW)
        shown = [i["check_id"] for c in status["counters"] for i in c["incidents"]]
        assert sorted(shown) == sorted([OLD, "counter.counts.level"])
        period = Period(NOW - timedelta(days=1), NOW + timedelta(hours=1))
        assess_period(config, period=period, store=store)
