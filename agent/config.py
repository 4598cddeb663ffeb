"""ffc-agent's configuration: one TOML file read into frozen pydantic models.

The file is written by a site installer on a small gateway, usually once, often over a slow
remote session. So a mistake must be found when the file is loaded, not at 3 a.m. when the
first probe runs, and it must be reported in words that point at the line to fix: one line per
bad field, ``counters[1].port: must be at most 65535, got 80800``. ``ffc-agent config check``
prints ``ConfigError.lines`` and exits 78 (EX_CONFIG), which the systemd unit treats as "do not
restart": restarting cannot fix a typo.

Contract:

- ``load_config(path)`` and ``parse_config(data)`` return a ``Config`` or raise ``ConfigError``;
  nothing else escapes for a bad file (a missing, unreadable or non-TOML file included, and any
  exception at all while loading). Only regular files are read, the configuration up to 1 MB
  and a secret file up to 64 KB, so a FIFO cannot hang the agent nor /dev/zero fill its memory.
- No value that may carry a credential (a URL with a token or user:password) is echoed in an
  error line: the line names the field and what is wrong.
- Every table rejects unknown keys, so a misspelt setting is an error, never silently ignored.
- Relative paths (``password_file``, ``reference_image``, ``ssh.key_file``, ``state_dir``, a
  local sink's ``directory``) are resolved against the config file's folder. A relative
  ``password_file`` or ``key_file`` is looked up first in systemd's ``$CREDENTIALS_DIRECTORY``
  (``LoadCredential=``), so secrets need not sit in ``/etc`` readable by the service user.
- Passwords are ``SecretStr``: they never appear in ``repr``, ``str``, JSON dumps or error lines.
  ``Config.secret_values()`` hands them to the redactor, which scrubs them from bundles.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import string
import tomllib
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from diagnostics.calendar import (
    WEEKDAYS,
    Closure,
    Hours,
    SiteCalendar,
    check_holiday_region,
    parse_hours,
    parse_span,
)
from diagnostics.model import plural

EX_CONFIG = 78  # sysexits.h: configuration error; the unit's RestartPreventExitStatus

DEFAULT_STATE_DIR = Path("/var/lib/ffc-agent")

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_EMAIL_RE = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ConfigError(Exception):
    """A configuration that cannot be used. ``lines`` holds one readable line per problem."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- small validators ----------------------------------------------------------------------


def _fail(title: str, problems: Iterable[tuple[tuple[str | int, ...], str, Any]]) -> None:
    """Raise a ValidationError with an error at each (loc, message, input).

    Raised inside a validator, pydantic prefixes each loc with the model's own position, so a
    cross-field problem lands on the field the user must edit, not on the table around it.
    """
    details = [
        InitErrorDetails(
            type=PydanticCustomError("config", "{reason}", {"reason": message}),
            loc=loc,
            input=value,
        )
        for loc, message, value in problems
    ]
    if details:
        raise ValidationError.from_exception_data(title, details)


def _resolve(path: Path, info: ValidationInfo, *, credential: bool = False) -> Path:
    """A relative path, resolved where an installer would expect it to be."""
    if path.is_absolute():
        return path
    if credential and (cred_dir := os.environ.get("CREDENTIALS_DIRECTORY")):
        candidate = Path(cred_dir) / path
        if candidate.exists():
            return candidate
    base_dir = (info.context or {}).get("base_dir")
    return Path(base_dir) / path if base_dir is not None else path


def _secret_from_file(
    data: dict[str, Any], info: ValidationInfo, key: str, file_key: str
) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Read ``data[file_key]`` into ``data[key]`` (in place); the problems, located.

    Secrets live in files (or systemd credentials) on a real gateway, never in the TOML
    itself; the file's text, without its trailing newline, becomes the ``SecretStr``.
    """
    raw_file = data.get(file_key)
    if raw_file is not None and key in data:
        return [((file_key,), f"give either '{key}' or '{file_key}', not both", None)]
    if not isinstance(raw_file, str | Path):
        return []
    path = _resolve(Path(raw_file), info, credential=True)
    data[file_key] = path
    try:
        secret = read_capped(path, MAX_SECRET_BYTES).decode("utf-8").rstrip("\r\n")
    except FileReadError as exc:
        return [((file_key,), f"cannot read {str(path)!r}: {exc.reason}", None)]
    except UnicodeDecodeError:
        return [((file_key,), f"cannot read {str(path)!r}: not text", None)]
    if not secret:
        return [((file_key,), f"{str(path)!r} is empty", None)]
    data[key] = secret
    return []


def _with_secret_files(
    cls: Any,
    data: Any,
    handler: Any,
    info: ValidationInfo,
    pairs: Sequence[tuple[str, str]],
    required: Sequence[str] = (),
) -> Any:
    """Validate ``data`` after reading each (key, file_key) secret file; report all problems."""
    if not isinstance(data, dict):
        return handler(data)
    data = dict(data)
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
    for key, file_key in pairs:
        problems += _secret_from_file(data, info, key, file_key)
        if key in required and key not in data and not any(p[0] == (file_key,) for p in problems):
            problems.append(((key,), f"missing: give '{key}' or '{file_key}'", None))
    try:
        model = handler(data)
    except ValidationError as exc:
        if not problems:
            raise
        problems.extend((*_located(e), None) for e in exc.errors())
    _fail(cls.__name__, problems)
    return model


def _quiet(value: str) -> str:
    """A mistyped value quoted back, unless it looks like a URL that may carry credentials."""
    if "@" in value or "://" in value or "?" in value:
        return "a URL (not shown: it may hold credentials)"
    return _show(value)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _identifier(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"may hold only letters, digits, '_', '.' and '-', got {value!r}")
    return value


def _email(value: str) -> str:
    if not _EMAIL_RE.fullmatch(value):
        raise ValueError(f"not an e-mail address: {value!r}")
    return value


def _toml_date(value: Any) -> date:
    # TOML has a real date type, but people also quote dates; a datetime is a different thing.
    if isinstance(value, datetime):
        raise ValueError(f"expected a date like 2024-12-24, got a date and time {value}")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a real date: {value!r}") from None
    raise ValueError(f"expected a date like 2024-12-24, got {_show(value)}")


def _hours(value: str) -> str:
    parse_hours(value)  # diagnostics' own reader: what validates here is what the calendar reads
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
NonBlank = Annotated[str, AfterValidator(_not_blank)]
Email = Annotated[str, AfterValidator(_email)]
TomlDate = Annotated[date, BeforeValidator(_toml_date)]
HoursText = Annotated[str, AfterValidator(_hours)]  # "09:00-17:30" or "closed"
Port = Annotated[StrictInt, Field(ge=1, le=65535)]


# --- [agent] -----------------------------------------------------------------------------------


class AgentConfig(_Model):
    """How the agent itself runs. Every key has a default, so the table may be left out."""

    state_dir: Path = DEFAULT_STATE_DIR
    role: Literal["customer", "footfallcam"] = "customer"
    cycle_seconds: Annotated[StrictInt, Field(gt=0)] = 300
    probe_timeout_seconds: Annotated[StrictFloat, Field(gt=0)] = 5.0
    max_parallel: Annotated[StrictInt, Field(ge=1, le=256)] = 8
    requester: str = ""
    cc: tuple[Email, ...] = ()
    # live views and SSH health change slowly and cost more: their own, slower schedules
    snapshot_seconds: Annotated[StrictInt, Field(ge=0)] = 900
    ssh_seconds: Annotated[StrictInt, Field(ge=0)] = 3600
    # how sure before opening, and how sure before closing, an incident
    confirm_checks: Annotated[StrictInt, Field(ge=1, le=100)] = 2
    confirm_minutes: Annotated[StrictInt, Field(ge=0)] = 0
    recover_checks: Annotated[StrictInt, Field(ge=1, le=100)] = 2
    # a counter that stopped answering, or a whole site, is ticketed once it has been down
    # this long (a counter's reboot, or a site's switch or router's, is not a ticket)
    offline_ticket_minutes: Annotated[StrictInt, Field(ge=0, le=1440)] = 10
    # a covered or blocked view is first the store's to clear (a notice to the store); a
    # ticket follows when it stays blocked this long, or at once when the counts suffer
    blocked_view_grace_minutes: Annotated[StrictInt, Field(ge=0, le=10080)] = 60
    # decide as usual, file nothing: the whole agent, or only these checks (see also sites)
    shadow: StrictBool = False
    shadow_checks: tuple[str, ...] = ()
    # retention: raw history is pruned once a day; incidents, tickets and the audit log stay
    keep_findings_days: Annotated[StrictInt, Field(ge=1, le=3660)] = 30
    keep_observations_days: Annotated[StrictInt, Field(ge=1, le=3660)] = 30
    keep_slots_days: Annotated[StrictInt, Field(ge=30, le=3660)] = 400
    # a ticket or follow-up that keeps failing transiently (a helpdesk down) fails for good,
    # and the agent.outbox check reports it, after this long
    delivery_give_up_hours: Annotated[StrictFloat, Field(gt=0, le=24 * 366)] = 72.0

    @field_validator("shadow_checks")
    @classmethod
    def _known_checks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from diagnostics.checks import REGISTRY

        unknown = [c for c in value if c not in REGISTRY]
        if unknown:
            raise ValueError(
                f"unknown check id {unknown[0]!r} (known: {', '.join(sorted(REGISTRY))})"
            )
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("requester")
    @classmethod
    def _requester(cls, value: str) -> str:
        return _email(value) if value else value


# --- [[sites]] --------------------------------------------------------------------------------


class OpeningHours(_Model):
    """The weekly opening hours; a day left out is closed."""

    mon: HoursText = "closed"
    tue: HoursText = "closed"
    wed: HoursText = "closed"
    thu: HoursText = "closed"
    fri: HoursText = "closed"
    sat: HoursText = "closed"
    sun: HoursText = "closed"

    def weekly(self) -> tuple[Hours | None, ...]:
        """Seven ``Hours`` or None (closed), Monday first, as ``SiteCalendar`` wants them."""
        return tuple(parse_hours(getattr(self, day)) for day in WEEKDAYS)


class ClosureConfig(_Model):
    """A planned closure such as a refit, ``from`` and ``to`` both included."""

    start: Annotated[TomlDate, Field(alias="from")]
    end: Annotated[TomlDate, Field(alias="to")]
    reason: NonBlank

    @model_validator(mode="after")
    def _order(self) -> ClosureConfig:
        if self.start > self.end:
            _fail(
                type(self).__name__,
                [(("from",), f"{self.start} is after 'to' {self.end}", str(self.start))],
            )
        return self


class SpecialHoursConfig(_Model):
    """Different hours on one date (Christmas Eve, a late-night opening); "closed" is closed."""

    day: Annotated[TomlDate, Field(alias="date")]
    hours: HoursText


class SiteConfig(_Model):
    """One store: where it is, when it is open, and when it is closed on purpose."""

    code: Identifier
    name: NonBlank
    timezone: str
    holidays: str | None = None
    opening_hours: OpeningHours
    closed_on_public_holidays: StrictBool = False
    closures: tuple[ClosureConfig, ...] = ()
    special_hours: tuple[SpecialHoursConfig, ...] = ()
    shadow: StrictBool = False  # judge this site as usual but file nothing for it
    # [notifications]: hold chat and e-mail in these local hours ("22:00-07:00", may wrap
    # midnight), and tell this site's own support chat group instead of the default one
    quiet_hours: str | None = None
    chat_webhook_url: SecretStr | None = None
    chat_webhook_url_file: Path | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _chat_webhook_file(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        return _with_secret_files(
            cls, data, handler, info, [("chat_webhook_url", "chat_webhook_url_file")]
        )

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quiet_hours(value)
        return value

    @field_validator("chat_webhook_url")
    @classmethod
    def _chat_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        return _secret_http_url(value)

    def quiet_window(self) -> tuple[time, time] | None:
        """The quiet hours as (start, end) local times, or None; the window may wrap midnight."""
        return parse_quiet_hours(self.quiet_hours) if self.quiet_hours is not None else None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: str | None) -> str | None:
        if value is not None:
            check_holiday_region(value)
        return value

    @model_validator(mode="after")
    def _holiday_region_needed(self) -> SiteConfig:
        if self.closed_on_public_holidays and not self.holidays:
            _fail(
                type(self).__name__,
                [
                    (
                        ("closed_on_public_holidays",),
                        "needs 'holidays' (a region such as \"GB-ENG\") to know the holidays",
                        True,
                    )
                ],
            )
        return self

    def calendar(self) -> SiteCalendar:
        return SiteCalendar(
            timezone=self.timezone,
            weekly=self.opening_hours.weekly(),
            holiday_region=self.holidays,
            closed_on_public_holidays=self.closed_on_public_holidays,
            closures=tuple(Closure(c.start, c.end, c.reason) for c in self.closures),
            special=tuple((h.day, parse_hours(h.hours)) for h in self.special_hours),
        )


# --- [[counters]] -----------------------------------------------------------------------------


class SshConfig(_Model):
    """SSH access for deep diagnostics; only where FootfallCam's remote-access staff allow it."""

    user: NonBlank
    key_file: Path
    port: Port = 22

    @field_validator("key_file")
    @classmethod
    def _key_file(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info, credential=True)


class RemediationConfig(_Model):
    """The remediation ladder ([remediation]): which safe fixes the agent may try, how often.

    ``poe_command`` is the operator's own switch script as an argument list; ``{serial}``,
    ``{host}`` and ``{poe_port}`` in it are replaced by the counter's. It runs without a shell,
    under ``poe_timeout_seconds``, and its output is recorded (redacted) in the audit log.
    ``port_status_command`` (same placeholders, under ``port_status_timeout_seconds``) asks the
    switch about the counter's port; its answer is evidence for the RMA gate.
    """

    enabled: StrictBool = True
    dry_run: StrictBool = False  # decide and record what would run, touch nothing
    renew_token_per_day: Annotated[StrictInt, Field(ge=0)] = 6
    restart_service_per_day: Annotated[StrictInt, Field(ge=0)] = 3
    reboots_per_day: Annotated[StrictInt, Field(ge=0)] = 2
    poe_cycles_per_day: Annotated[StrictInt, Field(ge=0)] = 1
    repeat_heals: Annotated[StrictInt, Field(ge=1)] = 3
    repeat_window_days: Annotated[StrictFloat, Field(gt=0)] = 14.0
    poe_command: tuple[NonBlank, ...] = ()
    poe_timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 60.0
    # what the switch says of the counter's port: prints `link=up power=on` or a JSON object
    port_status_command: tuple[NonBlank, ...] = ()
    port_status_timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=120)] = 15.0
    recheck_seconds: Annotated[StrictFloat, Field(ge=0, le=900)] = 120.0  # a reboot has this long
    rma_counts_verify_hours: Annotated[StrictFloat, Field(ge=0)] = 24.0  # counts must flow

    @field_validator("poe_command", "port_status_command")
    @classmethod
    def _placeholders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {"serial", "host", "poe_port"}
        for arg in value:
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(arg) if name}
            except ValueError as exc:
                raise ValueError(f"bad placeholder in {arg!r}: {exc}") from None
            if names - known:
                bad = sorted(names - known)
                raise ValueError(
                    f"{plural(len(bad), 'unknown placeholder')} {', '.join(bad)}; "
                    "known: poe_port, serial, host"
                )
        return value


class CounterConfig(_Model):
    """One people counter. Only ``serial``, ``name`` and ``site`` are needed to judge exported
    counts; without ``host`` the agent cannot probe it and says so."""

    serial: Identifier
    name: NonBlank
    site: str
    host: str | None = None
    port: Port = 80
    group: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    api: Literal["cgi-bin", "pi-cgi"] = "cgi-bin"
    snapshot_path: str = "/snapshot.jpg"
    reference_image: Path | None = None
    scheme: Literal["http", "https"] = "http"
    verify_tls: StrictBool = True
    ssh: SshConfig | None = None
    tuned: StrictBool = True  # false until FootfallCam's accuracy audit is finished
    poe_port: str | None = None  # the switch port the operator's PoE command power-cycles

    @model_validator(mode="wrap")
    @classmethod
    def _secret_and_port(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Read ``password_file`` into ``password``; default the port from the scheme."""
        if isinstance(data, dict) and "port" not in data and data.get("scheme") == "https":
            data = {**data, "port": 443}
        counter: Self = _with_secret_files(
            cls, data, handler, info, [("password", "password_file")]
        )
        return counter

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() or c == "/" for c in value)):
            raise ValueError(f"expected a host name or IP address (not a URL), got {_quiet(value)}")
        return value

    @field_validator("snapshot_path")
    @classmethod
    def _snapshot_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value

    @field_validator("reference_image")
    @classmethod
    def _reference_image(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info) if value is not None else None

    @model_validator(mode="after")
    def _ssh_needs_host(self) -> CounterConfig:
        if self.ssh is not None and self.host is None:
            _fail(type(self).__name__, [(("ssh",), "needs the counter's 'host'", None)])
        return self

    @property
    def base_url(self) -> str | None:
        """``http://host:port`` for the counter's web API, or None if it has no host."""
        if self.host is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def peers(self, config: Config) -> list[str]:
        return config.peers(self.serial)


# --- [[sinks]] --------------------------------------------------------------------------------


class LocalSinkConfig(_Model):  # defined before _SinkBase: it has no timeout or name
    """Tickets written as files under the state directory: the embedded default destination."""

    type: Literal["local"]
    directory: Path | None = None  # filled in with <state_dir>/tickets by Config

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info) if value is not None else None


def _http_url(value: str) -> str:
    # Never echo the value: a helpdesk or webhook URL may carry a token in its path or query.
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("expected an http:// or https:// URL (not shown: it may hold a token)")
    if re.match(r"https?://[^/]*@", value):
        raise ValueError("put credentials in their own setting, not in the URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Timeout = Annotated[float, Field(gt=0, le=300)]


class _SinkBase(_Model):
    name: Identifier | None = None  # tells two destinations of one type apart; default: type
    timeout_seconds: Timeout = 15.0

    @property
    def label(self) -> str:
        return self.name or str(getattr(self, "type", "sink"))


class RtSinkConfig(_SinkBase):
    """Request Tracker 5 over REST 2: one queue per ticket category, token authentication."""

    type: Literal["rt"]
    url: HttpUrl  # RT's web root, e.g. https://rt.example.com
    token: SecretStr | None = None
    token_file: Path | None = None
    queue: NonBlank = "General"
    queues: dict[str, NonBlank] = {}  # portal category -> RT queue, e.g. "Technical Issue"
    key_field: str | None = None  # a ticket custom field for the idempotency key
    verify_tls: StrictBool = True
    ca_file: Path | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _token(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        return _with_secret_files(cls, data, handler, info, [("token", "token_file")], ["token"])


class SmtpServerConfig(_Model):
    """How to hand mail to an SMTP server: shared by the smtp sink and [notifications.smtp]."""

    host: NonBlank
    port: Port = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    sender: Email = Field(alias="from")
    verify_tls: StrictBool = True
    ca_file: Path | None = None
    timeout_seconds: Timeout = 15.0

    @model_validator(mode="wrap")
    @classmethod
    def _password(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        return _with_secret_files(cls, data, handler, info, [("password", "password_file")])


class SmtpSinkConfig(_SinkBase, SmtpServerConfig):
    """A MIME e-mail with the bundle attached, to a helpdesk's intake address."""

    type: Literal["smtp"]
    to: tuple[Email, ...]


class WebhookSinkConfig(_SinkBase):
    """JSON over HTTPS, signed with an HMAC of the body."""

    type: Literal["webhook"]
    url: HttpUrl
    secret: SecretStr | None = None
    secret_file: Path | None = None
    verify_tls: StrictBool = True
    ca_file: Path | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _secret(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        return _with_secret_files(cls, data, handler, info, [("secret", "secret_file")], ["secret"])


# A new destination is one more model with its own ``type`` literal here.
SinkConfig = Annotated[
    Union[LocalSinkConfig, RtSinkConfig, SmtpSinkConfig, WebhookSinkConfig],  # noqa: UP007
    Field(discriminator="type"),
]
SINK_TYPES = ("local", "rt", "smtp", "webhook")


# --- [mqtt] ------------------------------------------------------------------------------------


def _mqtt_topic(value: str) -> str:
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' may only be the whole last level, got {value!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level, got {value!r}")
    return value


class MqttConfig(_Model):
    """The broker carrying the counters' push (optional): liveness between polls, live counts.

    ``topic`` is a subscription filter; ``{serial}`` in it means one subscription per
    configured counter (``/status/{serial}``), which a chain-wide broker wants.
    """

    host: NonBlank
    port: Port = 1883  # 8883 by default with tls = true
    topic: Annotated[NonBlank, AfterValidator(_mqtt_topic)] = "/status/+"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: StrictBool = False
    ca_file: Path | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _secret_and_port(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and "port" not in data and data.get("tls") is True:
            data = {**data, "port": 8883}
        return _with_secret_files(cls, data, handler, info, [("password", "password_file")])

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if any(c.isspace() or c == "/" for c in value):
            raise ValueError(f"expected a host name or IP address (not a URL), got {_quiet(value)}")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info) if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        if self.ca_file is not None and not self.tls:
            problems.append((("ca_file",), "needs tls = true", None))
        if self.password is not None and not self.username:
            problems.append((("username",), "missing: a password needs a username", None))
        _fail(type(self).__name__, problems)
        return self


# --- [metrics] ---------------------------------------------------------------------------------


class MetricsConfig(_Model):
    """Prometheus metrics: a node-exporter textfile by default, a loopback HTTP port if asked.

    ``textfile`` defaults to ``<state_dir>/metrics/ffc-agent.prom``; ``""`` turns it off.
    """

    textfile: Path | None = None  # after loading: the resolved path, or None when turned off
    http_port: Port | None = None
    http_host: str = "127.0.0.1"

    @field_validator("textfile", mode="before")
    @classmethod
    def _textfile_off(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("textfile")
    @classmethod
    def _textfile(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and value.suffix != ".prom":
            # node-exporter's textfile collector reads only *.prom: anything else is ignored
            raise ValueError(f"must end in .prom, got {str(value)!r}")
        return _resolve(value, info) if value is not None else None

    @field_validator("http_host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        from agent.service.metrics import loopback_host

        return loopback_host(value)

    def with_default_textfile(self, state_dir: Path) -> MetricsConfig:
        if "textfile" in self.model_fields_set:
            return self
        return self.model_copy(update={"textfile": Path(state_dir) / "metrics" / "ffc-agent.prom"})


# --- [notifications] ---------------------------------------------------------------------------

NotifyEvent = Literal["filed", "message", "status", "sla_overdue", "store_action"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = (
    "filed",
    "message",
    "status",
    "sla_overdue",
    "store_action",  # the store is asked to fix something itself before a ticket is filed
)


def parse_quiet_hours(text: str) -> tuple[time, time]:
    """``"22:00-07:00"`` -> (22:00, 07:00), local times: quiet from the start (included) to the
    end (excluded); a start after the end wraps midnight. ValueError with a clear reason."""
    # the opening hours' own reader, so the two formats can never drift apart
    start, end = parse_span(text, expected="'HH:MM-HH:MM' such as \"22:00-07:00\"")
    if end == time.max:  # "-24:00": until midnight, which wraps to 00:00
        end = time(0)
    if start == end:
        raise ValueError(f"start and end are the same in {text!r}; leave quiet_hours out instead")
    return start, end


def _secret_http_url(value: SecretStr | None) -> SecretStr | None:
    # Never echo the value: a chat webhook URL carries its token in the path.
    if value is not None and not re.fullmatch(
        r"https?://[^\s/@]+(/\S*)?", value.get_secret_value()
    ):
        raise ValueError("expected an http:// or https:// URL (not shown: it holds a token)")
    return value


class NotificationsConfig(_Model):
    """Who hears about a ticket: its requester and CC by e-mail, the support chat group by an
    incoming webhook (Mattermost, Rocket.Chat, Slack). Leave the table out to send nothing."""

    email: StrictBool = True
    smtp: SmtpServerConfig | None = None
    chat_webhook_url: SecretStr | None = None  # a site's own chat_webhook_url wins
    chat_webhook_url_file: Path | None = None
    chat_markup: Literal["markdown", "slack"] = "markdown"  # slack: *bold*, not **bold**
    chat_username: NonBlank | None = None  # left out: the name the webhook was set up with
    chat_icon_emoji: NonBlank | None = None
    chat_ca_file: Path | None = None
    chat_timeout_seconds: Timeout = 10.0
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS

    @model_validator(mode="wrap")
    @classmethod
    def _chat_webhook_file(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        return _with_secret_files(
            cls, data, handler, info, [("chat_webhook_url", "chat_webhook_url_file")]
        )

    @field_validator("chat_webhook_url")
    @classmethod
    def _chat_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        return _secret_http_url(value)

    @field_validator("chat_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info) if value is not None else None

    @model_validator(mode="after")
    def _smtp_needed(self) -> NotificationsConfig:
        if self.email and self.smtp is None:
            reason = "missing: e-mail needs a [notifications.smtp] table, or email = false"
            _fail(type(self).__name__, [(("smtp",), reason, None)])
        return self


# --- [checks."ID"] --------------------------------------------------------------------------------


def _checks_model() -> type[BaseModel]:
    """``[checks."counter.counts.imbalance"]``: one optional table per registered check, parsed
    into that check's frozen ``Options`` model; an id no check declares is an unknown key."""
    from diagnostics.checks import REGISTRY

    fields: dict[str, Any] = {
        f"check_{n}": (cls.Options | None, Field(None, alias=check_id))
        for n, (check_id, cls) in enumerate(REGISTRY.items())
    }
    return create_model("ChecksConfig", __base__=_Model, **fields)


ChecksConfig: type[BaseModel] = _checks_model()


# --- the whole file -----------------------------------------------------------------------------


class Config(_Model):
    agent: AgentConfig = AgentConfig()
    sites: tuple[SiteConfig, ...]
    counters: tuple[CounterConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()
    metrics: MetricsConfig = Field(default=MetricsConfig(), validate_default=True)
    notifications: NotificationsConfig | None = None
    mqtt: MqttConfig | None = None
    checks: ChecksConfig = ChecksConfig()  # type: ignore[valid-type]
    remediation: RemediationConfig = RemediationConfig()

    @field_validator("metrics")
    @classmethod
    def _metrics_textfile(cls, value: MetricsConfig, info: ValidationInfo) -> MetricsConfig:
        agent = info.data.get("agent")
        return value.with_default_textfile(agent.state_dir) if agent is not None else value

    @field_validator("sites")
    @classmethod
    def _some_sites(cls, value: tuple[SiteConfig, ...]) -> tuple[SiteConfig, ...]:
        # Not ``min_length``: pydantic would also report it when a site merely has an error.
        if not value:
            raise ValueError("needs at least one [[sites]] table")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """Checks that span tables, run on the raw data so they report next to field errors."""
        problems = _cross_field_problems(data)
        try:
            config = handler(data)
        except ValidationError as exc:
            if not problems:
                raise
            problems.extend((*_located(e), None) for e in exc.errors())
        _fail(cls.__name__, problems)
        return config._with_default_sinks()

    def _with_default_sinks(self) -> Self:
        default_dir = self.agent.state_dir / "tickets"
        sinks = self.sinks or (LocalSinkConfig(type="local"),)
        sinks = tuple(
            s.model_copy(update={"directory": default_dir})
            if isinstance(s, LocalSinkConfig) and s.directory is None
            else s
            for s in sinks
        )
        return self if sinks == self.sinks else self.model_copy(update={"sinks": sinks})

    def site(self, code: str) -> SiteConfig:
        for site in self.sites:
            if site.code == code:
                return site
        raise KeyError(f"unknown site {code!r}")

    def counter(self, serial: str) -> CounterConfig:
        for counter in self.counters:
            if counter.serial == serial:
                return counter
        raise KeyError(f"unknown counter {serial!r}")

    def counters_at(self, site_code: str) -> list[CounterConfig]:
        return [c for c in self.counters if c.site == site_code]

    def peers(self, serial: str) -> list[str]:
        """Counters that see the same traffic: the same group at the same site if the counter
        has a group (possibly none), else every other counter at its site."""
        me = self.counter(serial)
        return [
            c.serial
            for c in self.counters_at(me.site)
            if c.serial != serial and (me.group is None or c.group == me.group)
        ]

    def check_options(self) -> dict[str, BaseModel]:
        """The ``Options`` of every check given a ``[checks."ID"]`` table, by check id."""
        return {
            field.alias or name: value
            for name, field in ChecksConfig.model_fields.items()
            if (value := getattr(self.checks, name)) is not None
        }

    def secret_values(self) -> set[str]:
        """Every secret in the configuration, for the redactor to scrub by value."""
        found: set[str] = set()
        _collect_secrets(self, found)
        chat_urls = [self.notifications.chat_webhook_url] if self.notifications else []
        for url in [*chat_urls, *(s.chat_webhook_url for s in self.sites)]:
            if url is not None:
                found |= _url_tokens(url.get_secret_value())
        return found


def _url_tokens(url: str) -> set[str]:
    """The parts of a webhook URL that carry its token (Mattermost ``/hooks/<key>``, Slack
    ``/services/T../B../<token>``, Rocket.Chat ``/hooks/<id>/<token>``, ``?token=``)."""
    path, _, query = url.partition("://")[2].partition("/")[2].partition("?")
    parts = [*path.split("/"), *(p.partition("=")[2] for p in query.split("&"))]
    # Short parts are words like "hooks" or "services": scrubbing them would maim every text.
    return {p for p in parts if len(p) >= 16}


def _collect_secrets(value: Any, found: set[str]) -> None:
    if isinstance(value, SecretStr):
        if secret := value.get_secret_value():
            found.add(secret)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_secrets(getattr(value, name), found)
    elif isinstance(value, tuple | list):
        for item in value:
            _collect_secrets(item, found)


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def _cross_field_problems(data: Any) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Duplicate site codes and serials, and counters naming a site that is not configured."""
    if not isinstance(data, dict):
        return []
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
    sites = data.get("sites")
    sites = sites if isinstance(sites, list | tuple) else []
    seen: dict[str, int] = {}
    for i, site in enumerate(sites):
        code = _get(site, "code")
        if isinstance(code, str):
            if code in seen:
                message = f"duplicate site code {code!r} (also sites[{seen[code]}])"
                problems.append((("sites", i, "code"), message, code))
            seen.setdefault(code, i)
    counters = data.get("counters")
    counters = counters if isinstance(counters, list | tuple) else []
    serials: dict[str, int] = {}
    for i, counter in enumerate(counters):
        serial = _get(counter, "serial")
        if isinstance(serial, str):
            if serial in serials:
                message = f"duplicate serial {serial!r} (also counters[{serials[serial]}])"
                problems.append((("counters", i, "serial"), message, serial))
            serials.setdefault(serial, i)
        site = _get(counter, "site")
        if isinstance(site, str) and site not in seen:
            problems.append((("counters", i, "site"), f"unknown site {site!r}", site))
    return problems


# --- turning pydantic's errors into lines a person can act on -------------------------------

_SECRET_KEYS = frozenset({"password", "token", "secret", "chat_webhook_url", "url"})


def _show(value: Any) -> str:
    """A value as it was written in TOML, briefly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    loc = error["loc"]
    # Never echo what was typed for a secret, even when it is the wrong type.
    got = "" if loc and loc[-1] in _SECRET_KEYS else f", got {_show(error.get('input'))}"
    if kind == "extra_forbidden":
        if len(loc) >= 2 and loc[-2] == "opening_hours":
            return "unknown key; the days are " + ", ".join(WEEKDAYS)
        if len(loc) == 2 and loc[0] == "checks":
            from diagnostics.checks import REGISTRY

            known = ", ".join(sorted(REGISTRY))
            return f"unknown check id {loc[1]!r} (known: {known})"
        return "unknown key"
    if kind == "missing":
        return "missing required key"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "expected an integer" + got
    if kind in ("float_type", "float_parsing"):
        return "expected a number" + got
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false" + got
    if kind in ("string_type", "path_type"):
        return "expected a string" + got
    if kind in ("list_type", "tuple_type"):
        return "expected a list" + got
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a table" + got
    if kind == "literal_error":
        return f"must be one of {str(ctx.get('expected', '')).replace(' or ', ', ')}" + got
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}" + got
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}" + got
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}" + got
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}" + got
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
    if kind == "union_tag_not_found":
        return "missing required key"
    msg = str(error.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _located(error: Any) -> tuple[tuple[str | int, ...], str]:
    """The path a person would write for an error, and its reason in words."""
    loc = error["loc"]
    out: list[str | int] = []
    for i, part in enumerate(loc):
        # A discriminated union puts the tag into the path: sinks.0.local.directory.
        if i >= 2 and loc[i - 2] == "sinks" and isinstance(loc[i - 1], int) and part in SINK_TYPES:
            continue
        out.append(part)
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        out.append("type")  # the discriminator is the key at fault
    return tuple(out), _message(error)


def _format_loc(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, str) and not _BARE_KEY_RE.fullmatch(part):
            part = f'"{part}"'  # as TOML spells it: checks."counter.counts.level"
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _document_order(data: Any, loc: Sequence[str | int]) -> tuple[int, ...]:
    """Where ``loc`` sits in the file, so lines come out in the order a person reads them."""
    key: list[int] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            keys = list(node)
            key.append(keys.index(part) if part in keys else len(keys))
            node = node.get(part) if isinstance(part, str) else None
        elif isinstance(node, list) and isinstance(part, int):
            key.append(part)
            node = node[part] if 0 <= part < len(node) else None
        else:
            key.append(0)
            node = None
    return tuple(key)


def _error_lines(data: Any, exc: ValidationError) -> list[str]:
    located: list[tuple[tuple[int, ...], str]] = []
    for error in exc.errors():
        loc, message = _located(error)
        where = _format_loc(loc) or "(top level)"
        located.append((_document_order(data, loc), f"{where}: {message}"))
    located.sort(key=lambda pair: pair[0])
    return list(dict.fromkeys(line for _, line in located))


# --- public entry points --------------------------------------------------------------------------


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None) -> Config:
    """Validate already-parsed TOML. ``base_dir`` anchors relative paths (the file's folder)."""
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        # ``from None``: pydantic's own text echoes inputs, and inputs may hold a password.
        raise ConfigError(_error_lines(data, exc)) from None


MAX_CONFIG_BYTES = 1024 * 1024  # a real file is a few KB; anything near this is a mistake
MAX_SECRET_BYTES = 64 * 1024  # a password, token or webhook URL; a private key is ~3 KB


class FileReadError(Exception):
    """A file that could not be read whole; ``reason`` is a few words, never its content."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or ``FileReadError``.

    Not ``Path.read_bytes``: a FIFO would block the agent forever, /dev/zero would fill its
    memory, and a directory or device is never what an installer meant.
    """
    try:
        before = os.stat(path)
    except OSError as exc:
        raise FileReadError(exc.strerror or type(exc).__name__) from None
    if stat.S_ISDIR(before.st_mode):
        raise FileReadError("is a directory, not a file")
    if not stat.S_ISREG(before.st_mode):
        raise FileReadError("not a regular file")
    if before.st_size > limit:
        raise FileReadError(f"too large ({before.st_size:,} bytes, at most {limit:,})")
    try:
        # O_NONBLOCK: should the path turn into a FIFO after the stat, open must not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileReadError(exc.strerror or type(exc).__name__) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileReadError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise FileReadError(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileReadError(f"too large (over {limit:,} bytes)")
    return data


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; every failure is a ``ConfigError``.

    Every one, on purpose: the daemon reloads on SIGHUP and must keep running on any bad
    file, and a start with one must exit 78 (not restarted) rather than crash with 1 (restarted
    every minute for ever). A failure nobody foresaw (RecursionError from 5,000 nested ``[``,
    MemoryError) is reported by its kind only: its message may quote a secret from the file.
    """
    path = Path(path)
    try:
        return _load_config(path)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError([f"{path}: nested too deeply to be a configuration"]) from None
    except MemoryError:
        raise ConfigError([f"{path}: too large to load"]) from None
    except Exception as exc:  # noqa: BLE001 - a boundary (see above); no traceback: it may quote secrets
        raise ConfigError([f"{path}: cannot be loaded ({type(exc).__name__})"]) from None


def _load_config(path: Path) -> Config:
    try:
        raw = read_capped(path, MAX_CONFIG_BYTES)
    except FileReadError as exc:
        reason = exc.reason
        if reason == os.strerror(errno.ENOENT):
            reason = "no such file"
        elif reason not in ("is a directory, not a file", "not a regular file"):
            reason = reason if reason.startswith("too large") else f"cannot read: {reason}"
        raise ConfigError([f"{path}: {reason}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: {_toml_error(str(exc))}"]) from None
    return parse_config(data, base_dir=path.absolute().parent)


def _toml_error(message: str) -> str:
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message)
    if match:
        reason, line, column = match.groups()
        return f"invalid TOML at line {line} column {column}: {reason[:1].lower()}{reason[1:]}"
    match = re.fullmatch(r"(.*) \(at end of document\)", message)
    if match:
        reason = match.group(1)
        return f"invalid TOML at the end of the file: {reason[:1].lower()}{reason[1:]}"
    return f"invalid TOML: {message}"


def example_config() -> str:
    """The commented example shipped with the package, for ``ffc-agent config example``."""
    return resources.files("agent").joinpath("config_example.toml").read_text(encoding="utf-8")
