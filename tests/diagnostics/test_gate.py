"""The false-alarm gate: each rule fires when it should and not otherwise, and combinations."""

from datetime import UTC, date, datetime, time, timedelta

import pytest

from diagnostics.assess import Gate, Silence, assess
from diagnostics.calendar import Hours
from diagnostics.model import Decision, Finding, Status
from tests.diagnostics.helpers import calendar

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday afternoon, open 09:00-20:00
SITES = {"LDN01": ("A1", "A2", "A3", "A4"), "MCR02": ("M1", "M2")}


def offline(serial, site="LDN01", code="timeout"):
    return Finding(
        "counter.offline",
        Status.FAIL,
        code,
        f"{serial} {code}",
        NOW,
        site,
        serial,
        {"failing_since": (NOW - timedelta(minutes=20)).isoformat()},
    )


def zero_run(
    serial,
    site="LDN01",
    *,
    since=NOW - timedelta(hours=3),
    scaled=-12.0,
    alone=-12.0,
    peer_factor=1.0,
):
    return Finding(
        "counter.counts.stopped",
        Status.FAIL,
        "zero_run",
        "zeros",
        NOW,
        site,
        serial,
        {
            "zero_since": since.isoformat(),
            "last_slot_end": NOW.isoformat(),
            "expected": 120.0,
            "observed": 0,
            "log10_probability": scaled,
            "log10_probability_alone": alone,
            "peer_factor": peer_factor,
        },
    )


def level(serial, code="under_count"):
    return Finding(
        "counter.counts.level",
        Status.WARN,
        code,
        "low",
        NOW,
        "LDN01",
        serial,
        {
            "start": (NOW - timedelta(days=2)).isoformat(),
            "end": NOW.isoformat(),
            "factor": 0.7,
            "expected": 1000.0,
            "observed": 700,
        },
    )


def gate(**kw):
    cals = {"LDN01": calendar(), "MCR02": calendar()}
    return Gate(
        calendars=kw.pop("calendars", cals),
        now=kw.pop("now", NOW),
        counters_by_site=kw.pop("sites", SITES),
        **kw,
    )


def verdicts(findings, **kw):
    return {
        (a.finding.check_id, a.finding.subject or a.finding.site): a.verdict
        for a in assess(findings, gate=gate(**kw))
        if a.verdict
    }


def test_a_problem_no_rule_explains_is_genuine_and_says_so():
    [v] = verdicts([zero_run("A1")]).values()
    assert v.decision is Decision.GENUINE and "no rule explains it" in v.reasons[0]


# -- silences and maintenance windows ----


def silence(target, start=NOW - timedelta(hours=1), until=NOW + timedelta(hours=1)):
    return Silence(7, target, start, until, "new flooring", "alice")


@pytest.mark.parametrize("target", ["A1", "LDN01", "*"])
def test_a_silence_on_the_counter_its_site_or_everything_holds_the_finding(target):
    v = verdicts([offline("A1")], silences=[silence(target)])[("counter.offline", "A1")]
    assert v.decision is Decision.PENDING and v.rule == "silenced"
    assert v.until == NOW + timedelta(hours=1) and "alice" in v.reasons[0]


def test_a_silence_elsewhere_or_expired_or_not_yet_begun_does_not():
    for s in (
        silence("A2"),
        silence("MCR02"),
        silence("A1", NOW - timedelta(hours=3), NOW - timedelta(hours=1)),
        silence("A1", NOW + timedelta(hours=1), NOW + timedelta(hours=3)),
    ):
        v = verdicts([offline("A1")], silences=[s])[("counter.offline", "A1")]
        assert v.decision is Decision.GENUINE, s


def test_a_silence_that_expires():
    s = silence("A1", NOW - timedelta(hours=1), NOW + timedelta(minutes=30))
    before = verdicts([offline("A1")], silences=[s])[("counter.offline", "A1")]
    after = verdicts([offline("A1")], silences=[s], now=NOW + timedelta(minutes=31))
    assert before.decision is Decision.PENDING
    assert after[("counter.offline", "A1")].decision is Decision.GENUINE


# -- the store's calendar ----


def test_special_hours_close_or_open_the_store_for_one_date():
    cal = calendar()
    early = type(cal)(
        cal.timezone,
        cal.weekly,
        cal.holiday_region,
        special=((NOW.date(), Hours(time(9), time(12))),),
    )
    v = verdicts([zero_run("A1")], calendars={"LDN01": early})[("counter.counts.stopped", "A1")]
    assert v.decision is Decision.FALSE_ALARM and "special hours" in v.reasons[0]
    v = verdicts([zero_run("A1")])[("counter.counts.stopped", "A1")]
    assert v.decision is Decision.GENUINE


def test_a_holiday_and_a_real_fault_on_the_same_day():
    # Christmas Day: the store shuts, so its zeros are the truth; the offline counter is not
    christmas = datetime(2026, 12, 25, 15, 0, tzinfo=UTC)
    cal = calendar()
    shut = type(cal)(cal.timezone, cal.weekly, cal.holiday_region, True)
    z = zero_run("A1", since=christmas.replace(hour=9))
    z = Finding(
        z.check_id,
        z.status,
        z.code,
        z.summary,
        christmas,
        z.site,
        z.subject,
        {**z.evidence, "last_slot_end": christmas.isoformat()},
    )
    o = Finding("counter.offline", Status.FAIL, "refused", "refused", christmas, "LDN01", "A2")
    v = verdicts([z, o], calendars={"LDN01": shut}, now=christmas)
    assert v[("counter.counts.stopped", "A1")].rule == "store_closed"
    assert "Christmas" in v[("counter.counts.stopped", "A1")].reasons[0]
    assert v[("counter.offline", "A2")].decision is Decision.GENUINE
    # the same day at a store that stays open on holidays: the zeros are a real fault
    open_cal = type(cal)(cal.timezone, cal.weekly, cal.holiday_region, False)
    v = verdicts([z], calendars={"LDN01": open_cal}, now=christmas)
    assert v[("counter.counts.stopped", "A1")].decision is Decision.GENUINE


# -- the gateway, storms and whole sites ----


def gateway(*codes, status=Status.FAIL):
    problems = [{"status": "fail", "code": c, "summary": c} for c in codes]
    return Finding(
        "gateway.health", status, codes[0], "gateway", NOW, None, "gateway", {"problems": problems}
    )


def test_the_gateways_own_fault_suppresses_counter_findings():
    v = verdicts([gateway("uplink_down"), offline("A1"), zero_run("A2")])
    assert v[("gateway.health", "gateway")].decision is Decision.GENUINE
    for key in (("counter.offline", "A1"), ("counter.counts.stopped", "A2")):
        assert v[key].decision is Decision.FALSE_ALARM and v[key].rule == "gateway_fault"
        assert "no network uplink" in v[key].reasons[0]


def test_a_gateway_warning_that_does_not_blind_it_suppresses_nothing():
    clock = gateway("clock_unsynchronised", status=Status.WARN)
    v = verdicts([clock, offline("A1")])
    assert v[("counter.offline", "A1")].decision is Decision.GENUINE


def test_storm_guard_stops_tickets_and_names_the_common_cause():
    found = assess(
        [offline("A1"), offline("A2"), offline("A3"), offline("M1", "MCR02")], gate=gate()
    )
    storm = [a for a in found if a.finding.check_id == "gateway.storm"]
    assert len(storm) == 1 and storm[0].genuine
    assert "switch" in storm[0].finding.evidence["likely_cause"]
    assert all(
        a.verdict.rule == "storm_guard" and a.ruled_out
        for a in found
        if a.finding.check_id == "counter.offline"
    )


def test_half_or_fewer_failing_is_no_storm():
    found = assess([offline("A1"), offline("A2"), offline("A3")], gate=gate())  # 3 of 6
    assert not any(a.finding.check_id == "gateway.storm" for a in found)
    assert all(a.genuine for a in found)


def up(serial, site="LDN01"):
    return Finding("counter.offline", Status.OK, "online", f"{serial} up", NOW, site, serial)


def test_the_storm_is_over_once_enough_counters_answer_that_none_can_be_going_on():
    """6 counters: a storm is 4 or more failing. The ok comes once at most 3 could be failing
    (3 answer), whatever the others' checks said; never while the storm holds, nor when too
    few could be judged to say."""

    def storm_of(findings):
        found = assess(findings, gate=gate())
        return [a for a in found if a.finding.check_id == "gateway.storm"]

    def unknown(serial, site="LDN01"):
        return Finding("counter.offline", Status.ERROR, "check_error", "?", NOW, site, serial)

    raging = [offline(s) for s in ("A1", "A2", "A3")] + [offline("M1", "MCR02"), up("A4")]
    [storm] = storm_of(raging)
    assert storm.finding.status is Status.FAIL  # no ok beside the storm's own finding

    # three back, three still down: 3 of 6 is not more than half
    calming = [offline("A1"), offline("A2"), offline("M1", "MCR02")]
    calming += [up("A3"), up("A4"), up("M2", "MCR02")]
    [calm] = storm_of(calming)
    assert calm.verdict is None  # an ok is no problem to judge
    f = calm.finding
    assert (f.status, f.code, f.site, f.subject) == (Status.OK, "calm", None, "gateway")
    assert f.summary == "no storm: 3 of 6 counters answering"
    assert f.evidence == {"answering": 3, "total": 6}
    assert f.at == NOW

    # two answer and nothing is known of the other four: they may be failing, so no ok
    assert storm_of([up("A3"), up("A4"), unknown("A1"), unknown("A2")]) == []
    # nothing judged at all (every check erred, or none ran): no ok
    assert storm_of([unknown(s) for s in ("A1", "A2", "A3", "A4")]) == []
    assert storm_of([]) == []
    # the gateway's own fault: counter findings are not trusted, so neither is their ok
    everyone = [up(s) for s in ("A1", "A2", "A3", "A4")] + [up("M1", "MCR02")]
    assert storm_of([gateway("uplink_down"), *everyone]) == []
    # all six answering: ok once, about the gateway
    [fine] = storm_of([*everyone, up("M2", "MCR02")])
    assert fine.finding.summary == "no storm: 6 of 6 counters answering"


def test_a_site_outage_and_a_single_counters_fault_on_the_same_day():
    found = assess(
        [offline("M1", "MCR02", "refused"), offline("M2", "MCR02", "refused"), zero_run("A1")],
        gate=gate(),
    )
    by = {(a.finding.check_id, a.finding.subject or a.finding.site): a for a in found}
    site = by[("site.offline", "MCR02")]
    assert site.genuine and site.finding.subject is None
    assert site.finding.evidence["counters"] == ["M1", "M2"]
    assert by[("counter.offline", "M1")].verdict.rule == "site_outage"
    assert by[("counter.offline", "M2")].ruled_out
    assert by[("counter.counts.stopped", "A1")].genuine  # the other site's fault stays real


def count_finding(check_id, code, serial, site, start, end):
    return Finding(
        check_id,
        Status.WARN,
        code,
        code,
        NOW,
        site,
        serial,
        {"start": start.isoformat(), "end": end.isoformat(), "expected": 10.0, "observed": 0},
    )


def test_no_counter_count_finding_inside_a_site_offline_outage():
    inside = zero_run("M1", "MCR02", since=NOW - timedelta(minutes=15))
    before = zero_run("M2", "MCR02", since=NOW - timedelta(hours=3))  # its own, earlier
    elsewhere = zero_run("A1", since=NOW - timedelta(minutes=15))
    found = assess(
        [offline("M1", "MCR02"), offline("M2", "MCR02"), inside, before, elsewhere],
        gate=gate(),
    )
    by = {(a.finding.check_id, a.finding.subject or a.finding.site): a for a in found}
    assert by[("site.offline", "MCR02")].genuine
    ruled = by[("counter.counts.stopped", "M1")]
    assert ruled.ruled_out and ruled.verdict.rule == "site_outage"
    assert "whole-site outage of MCR02" in ruled.verdict.reasons[0]
    assert by[("counter.counts.stopped", "M2")].genuine
    assert by[("counter.counts.stopped", "A1")].genuine


def test_no_counter_count_finding_inside_a_site_counts_outage():
    start, end = NOW - timedelta(days=2), NOW - timedelta(days=1)
    outage = Finding(
        "site.counts.outage",
        Status.WARN,
        "site_outage",
        "all 4 counters of the site stopped sending",
        NOW,
        "LDN01",
        None,
        {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "counters": {s: [start.isoformat(), end.isoformat()] for s in SITES["LDN01"]},
            "lost_at": (start + timedelta(days=7)).isoformat(),
            "warn_at": (start + timedelta(days=5)).isoformat(),
        },
    )
    hour = timedelta(hours=1)
    inside = [
        count_finding("counter.counts.level", "under_count", "A1", "LDN01", start + hour, end),
        count_finding("counter.counts.imbalance", "imbalance", "A2", "LDN01", start, end - hour),
        count_finding("counter.counts.missing", "missing", "A3", "LDN01", start, end),
    ]
    beyond = count_finding("counter.counts.level", "over_count", "A4", "LDN01", start, NOW)
    other = count_finding("counter.counts.level", "under_count", "M1", "MCR02", start, end)
    found = assess([outage, *inside, beyond, other], gate=gate())
    by = {(a.finding.check_id, a.finding.subject or a.finding.site): a for a in found}
    assert by[("site.counts.outage", "LDN01")].verdict.decision is Decision.PENDING
    for f in inside:
        a = by[(f.check_id, f.subject)]
        assert a.ruled_out and a.verdict.rule == "site_outage", a.verdict
    assert by[("counter.counts.level", "A4")].genuine  # lasts beyond the outage: its own
    assert by[("counter.counts.level", "M1")].genuine  # another site


def test_one_counter_down_at_a_two_counter_site_is_not_a_site_outage():
    found = assess([offline("M1", "MCR02")], gate=gate())
    assert [a.finding.check_id for a in found] == ["counter.offline"] and found[0].genuine


# -- accuracy, peers and luck ----


def test_an_untuned_counter_is_not_judged_for_accuracy():
    v = verdicts([level("A1"), zero_run("A1")], untuned=frozenset({"A1"}))
    assert v[("counter.counts.level", "A1")].rule == "not_tuned"
    assert v[("counter.counts.stopped", "A1")].decision is Decision.GENUINE  # data still gone
    assert verdicts([level("A1")])[("counter.counts.level", "A1")].decision is Decision.GENUINE


def test_peers_in_the_same_dip_are_a_real_drop_in_traffic():
    dip = zero_run("A1", scaled=-1.5, alone=-9.0, peer_factor=0.3)
    v = verdicts([dip])[("counter.counts.stopped", "A1")]
    assert v.decision is Decision.FALSE_ALARM and v.rule == "peers_same_dip"
    assert "30%" in v.reasons[0]
    # peers down a little, but the zeros are improbable even at their level: a fault
    v = verdicts([zero_run("A1", scaled=-6.0, peer_factor=0.7)])[("counter.counts.stopped", "A1")]
    assert v.decision is Decision.GENUINE


def test_statistically_plausible_low_traffic():
    v = verdicts([zero_run("A1", scaled=-2.5, alone=-2.5)])[("counter.counts.stopped", "A1")]
    assert v.decision is Decision.FALSE_ALARM and v.rule == "plausible"
    assert "1 in 316" in v.reasons[0]


def test_checks_errors_and_healthy_findings_get_no_verdict():
    ok = Finding("counter.offline", Status.OK, "online", "fine", NOW, "LDN01", "A1")
    err = Finding("counter.offline", Status.ERROR, "check_error", "boom", NOW, "LDN01", "A2")
    found = assess([ok, err], gate=gate())
    assert [a.verdict for a in found] == [None, None, None]
    # A1 answers, so LDN01 is not wholly offline: the site's ok finding (no verdict either)
    site = found[2].finding
    assert (site.check_id, site.status, site.site, site.subject) == (
        "site.offline",
        Status.OK,
        "LDN01",
        None,
    )
    assert site.evidence == {"answering": ["A1"]}


def test_a_site_is_reachable_again_once_one_of_its_counters_answers():
    up = Finding("counter.offline", Status.OK, "online", "fine", NOW, "MCR02", "M2")
    unknown = Finding("counter.offline", Status.ERROR, "check_error", "?", NOW, "MCR02", "M2")

    def of_the_site(findings):
        found = assess(findings, gate=gate())
        return [a.finding for a in found if a.finding.site == "MCR02" and not a.finding.subject]

    [back] = of_the_site([offline("M1", "MCR02"), up])  # M1 still down, M2 answers
    assert back.status is Status.OK
    assert back.summary == "site MCR02 is reachable: 1 of 2 counters answering"
    # a counter that could not be judged says nothing either way; nor does a storm
    assert of_the_site([offline("M1", "MCR02"), unknown]) == []
    storm = [offline(s) for s in ("A1", "A2", "A3")] + [offline("M1", "MCR02"), up]
    assert of_the_site(storm) == []


def test_the_calendars_can_still_be_passed_alone():
    [a] = assess([zero_run("A1")], {"LDN01": calendar()})
    assert a.genuine
    with pytest.raises(TypeError):
        assess([], {"LDN01": calendar()}, gate=gate())


def test_dates_in_the_helpers_are_what_the_tests_think():
    assert NOW.date() == date(2026, 11, 25) and NOW.weekday() == 2
