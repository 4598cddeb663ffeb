"""The shape of a check, and the evidence it is given.

A check is a small class with declared metadata and typed options, and one method,
``run(evidence) -> list[Finding]``. It never does I/O: the runner gathers the evidence, calls
the check under a deadline and turns any exception into an ``error`` finding about the agent,
so a broken check can never file a ticket about a device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from diagnostics.calendar import SiteCalendar
from diagnostics.model import CountSlot, Finding, Observation, Status
from diagnostics.series import ModelCache, SlotColumns


@dataclass(frozen=True)
class CounterEvidence:
    """Everything the agent knows about one counter at ``now``.

    ``slots`` are this counter's count slots, oldest first, as far back as the baselines need;
    ``peers`` maps each peer's serial (same group, else same site) to its slots.
    ``observations`` holds the latest observation of each probe kind ("api", "snapshot" ...).
    ``counts``, when given, holds the same counts as columns (the counter's and its peers'):
    the count checks read those, and ``slots`` may then hold only what other checks need.
    """

    serial: str
    name: str
    site: str
    calendar: SiteCalendar
    now: datetime
    observations: dict[str, Observation] = field(default_factory=dict)
    slots: tuple[CountSlot, ...] = ()
    peers: dict[str, tuple[CountSlot, ...]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # the service hands the counts as columns instead (the counter's and its peers', read
    # straight from the store: no object per slot), and a cache of models shared between
    # checks and cycles; either may be None, and the count checks then use ``slots``
    counts: Mapping[str, SlotColumns] | None = None
    models: ModelCache | None = None


@dataclass(frozen=True)
class SiteEvidence:
    """Everything the agent knows about one site's counts at ``now``, for site-level checks.

    ``counters`` maps every counter's serial to its slots, oldest first; ``groups`` gives each
    counter's group (None: no group), which decides its peers as in the configuration.
    Findings about a site have no subject: ``serial`` is None.
    """

    site: str
    calendar: SiteCalendar
    now: datetime
    counters: dict[str, tuple[CountSlot, ...]] = field(default_factory=dict)
    groups: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    counts: Mapping[str, SlotColumns] | None = None  # as in ``CounterEvidence``
    models: ModelCache | None = None

    @property
    def serial(self) -> None:
        return None


class Check:
    """Base class: subclasses set the ClassVars, an ``Options`` model and ``run``."""

    id: ClassVar[str]
    title: ClassVar[str]
    applies_to: ClassVar[Literal["counter", "site", "gateway", "agent"]] = "counter"
    timeout_s: ClassVar[float] = 5.0
    remediation: ClassVar[str] = ""

    class Options(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, options: BaseModel | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def run(self, evidence: Any) -> list[Finding]:
        """Judge ``evidence``: a ``CounterEvidence``, or a ``SiteEvidence`` for site checks."""
        raise NotImplementedError

    def finding(
        self,
        evidence: CounterEvidence | SiteEvidence,
        status: Status,
        code: str,
        summary: str,
        **details: Any,
    ) -> Finding:
        return Finding(
            check_id=self.id,
            status=status,
            code=code,
            summary=summary,
            at=evidence.now,
            site=evidence.site,
            subject=evidence.serial,
            evidence=details,
            remediation=self.remediation if status in (Status.WARN, Status.FAIL) else "",
        )
