"""The vocabulary every room shares: observations, count slots, findings, verdicts, probe errors.

Everything here is plain immutable data. Probes (in ``agent/probes``) produce ``Observation``
and ``CountSlot`` values and raise ``ProbeError``; checks turn them into ``Finding`` values;
the gate gives each finding a ``Verdict``. Nothing here does I/O, so the same objects are
judged identically in the service, in ``ffc-agent analyze`` and in tests.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


class Status(enum.StrEnum):
    """How a check came out. ``error`` always means the check itself broke."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"


class ProbeErrorCode(enum.StrEnum):
    """The closed list of ways talking to the outside can fail.

    Library exceptions (requests, paramiko, psutil, paho) are mapped onto these in
    ``agent/probes`` and nowhere else, so checks and tickets speak one language.
    """

    REFUSED = "refused"  # nothing listens: the device is off, rebooting or its service died
    TIMEOUT = "timeout"  # connected or tried to, but no answer in time (a hung device)
    UNREACHABLE = "unreachable"  # no route, DNS failure, host down
    HTTP_ERROR = "http_error"  # the device answered with an HTTP error status
    AUTH_FAILED = "auth_failed"  # credentials refused
    BAD_RESPONSE = "bad_response"  # an answer we cannot parse, or one too large
    TLS_ERROR = "tls_error"  # TLS failed: a certificate not trusted, or no TLS on that port
    HOST_KEY_MISMATCH = "host_key_mismatch"  # SSH host key differs from the pinned one
    HOST_KEY_UNKNOWN = "host_key_unknown"  # SSH host key never enrolled
    COMMAND_FAILED = "command_failed"  # a remote command exited non-zero
    UNSUPPORTED = "unsupported"  # the device does not offer what was asked
    REDIRECT = "redirect"  # the device sent the agent elsewhere (not followed)


class ProbeError(Exception):
    """A probe could not get its evidence. ``code`` is from ``ProbeErrorCode``.

    ``sent`` is True when the request may have reached the other side before the failure (a
    read timeout, a connection dropped after sending, an answer cut off), so whatever it asked
    for may have happened; False when nothing left (refused, connect timeout, no route, a
    failed TLS handshake). Retrying a create is safe only when ``sent`` is False.
    """

    def __init__(
        self, code: ProbeErrorCode, message: str, *, detail: str = "", sent: bool = False
    ) -> None:
        super().__init__(message)
        self.code = ProbeErrorCode(code)
        self.message = message
        self.detail = detail
        self.sent = sent

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class CountSlot:
    """One interval of counts from one counter. ``start`` is timezone-aware.

    ``arrived_at`` is when the agent first received the slot, so late uploads are visible.
    """

    counter: str
    start: datetime
    minutes: int
    count_in: int
    count_out: int
    arrived_at: datetime | None = None

    @property
    def total(self) -> int:
        return self.count_in + self.count_out


@dataclass(frozen=True, slots=True)
class Observation:
    """The outcome of one probe of one counter at one time.

    ``ok`` with ``data`` when the probe answered, or ``error_code`` and ``error`` when not.
    """

    counter: str
    probe: str  # e.g. "api", "snapshot", "ssh"
    at: datetime
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error_code: ProbeErrorCode | None = None
    error: str = ""
    elapsed_s: float = 0.0

    @classmethod
    def failed(
        cls, counter: str, probe: str, at: datetime, exc: ProbeError, elapsed_s: float = 0.0
    ) -> Observation:
        return cls(counter, probe, at, False, {}, exc.code, exc.message, elapsed_s)


UNCONFIRMED = "unconfirmed"  # a finding's code while its check awaits confirmation


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check concluded about one counter, one site or the agent itself.

    ``subject`` is a counter serial, or None for a site-level or agent-level finding.
    ``code`` is a short machine word for the kind of problem (``refused``, ``zero_run`` ...).
    """

    check_id: str
    status: Status
    code: str
    summary: str
    at: datetime
    site: str | None = None
    subject: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str = ""

    @property
    def problem(self) -> bool:
        return self.status in (Status.WARN, Status.FAIL)

    @property
    def unconfirmed(self) -> bool:
        """Not a problem yet, but the start of one the check waits to confirm (one covered
        snapshot of three): a person asking about the device now should hear of it."""
        return self.status is Status.OK and self.code == UNCONFIRMED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["at"] = self.at.isoformat()
        data["counter"] = data.pop("subject")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(
            check_id=data["check_id"],
            status=Status(data["status"]),
            code=data["code"],
            summary=data["summary"],
            at=datetime.fromisoformat(data["at"]),
            site=data.get("site"),
            subject=data.get("counter"),
            evidence=data.get("evidence") or {},
            remediation=data.get("remediation", ""),
        )


def as_datetime(value: object) -> datetime | None:
    """An evidence value as a datetime: evidence holds times as ISO-8601 text once stored."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def held_since(evidence: dict[str, Any]) -> datetime | None:
    """Since when an open incident holds its counter, from its last problem finding: the
    ``held_since`` the check named once the counter was held, else the finding's ``start``."""
    return as_datetime(evidence.get("held_since", evidence.get("start")))


class Decision(enum.StrEnum):
    GENUINE = "genuine"
    FALSE_ALARM = "false_alarm"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The false-alarm gate's word on one finding, always with its reasons."""

    decision: Decision
    reasons: tuple[str, ...]
    rule: str = ""
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.decision),
            "rule": self.rule,
            "reasons": list(self.reasons),
            "until": self.until.isoformat() if self.until else None,
        }


@dataclass(frozen=True, slots=True)
class Assessed:
    """A finding that has passed the gate. Only problems (warn, fail) carry a verdict."""

    finding: Finding
    verdict: Verdict | None = None

    @property
    def genuine(self) -> bool:
        return self.verdict is not None and self.verdict.decision is Decision.GENUINE

    @property
    def ruled_out(self) -> bool:
        return self.verdict is not None and self.verdict.decision is Decision.FALSE_ALARM

    def to_json(self) -> dict[str, Any]:
        verdict = (
            self.verdict.to_json()
            if self.verdict
            else {"verdict": None, "rule": "", "reasons": [], "until": None}
        )
        return {**self.finding.to_json(), **verdict}


class Clock(Protocol):
    """The only source of "now" in the agent and in judgement code, so tests can fake it."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock (UTC): the one place the house reads the wall clock. Everything else is
    handed a ``Clock`` (``agent.app.App`` passes this one on), so a test can fake it."""

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK: Clock = SystemClock()


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 site``, ``2 sites``: every count a person reads is worded with this."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"
