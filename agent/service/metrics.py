"""Prometheus metrics of one agent: a node-exporter textfile by default, a loopback HTTP endpoint
on request.

A retail chain runs an agent in every store and watches them all from one Prometheus (or a
federation of them): which counters answer, what the agent found and ruled out, how many
incidents are open, whether tickets pile up undelivered or sit past their SLA, and whether the
agent itself still runs. The gateway has no business exposing an unauthenticated port to the
store network, so the default is a ``.prom`` file for node-exporter's textfile collector (which
the gateway's monitoring already scrapes), and the HTTP endpoint binds loopback addresses only.

Contract:

- ``Metrics`` owns its own ``CollectorRegistry``; nothing goes into prometheus_client's global
  registry, so tests and two agents in one process never collide.
- ``update_from_cycle`` is called once per cycle. Gauges about "the last cycle" (counters up,
  findings, open incidents, outbox, tickets) are replaced as a whole: a counter removed from
  the configuration or a finding that went away disappears from the output. The replacement is
  one reference swap, so a scrape in the middle of an update sees the old cycle or the new one,
  never half of each. Cycle count, duration, probe errors and filed tickets are cumulative.
- ``write_textfile`` writes a temporary file in the target's own directory and renames it into
  place, so node-exporter never reads half a file; it raises ``OSError`` on failure and leaves
  no temporary file behind. A file left by a stopped agent keeps its old values: alert on
  ``time() - ffc_agent_last_cycle_timestamp_seconds``.
- ``serve`` refuses any address that is not loopback (``ValueError``).
- Label values are serials, site codes, check ids, error codes, states, statuses, categories
  and sink names: never a secret, a host name or free text.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from diagnostics.model import ProbeErrorCode
from rma.sla import is_overdue
from rma.tickets import Category

if TYPE_CHECKING:
    from agent.store import Incident
    from diagnostics.model import Observation
    from rma.tickets import Ticket

# A cycle normally takes seconds; past the default cycle of 300 s it has overrun.
CYCLE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)

_TEXTFILE_MODE = 0o644  # node-exporter runs as its own user; nothing in the file is secret

# name -> (help, label names): the gauges that describe the last cycle only
_LAST_CYCLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "ffc_agent_device_up": (
        "1 if the counter's API answered in the last cycle, else 0.",
        ("counter", "site"),
    ),
    "ffc_agent_findings": (
        "Findings of the last cycle by check, verdict (none for ok, skip and error) and status.",
        ("check", "verdict", "status"),
    ),
    "ffc_agent_incidents_open": (
        "Incidents not yet resolved, by check and state.",
        ("check", "state"),
    ),
    "ffc_agent_outbox_depth": (
        "Tickets and updates waiting in the outbox for delivery, by destination.",
        ("sink",),
    ),
    "ffc_agent_outbox_oldest_age_seconds": (
        "Age of the oldest undelivered outbox entry, by destination (0 when empty).",
        ("sink",),
    ),
    "ffc_agent_tickets": (
        "Support tickets known to the agent, by portal status and category.",
        ("status", "category"),
    ),
    "ffc_agent_tickets_sla_overdue": (
        "Tickets waiting on FootfallCam past their category's SLA, by category.",
        ("category",),
    ),
    "ffc_agent_rma_open": (
        "RMAs still on the road (not closed, rejected or cancelled), by counter and state.",
        ("counter", "state"),
    ),
}

_Samples = dict[str, dict[tuple[str, ...], float]]


def loopback_host(host: str) -> str:
    """The address to bind for ``host``, which must be a loopback address; else ValueError.

    ``localhost`` becomes 127.0.0.1 so that /etc/hosts cannot move the endpoint elsewhere.
    """
    if host.strip().lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip())
    except ValueError:
        raise ValueError(
            f"expected a loopback address such as 127.0.0.1, got {host!r}: the metrics "
            "endpoint has no authentication and must not be reachable from the network"
        ) from None
    if not address.is_loopback:
        raise ValueError(
            f"{host!r} is not a loopback address: the metrics endpoint has no authentication "
            "and must not be reachable from the network"
        )
    return str(address)


def _version() -> str:
    try:
        return metadata.version("ffc-agent")
    except metadata.PackageNotFoundError:
        return "unknown"


class _LastCycle(Collector):
    """The last cycle's gauges, served from one snapshot that is swapped whole."""

    def __init__(self) -> None:
        self._samples: _Samples = {name: {} for name in _LAST_CYCLE}

    def replace(self, samples: _Samples) -> None:
        self._samples = samples  # one reference swap: a scrape sees all old or all new

    def describe(self) -> Iterator[Metric]:
        for name, (help_text, labels) in _LAST_CYCLE.items():
            yield GaugeMetricFamily(name, help_text, labels=labels)

    def collect(self) -> Iterator[Metric]:
        samples = self._samples
        for name, (help_text, labels) in _LAST_CYCLE.items():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in sorted(samples.get(name, {}).items()):
                family.add_metric(list(values), value)
            yield family


class Metrics:
    """The agent's metric families, in a registry of their own."""

    def __init__(self, *, version: str | None = None, sinks: Iterable[str] = ()) -> None:
        """``sinks``: destination names, so their filed-ticket counters start at 0."""
        self.registry = CollectorRegistry()
        self._last = _LastCycle()
        self.registry.register(self._last)
        self.cycle_duration = Histogram(
            "ffc_agent_cycle_duration_seconds",
            "Wall time of one agent cycle, probes to tickets.",
            buckets=CYCLE_BUCKETS,
            registry=self.registry,
        )
        self.cycles = Counter(
            "ffc_agent_cycles", "Cycles the agent has completed.", registry=self.registry
        )
        self.last_cycle = Gauge(
            "ffc_agent_last_cycle_timestamp_seconds",
            "Unix time at which the last cycle completed.",
            registry=self.registry,
        )
        self.probe_errors = Counter(
            "ffc_agent_probe_errors",
            "Probes of counters that failed, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.tickets_filed = Counter(
            "ffc_agent_tickets_filed",
            "Tickets delivered to a destination, by destination.",
            ["sink"],
            registry=self.registry,
        )
        info = Gauge(
            "ffc_agent_info", "The agent's version; always 1.", ["version"], registry=self.registry
        )
        info.labels(version or _version()).set(1)
        # Series that exist from the start, so that rate() and increase() see the first event.
        for code in ProbeErrorCode:
            self.probe_errors.labels(code.value)
        for sink in sinks:
            self.tickets_filed.labels(sink)
        self._servers: list[tuple[Any, threading.Thread]] = []

    # -- input ---------------------------------------------------------------------------------

    def update_from_cycle(
        self,
        result: Any,
        *,
        incidents: Iterable[Incident],
        tickets: Iterable[Ticket],
        outbox: Mapping[str, tuple[int, float | None]],
        now: datetime,
        observations: Iterable[Observation] | None = None,
        counter_sites: Mapping[str, str] | None = None,
        rma_states: Mapping[str, str] | None = None,
    ) -> None:
        """Take in one finished cycle.

        ``result`` is the runner's ``CycleResult`` (``assessed``, ``duration_s``; its probe
        ``observations`` if it has them, unless given here). ``incidents``: the unresolved ones.
        ``tickets``: every ticket the agent knows. ``outbox``: destination -> (depth, age of
        the oldest entry in seconds or None). ``counter_sites``: serial -> site code, for the
        ``site`` label of ``ffc_agent_device_up``. ``rma_states``: serial -> state of each
        open RMA. ``now`` must be timezone-aware.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        if observations is None:
            observations = getattr(result, "observations", None) or ()
        observations = list(observations)
        assessed = list(result.assessed)
        sites = dict(counter_sites or {})
        for a in assessed:
            if a.finding.subject and a.finding.site:
                sites.setdefault(a.finding.subject, a.finding.site)

        samples: _Samples = {name: {} for name in _LAST_CYCLE}
        up: dict[str, bool] = {}
        for obs in observations:
            if obs.probe == "api":
                up[obs.counter] = up.get(obs.counter, False) or obs.ok
        samples["ffc_agent_device_up"] = {
            (serial, sites.get(serial, "")): float(ok) for serial, ok in up.items()
        }
        samples["ffc_agent_findings"] = _tally(
            (
                a.finding.check_id,
                a.verdict.decision.value if a.verdict is not None else "none",
                a.finding.status.value,
            )
            for a in assessed
        )
        samples["ffc_agent_incidents_open"] = _tally(
            (i.check_id, i.state)
            for i in incidents
            if i.resolved_at is None and i.state != "resolved"
        )
        samples["ffc_agent_outbox_depth"] = {
            (sink,): float(depth) for sink, (depth, _) in outbox.items()
        }
        samples["ffc_agent_outbox_oldest_age_seconds"] = {
            (sink,): float(age or 0.0) if depth else 0.0 for sink, (depth, age) in outbox.items()
        }
        tickets = list(tickets)
        samples["ffc_agent_tickets"] = _tally((t.status.value, t.category.value) for t in tickets)
        # Every category with an SLA is present, 0 when nothing is late, so `> 0` alerts work.
        overdue: dict[tuple[str, ...], float] = {
            (c.value,): 0.0 for c in Category if c.sla_days is not None
        }
        for t in tickets:
            if is_overdue(t, now):
                overdue[(t.category.value,)] = overdue.get((t.category.value,), 0.0) + 1
        samples["ffc_agent_tickets_sla_overdue"] = overdue
        samples["ffc_agent_rma_open"] = {
            (serial, state): 1.0 for serial, state in (rma_states or {}).items()
        }
        self._last.replace(samples)

        for obs in observations:
            if obs.error_code is not None:
                self.probe_errors.labels(ProbeErrorCode(obs.error_code).value).inc()
        self.cycle_duration.observe(max(0.0, float(result.duration_s)))
        self.cycles.inc()
        self.last_cycle.set(now.timestamp())

    def record_filed(self, sink: str, count: int = 1) -> None:
        """Count tickets delivered to ``sink`` (call it where delivery succeeds)."""
        self.tickets_filed.labels(sink).inc(count)

    # -- output --------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The exposition text, as node-exporter or a scrape would read it."""
        return generate_latest(self.registry)

    def write_textfile(self, path: Path | str) -> Path:
        """Write the metrics to ``path`` (a ``.prom`` file) atomically; returns the path.

        Not ``prometheus_client.write_to_textfile``: its temporary file takes the process
        umask, so under a strict systemd ``UMask=`` node-exporter could not read the result.
        The temporary name does not end in ``.prom``, so the collector never picks it up.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.render()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), _TEXTFILE_MODE)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[Any, threading.Thread]:
        """Serve ``/metrics`` on a loopback ``host`` from a daemon thread.

        Returns prometheus_client's (server, thread); ``server.server_port`` is the bound port
        (useful with ``port=0``). ``close`` stops every server this object started.
        """
        address = loopback_host(host)
        server, thread = start_http_server(port, addr=address, registry=self.registry)
        self._servers.append((server, thread))
        return server, thread

    def close(self) -> None:
        """Stop the HTTP servers started by ``serve``."""
        while self._servers:
            server, thread = self._servers.pop()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _tally(keys: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], float]:
    return {key: float(n) for key, n in Tally(keys).items()}
