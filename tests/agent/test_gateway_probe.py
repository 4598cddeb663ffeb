"""The gateway probe: real psutil on this machine, a psutil-like fake for full disks and no
memory, route tables written to files, and ticket destinations on 127.0.0.1."""

from __future__ import annotations

import socket
from collections import namedtuple
from datetime import UTC, datetime

import pytest

from agent.probes.gateway import default_route, probe_gateway, reach
from diagnostics.checks.gateway import GatewayEvidence, GatewayHealth
from diagnostics.model import Status

Usage = namedtuple("Usage", "total used free percent")
Memory = namedtuple("Memory", "total available percent")
NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)

ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)
DEFAULT_V4 = "eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"  # via 192.168.2.1
LAN_V4 = "eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
V6_UNREACHABLE = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n"
)


class FakePsutil:
    """A psutil-like module (STYLE.md allows it): a disk and memory of our choosing."""

    def __init__(self, *, free=50 * 2**30, total=100 * 2**30, available=2**30, mem=2**31):
        self.usage = Usage(total, total - free, free, 100 * (total - free) / total)
        self.memory = Memory(mem, available, 100 * (mem - available) / mem)
        self.asked: list[str] = []

    def disk_usage(self, path):
        self.asked.append(path)
        return self.usage

    def virtual_memory(self):
        return self.memory

    def getloadavg(self):
        return (0.5, 0.25, 0.1)

    def cpu_count(self):
        return 4

    def cpu_percent(self, interval=None):
        return 12.5


@pytest.fixture
def routes(tmp_path):
    v4, v6 = tmp_path / "route", tmp_path / "ipv6_route"
    v4.write_text(ROUTE_HEADER + LAN_V4 + DEFAULT_V4)
    v6.write_text(V6_UNREACHABLE)
    return v4, v6


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 standing in for a ticket destination."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def judge(obs):
    [finding] = GatewayHealth().run(GatewayEvidence(now=NOW, observation=obs))
    return finding


def test_real_psutil_reads_this_machine(tmp_path):
    obs = probe_gateway(tmp_path / "state" / "not-yet-created", now=NOW)
    d = obs.data
    assert (obs.counter, obs.probe, obs.ok) == ("gateway", "gateway", True)
    assert 0 < d["disk_free_bytes"] <= d["disk_total_bytes"]
    assert 0 <= d["disk_free_pct"] <= 100
    assert 0 < d["memory_available_pct"] <= 100
    assert d["cpu_count"] >= 1 and d["load_1m"] >= 0
    assert d["clock_synchronized"] in (True, False, None)
    assert d["clock_sync_source"] in ("timedatectl", "adjtimex", "unknown")
    assert d["has_default_route"] in (True, False, None)
    assert d["notes"] == []


def test_a_full_state_disk_and_no_memory(tmp_path, routes):
    fake = FakePsutil(free=150 * 2**20, total=32 * 2**30, available=2**25, mem=2**30)
    obs = probe_gateway(tmp_path, psutil_module=fake, now=NOW, route_files=routes)
    assert fake.asked == [str(tmp_path)]
    assert obs.data["disk_free_bytes"] == 150 * 2**20
    assert obs.data["memory_available_pct"] == pytest.approx(3.1, abs=0.05)
    assert obs.data["load_per_cpu"] == 0.06
    finding = judge(obs)
    assert (finding.status, finding.code) == (Status.FAIL, "disk_full")
    assert "memory_low" in [p["code"] for p in finding.evidence["problems"]]


def test_a_psutil_that_fails_is_a_note_not_a_crash(tmp_path, routes):
    class Broken(FakePsutil):
        def disk_usage(self, path):
            raise PermissionError(13, "Permission denied")

    obs = probe_gateway(tmp_path, psutil_module=Broken(), now=NOW, route_files=routes)
    assert obs.ok and obs.data["disk_free_pct"] is None
    assert obs.data["notes"] == ["disk: PermissionError: [Errno 13] Permission denied"]


def test_default_route_from_the_route_table(tmp_path, routes):
    assert default_route(*routes) == {"iface": "eth0", "gateway": "192.168.2.1", "family": "ipv4"}
    v4, v6 = routes
    v4.write_text(ROUTE_HEADER + LAN_V4)  # only the local network
    assert default_route(v4, v6) == {}
    v6.write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000001 00000000 00450003 wlan0\n"
    )
    assert default_route(v4, v6) == {"iface": "wlan0", "gateway": "fe80::1", "family": "ipv6"}
    assert default_route(tmp_path / "none", tmp_path / "none6") is None


def test_no_default_route_is_uplink_down(tmp_path, routes):
    v4, v6 = routes
    v4.write_text(ROUTE_HEADER + LAN_V4)
    obs = probe_gateway(tmp_path, psutil_module=FakePsutil(), now=NOW, route_files=(v4, v6))
    assert obs.data["has_default_route"] is False and obs.data["default_route"] is None
    assert judge(obs).code == "uplink_down"


@pytest.mark.integration
def test_ticket_destinations_are_reached_by_host_and_port_only(tmp_path, routes, listener):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    urls = [
        f"https://agent:s3cret@127.0.0.1:{listener}/REST/2.0?token=abc",
        f"smtp://127.0.0.1:{closed}",
    ]
    obs = probe_gateway(
        tmp_path, sink_urls=urls, psutil_module=FakePsutil(), now=NOW, route_files=routes
    )
    up, down = obs.data["destinations"]
    assert up == {
        "destination": f"https://127.0.0.1:{listener}",
        "reachable": True,
        "error": "",
        "elapsed_s": up["elapsed_s"],
    }
    assert (down["reachable"], down["error"]) == (False, "refused")
    assert "s3cret" not in str(obs.data) and "abc" not in str(obs.data)
    finding = judge(obs)
    assert (finding.status, finding.code) == (Status.FAIL, "destination_unreachable")
    assert f"127.0.0.1:{closed}" in finding.summary


def test_unparseable_destinations_are_unknown_not_unreachable():
    assert reach("smtp://127.0.0.1:notaport", 1.0)["reachable"] is None
    assert reach("mailto:", 1.0)["reachable"] is None
    assert reach(f"127.0.0.1:{1}", 1.0)["destination"] == "tcp://127.0.0.1:1"
