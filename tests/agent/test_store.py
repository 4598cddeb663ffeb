import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from agent.incidents import Policy, apply
from agent.store import MIGRATIONS, Store, StoreError
from diagnostics.model import Assessed, CountSlot, Decision, Finding, Status, Verdict

T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path) as s:
        yield s


def test_wal_and_schema_version(store, tmp_path):
    assert store.schema_version == len(MIGRATIONS)
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()
    with Store.open(tmp_path) as again:  # reopening migrates nothing and loses nothing
        assert again.schema_version == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "ffc-agent.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(tmp_path)


def test_slots_keep_their_first_arrival_time(store):
    a = CountSlot("C1", T0, 15, 3, 2)
    b = CountSlot("C1", T0 + timedelta(minutes=15), 15, 0, 0)
    assert store.add_slots([a, b], T0 + timedelta(minutes=30)) == 2
    later = T0 + timedelta(days=2)
    revised = CountSlot("C1", T0, 15, 4, 2)
    assert store.add_slots([revised], later) == 0  # not new: a revision
    got = store.slots("C1", T0 - timedelta(hours=1))
    assert [(s.count_in, s.arrived_at) for s in got] == [
        (4, T0 + timedelta(minutes=30)),
        (0, T0 + timedelta(minutes=30)),
    ]
    assert store.watermark("C1") == T0 + timedelta(minutes=15)
    assert store.watermark("nobody") is None
    late = CountSlot("C1", T0 - timedelta(hours=1), 15, 1, 1)
    assert store.add_slots([late], later) == 1
    assert store.slots("C1", T0 - timedelta(hours=2))[0].arrived_at == later


def _assessed(status, decision=Decision.GENUINE, at=T0):
    f = Finding("counter.offline", status, "refused", "refused", at, "S1", "C1")
    return Assessed(f, Verdict(decision, ("because",)) if f.problem else None)


def _cycle(store, at, status, decision=Decision.GENUINE, policy=None):
    """Store one cycle's finding (as the runner does), then update the incidents."""
    item = _assessed(status, decision, at)
    store.add_findings(store.begin_cycle(at), [item])
    return apply(store, [item], at, policy)


def test_incident_opens_once_extends_and_resolves_with_transitions(store):
    once = Policy(confirm_checks=1, recover_checks=1)
    flips = _cycle(store, T0, Status.FAIL, policy=once)
    assert [f.to_state for f in flips] == ["open"]
    assert _cycle(store, T0 + timedelta(minutes=5), Status.FAIL, policy=once) == []
    assert _cycle(store, T0 + timedelta(minutes=10), Status.SKIP, policy=once) == []
    assert _cycle(store, T0, Status.FAIL, Decision.FALSE_ALARM, policy=once) == []
    assert len(store.incidents(open_only=True)) == 1
    flips = _cycle(store, T0 + timedelta(minutes=15), Status.OK, policy=once)
    assert [(f.from_state, f.to_state) for f in flips] == [("open", "resolved")]
    [inc] = store.incidents()
    assert inc.resolved_at is not None
    assert [t["to_state"] for t in store.transitions(inc.id)] == ["open", "resolved"]
    # a comeback opens a new incident
    flips = _cycle(store, T0 + timedelta(hours=1), Status.FAIL, policy=once)
    assert [f.to_state for f in flips] == ["open"]
    assert len(store.incidents()) == 2


def test_incidents_are_asked_for_by_subject_check_and_site(store):
    at = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    for check, site, subject in (
        ("counter.offline", "LDN01", "C1"),
        ("counter.offline", "LDN01", "C2"),
        ("counter.counts.stopped", "LDN01", "C1"),
        ("counter.offline", "MAN01", "C1"),
    ):
        store.create_incident(
            check_id=check, site=site, subject=subject, state="open", code="x",
            summary="s", at=at, finding={}, reason="r",
        )  # fmt: skip
    assert len(store.incidents()) == 4
    assert [i.id for i in store.incidents(subject="C1")] == [1, 3, 4]
    assert [i.id for i in store.incidents(subject="C1", check_id="counter.offline")] == [1, 4]
    one = store.incidents(subject="C1", check_id="counter.offline", site="MAN01")
    assert [i.id for i in one] == [4]
    assert store.incidents(subject="C9") == []
