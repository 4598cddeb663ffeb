"""diagnostics.checks.push: silence is judged only over heard, open time, against traffic."""

from dataclasses import replace
from datetime import timedelta

import pytest

from diagnostics.checks.push import PushSilent
from diagnostics.model import Status
from tests.diagnostics.helpers import NOW, evidence, history

BROKER = "127.0.0.1:1883"


def push(silent_min: float = 45, *, connected: bool = True, **extra):
    """``extra["push"]`` as ``agent.probes.mqtt.push_evidence`` makes it (the keys read)."""
    since = NOW - timedelta(minutes=silent_min)
    return {
        "broker": BROKER,
        "connected": connected,
        "link_error": "" if connected else "connection refused (is the broker running?)",
        "silent_since": since.isoformat() if connected else None,
        **extra,
    }


def before(slots, minutes):
    """History that ends where the silence begins (no REST counts for the silent time yet)."""
    return tuple(s for s in slots if s.start < NOW - timedelta(minutes=minutes))


def judge(slots=(), **kwargs):
    [finding] = PushSilent().run(evidence(slots, NOW, **kwargs))
    return finding


def test_not_configured_and_listener_down_are_skips_naming_the_broker():
    assert judge().status is Status.SKIP
    f = judge(extra={"push_not_judged": "one-shot check: push is judged by the daemon"})
    assert f.status is Status.SKIP and "daemon" in f.summary
    f = judge(extra={"push": push(connected=False)})
    assert f.status is Status.SKIP and f.code == "listener_down"
    assert BROKER in f.summary and "refused" in f.summary
    assert not f.remediation  # not a device problem: nothing for the store to do


def test_an_offline_counter_is_left_to_the_offline_check():
    f = judge(history("FFC1", NOW), api_ok=False, extra={"push": push(120)})
    assert f.status is Status.SKIP and f.code == "offline"


def test_recent_push_is_ok():
    f = judge(history("FFC1", NOW), extra={"push": push(10)})
    assert f.status is Status.OK and f.code == "live"


def test_silence_on_a_busy_afternoon_warns():
    f = judge(before(history("FFC1", NOW), 45), extra={"push": push(45)})
    assert f.status is Status.WARN and f.code == "push_silent"
    assert "no live push for 45 min" in f.summary
    assert f.evidence["expected"] > 10 and f.evidence["open_min"] == 45
    assert f.remediation


def test_rest_counts_during_the_silence_warn_even_without_history():
    recent = tuple(s for s in history("FFC1", NOW) if s.start >= NOW - timedelta(minutes=45))
    f = judge(recent, extra={"push": push(45)})
    assert f.status is Status.WARN and f.evidence["counted_meanwhile"] > 0
    assert "crossings counted meanwhile" in f.summary


def test_rest_counts_of_zero_mean_nobody_crossed():
    slots = history("FFC1", NOW, zero_from=NOW - timedelta(minutes=60))
    f = judge(slots, extra={"push": push(45)})
    assert f.status is Status.OK and f.code == "no_crossings"


def test_a_quiet_door_is_not_a_push_fault():
    f = judge(before(history("FFC1", NOW, peak=0.4), 45), extra={"push": push(45)})
    assert f.status is Status.OK and f.code == "quiet"
    assert f.evidence["expected"] < 10


@pytest.mark.parametrize(("rate", "status"), [(4.0, Status.OK), (120.0, Status.WARN)])
def test_a_given_expected_rate_wins(rate, status):
    slots = before(history("FFC1", NOW, peak=0.4), 45)  # would say "quiet" on its own
    f = judge(slots, extra={"push": push(45, expected_per_hour=rate)})
    assert f.status is status


def test_no_history_falls_back_to_open_time():
    f = judge(extra={"push": push(45)})
    assert f.status is Status.WARN and "traffic unknown" in f.summary


def test_silence_while_the_store_was_closed_is_ok():
    evening = NOW.replace(hour=21, minute=30)  # closed at 20:00
    ev = replace(evidence((), evening), extra={"push": push(0)})
    ev.extra["push"]["silent_since"] = (evening - timedelta(minutes=105)).isoformat()
    [f] = PushSilent().run(ev)
    assert f.status is Status.OK and f.code == "closed"
    assert f.evidence["open_min"] == 15  # 19:45-20:00 only


def test_options_change_the_threshold():
    check = PushSilent(PushSilent.Options(silent_minutes=60))
    [f] = check.run(evidence(before(history("FFC1", NOW), 45), NOW, extra={"push": push(45)}))
    assert f.status is Status.OK and f.code == "live"
