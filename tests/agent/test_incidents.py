"""Incidents: confirmation and recovery delays, flapping, and the flips that drive tickets."""

from datetime import UTC, datetime, timedelta

import pytest

from agent.incidents import Policy, apply
from agent.store import Store
from diagnostics.model import Assessed, Decision, Finding, Status, Verdict

T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
STEP = timedelta(minutes=5)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path) as s:
        yield s


class Feed:
    """Feeds one subject's judgements through the store and incidents, one cycle at a time."""

    def __init__(self, store, policy=None):
        self.store, self.policy, self.at = store, policy or Policy(), T0

    def __call__(self, bad, decision=Decision.GENUINE):
        status = Status.FAIL if bad else Status.OK
        f = Finding(
            "counter.offline", status, "refused" if bad else "online", "x", self.at, "S1", "C1"
        )
        item = Assessed(f, Verdict(decision, ("r",)) if bad else None)
        self.store.add_findings(self.store.begin_cycle(self.at), [item])
        flips = apply(self.store, [item], self.at, self.policy)
        self.at += STEP
        return [(fl.from_state, fl.to_state) for fl in flips]


def test_confirmation_delay_then_recovery_delay(store):
    feed = Feed(store, Policy(confirm_checks=2, recover_checks=2))
    assert feed(True) == [(None, "suspected")]
    assert feed(True) == [("suspected", "open")]
    assert feed(True) == []
    assert feed(False) == [("open", "recovering")]
    assert feed(False) == [("recovering", "resolved")]
    [inc] = store.incidents()
    assert [t["to_state"] for t in store.transitions(inc.id)] == [
        "suspected",
        "open",
        "recovering",
        "resolved",
    ]
    # the incident log, in words: counted with diagnostics.model.plural, no "check(s)"
    assert [t["reason"] for t in store.transitions(inc.id)] == [
        "seen 1 time; waiting for 2",
        "confirmed by 2 bad checks in a row",
        "healthy again; waiting for 2 good checks",
        "recovered: healthy on 2 checks in a row",
    ]


def test_one_bad_check_confirms_when_one_is_enough_and_says_so(store):
    feed = Feed(store, Policy(confirm_checks=1, recover_checks=1))
    assert feed(True) == [(None, "open")]
    assert feed(False) == [("open", "resolved")]
    [inc] = store.incidents()
    assert [t["reason"] for t in store.transitions(inc.id)] == [
        "confirmed by 1 bad check in a row",
        "recovered: healthy on 1 check in a row",
    ]


def test_a_single_bad_check_is_never_confirmed(store):
    feed = Feed(store, Policy(confirm_checks=3))
    assert feed(True) == [(None, "suspected")]
    assert feed(False) == [("suspected", "resolved")]
    assert feed(False) == []


def test_confirmation_by_duration(store):
    feed = Feed(store, Policy(confirm_checks=100, confirm_minutes=10))
    assert feed(True) == [(None, "suspected")]
    assert feed(True) == []  # 5 minutes
    assert feed(True) == [("suspected", "open")]  # 10 minutes


def test_a_problem_back_during_recovery_reopens_the_same_incident(store):
    feed = Feed(store, Policy(confirm_checks=1, recover_checks=3))
    feed(True)
    assert feed(False) == [("open", "recovering")]
    assert feed(True) == [("recovering", "open")]
    assert len(store.incidents()) == 1


def test_neutral_judgements_change_nothing(store):
    feed = Feed(store, Policy(confirm_checks=2))
    feed(True)
    assert feed(True, Decision.PENDING) == []  # a silence or the upload window: no news
    assert feed(True, Decision.FALSE_ALARM) == []
    assert feed(True) == [("suspected", "open")]


def test_flapping_becomes_one_intermittent_incident_then_recovers(store):
    feed = Feed(store, Policy(confirm_checks=1, recover_checks=2))
    flips = []
    for i in range(12):  # up, down, up, down ...
        flips += feed(i % 2 == 0)
    assert ("recovering", "intermittent") in flips or ("open", "intermittent") in flips
    assert len(store.incidents()) == 1  # one incident however often it flipped
    [inc] = store.incidents()
    assert inc.state == "intermittent"
    # it settles: healthy long enough for the state-change rate to fall below 5 %
    settled = []
    for _ in range(25):
        settled += feed(False)
    assert settled[-1] == ("intermittent", "resolved")
    assert store.incidents(open_only=True) == []
