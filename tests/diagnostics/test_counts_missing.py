"""Missing data: pending inside the upload window, raised before it runs out, lost after it;
a whole site going silent is one site finding."""

from datetime import timedelta

from diagnostics.assess import assess
from diagnostics.checks.base import CounterEvidence, SiteEvidence
from diagnostics.checks.counts_missing import CountsMissing, SiteCountsOutage, fold_site_outages
from diagnostics.model import Decision, Observation, Status
from tests.diagnostics.helpers import NOW, TODAY, calendar, history

CAL = calendar()


def drop(slots, start, end):
    return tuple(s for s in slots if not (start <= s.start < end))


def counter(slots, now=NOW, peers=None, cal=CAL):
    return CounterEvidence(
        serial="A",
        name="Main door",
        site="LDN01",
        calendar=cal,
        now=now,
        observations={"api": Observation("A", "api", now, False)},
        slots=slots,
        peers=peers or {},
    )


def judge(slots, now=NOW, cal=CAL, **kw):
    [f] = CountsMissing().run(counter(slots, now, cal=cal, **kw))
    [a] = assess([f], {"LDN01": cal}) if f.problem else [None]
    return f, a


def test_complete_data_is_ok():
    f, _ = judge(history("A", NOW))
    assert f.status is Status.OK and f.code == "complete"


def test_a_fresh_gap_is_pending_until_the_upload_window_ends():
    gap = (NOW - timedelta(hours=4), NOW - timedelta(hours=1))
    f, a = judge(drop(history("A", NOW), *gap))
    assert f.status is Status.WARN and f.code == "missing"
    assert f.evidence["start"] == gap[0].isoformat() and f.evidence["slots"] == 12
    assert f.evidence["expected"] > 50 and f.evidence["observed"] == 0
    assert a.verdict.decision is Decision.PENDING and a.verdict.rule == "upload_window"
    assert a.verdict.until == gap[0] + timedelta(days=7)


def test_a_gap_older_than_five_days_is_raised_before_it_is_lost():
    gap = (NOW - timedelta(days=5, hours=6), NOW - timedelta(days=5, hours=2))
    f, a = judge(drop(history("A", NOW), *gap))
    assert f.status is Status.WARN and "will be lost on" in f.summary
    assert a.verdict.decision is Decision.GENUINE
    assert "data will be lost on" in a.verdict.reasons[0]


def test_a_gap_older_than_the_upload_window_is_lost():
    gap = (NOW - timedelta(days=7, hours=6), NOW - timedelta(days=7, hours=2))
    f, a = judge(drop(history("A", NOW), *gap))
    assert f.status is Status.FAIL and f.evidence["lost"] is True
    assert a.verdict.decision is Decision.GENUINE and "lost" in a.verdict.reasons[0]


def test_a_gap_at_night_is_missing_but_cost_nothing():
    night = (NOW.replace(hour=0) - timedelta(hours=2), NOW.replace(hour=6))
    f, a = judge(drop(history("A", NOW), *night))
    assert f.code == "missing" and f.evidence["expected"] == 0
    assert a.verdict.decision is Decision.FALSE_ALARM and a.verdict.rule == "store_closed"
    assert "outside opening hours" in a.verdict.reasons[0]


def test_a_gap_on_a_closed_day_is_ruled_out_with_the_reason():
    day = TODAY - timedelta(days=2)
    cal = calendar(closures=[(day, day, "stocktake")])
    start = NOW.replace(hour=0) - timedelta(days=2)
    f, a = judge(drop(history("A", NOW, cal=cal), start, start + timedelta(days=1)), cal=cal)
    assert f.code == "missing"
    assert a.verdict.decision is Decision.FALSE_ALARM and "stocktake" in a.verdict.reasons[0]


def test_a_counter_that_never_sent_anything_is_not_missing_everything():
    [f] = CountsMissing().run(counter(()))
    assert f.status is Status.SKIP


def test_slots_before_a_new_counters_first_slot_are_not_missing():
    peer = history("B", NOW, seed=2)
    f, _ = judge(history("A", NOW, days=3), peers={"B": peer})
    assert f.status is Status.OK


def site(counters, now=NOW):
    return SiteEvidence(site="LDN01", calendar=CAL, now=now, counters=counters)


def test_the_newest_slots_are_not_missing_before_they_are_due():
    f, _ = judge(drop(history("A", NOW), NOW - timedelta(minutes=30), NOW))
    assert f.status is Status.OK  # the last two slots may simply not be fetched yet


def test_whole_site_outage_is_one_finding_and_folds_the_counters():
    gap = (NOW - timedelta(hours=4), NOW)
    slots = {s: drop(history(s, NOW, seed=i), *gap) for i, s in enumerate("ABC")}
    [outage] = SiteCountsOutage().run(site(slots))
    assert outage.code == "site_outage" and outage.subject is None and outage.problem
    assert set(outage.evidence["counters"]) == {"A", "B", "C"}
    per_counter = []
    for s in "ABC":
        peers = {p: v for p, v in slots.items() if p != s}
        ev = CounterEvidence(
            serial=s, name=s, site="LDN01", calendar=CAL, now=NOW, slots=slots[s], peers=peers
        )
        per_counter += CountsMissing().run(ev)
    assert all(f.code == "missing" for f in per_counter)
    kept = fold_site_outages([*per_counter, outage])
    assert kept == [outage]
    [a] = assess(kept, {"LDN01": CAL})
    assert a.verdict.decision is Decision.PENDING


def test_one_counter_silent_is_not_a_site_outage_and_is_not_folded():
    gap = (NOW - timedelta(hours=4), NOW)
    slots = {"A": drop(history("A", NOW), *gap), "B": history("B", NOW, seed=2)}
    [f] = SiteCountsOutage().run(site(slots))
    assert f.status is Status.OK
    ev = CounterEvidence(
        serial="A",
        name="A",
        site="LDN01",
        calendar=CAL,
        now=NOW,
        slots=slots["A"],
        peers={"B": slots["B"]},
    )
    missing = CountsMissing().run(ev)
    assert fold_site_outages([*missing, f]) == [*missing, f]


def test_a_counters_own_earlier_gap_is_not_folded_into_a_later_outage():
    own = (NOW - timedelta(days=2, hours=5), NOW - timedelta(days=2, hours=3))
    gap = (NOW - timedelta(hours=4), NOW)
    slots = {
        "A": drop(drop(history("A", NOW), *own), *gap),
        "B": drop(history("B", NOW, seed=2), *gap),
    }
    [outage] = SiteCountsOutage().run(site(slots))
    ev = CounterEvidence(
        serial="A",
        name="A",
        site="LDN01",
        calendar=CAL,
        now=NOW,
        slots=slots["A"],
        peers={"B": slots["B"]},
    )
    [mine] = CountsMissing().run(ev)
    assert mine.evidence["start"] == own[0].isoformat()
    assert fold_site_outages([mine, outage]) == [mine, outage]


def test_all_scope_reports_each_gap_split_where_the_window_ends():
    old = (NOW - timedelta(days=7, hours=3), NOW - timedelta(days=6, hours=21))
    fresh = (NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    slots = drop(drop(history("A", NOW), *old), *fresh)
    check = CountsMissing(CountsMissing.Options(scope="all"))
    found = check.run(counter(slots))
    assert [f.status for f in found] == [Status.FAIL, Status.WARN, Status.WARN]
    assert found[0].evidence["end"] == found[1].evidence["start"]  # split at now - 7 days
    verdicts = [a.verdict.decision for a in assess(found, {"LDN01": CAL})]
    assert verdicts[0] is Decision.GENUINE and verdicts[-1] is Decision.PENDING
