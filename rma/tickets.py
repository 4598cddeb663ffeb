"""The FootfallCam support-portal ticket, and the composer that fills it in from findings.

What support receives is what decides how fast a store gets its counts back. The portal asks for
an issue level, a site and counter(s), a high-level subject, a category (each with its SLA and a
rule about who may choose it), the date it happened, and a comment answering five questions —
what, where, when, which device, how. This module is that form as data (``Ticket``, whose JSON
keys are a contract with every sink) and ``compose``, which writes the five answers the way a
careful store IT person would, from the findings of one incident and nothing else.

The agent plays the customer by default, and a customer may not choose FootfallCam's own
categories: a confirmed hardware fault is therefore raised as a Technical Issue whose subject
starts with "RMA request". ``compose`` never returns a category its role may not choose.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from diagnostics.checks import CheckMeta, Family, TicketKind, meta
from diagnostics.model import Finding, ProbeErrorCode, Status, plural
from rma.portal import TaskType as TaskType  # the model's; defined there for the CLI
from rma.redact import scrub

# ---------------------------------------------------------------------------------------------
# The portal's vocabulary


class Role(enum.StrEnum):
    """Which side of the support process the agent plays (operator setting ``role``)."""

    CUSTOMER = "customer"
    FOOTFALLCAM = "footfallcam"


class ChosenBy(enum.StrEnum):
    """Who may put a category on a ticket."""

    CUSTOMER = "customer"  # anyone filing through the portal
    FOOTFALLCAM = "footfallcam"  # FootfallCam staff only
    EMAIL = "e-mail"  # not through the portal at all


class Category(enum.StrEnum):
    """The portal's ticket categories; the value is the name the portal shows."""

    DATA_ACCURACY_ISSUE = "Data Accuracy Issue"
    TECHNICAL_ISSUE = "Technical Issue"
    TRAINING_REQUEST = "Training Request"
    CONFIGURATION_REQUEST = "Configuration Request"
    SERVICE_REQUEST = "Service Request"
    DEVICE_BUG = "Device Bug"
    SOFTWARE_BUG = "Software Bug"
    BUSINESS_REQUEST = "Business Request"
    ACCURACY_AUDIT_OBSTACLE = "Accuracy Audit Obstacle"

    @property
    def sla_days(self) -> int | None:
        return _CATEGORY_RULES[self][0]

    @property
    def chosen_by(self) -> ChosenBy:
        return _CATEGORY_RULES[self][1]

    @property
    def description(self) -> str:
        return _CATEGORY_RULES[self][2]

    def allowed(self, role: Role | str) -> bool:
        """May an agent playing ``role`` choose this category in the portal?"""
        chosen_by = self.chosen_by
        if chosen_by is ChosenBy.EMAIL:
            return False
        if chosen_by is ChosenBy.FOOTFALLCAM:
            return Role(role) is Role.FOOTFALLCAM
        # FootfallCam staff file customer categories on a customer's behalf too.
        return True


# category -> (SLA in days, who may choose it, what it is for), from the support guide
_CATEGORY_RULES: dict[Category, tuple[int | None, ChosenBy, str]] = {
    Category.DATA_ACCURACY_ISSUE: (3, ChosenBy.CUSTOMER, "missing or inaccurate data"),
    Category.TECHNICAL_ISSUE: (
        1,
        ChosenBy.CUSTOMER,
        "technical problems, Analytic Manager errors",
    ),
    Category.TRAINING_REQUEST: (1, ChosenBy.CUSTOMER, "training"),
    Category.CONFIGURATION_REQUEST: (3, ChosenBy.CUSTOMER, "configuration changes"),
    Category.SERVICE_REQUEST: (
        1,
        ChosenBy.CUSTOMER,
        "installation support, remote access request, engineer call-out, relocation, refit, "
        "closure",
    ),
    Category.DEVICE_BUG: (3, ChosenBy.FOOTFALLCAM, "a confirmed device bug"),
    Category.SOFTWARE_BUG: (3, ChosenBy.FOOTFALLCAM, "a confirmed software bug"),
    Category.BUSINESS_REQUEST: (None, ChosenBy.EMAIL, "business requests, by e-mail only"),
    Category.ACCURACY_AUDIT_OBSTACLE: (
        None,
        ChosenBy.FOOTFALLCAM,
        "store not ready for tuning, live view blocked, device offline (tuning experts only)",
    ),
}

_NOT_ALLOWED_HINT: dict[Category, str] = {
    Category.DEVICE_BUG: (
        "only FootfallCam may choose it, after the bug is confirmed; a customer raises a "
        "confirmed hardware fault as a 'Technical Issue' with 'RMA request' in the subject"
    ),
    Category.SOFTWARE_BUG: (
        "only FootfallCam may choose it, after the bug is confirmed; a customer reports "
        "the problem as a 'Technical Issue'"
    ),
    Category.ACCURACY_AUDIT_OBSTACLE: (
        "only FootfallCam tuning experts may choose it; a customer reports a blocked live "
        "view or an offline device as a 'Technical Issue'"
    ),
    Category.BUSINESS_REQUEST: "business requests go to FootfallCam by e-mail, not the portal",
}


class CategoryNotAllowed(ValueError):
    """The agent's role may not choose this category in the portal."""

    def __init__(self, category: Category, role: Role) -> None:
        self.category = category
        self.role = role
        hint = _NOT_ALLOWED_HINT.get(category, "this role may not choose it")
        super().__init__(
            f"category {category.value!r} is not allowed for role {role.value!r}: {hint}"
        )


def check_category(category: Category | str, role: Role | str) -> Category:
    """Return ``category`` if ``role`` may choose it, else raise ``CategoryNotAllowed``."""
    category, role = Category(category), Role(role)
    if not category.allowed(role):
        raise CategoryNotAllowed(category, role)
    return category


class TicketStatus(enum.StrEnum):
    OPEN = "Open"
    REVALIDATION_IN_PROGRESS = "Revalidation In Progress"
    DIFFICULT_TO_TUNE = "Difficult To Tune"
    SUGGEST_TO_CLOSE = "Suggest To Close"  # the portal closes it by itself 7 days later
    CLOSED = "Closed"  # a problem after this needs a new ticket


class Stage(enum.StrEnum):
    """Which support line holds the ticket."""

    FIRST_LINE = "first_line"
    SECOND_LINE = "second_line"
    THIRD_LINE = "third_line"

    @property
    def sla_days(self) -> int | None:
        return {"first_line": 1, "second_line": 3, "third_line": None}[self.value]

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()

    @property
    def description(self) -> str:
        return {
            "first_line": "initial assessment and localisation",
            "second_line": "diagnosis, sometimes a remote-access session",
            "third_line": "a plan and an ETA",
        }[self.value]


class NextAction(enum.StrEnum):
    WAITING_ON_CUSTOMER = "Waiting on customer"
    WAITING_ON_FOOTFALLCAM = "Waiting on FootfallCam support"


# ---------------------------------------------------------------------------------------------
# The ticket as data

# Written as ``isoformat()`` so the offset is always spelled out (pydantic would write "Z").
Timestamp = Annotated[
    AwareDatetime, PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json")
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Comment(_Frozen):
    """The portal's comment: the five questions support asks of every ticket."""

    QUESTIONS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("what", "What is the problem?"),
        ("where", "Where is the problem?"),
        ("when", "When did it happen?"),
        ("which_device", "Which device?"),
        ("how", "How did it happen?"),
    )

    what: str = Field(min_length=1)
    where: str = Field(min_length=1)
    when: str = Field(min_length=1)
    which_device: str = Field(min_length=1)
    how: str = Field(min_length=1)

    def as_text(self) -> str:
        """The comment as plain text, question then answer, for e-mail and helpdesk bodies."""
        return "\n\n".join(f"{q}\n{getattr(self, name)}" for name, q in self.QUESTIONS)


class Attachment(_Frozen):
    name: str = Field(min_length=1)
    content_type: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Message(_Frozen):
    at: Timestamp
    author: str
    body: str


class Task(_Frozen):
    """One line of the portal's task list. ``task`` names it: a later task of the same name
    is the same task with news (hours spent, a new status), not a second one."""

    task: str = Field(min_length=1)
    hours: float = Field(default=0.0, ge=0)
    type: TaskType
    due: date | None = None
    status: str = "open"


class Ticket(_Frozen):
    """One support-portal ticket. ``to_json`` keys are a contract with every sink."""

    key: str = Field(min_length=1)  # idempotency key: the same incident never files twice
    number: str | None = None  # the destination's ticket number, once filed
    issue_level: Literal["site", "counter"]
    counter_unassigned: bool
    site: str
    counters: list[str] = Field(default_factory=list)
    subject: str = Field(min_length=1)
    category: Category
    sla_days: int | None
    occurred_on: date
    comment: Comment
    attachments: list[Attachment] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    requester: str
    status: TicketStatus = TicketStatus.OPEN
    next_action: NextAction = NextAction.WAITING_ON_FOOTFALLCAM
    stage: Stage = Stage.FIRST_LINE
    stage_since: Timestamp | None = None  # when ``stage`` took the ticket; None: at creation
    plan: str = ""  # the third line's plan
    eta: date | None = None  # the third line's ETA
    messages: list[Message] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)
    created_at: Timestamp
    updated_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _default_sla(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "sla_days" not in data and "category" in data:
            try:
                return {**data, "sla_days": Category(data["category"]).sla_days}
            except ValueError:
                return data  # the category field reports the bad value itself
        return data

    @model_validator(mode="after")
    def _level_matches_counters(self) -> Ticket:
        if self.issue_level == "counter" and not self.counters:
            raise ValueError("a counter-level ticket needs at least one counter")
        if self.counter_unassigned and self.counters:
            raise ValueError("counter_unassigned is set but counters are listed")
        return self

    @property
    def is_open(self) -> bool:
        return self.status is not TicketStatus.CLOSED

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ticket:
        return cls.model_validate(dict(data))

    def filed(self, number: str, attachments: Sequence[Attachment] = ()) -> Ticket:
        """This ticket as the destination filed it: with its number and any attachments."""
        kept = [a for a in self.attachments if a.name not in {b.name for b in attachments}]
        return self.model_copy(update={"number": number, "attachments": [*kept, *attachments]})

    def with_message(self, at: datetime, author: str, body: str) -> Ticket:
        message = Message(at=at, author=author, body=body)
        return self.model_copy(
            update={"messages": [*self.messages, message], "updated_at": message.at}
        )

    def with_stage(
        self, stage: Stage | str, at: datetime, *, plan: str | None = None, eta: date | None = None
    ) -> Ticket:
        """The ticket handed to support line ``stage`` at ``at`` (its line SLA starts then);
        ``plan`` and ``eta`` are the third line's. The same line again keeps its start."""
        stage = Stage(stage)
        update: dict[str, Any] = {"updated_at": at}
        if stage is not self.stage:
            update |= {"stage": stage, "stage_since": at}
        if plan is not None:
            update["plan"] = plan
        if eta is not None:
            update["eta"] = eta
        return self.model_copy(update=update)

    def with_task(self, task: Task, at: datetime) -> Ticket:
        """The ticket with ``task`` added, or replacing the task of the same name."""
        tasks = [t for t in self.tasks if t.task != task.task]
        at_index = next((i for i, t in enumerate(self.tasks) if t.task == task.task), len(tasks))
        tasks.insert(at_index, task)
        return self.model_copy(update={"tasks": tasks, "updated_at": at})

    def with_status(
        self, status: TicketStatus | str, at: datetime, next_action: NextAction | None = None
    ) -> Ticket:
        update: dict[str, Any] = {"status": TicketStatus(status), "updated_at": at}
        if next_action is None and update["status"] is TicketStatus.SUGGEST_TO_CLOSE:
            # support (or the agent) suggests closing: the customer confirms or objects
            next_action = NextAction.WAITING_ON_CUSTOMER
        if next_action is not None:
            update["next_action"] = NextAction(next_action)
        return self.model_validate({**self.model_dump(), **update})


# ---------------------------------------------------------------------------------------------
# The composer


@dataclass(frozen=True)
class CounterRef:
    serial: str
    name: str
    host: str | None = None


@dataclass(frozen=True)
class DeviceFacts:
    """What the agent knows of one counter's identity, for the ticket's "which device?".

    ``model``, ``firmware`` and ``reported_serial`` as the device last reported them (None:
    never reported), ``mac`` from the gateway's ARP table where known, ``remote_access`` one
    plain sentence ("SSH not configured: deep checks unavailable")."""

    serial: str
    model: str | None = None
    firmware: str | None = None
    reported_serial: str | None = None
    mac: str | None = None
    remote_access: str = ""


@dataclass(frozen=True)
class ProblemContext:
    """Everything the composer may use: one incident's findings and where they happened."""

    key: str
    site_code: str
    site_name: str
    timezone: str
    counters: tuple[CounterRef, ...]  # empty for a site-level problem
    findings: tuple[Finding, ...]  # the evidence; all of one incident
    started_at: datetime  # when the problem began (aware)
    requester: str
    cc: tuple[str, ...]
    role: Role
    now: datetime
    devices: tuple[DeviceFacts, ...] = ()  # the identity of ``counters``, where known


def idempotency_key(check_id: str, subject: str, started_at: datetime) -> str:
    """A key from (counter or site, problem, start) — never the gateway — so that two
    gateways watching the same counters file one ticket between them."""
    if started_at.tzinfo is None or started_at.utcoffset() is None:
        raise ValueError("started_at must be timezone-aware")
    start = started_at.astimezone(UTC).replace(microsecond=0).isoformat()
    digest = hashlib.sha256(f"{subject}\n{check_id}\n{start}".encode()).hexdigest()
    return "ffc-" + digest[:16]


def compose(ctx: ProblemContext) -> Ticket:
    """Fill in the portal form for one incident. Raises ValueError if there is nothing to report
    (no findings, or only ``error`` findings, which are about the agent and never a device)."""
    findings = _relevant(ctx.findings)
    primary = min(findings, key=lambda f: (meta(f).priority, f.status is not Status.FAIL))
    kind = meta(primary)
    others = [f for f in findings if f is not primary]
    tz = _zone(ctx.timezone)
    role = Role(ctx.role)
    site_level = not ctx.counters or kind.applies_to in ("site", "gateway")
    category = check_category(category_for(kind.ticket, role), role)
    w = _Writer(ctx, tz, site_level)

    return Ticket(
        key=ctx.key,
        issue_level="site" if site_level else "counter",
        counter_unassigned=site_level,
        site=ctx.site_code,
        counters=[] if site_level else [c.serial for c in ctx.counters],
        subject=w.subject(kind, primary),
        category=category,
        sla_days=category.sla_days,
        occurred_on=ctx.started_at.astimezone(tz).date(),
        comment=Comment(
            what=w.what(kind, primary, others),
            where=w.where(),
            when=w.when(),
            which_device=w.which_device(kind, findings),
            how=w.how(kind, primary, others),
        ),
        cc=list(ctx.cc),
        requester=ctx.requester,
        created_at=ctx.now,
        updated_at=ctx.now,
    )


def _relevant(findings: Iterable[Finding]) -> list[Finding]:
    usable = [f for f in findings if f.status is not Status.ERROR]
    problems = [f for f in usable if f.problem]
    if not (problems or usable):
        raise ValueError("nothing to report: no findings, or only errors of the agent's checks")
    return problems or usable


# Which finding leads when one incident holds several is the check's declared ``priority``:
# the root cause, not its symptoms (an offline counter also has missing counts; the ticket is
# about it being offline). What the ticket is about, and its wording, are the check's too.


def category_for(kind: TicketKind, role: Role | str) -> Category:
    """The portal category for a check's ticket kind, by the role rule: a hardware fault is a
    Device Bug only when FootfallCam files it; a customer raises it as a Technical Issue whose
    subject says "RMA request"."""
    if kind is TicketKind.HARDWARE:
        return Category.DEVICE_BUG if Role(role) is Role.FOOTFALLCAM else Category.TECHNICAL_ISSUE
    if kind is TicketKind.DATA:
        return Category.DATA_ACCURACY_ISSUE
    # Offline, blocked view, device and gateway faults: Accuracy Audit Obstacle is for
    # FootfallCam's tuning experts during an audit, not for a monitoring agent.
    return Category.TECHNICAL_ISSUE


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # Config validation rejects bad zones; a ticket in UTC beats no ticket.
        return UTC


_REASONS = {
    ProbeErrorCode.REFUSED: "connection refused",
    ProbeErrorCode.TIMEOUT: "no answer before the timeout",
    ProbeErrorCode.UNREACHABLE: "unreachable on the network",
    ProbeErrorCode.HTTP_ERROR: "HTTP error from the device",
    ProbeErrorCode.AUTH_FAILED: "login refused",
    ProbeErrorCode.BAD_RESPONSE: "unreadable answer",
    ProbeErrorCode.TLS_ERROR: "TLS handshake failed",
    ProbeErrorCode.HOST_KEY_MISMATCH: "SSH host key changed",
    ProbeErrorCode.HOST_KEY_UNKNOWN: "SSH host key not enrolled",
    ProbeErrorCode.COMMAND_FAILED: "a command on the device failed",
    ProbeErrorCode.UNSUPPORTED: "the device does not offer this",
    ProbeErrorCode.REDIRECT: "redirected elsewhere instead of answering",
}

_REASON_CODES = frozenset(c.value for c in ProbeErrorCode)

# Evidence keys never copied into a ticket, whatever a check put there.
_SECRET_RE = re.compile(r"pass|secret|token|credential|api_?key|private|auth|cookie", re.I)
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_FAILURE_KEYS = ("consecutive_failures", "consecutive", "failures", "failed_checks", "attempts")
_LAST_OK_KEYS = (
    "last_ok",
    "last_ok_at",
    "last_seen",
    "last_seen_at",
    "last_success",
    "last_heartbeat",
    "last_slot",
    "last_count_at",
)
_ERROR_KEYS = ("error", "message", "detail", "reason")
_ERROR_CODE_KEYS = ("error_code", "probe_error")
_DEVICE_KEYS = ("model", "hardware", "firmware", "firmware_version", "version", "mac")
_PERCENT_KEYS = (
    "deficit_pct",
    "drop_pct",
    "under_pct",
    "over_pct",
    "shortfall_pct",
    "discrepancy_pct",
)
_MONTHS = (
    "January February March April May June July August September October November December"
).split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_MAX_EVIDENCE_ITEMS = 8
_MAX_TEXT = 200


class _Writer:
    """Writes the subject and the five answers as a person would, from one incident."""

    def __init__(self, ctx: ProblemContext, tz: tzinfo, site_level: bool) -> None:
        self.ctx = ctx
        self.tz = tz
        self.site_level = site_level
        self.site = (
            f"{ctx.site_name} ({ctx.site_code})" if ctx.site_name else f"site {ctx.site_code}"
        )

    # --- small pieces

    def who(self, capital: bool = True) -> str:
        if self.site_level:
            return f"{'Site' if capital else 'site'} {self.site}"
        refs = self.ctx.counters
        if len(refs) == 1:
            return f"{'Counter' if capital else 'counter'} {_ref(refs[0])}"
        return f"{'Counters' if capital else 'counters'} {_join([_ref(c) for c in refs])}"

    def local(self, dt: datetime) -> datetime:
        return dt.astimezone(self.tz) if dt.tzinfo is not None else dt

    def short(self, dt: datetime) -> str:
        d = self.local(dt)
        return f"{d.day} {_MONTHS[d.month - 1][:3]} {d:%H:%M}"

    def full(self, dt: datetime) -> str:
        d = self.local(dt)
        zone = d.tzname() or "UTC"
        return f"{_DAYS[d.weekday()]} {d.day} {_MONTHS[d.month - 1]} {d.year} at {d:%H:%M} {zone}"

    def clock(self, dt: datetime) -> str:
        """ "15:30", with the date when it is not the day the problem began."""
        d, start = self.local(dt), self.local(self.ctx.started_at)
        return f"{d:%H:%M}" if d.date() == start.date() else self.short(dt)

    def value(self, v: Any, depth: int = 0) -> str:
        if isinstance(v, enum.Enum):
            return str(v.value)
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return _number(v)
        if isinstance(v, datetime):
            return self.clock(v)
        if isinstance(v, date):
            return f"{v.day} {_MONTHS[v.month - 1][:3]} {v.year}"
        if isinstance(v, timedelta):
            return _duration(v)
        if isinstance(v, str):
            parsed = _parse_time(v)
            return self.clock(parsed) if parsed else _clip(v)
        if isinstance(v, Mapping):
            if depth >= 2:
                return f"{len(v)} values"
            items = [
                f"{_words(str(k))} {self.value(x, depth + 1)}"
                for k, x in v.items()
                if x is not None and not _SECRET_RE.search(str(k))
            ]
            return _clip(", ".join(items[:_MAX_EVIDENCE_ITEMS]) or "none")
        if isinstance(v, (list, tuple, set, frozenset)):
            items = [self.value(x, depth + 1) for x in list(v)[:5] if x is not None]
            more = f" and {len(v) - 5} more" if len(v) > 5 else ""
            return _clip(", ".join(items) + more) if items else "none"
        return _clip(str(v))

    def item(self, key: str, v: Any) -> str:
        if key.endswith("_pct") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"{_words(key[:-4])} {self.value(v)}%"
        return f"{_words(key)} {self.value(v)}"

    def time_of(self, v: Any) -> datetime | None:
        if isinstance(v, datetime):
            return v
        return _parse_time(v) if isinstance(v, str) else None

    # --- the subject

    def words(self, f: Finding) -> dict[str, str]:
        """The values a check's subject and ``what`` templates may use (``TEMPLATE_FIELDS``)."""
        pct = _first(f.evidence, _PERCENT_KEYS)
        by = ""
        if isinstance(pct, (int, float)) and not isinstance(pct, bool):
            by = f" by {self.value(pct)}%"
        return {
            "who": self.who(),
            "low": self.who(capital=False),
            "since": f"since {self.short(self.ctx.started_at)}",
            "code": _words(f.code) or "problem",
            "reason": _reason(f),
            "by": by,
            "said": _sentence(f.summary) or _sentence(_words(f.code)) or "",
            "site": self.site,
        }

    def fill(self, template: str, f: Finding) -> str:
        """A check's template with this finding's words; a field it does not know stays as
        its name in words, never a crash (metadata from another version of a check)."""
        return template.format_map(_Words(self.words(f)))

    def subject(self, kind: CheckMeta, f: Finding) -> str:
        return _clip(_squash(self.fill(kind.ticket_subject, f)), 150)

    # --- the five answers

    def what(self, kind: CheckMeta, f: Finding, others: Sequence[Finding]) -> str:
        said = _sentence(f.summary) or _sentence(_words(f.code)) or ""
        text = self.fill(kind.ticket_what, f)
        also = [s for s in (_sentence(o.summary) for o in others[:3]) if s and s != said]
        if also:
            text += " Also observed: " + " ".join(also)
        if kind.ticket_ask:
            text += f" What we ask: {_sentence(self.fill(kind.ticket_ask, f))}"
        return _squash(text)

    def where(self) -> str:
        if self.site_level:
            return (
                f"At site {self.site}. The problem concerns the whole site, not a single "
                "counter, so no counter is assigned."
            )
        noun = "counter" if len(self.ctx.counters) == 1 else "counters"
        refs = _join([_ref(c) for c in self.ctx.counters])
        return f"At site {self.site}, {noun} {refs}."

    def when(self) -> str:
        start, now = self.ctx.started_at, self.ctx.now
        zone = getattr(self.tz, "key", "UTC")
        lasted = _duration(now - start)
        if lasted != "under a minute":
            lasted = f"about {lasted}"
        return (
            f"It began on {self.full(start)} (site time, {zone}) and has lasted {lasted} "
            f"as of {self.clock(now)}."
        )

    def which_device(self, kind: CheckMeta, findings: Sequence[Finding]) -> str:
        facts = []
        for key in _DEVICE_KEYS:
            found = next((x[key] for x in (f.evidence for f in findings) if x.get(key)), None)
            if found is not None:
                facts.append(f"{_words(key)} {self.value(found)}")
        extra = f" Reported {', '.join(facts)}." if facts and not self.ctx.devices else ""
        if kind.family is Family.GATEWAY:
            return f"The site gateway at {self.site} that runs the monitoring agent.{extra}"
        if self.site_level:
            if self.ctx.counters:
                return (
                    "No single device: all counters at the site are affected: "
                    f"{_join([_ref(c, host=True) for c in self.ctx.counters])}.{extra}"
                )
            return f"No single device: the whole site is affected.{extra}"
        known = {d.serial: d for d in self.ctx.devices}
        devices = [_device(c, known.get(c.serial)) for c in self.ctx.counters]
        return _squash(" ".join(devices) + extra)

    def how(self, kind: CheckMeta, f: Finding, others: Sequence[Finding]) -> str:
        ev = {k: v for k, v in f.evidence.items() if v is not None and not _SECRET_RE.search(k)}
        used: set[str] = set()
        at = self.clock(f.at)

        failures_key = next(
            (k for k in _FAILURE_KEYS if type(ev.get(k)) is int and ev[k] > 0), None
        )
        last_ok_key = next((k for k in _LAST_OK_KEYS if self.time_of(ev.get(k))), None)
        last_ok = self.time_of(ev.get(last_ok_key)) if last_ok_key else None
        error_key = next((k for k in _ERROR_KEYS if isinstance(ev.get(k), str) and ev[k]), None)
        used.update(k for k in (failures_key, last_ok_key, error_key) if k)
        used.update(_ERROR_CODE_KEYS)

        if kind.liveness:
            first = f"The agent's probe at {at} got '{_reason(f)}'"
        else:
            summary = _lower_first(_sentence(f.summary).rstrip(".")) or _words(f.code)
            first = f"The agent's {f.check_id} check found this at {at}: {summary}"
        if error_key and _clip(ev[error_key]).lower() not in first.lower():
            first += f' ("{_clip(ev[error_key])}")'
        if failures_key:
            n = ev[failures_key]
            first += f" on {plural(n, 'consecutive check')}"
        if last_ok is not None:
            normal = (
                "the counter answered normally"
                if kind.liveness or kind.family is Family.DEVICE
                else ("everything was normal")
            )
            first += f"; {normal} until {self.clock(last_ok)}"
        elif kind.liveness:
            first += f"; it was first seen failing at {self.clock(self.ctx.started_at)}"
        parts = [first + "."]

        # only what the check declares worth a person's reading; the rest (model statistics,
        # raw image metrics) is in the bundle's findings.json
        shown = [k for k in kind.ticket_evidence if k in ev and k not in used]
        rest = [self.item(k, ev[k]) for k in shown if k != _REACH][:_MAX_EVIDENCE_ITEMS]
        if rest:
            parts.append(f"Evidence: {'; '.join(rest)}.")
        if _REACH in shown and isinstance(ev[_REACH], Mapping):
            parts.append(_reach(ev[_REACH]))
        tried = self.tried(f.evidence)
        if tried:
            parts.append(tried)
        for other in others[:3]:
            said = _lower_first(_sentence(other.summary).rstrip(".")) or _words(other.code)
            parts.append(
                f"The {other.check_id} check also reported at {self.clock(other.at)}: {said}."
            )
        if kind.store_questions:
            parts.append(
                "Asked of the store, answers to follow on this ticket: "
                + " ".join(_sentence(q) for q in kind.store_questions)
            )
        parts.append("The full evidence is in the attached bundle (findings.json, report.html).")
        return _squash(" ".join(parts))

    def tried(self, ev: Mapping[str, Any]) -> str:
        """The remote fixes the agent tried, in words (the remediation ladder's record)."""
        steps = ev.get("remediation")
        ladder = ev.get("ladder")
        if not isinstance(steps, list):
            return ""
        done = []
        for step in steps:
            if not isinstance(step, Mapping):
                continue
            at = _parse_time(str(step.get("at", "")))
            when = f" at {self.clock(at)}" if at else ""
            outcome = _words(str(step.get("outcome") or "outcome not known"))
            done.append(f"{_words(str(step.get('step') or 'a fix'))}{when} ({outcome})")
        if done:
            return f"Remote fixes tried: {_join(done)}."
        why = ladder.get("reason") if isinstance(ladder, Mapping) else None
        return f"No remote fix was tried: {_clip(str(why))}." if why else ""


_REACH = "reachability"


def _reach(r: Mapping[str, Any]) -> str:
    """The reachability evidence of an offline counter as support reads it."""
    answered = r.get("ping")
    ping = (
        "answers ping" if answered is True else "does not answer ping" if answered is False else ""
    )
    if not ping:
        notes = r.get("notes")
        why = f" ({_clip(str(notes[0]), 60)})" if isinstance(notes, list) and notes else ""
        ping = f"was not pinged{why}"
    arp = r.get("arp")
    if arp == "incomplete":
        arp_text = "the gateway's ARP entry for it is incomplete (nothing answered at that address)"
    elif arp:
        arp_text = f"the gateway's ARP table has it at MAC {_clip(str(arp), 40)}"
    else:
        arp_text = "the gateway has no ARP entry for it"
    ports = [
        f"port {k[5:]} {_clip(str(v), 20)}"
        for k, v in r.items()
        if k.startswith("port_") and isinstance(v, str)
    ]
    port_text = f"; {_join(ports)}" if ports else ""
    return f"Reachability from the gateway: it {ping}; {arp_text}{port_text}."


class _Words(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return _words(key)


def _ref(c: CounterRef, host: bool = False) -> str:
    text = f"{c.serial} '{c.name}'" if c.name else c.serial
    return f"{text} ({c.host})" if host and c.host else text


def _device(c: CounterRef, facts: DeviceFacts | None = None) -> str:
    named = f", named '{c.name}'" if c.name else ""
    at = f", at network address {c.host}" if c.host else ""
    text = f"FootfallCam counter serial {c.serial}{named}{at}."
    if facts is None:
        return text
    reported = [
        f"{label} {_clip(value, 80)}"
        for label, value in (
            ("model", facts.model),
            ("firmware", facts.firmware),
            ("serial", facts.reported_serial),
        )
        if value
    ]
    if reported:
        text += f" As the device reports itself: {', '.join(reported)}."
        if facts.reported_serial and facts.reported_serial != c.serial:
            text += (
                f" The device's own serial is not the configured {c.serial}: the unit may have "
                "been swapped."
            )
    else:
        text += " The device has not reported its model, firmware or serial to the agent yet."
    text += f" MAC address {facts.mac}." if facts.mac else " MAC address not known."
    if facts.remote_access:
        text += f" Remote access: {_sentence(facts.remote_access)}"
    return text


def _reason(f: Finding) -> str:
    for code in (f.code, *(f.evidence.get(k) for k in _ERROR_CODE_KEYS)):
        if isinstance(code, str) and code in _REASON_CODES:
            return _REASONS[ProbeErrorCode(code)]
    return _words(f.code) if f.code and f.code != "offline" else "not answering"


def _first(evidence: Mapping[str, Any], keys: Iterable[str]) -> Any:
    return next((evidence[k] for k in keys if evidence.get(k) is not None), None)


def _parse_time(text: str) -> datetime | None:
    if not _ISO_RE.match(text.strip()):
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _number(v: float) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v == int(v):
        return str(int(v))
    return f"{v:.1f}" if abs(v) >= 1 else f"{v:.2g}"


def _duration(td: timedelta) -> str:
    seconds = int(td.total_seconds())
    if seconds < 60:
        return "under a minute"
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    units = [(days, "day"), (hours, "hour"), (minutes, "minute")]
    parts = [plural(n, unit) for n, unit in units if n]
    return " ".join(parts[:2])


def _words(code: str) -> str:
    return code.replace("_", " ").replace(".", " ").strip()


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    # secrets that ride inside values (tokens in URLs, user:pass@host): the redactor's
    # pattern layer, the one that scrubs logs and bundles
    text = " ".join(scrub(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _sentence(text: str) -> str:
    text = _clip(text or "", 300)
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…" else text + "."


def _lower_first(text: str) -> str:
    # "All 4 counters..." reads better mid-sentence as "all 4 counters...", but "FFC0002" stays.
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _squash(text: str) -> str:
    return " ".join(text.split())


def _join(items: Sequence[str]) -> str:
    if len(items) > 6:
        items = [*items[:5], f"{len(items) - 5} more"]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
