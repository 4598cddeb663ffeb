"""What a diagnostics bundle shows, as the agent passes it in: ``BundleInput`` and its rows.

These types are shared by ``rma.bundle``, which redacts them and packs the archive, and
``rma.report``, which draws them as ``report.html``; they live here so that neither of the two
has to import the other for them. ``rma.bundle`` re-exports them, so callers may keep importing
them from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from diagnostics.model import Assessed, Finding


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One count slot of one counter with what was expected of it (in + out per slot).

    A ``missing`` slot never arrived: its counts are None, never zero."""

    start: datetime
    counter: str
    count_in: int | None
    count_out: int | None
    expected: float | None = None
    expected_low: float | None = None
    expected_high: float | None = None
    missing: bool = False

    @property
    def total(self) -> int | None:
        if self.missing or self.count_in is None or self.count_out is None:
            return None
        return self.count_in + self.count_out

    @property
    def gap(self) -> bool:
        """Missing, or zero where even the low end of the expected range is above zero."""
        if self.missing:
            return True
        return self.total == 0 and (self.expected_low or 0) > 0


@dataclass(frozen=True, slots=True)
class CommandOutput:
    """One device command as the SSH probe recorded it. ``exit_status`` None: cut off."""

    command: str
    exit_status: int | None
    stdout: str
    stderr: str = ""
    elapsed_s: float = 0.0
    counter: str = ""
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RemediationStep:
    """One rung of the remediation ladder that was tried, and how it went."""

    at: datetime
    step: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Collected:
    """What one check or probe collected for the bundle, how long it took, how it ended."""

    what: str
    check: str
    elapsed_s: float = 0.0
    ok: bool = True
    timed_out: bool = False
    error: str = ""
    size: int | None = None  # bytes collected, when known
    at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "check": self.check,
            "at": self.at.isoformat() if self.at else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "ok": self.ok,
            "timed_out": self.timed_out,
            "error": self.error,
            "size": self.size,
        }


@dataclass(frozen=True)
class BundleInput:
    """Everything one bundle shows; the agent collects it, ``build_bundle`` redacts it.

    ``key`` is the incident's (the ticket's idempotency key); ``subject`` and ``category`` are
    the ticket's. ``findings`` are ``Assessed`` (or bare ``Finding``, or their JSON)."""

    agent_version: str
    created_at: datetime
    key: str
    site: str
    site_name: str = ""
    timezone: str = "UTC"
    counters: tuple[str, ...] = ()
    subject: str = ""
    category: str = ""
    ticket_number: str = ""  # the destination's number, when the ticket is filed already
    started_at: datetime | None = None
    findings: Sequence[Assessed | Finding | Mapping[str, Any]] = ()
    series: Sequence[SeriesRow] = ()
    snapshot: bytes | None = None
    snapshot_at: datetime | None = None
    reference: bytes | None = None
    commands: Sequence[CommandOutput] = ()
    log_excerpt: str = ""
    remediation: Sequence[RemediationStep] = ()
    collected: Sequence[Collected] = ()

    def __repr__(self) -> str:  # never the texts: they may hold what the redactor is for
        return (
            f"BundleInput(key={self.key!r}, site={self.site!r}, {len(self.findings)} findings, "
            f"{len(self.series)} rows, {len(self.commands)} commands, "
            f"log {len(self.log_excerpt)} chars)"
        )
