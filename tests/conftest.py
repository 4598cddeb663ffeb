"""Fixtures shared by every test package: the real servers that take a while to start."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.rt import RtServer, rt_session

# Hypothesis (tests/fuzz): "ci" is derandomized and keeps no example database, so CI runs the
# same examples every time and never flakes on a new one; "dev", the default on a workstation,
# is random and remembers failures in .hypothesis/. HYPOTHESIS_PROFILE overrides; CI=true
# picks "ci". Neither has a deadline: a loaded 2-core runner must not make a test fail.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


@pytest.fixture(scope="session")
def rt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtServer]:
    """One Request Tracker 5 on 127.0.0.1 for the session (skips without the Debian packages;
    fails under CI=true). ``url``, ``agent_token``, ``staff_token``, ``readonly_token``;
    ``api``/``create_ticket``/``search`` act as a person at the helpdesk; ``stop``/``start``
    take it down and bring it back on the same port and database."""
    yield from rt_session(tmp_path_factory.mktemp("rt"))
