"""Gathers what support receives with a ticket: the diagnostics bundle and the estimate CSV.

The bundle is built from what the agent already holds — the findings and their verdicts, the
count series with what was expected, the latest snapshot and the reference view, the device's
command outputs, the agent's recent log lines — and passes the redactor on its way out
(``rma.bundle``). A data-accuracy ticket also carries the per-slot estimate of the missing or
wrong counts (``rma.corrections``), so reports can be corrected.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from agent.config import Config
from agent.rmas import Rmas
from agent.store import Incident, Store
from agent.views import LiveViews
from diagnostics.checks.device import DeviceHealth
from diagnostics.checks.liveview import LiveViewBlocked
from diagnostics.estimate import SlotEstimate, estimate
from diagnostics.model import Assessed, Finding, as_datetime
from rma.bundle import (
    Bundle,
    BundleInput,
    Collected,
    CommandOutput,
    RemediationStep,
    SeriesRow,
    build_bundle,
)
from rma.corrections import corrections_csv
from rma.ladder import TITLES
from rma.redact import Redactor
from rma.tickets import Category, Ticket

SERIES_BEFORE = timedelta(hours=6)  # context before the problem began
SERIES_MIN = timedelta(hours=24)
SERIES_MAX = timedelta(days=3)
_START_KEYS = ("failing_since", "zero_since", "start", "since")


def agent_version() -> str:
    try:
        return version("ffc-agent")
    except PackageNotFoundError:
        return "unknown"


def problem_start(finding: Finding, fallback: datetime) -> datetime:
    """When the problem a finding describes began, from whichever key its check uses."""
    for key in _START_KEYS:
        when = as_datetime(finding.evidence.get(key))
        if when is not None:
            return when
    return fallback


class Bundler:
    """Assembles what support receives with a ticket (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        views: LiveViews,
        redactor: Redactor,
        log_excerpt: Callable[[], str] = lambda: "",
        *,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.config = config
        self.store = store
        self.views = views
        self.redactor = redactor
        self.log_excerpt = log_excerpt
        self.max_bytes = max_bytes

    def series(
        self, serial: str, start: datetime, end: datetime, now: datetime
    ) -> list[SlotEstimate]:
        counter = self.config.counter(serial)
        site = self.config.site(counter.site)
        since = start - timedelta(days=35)
        peers = self.config.peers(serial)
        slots = {s: self.store.slots(s, since, now) for s in (serial, *peers)}
        return estimate(
            slots, site.calendar(), serial=serial, peers=peers, start=start, end=end, now=now
        )

    def bundle(
        self,
        *,
        key: str,
        site: str,
        counters: tuple[str, ...],
        findings: list[Any],
        started_at: datetime,
        now: datetime,
        subject: str = "",
        category: str = "",
        ticket_number: str = "",
    ) -> Bundle:
        site_cfg = self.config.site(site)
        start = max(started_at - SERIES_BEFORE, now - SERIES_MAX)
        start = min(start, now - SERIES_MIN)
        rows: list[SeriesRow] = []
        commands: list[CommandOutput] = []
        collected: list[Collected] = []
        snapshot = reference = None
        snapshot_at = None
        for serial in counters:
            series = self.series(serial, start, now, now)
            rows += [
                SeriesRow(
                    r.start,
                    r.counter,
                    r.count_in,
                    r.count_out,
                    r.expected,
                    r.low,
                    r.high,
                    r.missing,
                )
                for r in series
            ]
            collected.append(Collected("count series", "counts", size=len(series), at=now))
            for obs in self.store.observations(serial, "ssh", limit=1):
                for out in obs.data.get("outputs", []):
                    commands.append(
                        CommandOutput(
                            out["command"],
                            out.get("exit_status"),
                            out.get("stdout", ""),
                            out.get("stderr", ""),
                            out.get("elapsed_s", 0.0),
                            serial,
                            obs.at,
                        )
                    )
                collected.append(
                    Collected(
                        "device commands",
                        DeviceHealth.id,
                        obs.elapsed_s,
                        obs.ok,
                        error=obs.error,
                        at=obs.at,
                    )
                )
            latest = self.views.latest(serial)
            if latest is not None and snapshot is None:
                snapshot = latest.read_bytes()
                snapshot_at = datetime.fromtimestamp(int(latest.stem), now.tzinfo)
                reference = self._reference(serial)
                collected.append(
                    Collected(
                        "live-view snapshot",
                        LiveViewBlocked.id,
                        size=len(snapshot),
                        at=snapshot_at,
                    )
                )
        inp = BundleInput(
            agent_version=agent_version(),
            created_at=now,
            key=key,
            site=site,
            site_name=site_cfg.name,
            timezone=site_cfg.timezone,
            counters=counters,
            subject=subject,
            category=category,
            ticket_number=ticket_number,
            started_at=started_at,
            findings=findings,
            series=rows,
            snapshot=snapshot,
            snapshot_at=snapshot_at,
            reference=reference,
            commands=commands,
            log_excerpt=self.log_excerpt(),
            collected=collected,
            remediation=self._remediation(counters, started_at),
        )
        return build_bundle(inp, self.redactor, max_bytes=self.max_bytes)

    def _remediation(
        self, counters: tuple[str, ...], started_at: datetime
    ) -> tuple[RemediationStep, ...]:
        """Every ladder step tried on these counters since the problem began (agent or person)."""
        rmas = Rmas(self.store)
        return tuple(
            RemediationStep(
                a.at, f"{TITLES[a.step]} ({a.actor})", a.outcome.value.replace("_", " "), a.detail
            )
            for serial in counters
            for a in rmas.attempts(serial, started_at)
        )

    def _reference(self, serial: str) -> bytes | None:
        counter = self.config.counter(serial)
        for path in (counter.reference_image, self.views.references / f"{serial}.learned.png"):
            if path is not None and path.exists():
                return path.read_bytes()
        return None

    def for_ticket(
        self, incident: Incident, ticket: Ticket, now: datetime, assessed: list[Assessed]
    ) -> dict[str, bytes]:
        """The attachments of a new ticket: the bundle, and the estimate for data accuracy.

        ``assessed`` are this cycle's findings: those about the ticket's counter (or site)
        go into the bundle with their verdicts, ruled-out ones included."""
        finding = Finding.from_json(incident.last_finding)
        started = problem_start(finding, incident.opened_at)
        about = [
            a
            for a in assessed
            if (
                a.finding.subject == incident.subject
                if incident.subject
                else a.finding.site == incident.site
            )
        ]
        bundle = self.bundle(
            key=ticket.key,
            site=ticket.site,
            counters=tuple(ticket.counters),
            findings=about or [finding],
            started_at=started,
            now=now,
            subject=ticket.subject,
            category=str(ticket.category),
            ticket_number=ticket.number or "",
        )
        out = {bundle.name: bundle.data}
        if ticket.category == Category.DATA_ACCURACY_ISSUE and ticket.counters:
            tz = self.config.site(ticket.site).calendar().tz
            rows = [r for serial in ticket.counters for r in self.series(serial, started, now, now)]
            text = corrections_csv(rows, tz).decode()
            out[f"estimate-{ticket.counters[0]}.csv"] = self.redactor.text(text).encode()
        return out


# The old name, while branches written against it are merged.
Evidence = Bundler
