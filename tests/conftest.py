"""Fixtures shared by every test package: the real servers that take a while to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.rt import RtServer, rt_session


@pytest.fixture(scope="session")
def rt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtServer]:
    """One Request Tracker 5 on 127.0.0.1 for the session (skips without the Debian packages;
    fails under CI=true). ``url``, ``agent_token``, ``staff_token``, ``readonly_token``;
    ``api``/``create_ticket``/``search`` act as a person at the helpdesk; ``stop``/``start``
    take it down and bring it back on the same port and database."""
    yield from rt_session(tmp_path_factory.mktemp("rt"))
