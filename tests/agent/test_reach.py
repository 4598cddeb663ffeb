"""The reachability probe of an offline counter: ping, ARP entry, port state (127.0.0.1 only)."""

from __future__ import annotations

import socket
from pathlib import Path

from agent.probes.reach import arp_entry, port_state, reachability

HEADER = "IP address       HW type     Flags       HW address            Mask     Device\n"


def table(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "arp"
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_the_arp_table_gives_the_mac_or_says_nothing_answered(tmp_path: Path) -> None:
    arp = table(
        tmp_path,
        "10.20.0.12       0x1         0x2         B8:27:EB:12:34:56     *        eth0",
        "10.20.0.13       0x1         0x0         00:00:00:00:00:00     *        eth0",
    )
    assert arp_entry("10.20.0.12", arp) == {
        "mac": "b8:27:eb:12:34:56",
        "complete": True,
        "iface": "eth0",
    }
    assert arp_entry("10.20.0.13", arp) == {"mac": None, "complete": False, "iface": "eth0"}
    assert arp_entry("10.20.0.14", arp) is None
    assert arp_entry("door.store.local", arp) is None  # not an address: no lookup at all
    assert arp_entry("10.20.0.12", tmp_path / "missing") is None


def test_port_state_tells_a_dead_service_from_a_listening_one() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert port_state("127.0.0.1", port, 1.0) == "open"
    assert port_state("127.0.0.1", port, 1.0) == "refused"  # closed now


def test_reachability_of_a_host_that_is_there(tmp_path: Path) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        r = reachability("127.0.0.1", (port,), 1.0, table(tmp_path))
    assert r["arp"] is None  # loopback has no ARP entry
    assert r[f"port_{port}"] == "open"
    # ICMP needs a datagram or raw socket this user may open; else it says why
    assert r["ping"] is True or (r["ping"] is None and "not permitted" in r["notes"][0])


def test_no_probe_where_nothing_answers_arp(tmp_path: Path) -> None:
    arp = table(
        tmp_path, "127.0.0.1        0x1         0x0         00:00:00:00:00:00     *        eth0"
    )
    r = reachability("127.0.0.1", (80, 22), 1.0, arp)
    assert r == {"ping": None, "arp": "incomplete", "notes": [r["notes"][0]]}
    assert "nothing answers ARP" in r["notes"][0]
