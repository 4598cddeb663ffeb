"""``analyze counts``: a CSV and a configuration in, problems with verdicts out."""

import json
from datetime import timedelta

import pytest

from agent.commands.analyze import analyze_counts
from agent.config import parse_config
from diagnostics.countcsv import CountCsvError
from diagnostics.model import CountSlot
from tests.diagnostics.helpers import NOW, history

HOURS = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat")} | {
    "sun": "10:00-18:00"
}


def config():
    site = {"timezone": "Europe/London", "holidays": "GB-ENG", "opening_hours": HOURS}
    return parse_config(
        {
            "sites": [
                {"code": "LDN01", "name": "London", **site},
                {"code": "MAN01", "name": "Manchester", **site},
            ],
            "counters": [
                {"serial": "A", "name": "Main door", "site": "LDN01", "group": "front"},
                {"serial": "B", "name": "Side door", "site": "LDN01", "group": "front"},
                {"serial": "C", "name": "Car park", "site": "LDN01", "group": "front"},
                {"serial": "M1", "name": "Entrance", "site": "MAN01"},
            ],
        }
    )


def csv(slots, header=True):
    lines = ["timestamp,counter,in,out"] if header else []
    lines += [f"{s.start.isoformat()},{s.counter},{s.count_in},{s.count_out}" for s in slots]
    return "\n".join(lines) + "\n"


def site_slots(days=28):
    return {
        s: list(history(s, NOW, days=days, seed=i + 1, peak=p, k=20.0))
        for i, (s, p) in enumerate((("A", 40.0), ("B", 30.0), ("C", 20.0), ("M1", 30.0)))
    }


def everything(slots):
    return [s for seq in slots.values() for s in seq]


def test_a_clean_file_has_no_problems_and_json_is_an_array():
    result = analyze_counts(config(), csv(everything(site_slots())))
    assert result.findings == [] and result.warnings == []
    assert json.loads(json.dumps(result.to_json())) == []
    assert result.now == NOW  # the end of the last slot in the file


def test_each_problem_with_its_verdict_reasons_and_counts():
    slots = site_slots()
    zero = (NOW - timedelta(days=2, hours=6), NOW - timedelta(days=2, hours=1))
    slots["A"] = [
        CountSlot("A", s.start, 15, 0, 0) if zero[0] <= s.start < zero[1] else s for s in slots["A"]
    ]
    gap = (NOW - timedelta(hours=5), NOW - timedelta(hours=2))
    slots["B"] = [s for s in slots["B"] if not gap[0] <= s.start < gap[1]]
    rows = [*everything(slots), CountSlot("ZZ9", NOW - timedelta(hours=1), 15, 1, 1)]
    rows.append(slots["C"][-40])  # a duplicate row
    result = analyze_counts(config(), csv(rows))
    out = result.to_json()
    kinds = {(p["counter"], p["kind"]): p for p in out}
    zero_run = kinds[("A", "zero_run")]
    assert zero_run["verdict"] == "genuine" and zero_run["site"] == "LDN01"
    assert zero_run["start"] == zero[0].isoformat() and zero_run["end"] == zero[1].isoformat()
    assert zero_run["expected"] > 50 and zero_run["observed"] == 0 and zero_run["reasons"]
    missing = kinds[("B", "missing")]
    assert missing["verdict"] == "pending" and missing["until"]
    assert missing["start"] == gap[0].isoformat()
    for p in out:
        assert set(p) >= {
            "site",
            "counter",
            "kind",
            "start",
            "end",
            "verdict",
            "reasons",
            "expected",
            "observed",
        }
        assert p["kind"] in (
            "missing",
            "zero_run",
            "under_count",
            "over_count",
            "imbalance",
            "site_outage",
        )
    assert any("ZZ9" in w for w in result.warnings)
    assert any("duplicate" in w for w in result.warnings)


def test_a_whole_site_outage_is_one_site_finding():
    slots = site_slots()
    gap = (NOW - timedelta(days=8, hours=5), NOW - timedelta(days=8, hours=1))
    for s in ("A", "B", "C"):
        slots[s] = [x for x in slots[s] if not gap[0] <= x.start < gap[1]]
    result = analyze_counts(config(), csv(everything(slots)), site="LDN01")
    outages = [p for p in result.findings if p.kind == "site_outage"]
    assert len(outages) == 1 and outages[0].counter is None
    assert outages[0].verdict == "genuine"  # older than the upload window: lost
    assert not [p for p in result.findings if p.kind == "missing"]


def test_site_filter_and_as_of_now():
    slots = site_slots()
    slots["M1"] = [s for s in slots["M1"] if s.start < NOW - timedelta(hours=6)]
    text = csv(everything(slots))
    only_london = analyze_counts(config(), text, site="LDN01")
    assert all(p.site == "LDN01" for p in only_london.findings)
    manchester = analyze_counts(config(), text, site="MAN01")
    assert [p.kind for p in manchester.findings] == ["missing"]
    earlier = analyze_counts(config(), text, site="MAN01", now=NOW - timedelta(hours=6))
    assert earlier.findings == []
    with pytest.raises(KeyError):
        analyze_counts(config(), text, site="NOPE")


def test_a_configured_counter_without_rows_is_a_warning():
    slots = site_slots()
    del slots["C"]
    result = analyze_counts(config(), csv(everything(slots)))
    assert any("counter C" in w and "no rows" in w for w in result.warnings)


def test_a_bad_row_is_an_error_with_its_line():
    with pytest.raises(CountCsvError, match="line 2"):
        analyze_counts(config(), "timestamp,counter,in,out\n2026-11-02T09:00:00,A,1,1\n")
