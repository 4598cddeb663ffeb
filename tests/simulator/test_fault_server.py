"""Faults as the agent meets them over the network: refused, hung, slow, garbage, late data."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
import requests

from tests.simulator.helpers import NOW, counts, token

pytestmark = pytest.mark.integration
TODAY = NOW.strftime("%Y%m%d")


def wait_for(condition, what: str, deadline_s: float = 5.0) -> None:
    """Wait on a condition with a deadline (no fixed sleeps)."""
    gate = threading.Event()
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        gate.wait(0.01)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_offline_refuses_connections_and_comes_back_on_the_same_port(running):
    port = running.port("FFC0001")
    running.set_fault("FFC0001", "offline")
    assert refused(port)
    with pytest.raises(requests.ConnectionError):
        requests.get(running.url("FFC0001") + "/snapshot.jpg", timeout=2)
    running.clear_fault("FFC0001", "offline")
    assert running.port("FFC0001") == port
    assert requests.get(running.url("FFC0001") + "/snapshot.jpg", timeout=5).status_code == 200
    assert not refused(running.port("FFC0002"))


def test_an_offline_fault_in_the_future_starts_when_the_clock_gets_there(running, clock):
    port = running.port("FFC0002")
    running.set_fault("FFC0002", "offline", since=NOW + timedelta(hours=1))
    assert not refused(port)
    clock.advance(timedelta(hours=2))
    running.refresh()
    assert refused(port)


def test_hung_holds_the_request_until_the_fault_is_cleared(running):
    url = running.url("FFC0001") + "/snapshot.jpg"
    running.set_fault("FFC0001", "hung")
    with pytest.raises(requests.ReadTimeout):
        requests.get(url, timeout=(2, 0.3))
    answers: list[int] = []
    client = threading.Thread(
        target=lambda: answers.append(requests.get(url, timeout=10).status_code)
    )
    client.start()
    wait_for(lambda: running.held_connections("FFC0001") >= 1, "the request to be held")
    assert answers == []
    running.clear_fault("FFC0001", "hung")
    client.join(timeout=10)
    assert answers == [200]


def test_stopping_the_fleet_lets_hung_handlers_go_without_an_answer(running):
    running.set_fault("FFC0001", "hung")
    errors: list[Exception] = []

    def ask() -> None:
        try:
            requests.get(running.url("FFC0001") + "/snapshot.jpg", timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    client = threading.Thread(target=ask)
    client.start()
    wait_for(lambda: running.held_connections("FFC0001") >= 1, "the request to be held")
    running.stop()
    client.join(timeout=10)
    assert not client.is_alive()
    assert len(errors) == 1 and not isinstance(errors[0], requests.Timeout)
    running.stop()  # idempotent


def test_slow_answers_after_the_delay(running):
    url = running.url("FFC0001") + "/reference.jpg"
    running.set_fault("FFC0001", "slow", delay=5)
    with pytest.raises(requests.ReadTimeout):
        requests.get(url, timeout=(2, 0.2))
    running.set_fault("FFC0001", "slow", delay=0.2)  # replaces the first
    assert requests.get(url, timeout=10).status_code == 200
    assert [f.params["delay"] for f in running.faults("FFC0001") if f.until is None] == [0.2]


@pytest.mark.parametrize("style", ["binary", "html", "truncated"])
def test_garbage_is_a_200_nobody_can_parse(running, style):
    tok = token(running)
    running.set_fault("FFC0001", "garbage", style=style)
    reply = counts(running, date_start=TODAY, access_token=tok)
    assert reply.status_code == 200
    with pytest.raises(ValueError):
        json.loads(reply.content)
    running.clear_fault("FFC0001")
    assert counts(running, date_start=TODAY, access_token=tok).json()["data"]


def test_counting_faults_show_in_the_served_counts(running):
    tok = token(running)
    before = counts(running, date_start=TODAY, access_token=tok).json()["data"]
    running.set_fault("FFC0001", "zeros", since=NOW - timedelta(hours=2))
    after = counts(running, date_start=TODAY, access_token=tok).json()["data"]
    assert len(after) == len(before)
    assert sum(r["in"] for r in after[-7:]) == 0 < sum(r["in"] for r in before[-7:])


def test_held_back_refuses_then_uploads_late(running, clock):
    port = running.port("FFC0001")
    running.set_fault("FFC0001", "held_back")
    assert refused(port)
    clock.advance(timedelta(hours=3))
    running.clear_fault("FFC0001", "held_back")
    assert not refused(port)
    rows = counts(
        running,
        date_start=TODAY,
        time_start="140000",
        time_end="170000",
        access_token=token(running),
    ).json()["data"]
    assert len(rows) == 12  # the three hours of the outage, now all there
    assert sum(r["in"] for r in rows) > 0


def test_live_view_faults_reach_the_served_snapshot(running):
    url = running.url("FFC0002") + "/snapshot.jpg"
    healthy = requests.get(url, timeout=5).content
    running.set_fault("FFC0002", "covered")
    covered = requests.get(url, timeout=5).content
    assert covered != healthy
    assert len(covered) < len(healthy)  # a lens hidden by a dark blur has little detail
