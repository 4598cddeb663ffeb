from dataclasses import replace
from datetime import timedelta

import pytest

from diagnostics.checks.offline import CounterOffline
from diagnostics.model import Observation, ProbeError, ProbeErrorCode, Status
from tests.diagnostics.helpers import NOW, evidence


def ev_with(obs, **extra):
    ev = evidence((), NOW, extra=extra)
    return replace(ev, observations={"api": obs} if obs else {})


@pytest.mark.parametrize(
    "code",
    [
        c
        for c in ProbeErrorCode
        if c.value
        in ("refused", "timeout", "http_error", "auth_failed", "bad_response", "unreachable")
    ],
)
def test_each_failure_is_told_apart(code):
    obs = Observation.failed("FFC1", "api", NOW, ProbeError(code, "boom"))
    since = NOW - timedelta(minutes=30)
    [f] = CounterOffline().run(ev_with(obs, api_failing_since=since, api_consecutive_failures=3))
    assert f.status is Status.FAIL and f.code == code.value
    assert f.evidence["failing_since"] == since.isoformat()
    assert f.evidence["consecutive_failures"] == 3
    assert f.remediation


def test_online_and_not_probed():
    [f] = CounterOffline().run(ev_with(Observation("FFC1", "api", NOW, True)))
    assert f.status is Status.OK
    [f] = CounterOffline().run(ev_with(None, not_probed="no host configured"))
    assert f.status is Status.SKIP and "no host" in f.summary
