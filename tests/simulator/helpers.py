"""Shared helpers: a small fleet on a fake clock, and HTTP calls to its servers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import requests

from simulator import FakeClock, Fleet, SimCounter, SimSite

# a Thursday afternoon; the store is open 09:00-20:00 on weekdays and shut on Sundays
NOW = datetime(2026, 3, 12, 14, 7, 30, tzinfo=UTC)
HOURS = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri")} | {"sat": "09:00-19:00"}
CLOSED_DAY = date(2026, 3, 10)  # a Tuesday, closed for a refit


def make_fleet(clock: FakeClock, seed: int = 7, **kwargs: object) -> Fleet:
    site = SimSite("LDN01", "London", "Europe/London", HOURS, closed_dates=(CLOSED_DAY,))
    paris = SimSite("PAR01", "Paris", "Europe/Paris", HOURS)
    counters = [
        SimCounter("FFC0001", "Main door", "LDN01", base_rate=120.0, password="pw1", group="a"),
        SimCounter("FFC0002", "Side door", "LDN01", base_rate=240.0, password="pw2"),
        SimCounter("FFC0003", "Legacy", "PAR01", base_rate=90.0, password="pw3", api="pi-cgi"),
    ]
    return Fleet([site, paris], counters, seed=seed, clock=clock, **kwargs)


def token(fleet: Fleet, serial: str = "FFC0001", password: str = "pw1") -> str:
    reply = requests.get(
        fleet.url(serial) + "/cgi-bin/access_token.cgi",
        params={"username": "admin", "password": password},
        timeout=5,
    )
    assert reply.status_code == 200
    return reply.json()["access_token"]


def counts(
    fleet: Fleet,
    serial: str = "FFC0001",
    path: str = "/cgi-bin/apiCount.cgi",
    timeout: float = 5,
    **params: str,
) -> requests.Response:
    return requests.get(fleet.url(serial) + path, params=params, timeout=timeout)
