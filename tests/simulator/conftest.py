"""Fixtures: a fake clock, and the small fleet of ``helpers.make_fleet`` unstarted or running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulator import FakeClock, Fleet
from tests.simulator.helpers import NOW, make_fleet


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def fleet(clock: FakeClock) -> Fleet:
    """Not started: for what needs no sockets (expected counts, images, faults)."""
    return make_fleet(clock)


@pytest.fixture
def running(clock: FakeClock) -> Iterator[Fleet]:
    with make_fleet(clock) as started:
        yield started
