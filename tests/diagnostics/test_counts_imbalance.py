"""IN/OUT imbalance per counter and per site: 5 % warns, 10 % fails, only with traffic."""

from datetime import timedelta

import numpy as np

from diagnostics.assess import assess
from diagnostics.checks.base import CounterEvidence, SiteEvidence
from diagnostics.checks.counts_imbalance import CountImbalance, SiteImbalance
from diagnostics.model import CountSlot, Decision, Status
from tests.diagnostics.helpers import NOW, calendar, history

CAL = calendar()
DAY = NOW.replace(hour=0, minute=0) - timedelta(days=1)  # yesterday, a whole day


def split(slots, out_share=0.5, since=None, seed=0):
    """Re-split each slot's total into IN and OUT; OUT gets ``out_share`` after ``since``."""
    rng = np.random.default_rng(seed)
    out = []
    for s in slots:
        share = out_share if since is None or s.start >= since else 0.5
        n_out = int(rng.binomial(s.total, share))
        out.append(CountSlot(s.counter, s.start, s.minutes, s.total - n_out, n_out))
    return tuple(out)


def busy(serial, seed=1, peak=120.0):
    return history(serial, NOW, days=21, peak=peak, seed=seed, k=20.0)


def run(own, peers=None, **options):
    ev = CounterEvidence(
        serial="A", name="A", site="LDN01", calendar=CAL, now=NOW, slots=own, peers=peers or {}
    )
    return CountImbalance(CountImbalance.Options(**options)).run(ev)


def test_balanced_days_are_ok():
    [f] = run(split(busy("A")))
    assert f.status is Status.OK and f.code == "balanced"


def test_seven_percent_apart_warns_and_fifteen_fails():
    [f] = run(split(busy("A"), out_share=0.465, since=DAY))  # IN 53.5 %, OUT 46.5 %: 7 %
    assert f.status is Status.WARN and f.code == "imbalance"
    assert 0.05 < f.evidence["imbalance"] < 0.10
    [f] = run(split(busy("A"), out_share=0.425, since=DAY))
    assert f.status is Status.FAIL and f.evidence["imbalance"] > 0.10
    [a] = assess([f], {"LDN01": CAL})
    assert a.verdict.decision is Decision.GENUINE


def test_a_quiet_door_is_judged_only_over_enough_traffic():
    quiet = split(
        history("A", NOW, days=21, peak=2.0, seed=4, k=20.0),
        out_share=0.4,
        since=NOW - timedelta(days=2),
    )
    found = run(quiet, scope="all")
    assert found
    for f in found:
        if f.problem:  # pooled over several days until 3,600 crossings
            assert f.evidence["count_in"] + f.evidence["count_out"] >= 3600
            assert f.evidence["days"] > 1
    [current] = run(quiet)
    assert current.status is Status.SKIP or current.evidence["days"] > 1


def test_habitual_flow_between_doors_is_not_a_fault():
    # people come in at A and leave by B; the group balances, and A always looked like this
    a = split(busy("A"), out_share=0.4)
    b = split(busy("B", seed=2), out_share=0.6)
    [f] = run(a, {"B": b})
    assert f.status is Status.OK and f.code == "flow_between_doors"


def test_a_change_in_a_doors_imbalance_is_raised_even_if_its_group_balances():
    a = split(busy("A"), out_share=0.4, since=DAY)
    b = split(busy("B", seed=2), out_share=0.6, since=DAY)
    [f] = run(a, {"B": b})
    assert f.code == "imbalance" and f.problem


def test_site_imbalance_from_all_counters_together():
    slots = {
        "A": split(busy("A"), out_share=0.44, since=DAY),
        "B": split(busy("B", seed=2), out_share=0.44, since=DAY, seed=1),
    }
    [f] = SiteImbalance().run(SiteEvidence(site="LDN01", calendar=CAL, now=NOW, counters=slots))
    assert f.subject is None and f.code == "imbalance" and f.problem
    slots = {"A": split(busy("A")), "B": split(busy("B", seed=2), seed=1)}
    [f] = SiteImbalance().run(SiteEvidence(site="LDN01", calendar=CAL, now=NOW, counters=slots))
    assert f.status is Status.OK


def test_a_day_with_a_missing_slot_is_not_judged():
    slots = split(busy("A"), out_share=0.4, since=DAY)
    hole = DAY + timedelta(hours=12)
    slots = tuple(s for s in slots if s.start != hole)
    [f] = run(slots)
    assert f.evidence["start"] != DAY.isoformat()


# --- issue 9: a site imbalance a counter's own finding explains is not a second ticket


def _site_and_counter_findings(*, counter_site="LDN01"):
    """Counter A counts 12 % too few OUT; B balances; the site's total is off by A's fault."""
    a = split(busy("A"), out_share=0.44, since=DAY)
    b = split(busy("B", seed=2), seed=1)
    site = SiteImbalance().run(
        SiteEvidence(site="LDN01", calendar=CAL, now=NOW, counters={"A": a, "B": b})
    )
    ev = CounterEvidence(
        serial="A", name="A", site=counter_site, calendar=CAL, now=NOW, slots=a, peers={}
    )
    return site, CountImbalance().run(ev)


def test_a_site_imbalance_explained_by_a_counters_imbalance_is_ruled_out():
    [site], [counter] = _site_and_counter_findings()
    assert site.problem and counter.problem
    by_id = {a.finding.check_id: a for a in assess([site, counter], {"LDN01": CAL})}
    assert by_id["counter.counts.imbalance"].verdict.decision is Decision.GENUINE
    ruled = by_id["site.counts.imbalance"].verdict
    assert ruled.decision is Decision.FALSE_ALARM and ruled.rule == "explained_by_counter"
    assert "A:" in ruled.reasons[0]


def test_a_site_imbalance_no_counter_explains_stands_on_its_own():
    [site], _ = _site_and_counter_findings()
    [alone] = assess([site], {"LDN01": CAL})
    assert alone.verdict.decision is Decision.GENUINE
    # a counter at another site explains nothing here
    [site], [elsewhere] = _site_and_counter_findings(counter_site="MAN01")
    by_id = {a.finding.check_id: a for a in assess([site, elsewhere], {"LDN01": CAL})}
    assert by_id["site.counts.imbalance"].verdict.decision is Decision.GENUINE
