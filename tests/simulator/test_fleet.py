"""The fleet's own contract: validation, closures, ports and the agent config without servers."""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from simulator import Fleet, SimCounter, SimSite
from tests.simulator.helpers import HOURS, NOW

LONDON = ZoneInfo("Europe/London")


def test_a_closure_set_while_running_zeroes_those_days_and_reaches_the_config(fleet):
    day = date(2026, 3, 11)
    start = datetime(2026, 3, 11, tzinfo=LONDON)
    assert sum(r[1] for r in fleet.expected_counts("FFC0001", start, start + timedelta(days=1)))
    fleet.close_site("LDN01", [day, day + timedelta(days=1)], reason="flood")
    rows = fleet.expected_counts("FFC0001", start, start + timedelta(days=1))
    assert len(rows) == 96 and sum(r[1] + r[2] for r in rows) == 0
    config = tomllib.loads(
        Fleet(
            list(fleet.sites.values()), [SimCounter("X1", "Door", "LDN01", port=40999)]
        ).agent_config_toml("/state")
    )  # fixed ports: no need to start
    closures = next(s for s in config["sites"] if s["code"] == "LDN01")["closures"]
    # adjacent closed days merge into one closure (the helper site is shut on 10 March too)
    assert closures == [{"from": "2026-03-10", "to": "2026-03-12", "reason": "flood"}]
    assert config["counters"][0]["port"] == 40999 and "reference_image" not in config["counters"][0]


def test_bad_fleets_are_refused_with_the_reason():
    site = SimSite("S1", "Shop", "Europe/London", HOURS)
    door = SimCounter("C1", "Door", "S1")
    with pytest.raises(ValueError, match="duplicate counter serial"):
        Fleet([site], [door, door])
    with pytest.raises(ValueError, match="unknown site 'S2'"):
        Fleet([site], [SimCounter("C2", "Door", "S2")])
    with pytest.raises(ValueError, match="api must be one of"):
        SimCounter("C3", "Door", "S1", api="mqtt")
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        SimSite("S3", "Shop", "Europe/London", {"mon": "9 to 5"})
    with pytest.raises(ValueError, match="unknown weekday"):
        SimSite("S4", "Shop", "Europe/London", {"monday": "09:00-17:00"})


def test_ports_are_known_only_once_started_and_stop_is_safe_anytime(fleet):
    with pytest.raises(RuntimeError, match="not started"):
        fleet.port("FFC0001")
    with pytest.raises(KeyError, match="unknown counter"):
        fleet.url("NOPE")
    fleet.stop()
    fleet.stop()
    with pytest.raises(RuntimeError, match="cannot be started again"):
        fleet.start()


def test_secrets_stay_out_of_reprs(fleet):
    assert "pw1" not in repr(fleet.counters[0]) and "pw1" not in repr(fleet)
    assert fleet.clock.now() == NOW
