"""Under- and over-counting against the peers and the counter's own history."""

from datetime import timedelta

from diagnostics.assess import assess
from diagnostics.checks.base import CounterEvidence
from diagnostics.checks.counts_level import CountLevel
from diagnostics.model import CountSlot, Decision, Status
from tests.diagnostics.helpers import NOW, calendar, history

CAL = calendar()
SHIFT = NOW - timedelta(days=6)


def scaled(slots, factor, since=SHIFT, ramp_days=0.0):
    out = []
    for s in slots:
        if s.start < since:
            out.append(s)
            continue
        f = factor
        if ramp_days:
            done = min(1.0, (s.start - since).total_seconds() / (ramp_days * 86400))
            f = 1 + (factor - 1) * done
        out.append(
            CountSlot(s.counter, s.start, s.minutes, round(s.count_in * f), round(s.count_out * f))
        )
    return tuple(out)


def site(days=42, k=20.0):
    return {
        s: history(s, NOW, days=days, seed=i + 1, peak=p, k=k)
        for i, (s, p) in enumerate((("A", 40.0), ("B", 30.0), ("C", 20.0)))
    }


def run(slots, serial="A", **options):
    peers = {p: v for p, v in slots.items() if p != serial}
    ev = CounterEvidence(
        serial=serial,
        name=serial,
        site="LDN01",
        calendar=CAL,
        now=NOW,
        slots=slots[serial],
        peers=peers,
    )
    return CountLevel(CountLevel.Options(**options)).run(ev)


def test_a_steady_counter_is_ok():
    for serial in "ABC":
        [f] = run(site(), serial)
        assert f.status is Status.OK, f.summary


def test_an_abrupt_under_count_is_found_with_its_factor_and_start():
    slots = site()
    slots["A"] = scaled(slots["A"], 0.6)
    [f] = run(slots)
    assert f.status is Status.FAIL and f.code == "under_count"
    assert 0.5 <= f.evidence["factor"] <= 0.72
    start = f.evidence["start"]
    assert SHIFT - timedelta(days=2) <= CountSlot("A", NOW, 15, 0, 0).start.fromisoformat(start)
    assert f.evidence["observed"] < f.evidence["expected"]
    [a] = assess([f], {"LDN01": CAL})
    assert a.verdict.decision is Decision.GENUINE


def test_a_slow_drift_upwards_is_an_over_count():
    slots = site()
    slots["B"] = scaled(slots["B"], 1.5, ramp_days=3)
    [f] = run(slots, "B")
    assert f.code == "over_count" and f.problem and f.evidence["factor"] > 1.2


def test_the_healthy_peers_of_a_broken_counter_are_not_blamed():
    slots = site()
    slots["A"] = scaled(slots["A"], 0.6)
    for serial in "BC":
        [f] = run(slots, serial)
        assert f.status is Status.OK, f.summary


def test_a_drop_at_every_door_is_traffic_not_a_fault():
    slots = {s: scaled(v, 0.5) for s, v in site().items()}
    for serial in "ABC":
        [f] = run(slots, serial)
        assert f.status is Status.OK, f.summary


def test_without_peers_a_large_drop_is_judged_against_history():
    slots = {"A": scaled(history("A", NOW, days=42, k=50.0), 0.4)}
    [f] = run(slots)
    assert f.code == "under_count" and f.evidence["against"] == "history"


def test_a_shift_that_ended_is_reported_in_all_scope_but_not_as_current():
    slots = site(days=56)
    end = NOW - timedelta(days=12)
    slots["A"] = tuple(
        s
        if not (SHIFT - timedelta(days=14) <= s.start < end)
        else CountSlot(s.counter, s.start, 15, round(s.count_in * 0.5), round(s.count_out * 0.5))
        for s in slots["A"]
    )
    [current] = run(slots)
    assert current.status is Status.OK
    found = run(slots, scope="all")
    assert [f.code for f in found] == ["under_count"]
