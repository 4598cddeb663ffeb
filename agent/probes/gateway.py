"""The gateway's own health: disk, memory, CPU, clock sync and the way out to the helpdesk.

The agent runs on a small box in a store's back office. When that box is the problem — its
state directory full, its memory gone, its clock unsynchronised, its uplink down — every
counter looks broken at once, and filing counter tickets would be wrong. This probe reads the
gateway's condition so the checks (``gateway.health``) can say so first and the false-alarm
gate can hold back counter tickets while it lasts.

Everything is local except one TCP connect per ticket destination (host and port only, short
timeout). Each reading that cannot be taken becomes ``None`` with a note, never an exception:
not knowing is not a fault. ``psutil_module`` may be any object with psutil's ``disk_usage``,
``virtual_memory``, ``getloadavg``, ``cpu_count`` and ``cpu_percent``, so tests can simulate a
full disk or no memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from diagnostics.model import SYSTEM_CLOCK, Observation

PROBE = "gateway"
SUBJECT = "gateway"
ROUTE_V4 = Path("/proc/net/route")
ROUTE_V6 = Path("/proc/net/ipv6_route")
DEFAULT_PORTS = {"http": 80, "https": 443, "smtp": 25, "smtps": 465, "submission": 587}
_STA_UNSYNC = 0x0040
_MAXERROR_SYNCED_US = 16_000_000  # systemd's own threshold for "synchronised"


def probe_gateway(
    state_dir: Path,
    *,
    sink_urls: Iterable[str] = (),
    psutil_module: Any = psutil,
    now: datetime | None = None,
    connect_timeout_s: float = 2.0,
    route_files: tuple[Path, Path] = (ROUTE_V4, ROUTE_V6),
) -> Observation:
    """Read the gateway's health into one observation (counter and probe "gateway").

    ``sink_urls`` are the ticket destinations (``https://rt.example:443/...``,
    ``smtp://host:587``, or ``host:port``); only their host and port are used or recorded.
    """
    at = now or SYSTEM_CLOCK.now()
    started = time.monotonic()
    notes: list[str] = []
    data: dict[str, Any] = {"state_dir": str(state_dir)}
    data.update(_disk(psutil_module, Path(state_dir), notes))
    data.update(_memory(psutil_module, notes))
    data.update(_cpu(psutil_module, notes))
    synced, source = clock_synchronized()
    data.update(clock_synchronized=synced, clock_sync_source=source)
    route = default_route(*route_files)
    data.update(
        has_default_route=None if route is None else bool(route), default_route=route or None
    )
    if route is None:
        notes.append("route table unreadable: uplink unknown")
    data["destinations"] = [reach(url, connect_timeout_s) for url in sink_urls]
    data["notes"] = notes
    return Observation(SUBJECT, PROBE, at, True, data, elapsed_s=time.monotonic() - started)


def _existing(path: Path) -> Path:
    """The state directory, or its nearest existing parent before the agent created it."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk(ps: Any, state_dir: Path, notes: list[str]) -> dict[str, Any]:
    try:
        usage = ps.disk_usage(str(_existing(state_dir)))
        return {
            "disk_total_bytes": int(usage.total),
            "disk_free_bytes": int(usage.free),
            # free as the agent's (unprivileged) user sees it, like df's Avail column
            "disk_free_pct": round(100.0 * usage.free / usage.total, 1) if usage.total else 0.0,
        }
    except (OSError, AttributeError, ValueError) as exc:
        notes.append(f"disk: {type(exc).__name__}: {exc}")
        return {"disk_total_bytes": None, "disk_free_bytes": None, "disk_free_pct": None}


def _memory(ps: Any, notes: list[str]) -> dict[str, Any]:
    try:
        mem = ps.virtual_memory()
        return {
            "memory_total_bytes": int(mem.total),
            "memory_available_bytes": int(mem.available),
            "memory_available_pct": round(100.0 * mem.available / mem.total, 1),
        }
    except (OSError, AttributeError, ValueError, ZeroDivisionError) as exc:
        notes.append(f"memory: {type(exc).__name__}: {exc}")
        return {
            "memory_total_bytes": None,
            "memory_available_bytes": None,
            "memory_available_pct": None,
        }


def _cpu(ps: Any, notes: list[str]) -> dict[str, Any]:
    # Load average, not cpu_percent(interval=None): the first call of the latter always says
    # 0.0, and a probe must not sleep to measure.
    try:
        load1, load5, _ = ps.getloadavg()
        cpus = ps.cpu_count() or 1
        return {
            "load_1m": round(load1, 2),
            "load_5m": round(load5, 2),
            "cpu_count": cpus,
            "load_per_cpu": round(load5 / cpus, 2),
        }
    except (OSError, AttributeError, ValueError) as exc:
        notes.append(f"cpu: {type(exc).__name__}: {exc}")
        return {"load_1m": None, "load_5m": None, "cpu_count": None, "load_per_cpu": None}


def clock_synchronized() -> tuple[bool | None, str]:
    """Whether the system clock is NTP-synchronised, and where that came from.

    ``timedatectl`` first (what an installer would look at); where it cannot answer (no
    systemd or D-Bus, a container) the kernel's own flag via ``adjtimex``, which is what
    ``timedatectl`` reports anyway and which chrony and timesyncd both maintain.
    """
    if tool := shutil.which("timedatectl"):
        try:
            out = subprocess.run(  # noqa: S603 - a fixed argv, no shell
                [tool, "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=3,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                return out.stdout.strip() == "yes", "timedatectl"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return _adjtimex()


class _Timex(ctypes.Structure):
    # The head of struct timex (<sys/timex.h>); the padding covers the rest on every ABI.
    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    )


def _adjtimex() -> tuple[bool | None, str]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()  # modes 0: read only
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None, "unknown"
    if state < 0:
        return None, "unknown"
    synced = state != 5 and not tx.status & _STA_UNSYNC and tx.maxerror < _MAXERROR_SYNCED_US
    return bool(synced), "adjtimex"


def default_route(v4: Path = ROUTE_V4, v6: Path = ROUTE_V6) -> dict[str, str] | None:
    """The default route as ``{"iface", "gateway", "family"}``, ``{}`` when there is none,
    None when no route table could be read."""
    read_any = False
    try:
        lines = v4.read_text().splitlines()[1:]
        read_any = True
    except OSError:
        lines = []
    for line in lines:
        f = line.split()
        if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000" and int(f[3], 16) & 1:
            gw = socket.inet_ntoa(int(f[2], 16).to_bytes(4, "little"))
            return {"iface": f[0], "gateway": gw, "family": "ipv4"}
    try:
        lines = v6.read_text().splitlines()
        read_any = True
    except OSError:
        lines = []
    for line in lines:
        f = line.split()
        # dest, prefix len, src, src len, next hop, metric, refcnt, use, flags, iface
        if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and int(f[8], 16) & 1:
            if f[9] == "lo":
                continue  # the kernel's unreachable placeholder
            hop = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(f[4]))
            return {"iface": f[9], "gateway": hop, "family": "ipv6"}
    return {} if read_any else None


def reach(url: str, timeout_s: float) -> dict[str, Any]:
    """Can a TCP connection be opened to ``url``'s host and port? No bytes are sent."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number
        host, port = None, None
    # userinfo, path and query may hold credentials: only host and port are ever recorded
    shown = f"{parts.scheme}://{host}:{port}" if host and port else "(unparseable destination)"
    if not host or not port:
        return {"destination": shown, "reachable": None, "error": "no host or port"}
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
        return {
            "destination": shown,
            "reachable": True,
            "error": "",
            "elapsed_s": round(time.monotonic() - started, 3),
        }
    except TimeoutError:
        error = "timeout"
    except ConnectionRefusedError:
        error = "refused"
    except socket.gaierror:
        error = "host name not found"
    except OSError as exc:
        error = exc.strerror or type(exc).__name__
    return {
        "destination": shown,
        "reachable": False,
        "error": error,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
