from datetime import UTC, datetime

import pytest

from diagnostics.checks.gateway import GatewayEvidence, GatewayHealth
from diagnostics.model import Observation, Status

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
GB, MB = 2**30, 2**20
HEALTHY = {
    "state_dir": "/var/lib/ffc-agent",
    "disk_total_bytes": 32 * GB,
    "disk_free_bytes": 16 * GB,
    "disk_free_pct": 50.0,
    "memory_available_pct": 60.0,
    "load_per_cpu": 0.2,
    "clock_synchronized": True,
    "has_default_route": True,
    "default_route": {"iface": "eth0", "gateway": "192.168.1.1", "family": "ipv4"},
    "destinations": [{"destination": "https://rt.example:443", "reachable": True, "error": ""}],
    "notes": [],
}


def run(**data):
    obs = Observation("gateway", "gateway", NOW, True, {**HEALTHY, **data})
    [f] = GatewayHealth().run(GatewayEvidence(now=NOW, observation=obs))
    return f


def test_healthy_gateway_finding_is_about_the_gateway():
    f = run()
    assert (f.status, f.code) == (Status.OK, "healthy")
    assert (f.check_id, f.site, f.subject) == ("gateway.health", None, "gateway")
    assert f.evidence["disk_free_pct"] == 50.0 and f.evidence["problems"] == []
    assert f.remediation == ""
    assert GatewayHealth.applies_to == "gateway"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"disk_free_pct": 4.9, "disk_free_bytes": 2 * GB}, Status.FAIL, "disk_full"),
        ({"disk_free_pct": 20.0, "disk_free_bytes": 150 * MB}, Status.FAIL, "disk_full"),
        ({"disk_free_pct": 9.9, "disk_free_bytes": 3 * GB}, Status.WARN, "disk_filling"),
        ({"disk_free_pct": 10.0, "disk_free_bytes": 3 * GB}, Status.OK, "healthy"),
        ({"memory_available_pct": 4.0}, Status.WARN, "memory_low"),
        ({"clock_synchronized": False}, Status.WARN, "clock_unsynchronised"),
        ({"clock_synchronized": None}, Status.OK, "healthy"),
        ({"has_default_route": False, "default_route": None}, Status.FAIL, "uplink_down"),
        ({"has_default_route": None}, Status.OK, "healthy"),
        (
            {
                "destinations": [
                    {"destination": "smtp://127.0.0.1:25", "reachable": False, "error": "refused"}
                ]
            },
            Status.FAIL,
            "destination_unreachable",
        ),
        (
            {"destinations": [{"destination": "(unparseable destination)", "reachable": None}]},
            Status.OK,
            "healthy",
        ),
        ({"disk_free_pct": None, "disk_free_bytes": None}, Status.OK, "healthy"),
    ],
)
def test_each_gateway_fault(data, status, code):
    f = run(**data)
    assert (f.status, f.code) == (status, code)
    assert bool(f.remediation) == (status is not Status.OK)


def test_no_uplink_is_the_root_cause_of_unreachable_destinations():
    down = [{"destination": "https://rt.example:443", "reachable": False, "error": "timeout"}]
    f = run(has_default_route=False, destinations=down, clock_synchronized=False)
    assert (f.status, f.code) == (Status.FAIL, "uplink_down")
    assert [p["code"] for p in f.evidence["problems"]] == [
        "uplink_down",
        "destination_unreachable",
        "clock_unsynchronised",
    ]
    assert "rt.example:443 (timeout)" in f.summary


def test_thresholds_are_options():
    obs = Observation("gateway", "gateway", NOW, True, {**HEALTHY, "disk_free_pct": 30.0})
    check = GatewayHealth(GatewayHealth.Options(free_warn_pct=40.0))
    [f] = check.run(GatewayEvidence(now=NOW, observation=obs))
    assert f.code == "disk_filling"


def test_not_probed_yet_is_skip():
    [f] = GatewayHealth().run(GatewayEvidence(now=NOW))
    assert (f.status, f.code, f.subject) == (Status.SKIP, "not_probed", "gateway")
