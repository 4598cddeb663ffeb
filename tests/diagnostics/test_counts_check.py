from datetime import timedelta

from diagnostics.assess import assess
from diagnostics.checks.counts import CountingStopped, counter_model
from diagnostics.model import CountSlot, Decision, Status
from tests.diagnostics.helpers import NOW, TODAY, calendar, evidence, history


def run(slots, **kw):
    [finding] = CountingStopped().run(evidence(slots, NOW, **kw))
    return finding


def test_healthy_counter_is_ok():
    assert run(history("FFC1", NOW)).status is Status.OK


def test_zeros_through_opening_hours_fail_with_the_evidence():
    f = run(history("FFC1", NOW, zero_from=NOW - timedelta(hours=4)))
    assert f.status is Status.FAIL and f.code == "zero_run"
    assert f.evidence["expected"] > 50 and f.evidence["observed"] == 0
    assert f.evidence["log10_probability"] <= -4
    assert f.evidence["zero_since"] == (NOW - timedelta(hours=4)).isoformat()


def test_a_short_quiet_spell_is_plausible():
    f = run(history("FFC1", NOW, peak=4.0, zero_from=NOW - timedelta(minutes=30)))
    assert f.status is Status.OK and f.code in ("quiet", "counting")


def test_zeros_overnight_only_are_not_a_run():
    early = NOW.replace(hour=9, minute=0)  # opening time: the night was zero, as it should be
    slots = history("FFC1", early)
    [f] = CountingStopped().run(evidence(slots, early))
    assert f.status is Status.OK


def test_new_counter_without_history_uses_the_fallback_rule():
    short = history("FFC1", NOW, days=1, zero_from=NOW - timedelta(hours=5))
    f = run(short)
    assert f.status is Status.WARN and f.evidence["rule"] == "fallback without history"
    f = run(history("FFC1", NOW, days=1, zero_from=NOW - timedelta(hours=1)))
    assert f.status is Status.OK


def test_an_offline_counter_is_not_judged_on_stale_counts():
    f = run(history("FFC1", NOW, zero_from=NOW - timedelta(hours=4)), api_ok=False)
    assert f.status is Status.SKIP


def test_a_closed_store_is_ruled_out_with_its_reason():
    cal = calendar(closures=[(TODAY - timedelta(days=1), TODAY + timedelta(days=3), "refit")])
    # the store is shut for a refit since yesterday: genuine zeros, counted as a zero run
    slots = history("FFC1", NOW, zero_from=(NOW - timedelta(days=1)).replace(hour=0), cal=cal)
    f = run(slots, cal=cal)
    assert f.status is Status.FAIL
    [a] = assess([f], {"LDN01": cal})
    assert a.verdict.decision is Decision.FALSE_ALARM and a.verdict.rule == "store_closed"
    assert any("refit" in r for r in a.verdict.reasons)


def test_a_fault_that_began_before_a_closure_stays_genuine():
    cal = calendar(closures=[(TODAY, TODAY, "stocktake")])
    slots = history("FFC1", NOW, zero_from=NOW - timedelta(days=1), cal=cal)
    [a] = assess([run(slots, cal=cal)], {"LDN01": cal})
    assert a.verdict.decision is Decision.GENUINE


# --- peers, scope and the model behind the check ------------------------------------------------

from diagnostics.checks.base import CounterEvidence  # noqa: E402


def with_peers(own, peers, cal=None):
    cal = cal or calendar()
    return CounterEvidence(
        serial="FFC1", name="Main door", site="LDN01", calendar=cal, now=NOW, slots=own, peers=peers
    )


def quiet(slots, since, keep=0.0):
    return tuple(
        CountSlot(s.counter, s.start, s.minutes, int(s.count_in * keep), int(s.count_out * keep))
        if s.start >= since
        else s
        for s in slots
    )


def test_a_storm_that_empties_every_door_is_not_a_fault():
    since = NOW - timedelta(hours=3)
    own = history("FFC1", NOW, zero_from=since)
    peers = {
        "FFC2": quiet(history("FFC2", NOW, seed=2), since, keep=0.0),
        "FFC3": quiet(history("FFC3", NOW, seed=3), since, keep=0.02),
    }
    [f] = CountingStopped().run(with_peers(own, peers))
    # unusual for the counter alone, so the check reports it; the gate sees the peers' dip
    assert f.code == "zero_run" and f.evidence["peer_factor"] < 0.1
    [a] = assess([f], {"LDN01": calendar()})
    assert a.verdict.decision is Decision.FALSE_ALARM and a.verdict.rule == "peers_same_dip"
    assert "real drop in traffic" in a.verdict.reasons[0]


def test_zeros_while_the_peers_count_as_usual_are_a_fault():
    since = NOW - timedelta(hours=3)
    own = history("FFC1", NOW, zero_from=since)
    peers = {"FFC2": history("FFC2", NOW, seed=2), "FFC3": history("FFC3", NOW, seed=3)}
    [f] = CountingStopped().run(with_peers(own, peers))
    assert f.status is Status.FAIL and f.evidence["peer_factor"] > 0.5
    [a] = assess([f], {"LDN01": calendar()})
    assert a.verdict.decision is Decision.GENUINE


def test_a_new_counter_whose_peers_are_silent_too_is_not_warned():
    since = NOW - timedelta(hours=5)
    own = history("FFC1", NOW, days=1, zero_from=since)
    peers = {"FFC2": quiet(history("FFC2", NOW, seed=2), since)}
    [f] = CountingStopped().run(with_peers(own, peers))
    assert f.status is Status.OK


def test_all_scope_finds_a_past_zero_run_that_has_recovered():
    start, end = NOW - timedelta(days=2, hours=6), NOW - timedelta(days=2, hours=1)
    slots = tuple(
        CountSlot(s.counter, s.start, 15, 0, 0) if start <= s.start < end else s
        for s in history("FFC1", NOW)
    )
    [current] = CountingStopped().run(evidence(slots, NOW))
    assert current.status is Status.OK  # counting again now
    found = CountingStopped(CountingStopped.Options(scope="all")).run(evidence(slots, NOW))
    assert [f.code for f in found] == ["zero_run"]
    assert found[0].evidence["zero_since"] == start.isoformat()
    assert found[0].evidence["last_slot_end"] == end.isoformat()


def test_a_zero_run_on_a_public_holiday_is_ruled_out():
    # 25 Dec 2026 is a Friday; the store shuts for Christmas Day
    now = NOW.replace(month=12, day=25, hour=16)
    cal = calendar()
    cal = type(cal)(cal.timezone, cal.weekly, cal.holiday_region, True, cal.closures)
    slots = history("FFC1", now, zero_from=now.replace(hour=0), cal=cal)
    [f] = CountingStopped().run(evidence(slots, now, cal=cal))
    assert f.code == "zero_run" and f.problem
    [a] = assess([f], {"LDN01": cal})
    assert a.verdict.decision is Decision.FALSE_ALARM and "Christmas" in a.verdict.reasons[0]


def test_the_runs_the_all_scope_leaves_without_words_are_all_ones_it_finds_ok():
    # a year holds thousands of runs, so the all scope picks the few it words on columns
    # first: every run it leaves out must be one ``_judge_run`` finds ok, on either rule
    windows = [
        (NOW - timedelta(days=2, hours=6), timedelta(hours=4)),  # a fault, with history
        (NOW - timedelta(days=5, hours=5), timedelta(minutes=30)),  # a quiet spell
        (NOW - timedelta(days=24, hours=5), timedelta(hours=4)),  # before two weeks of history
    ]
    slots = tuple(
        CountSlot(s.counter, s.start, 15, 0, 0)
        if any(a <= s.start < a + length for a, length in windows)
        else s
        for s in history("FFC1", NOW)
    )
    ev = evidence(slots, NOW)
    check = CountingStopped(CountingStopped.Options(scope="all"))
    model = counter_model(ev)
    i = model.index("FFC1")
    columns = model.zero_run_columns(i)
    picked = check._may_be_problem(model, i, columns)
    runs = columns.runs()
    assert len(runs) == picked.size > 20 and 0 < picked.sum() < picked.size
    assert columns.runs(picked) == [r for r, p in zip(runs, picked, strict=True) if p]
    judged = [check._judge_run(model, i, r, ev) for r in runs]
    assert all(not f.problem for f, p in zip(judged, picked, strict=True) if not p)
    assert {f.status for f, p in zip(judged, picked, strict=True) if p} >= {
        Status.FAIL,
        Status.WARN,
    }
