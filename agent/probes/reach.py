"""Is a counter there at all? The reachability evidence an offline ticket carries.

When a counter's API does not answer, support's first question is whether the device is on the
network at all: an ARP entry on the gateway's segment means something with that address
answered at the link layer (power and cable are fine), an ICMP echo that comes back means its
network stack runs, and the state of its HTTP and SSH ports separates a dead service
(``refused``) from a hung or unplugged device (``timeout``). ``reachability`` gathers the
three, each with a short timeout, and never raises: a reading that cannot be taken is ``None``
with a note ("ping not permitted for this user"), never a fault of the counter. A counter
on the gateway's own segment whose ARP entry is incomplete (nothing answered at the link layer
when the API probe tried) gets no ping or port probe: none could answer, and each would cost
its whole timeout.

The ARP table is read from ``/proc/net/arp``; ICMP uses an unprivileged datagram socket where
``net.ipv4.ping_group_range`` allows it, else a raw one (root or ``CAP_NET_RAW``), else it is
left out. Only the counter's own address is ever contacted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

ARP_TABLE = Path("/proc/net/arp")
_ATF_COM = 0x02  # the entry is complete: the neighbour answered
_ICMP_ECHO, _ICMP_ECHO_REPLY = 8, 0


def arp_entry(host: str, table: Path = ARP_TABLE) -> dict[str, Any] | None:
    """The gateway's ARP entry for IPv4 ``host``: ``{"mac", "complete", "iface"}``, or None
    when there is none (or the table cannot be read, or ``host`` is not an IPv4 address)."""
    try:
        wanted = str(ipaddress.IPv4Address(host))
        lines = table.read_text().splitlines()[1:]
    except (ValueError, OSError):
        return None
    for line in lines:
        f = line.split()
        if len(f) < 6 or f[0] != wanted:
            continue
        try:
            flags = int(f[2], 16)
        except ValueError:
            continue
        complete = bool(flags & _ATF_COM) and f[3] != "00:00:00:00:00:00"
        return {"mac": f[3].lower() if complete else None, "complete": complete, "iface": f[5]}
    return None


def port_state(host: str, port: int, timeout_s: float) -> str:
    """``open``, ``refused``, ``timeout`` or ``unreachable``: a TCP connect, no bytes sent."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return "open"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "unreachable"


def ping(host: str, timeout_s: float) -> tuple[bool | None, str]:
    """One ICMP echo to IPv4 ``host``: (answered, note). None when it cannot be sent."""
    try:
        addr = str(ipaddress.IPv4Address(socket.gethostbyname(host)))
    except (OSError, ValueError):
        return None, "no IPv4 address to ping"
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
        except OSError:
            continue
        with contextlib.closing(sock):
            return _echo(sock, addr, kind == socket.SOCK_RAW, timeout_s)
    return None, "ping not permitted for this user"


def _echo(sock: socket.socket, addr: str, raw: bool, timeout_s: float) -> tuple[bool, str]:
    ident = os.getpid() & 0xFFFF
    payload = b"ffc-agent reach"
    header = struct.pack("!BBHHH", _ICMP_ECHO, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", _ICMP_ECHO, 0, _checksum(header + payload), ident, 1)
    deadline = time.monotonic() + timeout_s
    try:
        sock.sendto(packet + payload, (addr, 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data, (source, _) = sock.recvfrom(2048)
            if raw:  # a raw socket sees the IP header too, and every echo on the host
                data = data[(data[0] & 0x0F) * 4 :]
            if source == addr and len(data) >= 8 and data[0] == _ICMP_ECHO_REPLY:
                # a datagram socket's kernel rewrites the id: only a raw one must match it
                if not raw or struct.unpack("!H", data[4:6])[0] == ident:
                    return True, ""
    except TimeoutError:
        pass
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    return False, f"no echo reply within {timeout_s:g} s"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def reachability(
    host: str, ports: tuple[int, ...], timeout_s: float, table: Path = ARP_TABLE
) -> dict[str, Any]:
    """The evidence for an offline ticket: ``ping`` (True, False or None), ``arp`` (the MAC,
    ``incomplete`` when the neighbour did not answer, or None: no entry, which on the
    gateway's own segment means nothing with that address has been heard), and each port's
    state; ``notes`` says what could not be read."""
    entry = arp_entry(host, table)
    arp = None if entry is None else (entry["mac"] if entry["complete"] else "incomplete")
    if arp == "incomplete":
        # on the gateway's own segment and nothing answered the API probe's ARP request:
        # no ping or port can answer either, and each would cost its whole timeout
        note = "nothing answers ARP at that address"
        return {"ping": None, "arp": arp, "notes": [note]}
    answered, note = ping(host, timeout_s)
    out: dict[str, Any] = {"ping": answered, "arp": arp}
    for port in ports:
        out[f"port_{port}"] = port_state(host, port, timeout_s)
    if note:
        out["notes"] = [note]
    return out
