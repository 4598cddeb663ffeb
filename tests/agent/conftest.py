"""Fixtures for the agent's tests: a real OpenSSH sshd in front of the simulated device shell."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sshd import Sshd


@pytest.fixture
def sshd(tmp_path) -> Iterator[Sshd]:
    """A running sshd on 127.0.0.1 (skips without openssh-server; fails under CI=true).

    ``sshd.client_key`` logs in; ``sshd.write_state(...)`` scripts the device's faults;
    ``sshd.restart(new_host_key=True)`` swaps the device's host key on the same port.
    """
    with Sshd(tmp_path / "sshd") as server:
        yield server
