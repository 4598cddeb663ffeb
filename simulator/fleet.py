"""A fleet of simulated counters: the public face of the simulator.

Tests, benches and ``ffc-agent demo`` build a ``Fleet`` of sites and counters, start it (one
HTTP server per counter on 127.0.0.1), script faults while it runs, and hand the agent the
TOML config that points at it. ``expected_counts`` says what each device holds, so a test can
compare what the agent stored with the truth.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from simulator.device import Device, Response
from simulator.faults import Fault, make_fault
from simulator.model import WEEKDAYS, Clock, SimCounter, SimSite, SystemClock
from simulator.server import HOST, CounterServer
from simulator.traffic import Traffic

HOLIDAY_REGIONS = {
    "Europe/London": "GB-ENG",
    "Europe/Dublin": "IE",
    "Europe/Paris": "FR",
    "Europe/Berlin": "DE",
    "Europe/Madrid": "ES",
    "Europe/Amsterdam": "NL",
    "America/New_York": "US-NY",
    "Australia/Sydney": "AU-NSW",
}
log = logging.getLogger(__name__)
REFRESH_S = 0.2  # how often a fault with a future ``since`` is checked for sockets


class Fleet:
    """N simulated counters. Thread-safe; ``stop()`` is idempotent; a context manager."""

    def __init__(
        self,
        sites: Sequence[SimSite],
        counters: Sequence[SimCounter],
        seed: int = 7,
        clock: Clock | None = None,
        history_days: int = 35,
    ) -> None:
        codes = [s.code for s in sites]
        serials = [c.serial for c in counters]
        for what, names in (("site code", codes), ("counter serial", serials)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what}(s): {', '.join(dupes)}")
        for c in counters:
            if c.site not in codes:
                raise ValueError(f"counter {c.serial}: unknown site {c.site!r}")
        self.seed = seed
        self.clock: Clock = clock or SystemClock()
        self.history_days = history_days
        self.sites = {s.code: s for s in sites}
        self.traffic = Traffic(seed, self.sites)
        self._stopping = threading.Event()
        self._devices = {
            c.serial: Device(
                c,
                self.sites[c.site],
                self.traffic,
                self.clock,
                seed=seed,
                history_days=history_days,
                stopping=self._stopping,
            )
            for c in counters
        }
        self._servers = {s: CounterServer(d, d.counter.port) for s, d in self._devices.items()}
        self._refresh_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"Fleet({len(self._devices)} counters, seed={self.seed})"

    @property
    def counters(self) -> list[SimCounter]:
        return [d.counter for d in self._devices.values()]

    def _device(self, serial: str) -> Device:
        try:
            return self._devices[serial]
        except KeyError:
            known = ", ".join(self._devices)
            raise KeyError(f"unknown counter {serial!r}; known: {known}") from None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Fleet:
        if self._stopping.is_set():
            raise RuntimeError("a stopped fleet cannot be started again")
        if self._started:
            return self
        self._started = True
        try:
            for server in self._servers.values():
                server.up()  # bind every port, even of an offline device, so its port is known
        except OSError:
            self.stop()  # a fixed port already taken: leave nothing half-started behind
            raise
        self.refresh()
        self._watcher = threading.Thread(target=self._watch, name="sim-faults", daemon=True)
        self._watcher.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung handlers are let go without an answer. Safe to call twice."""
        self._stopping.set()
        for device in self._devices.values():
            device.release.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        for server in self._servers.values():
            server.down()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stopping.wait(REFRESH_S):
            self.refresh()

    def refresh(self) -> None:
        """Open or close listening sockets to match the faults active now (by the clock)."""
        if not self._started:
            return
        with self._refresh_lock:
            for serial, server in self._servers.items():
                device = self._devices[serial]
                now = self.clock.now()
                away = any(device.faults.active(k, now) for k in ("offline", "held_back"))
                if self._stopping.is_set() or away:
                    server.down()
                    continue
                try:
                    server.up()
                except OSError as exc:  # the port was taken while down: try again next time
                    log.warning("%s cannot listen on port %d again: %s", serial, server.port, exc)

    def url(self, serial: str) -> str:
        return f"http://{HOST}:{self.port(serial)}"

    def port(self, serial: str) -> int:
        self._device(serial)
        port = self._servers[serial].port
        if not port:
            raise RuntimeError("the fleet is not started: ports are chosen by start()")
        return port

    # -- faults and closures -------------------------------------------------------------------

    def set_fault(
        self, serial: str, kind: str, since: datetime | None = None, **params: Any
    ) -> None:
        device = self._device(serial)
        now = self.clock.now()
        fault = make_fault(kind, since or now, params)
        if kind == "hung":
            device.release.clear()
        device.faults.add(fault, now)
        self.refresh()

    def clear_fault(self, serial: str, kind: str | None = None) -> list[str]:
        """End the open fault of ``kind`` (or all); returns the kinds ended."""
        device = self._device(serial)
        ended = device.faults.clear(kind, self.clock.now())
        if "hung" in ended:
            device.release.set()
        self.refresh()
        return ended

    def rotate_token(self, serial: str) -> None:
        """The counter forgets every access token it issued (as after a factory reset or a
        firmware update): a client's cached token is refused until it asks for a new one."""
        self._device(serial).token_generation += 1

    def faults(self, serial: str) -> list[Fault]:
        """Every fault of the counter, past and present (copies)."""
        return self._device(serial).faults.history()

    def held_connections(self, serial: str) -> int:
        """How many requests the counter is holding unanswered (``hung``) right now."""
        return self._device(serial).held

    def close_site(self, code: str, dates: Iterable[date], reason: str | None = None) -> None:
        """Mark a site closed (zero traffic) on ``dates``, e.g. for a refit.

        A site has one closure reason; a new ``reason`` replaces it for all its closed dates.
        """
        site = self.sites[code]
        new = replace(
            site,
            closed_dates=(*site.closed_dates, *dates),
            closure_reason=reason or site.closure_reason,
        )
        self.sites[code] = new
        self.traffic.replace_site(new)
        for device in self._devices.values():
            if device.counter.site == code:
                device.site = new

    # -- data and images -----------------------------------------------------------------------

    def expected_counts(
        self, serial: str, start: datetime, end: datetime, minutes: int = 15
    ) -> list[tuple[datetime, int, int]]:
        """The slots ``[start, end)`` the device holds now: (UTC start, in, out)."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("expected_counts needs timezone-aware datetimes")
        return self._device(serial).slots(start, end, minutes)

    def request(
        self, serial: str, path: str, query: str = "", authorization: str | None = None
    ) -> Response:
        """The device's answer to a GET, without a socket (and so without hung/slow delays)."""
        return self._device(serial).handle(path, query, authorization)

    def snapshot(self, serial: str, at: datetime | None = None) -> bytes:
        return self._device(serial).snapshot_jpeg(at)

    def reference(self, serial: str) -> bytes:
        return self._device(serial).reference_jpeg()

    def write_references(self, directory: str | Path) -> dict[str, Path]:
        """Write each counter's reference view as ``<serial>.jpg``; returns the paths."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for serial, device in self._devices.items():
            path = folder / f"{serial}.jpg"
            path.write_bytes(device.reference_jpeg())
            paths[serial] = path
        return paths

    def agent_config_toml(
        self,
        state_dir: str | Path,
        reference_dir: str | Path | None = None,
        *,
        probe_timeout_seconds: float = 5,
        agent: Mapping[str, bool | int | float | str | Sequence[str]] | None = None,
    ) -> str:
        """A complete ffc-agent config for this fleet (ports must be known: start() first).

        ``reference_image`` points into ``reference_dir``; write the files there with
        ``write_references``. ``agent`` adds or overrides keys of the ``[agent]`` table.
        """
        settings: dict[str, Any] = {
            "state_dir": str(state_dir),
            "role": "customer",
            "cycle_seconds": 300,
            "probe_timeout_seconds": probe_timeout_seconds,
            "max_parallel": 8,
            "requester": "store-it@example.com",
            "cc": [],
            # the simulated faults are for seeing tickets filed: no reboot wait, no grace
            # for the store (the demo sets the real ones)
            "offline_ticket_minutes": 0,
            "blocked_view_grace_minutes": 0,
            **(agent or {}),
        }
        lines = [
            "# ffc-agent config for the simulated fleet (written by simulator.Fleet)",
            "[agent]",
            *(f"{k} = {_toml(v)}" for k, v in settings.items()),
        ]
        for site in self.sites.values():
            lines += ["", *_site_lines(site)]
        for device in self._devices.values():
            c = device.counter
            lines += [
                "",
                "[[counters]]",
                f"serial = {_s(c.serial)}",
                f"name = {_s(c.name)}",
                f"site = {_s(c.site)}",
                f'host = "{HOST}"',
                f"port = {self.port(c.serial)}",
            ]
            if c.group:
                lines.append(f"group = {_s(c.group)}")
            lines += [
                f"username = {_s(c.username)}",
                f"password = {_s(c.password)}",
                f"api = {_s(c.api)}",
                f"snapshot_path = {_s(c.snapshot_path)}",
            ]
            if reference_dir is not None:
                ref = Path(reference_dir) / f"{c.serial}.jpg"
                lines.append(f"reference_image = {_s(str(ref))}")
        lines += ["", "[[sinks]]", 'type = "local"', ""]
        return "\n".join(lines)


def _toml(value: Any) -> str:
    """A TOML value for the [agent] table: booleans, numbers, strings and lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _s(value)
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _s(text: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these)."""
    return json.dumps(text, ensure_ascii=False)


def _site_lines(site: SimSite) -> list[str]:
    hours = ", ".join(f"{d} = {_s(site.opening_hours.get(d, 'closed'))}" for d in WEEKDAYS)
    lines = [
        "[[sites]]",
        f"code = {_s(site.code)}",
        f"name = {_s(site.name)}",
        f"timezone = {_s(site.timezone)}",
    ]
    region = site.holidays or HOLIDAY_REGIONS.get(site.timezone)
    if region:
        lines.append(f"holidays = {_s(region)}")
    lines += [f"opening_hours = {{ {hours} }}", "closed_on_public_holidays = false"]
    spans = _date_ranges(site.closed_dates)
    reason = _s(site.closure_reason)
    closures = ", ".join(
        f"{{ from = {_s(a.isoformat())}, to = {_s(b.isoformat())}, reason = {reason} }}"
        for a, b in spans
    )
    lines.append(f"closures = [{closures}]" if closures else "closures = []")
    return lines


def _date_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    spans: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if spans and day - spans[-1][1] == timedelta(days=1):
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    return spans
