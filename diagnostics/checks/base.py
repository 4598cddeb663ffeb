"""The shape of a check, and the evidence it is given.

A check is a small class with declared metadata and typed options, and one method,
``run(evidence) -> list[Finding]``. It never does I/O: the runner gathers the evidence, calls
the check under a deadline and turns any exception into an ``error`` finding about the agent,
so a broken check can never file a ticket about a device.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from diagnostics.calendar import SiteCalendar
from diagnostics.model import CountSlot, Finding, Observation, Status
from diagnostics.series import Hold, ModelCache, SlotColumns
from diagnostics.share import HeldSplit


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
    # the counters (this one or its peers) whose level incident is open: judged against their
    # level before the shift began (``CountModel``'s ``held``)
    held: Mapping[str, Hold] = field(default_factory=dict)
    # the counters whose IN/OUT imbalance incident is open, since when and with the usual IN
    # share its finding named: judged against it once a move outlasts the window
    held_split: Mapping[str, HeldSplit] = field(default_factory=dict)


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
    held: Mapping[str, Hold] = field(default_factory=dict)  # as in ``CounterEvidence``

    @property
    def serial(self) -> None:
        return None


AppliesTo = Literal["counter", "site", "gateway", "agent"]
APPLIES_TO: tuple[AppliesTo, ...] = ("counter", "site", "gateway", "agent")


class Family(enum.StrEnum):
    """What part of the installation a check is about."""

    CONNECTIVITY = "connectivity"  # does the counter (or the whole site) answer at all
    COUNTS = "counts"  # are the counts complete and right
    LIVEVIEW = "liveview"  # does the camera see what it was tuned on
    DEVICE = "device"  # the counter's own body: clock, disk, camera, service, host key
    GATEWAY = "gateway"  # the box the agent runs on
    AGENT = "agent"  # the agent's own machinery (its outbox, its checks)


class TicketKind(enum.StrEnum):
    """What a genuine finding asks of FootfallCam support, in the checks' own words.

    ``rma.tickets`` maps it onto the portal's category and its role rule: ``data`` is a Data
    Accuracy Issue, ``technical`` a Technical Issue, ``hardware`` an RMA request (a Device Bug
    when FootfallCam files it, a Technical Issue when a customer does); ``none`` is never a
    ticket to FootfallCam (the gateway and the agent belong to the store's IT).
    """

    DATA = "data"
    TECHNICAL = "technical"
    HARDWARE = "hardware"
    NONE = "none"


# The words a ``ticket_subject`` or ``ticket_what`` template may use; ``rma.tickets`` fills
# them in:
# who ("Counter FFC0002 'Main door'"), low (the same, lower case), since ("since 26 Jun 09:15"),
# code (the finding's code in words), reason (how a probe failed), by (" by 38%" or ""),
# said (the finding's summary as a sentence), site ("Oxford Street (LDN01)").
TEMPLATE_FIELDS = frozenset({"who", "low", "since", "code", "reason", "by", "said", "site"})

# Questions only the people at the store can answer, which support asks first about a counter
# that does not answer; the checks that need them name them in ``store_questions``.
LED_QUESTION = "What colour is the counter's LED now (none, yellow, green or red)?"
POWER_CYCLE_QUESTION = "Has the counter been power-cycled since, and did it come back?"


@dataclass(frozen=True)
class Wording:
    """A per-code override of a check's ticket metadata: only the fields given change."""

    ticket: TicketKind | None = None
    priority: int | None = None
    ticket_subject: str | None = None
    ticket_what: str | None = None
    ticket_ask: str | None = None
    store_questions: tuple[str, ...] | None = None
    ticket_evidence: tuple[str, ...] | None = None


# The code the evidence gate gives a counter's finding once it confirmed a hardware fault behind
# it (a camera missing, a unit unreachable with link and power after every fix, counts that stay
# wrong): whatever check found it, its ticket is then an RMA request. A check may word its own.
HARDWARE_FAULT = "hardware_fault"
HARDWARE_WORDING = Wording(
    ticket=TicketKind.HARDWARE,
    priority=0,
    ticket_subject="RMA request: {who} hardware fault {since}",
    ticket_what="{who} has a hardware fault and needs replacing: this is an RMA request. "
    "{said} We will back up the device's data before it is returned.",
    ticket_ask=(
        "Please approve the RMA and send a replacement unit configured and tuned like this one; "
        "we will send the faulty unit back once its counts are backed up."
    ),
)


@dataclass(frozen=True)
class CheckMeta:
    """What the rest of the house needs to know about one check (or one code of it).

    ``priority`` orders the findings of one incident: the lowest leads the ticket (root cause
    before symptoms). ``known`` is False for the fallback of an id no check declares (an old
    id in the database): such findings are shown but never ticketed.
    """

    id: str
    title: str
    family: Family
    applies_to: AppliesTo
    ticket: TicketKind
    priority: int
    ticket_subject: str
    ticket_what: str
    ticket_ask: str = ""
    store_questions: tuple[str, ...] = ()
    ticket_evidence: tuple[str, ...] = ()
    liveness: bool = False
    reboot_wait: bool = False
    accuracy: bool = False
    derived: bool = False
    explained_by: tuple[str, ...] = ()
    known: bool = True

    @property
    def ticketed(self) -> bool:
        """Does a genuine, confirmed finding of this check raise a FootfallCam ticket?"""
        return self.known and self.ticket is not TicketKind.NONE

    def for_code(self, overrides: Mapping[str, Wording], code: str | None) -> CheckMeta:
        w = overrides.get(code or "")
        if w is None:
            return self
        changed = {k: v for k, v in vars(w).items() if v is not None}
        return replace(self, **changed)


class Check:
    """Base class: subclasses set the ClassVars, an ``Options`` model and ``run``.

    Metadata, read by the registry (``diagnostics.checks``) for the rest of the house:
    ``id`` (never renamed: incidents, silences and tickets key on it), ``title``, ``family``,
    ``applies_to`` (which evidence the runner gives it), ``ticket`` (the kind of ticket it
    raises), ``priority`` (lower leads when one incident holds several findings),
    ``ticket_subject``/``ticket_what`` (templates of the ticket's subject and its first
    answer, "what is the problem?", from ``TEMPLATE_FIELDS``), ``ticket_ask`` (what the
    ticket asks support to do, one sentence), ``store_questions`` (what only the store can
    tell support), ``ticket_evidence`` (the evidence keys the ticket's "how" answer shows, in
    order: the rest — model statistics, raw image metrics — stays in the bundle's
    ``findings.json``), ``codes`` (per-code overrides of those), ``liveness`` (its ok means
    the counter answers), ``reboot_wait`` (its problem may be a reboot passing — a counter's,
    or a site's switch or router — so its ticket waits ``offline_ticket_minutes`` from when
    the problem began), ``accuracy`` (it judges count accuracy, which an untuned counter
    does not have yet), ``derived`` (its findings are made by the gate or the agent, not by
    ``run``: the runner does not run it), ``explained_by`` (ids of counter checks whose
    problem at the same site, over the same time, already explains a site-level finding of
    this check: the gate rules it out, so one ticket is raised, about the counter).
    """

    id: ClassVar[str]
    title: ClassVar[str]
    family: ClassVar[Family]
    applies_to: ClassVar[AppliesTo] = "counter"
    ticket: ClassVar[TicketKind] = TicketKind.TECHNICAL
    priority: ClassVar[int] = 100
    ticket_subject: ClassVar[str] = "{who} {code} {since}"
    ticket_what: ClassVar[str] = "{who} has a problem. {said}"
    ticket_ask: ClassVar[str] = ""
    store_questions: ClassVar[tuple[str, ...]] = ()
    ticket_evidence: ClassVar[tuple[str, ...]] = ()
    codes: ClassVar[Mapping[str, Wording]] = {}
    liveness: ClassVar[bool] = False
    reboot_wait: ClassVar[bool] = False
    accuracy: ClassVar[bool] = False
    derived: ClassVar[bool] = False
    explained_by: ClassVar[tuple[str, ...]] = ()
    timeout_s: ClassVar[float] = 5.0
    remediation: ClassVar[str] = ""

    @classmethod
    def meta(cls, code: str | None = None) -> CheckMeta:
        """This check's metadata, with the overrides of ``code`` applied."""
        base = CheckMeta(
            id=cls.id,
            title=cls.title,
            family=cls.family,
            applies_to=cls.applies_to,
            ticket=cls.ticket,
            priority=cls.priority,
            ticket_subject=cls.ticket_subject,
            ticket_what=cls.ticket_what,
            ticket_ask=cls.ticket_ask,
            store_questions=cls.store_questions,
            ticket_evidence=cls.ticket_evidence,
            liveness=cls.liveness,
            reboot_wait=cls.reboot_wait,
            accuracy=cls.accuracy,
            derived=cls.derived,
            explained_by=cls.explained_by,
        )
        codes = (
            cls.codes
            if HARDWARE_FAULT in cls.codes
            else {HARDWARE_FAULT: HARDWARE_WORDING, **cls.codes}
        )
        return base.for_code(codes, code)

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


class DerivedCheck(Check):
    """A check whose findings another part makes (the gate's first pass, the agent's outbox):
    it is declared here so its id has metadata like any other, and the runner never runs it."""

    derived: ClassVar[bool] = True

    def run(self, evidence: Any) -> list[Finding]:
        return []
