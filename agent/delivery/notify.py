"""Notifications: tell the people who need to know when a ticket is filed or changes.

A ticket in a helpdesk queue helps nobody at the store until someone there knows about it: the
store's IT person has to back up a counter before a swap, the area manager wants to know the
counts from the main door are wrong this week. So, like the support portal, the agent e-mails
the ticket's requester (``To``) and CC list (``Cc``) when a ticket is filed, gets a message,
changes status or runs past its SLA, and posts the same news to the site's support chat group
through an incoming webhook. ``{"text": ...}`` is the one payload Mattermost, Rocket.Chat and
Slack all accept; ``username`` and ``icon_emoji`` are added only when configured.

What is sent:

- E-mail: subject ``[L-000123] Counter FFC1002 offline — Ticket filed``; a short plain-text
  body with the status, the next action, the SLA and when it is due (in the site's time zone),
  and a summary with every link taken out (a notice is not a place to click; links may carry
  tokens). Every mail about a ticket carries ``In-Reply-To`` and ``References``
  ``<ticket key@ffc-agent>`` (the Message-ID the smtp sink gives the ticket itself), so a mail
  client threads them all together, and its own stable Message-ID, so a mail server drops a
  copy re-sent after a lost answer.
- Chat: the ticket number in bold, the subject, the status, the next action and the SLA, in
  the markup the server speaks (``chat_markup``: ``**bold**`` for Mattermost and Rocket.Chat,
  ``*bold*`` for Slack). A site's own ``chat_webhook_url`` wins over ``[notifications]``'s.

Everything leaves through the redactor (by default one built from ``Config.secret_values()``):
a counter password quoted in a finding, an SMTP password or a webhook token never reaches a
mailbox, a chat channel, a log line or the state directory. Webhook URLs are secrets (their
path is the token), so errors name the server by scheme, host and port only.

Once, and never lost: one engine. Notices are items of the durable outbox
(``agent.delivery.outbox``, kinds ``email`` and ``chat``), queued in the transaction of the
change they announce, already rendered and redacted, never with the webhook URL (a chat item
names its configured channel: a site's code or ``notifications``, and the URL is looked up when
it is sent). An event's key is the ticket key, the kind and a hash of its detail; one event is
one item per channel, however often it is announced and however many ticket destinations
carry the change, so the people get one e-mail per change. ``notify`` only queues; ``flush``
(every cycle) sends what is due, oldest first.

Quiet hours. During a site's ``quiet_hours`` (local time, e.g. ``"22:00-07:00"``, which wraps
midnight) nothing is sent for that site: the item's "not before" is the end of the quiet hours,
and a retry that falls into them waits for their end too. That includes ``sla_overdue``: the SLA
clock is the helpdesk's to keep, and nobody at a shop can do anything about a counter at 3 a.m.

Failures never break a cycle and never lose a ticket: ``flush`` returns one ``Outcome`` per
notice it tried and raises nothing for a server's failure. A transient failure (refused, timed
out, 4xx SMTP, 5xx/408/429 HTTP) is retried with the outbox's backoff; after one transient
failure a destination is not tried again within the same pass, so a hung chat server costs one
timeout per pass, not one per message. A permanent failure (bad login, a refused recipient, 4xx
HTTP, a certificate that does not verify) is logged once and the item fails (an agent-health
finding); so does one still failing ``GIVE_UP_AFTER`` after it was queued. Delivery is
at-least-once: an answer lost after the request went out means a retry, and a chat message may
then show twice (e-mail copies share their Message-ID, so mail servers and clients drop them).
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from agent.config import NOTIFY_EVENTS, NotifyEvent
from agent.delivery.outbox import (
    CHAT,
    DELIVERED,
    EMAIL,
    FAILED,
    GIVE_UP_AFTER,
    NOTICE_KINDS,
    PENDING,
    SENDING,
    TAKEN,
    UNKNOWN,
    Channel,
    Delivery,
    Item,
    Outbox,
)
from agent.delivery.sinks.base import SinkError, unanswered
from agent.delivery.sinks.mailer import POLICY, send_message
from agent.delivery.sinks.smtp import message_id
from agent.transport.http import make_session, request
from diagnostics.model import SYSTEM_CLOCK, ProbeError, ProbeErrorCode, plural
from rma.redact import Redactor
from rma.sla import sla_due
from rma.tickets import Message, Stage, Ticket

if TYPE_CHECKING:
    from agent.config import Config, SiteConfig

log = logging.getLogger(__name__)

Status = Literal["queued", "sent", "held", "duplicate", "failed", "skipped"]

MAX_REPLY_BYTES = 4096
CONNECT_TIMEOUT_S = 5.0
SUMMARY_CHARS = 600  # e-mail; chat gets less
CHAT_SUMMARY_CHARS = 280

_URL_RE = re.compile(r"(?i)\b(?:https?|ftp|file)://\S+|\bwww\.\S+")
_ADDRESS_RE = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")
_TRANSIENT_HTTP = {408, 425, 429}

_TO = " -> "  # between the two lines of an escalation's detail
_HEADLINES: dict[str, str] = {
    "filed": "Ticket filed",
    "message": "New message",
    "status": "Status changed",
    "sla_overdue": "SLA overdue",
    "store_action": "Action for the store",
}


# ---------------------------------------------------------------------------------------------
# What happened, and what became of telling people


@dataclass(frozen=True)
class Event:
    """Something about a ticket that people should hear of.

    ``detail``: what distinguishes this event — the new status, the message body, the SLA due
    time. ``ref`` (optional) tells apart two events whose detail is the same, such as two equal
    messages at different times. ``site`` defaults to the ticket's site. A store's ask is the
    exception: its detail is the wording of the ask, which follows the latest finding (a
    covered view's share of the frame, a kind told apart differently from one snapshot to the
    next), so its key is the ticket and the time the ticket follows (``ref``), and the store is
    asked once per held problem however the wording moves.
    """

    kind: NotifyEvent
    ticket: Ticket
    at: datetime
    detail: str = ""
    site: str = ""
    author: str = ""  # of a message
    ref: str = ""

    def __post_init__(self) -> None:
        if self.kind not in get_args(NotifyEvent):
            raise ValueError(f"unknown event kind {self.kind!r}; one of {NOTIFY_EVENTS}")
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("Event.at must be timezone-aware")

    @property
    def site_code(self) -> str:
        return self.site or self.ticket.site

    @property
    def key(self) -> str:
        """Stable across restarts and gateways: the same event always has the same key."""
        said = "" if self.kind == "store_action" else self.detail
        digest = hashlib.sha256(f"{said}\n{self.ref}".encode()).hexdigest()[:16]
        return f"{self.ticket.key}.{self.kind}.{digest}"

    # --- the four events, as the runner meets them

    @classmethod
    def filed(cls, ticket: Ticket, at: datetime | None = None) -> Event:
        return cls("filed", ticket, at or ticket.created_at)

    @classmethod
    def status_changed(cls, ticket: Ticket, at: datetime | None = None) -> Event:
        """``ticket`` as it is now, with its new status."""
        detail = f"{ticket.status.value}\n{ticket.next_action.value}"
        return cls("status", ticket, at or ticket.updated_at, detail=detail)

    @classmethod
    def new_message(cls, ticket: Ticket, message: Message) -> Event:
        return cls(
            "message",
            ticket,
            message.at,
            detail=message.body,
            author=message.author,
            ref=message.at.isoformat(),
        )

    @classmethod
    def escalated(cls, ticket: Ticket, line: Stage, to: Stage, at: datetime) -> Event:
        """Support line ``line`` ran past its own SLA and the ticket goes to line ``to``: one
        notice per ticket and hand-over, however many destinations carry the ticket."""
        return cls("sla_overdue", ticket, at, detail=f"{line.value}{_TO}{to.value}")

    @classmethod
    def store_action(cls, ticket: Ticket, at: datetime, ask: str) -> Event:
        """The store is asked to fix something itself (``ask``); ``ticket`` is the one that
        would be filed, not filed yet: it follows if the problem stays (at ``at``)."""
        return cls("store_action", ticket, at, detail=ask, ref=at.astimezone(UTC).isoformat())

    @classmethod
    def sla_overdue(cls, ticket: Ticket, at: datetime) -> Event:
        due = sla_due(ticket)
        return cls("sla_overdue", ticket, at, detail=due.isoformat() if due else "")


@dataclass(frozen=True)
class Outcome:
    """What became of one channel's delivery of one event.

    ``status``: ``queued`` (due at ``due``, sent by the next ``flush``); ``sent``; ``held``
    (quiet hours, until ``due``); ``duplicate`` (queued or sent before);
    ``failed`` (``permanent`` says whether it will be retried); ``skipped`` (nobody to send
    to, e.g. a ticket without a requester address). ``ok`` is False only for ``failed``.
    """

    channel: str  # "email" or "chat"
    event: str
    status: Status
    error: str | None = None
    permanent: bool = False
    due: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def quiet_until(window: tuple[time, time] | None, tz: tzinfo, now: datetime) -> datetime | None:
    """If ``now`` is inside the quiet-hours ``window`` (local start, local end; may wrap
    midnight), when the quiet ends; else None."""
    if window is None:
        return None
    start, end = window
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    quiet = start <= t < end if start < end else (t >= start or t < end)
    if not quiet:
        return None
    day: date = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz).astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# The notifier: renders notices into the outbox; its channels send them from there

EMAIL_CHANNEL = "notify:email"  # the outbox's name for each channel (never a sink's: no colon)
CHAT_CHANNEL = "notify:chat"
DEFAULT_CHAT = "notifications"  # a chat item's channel: this, or the code of a site with its own


class Notifier:
    """Queues ``Event``s as e-mail and chat notices in ``outbox`` as ``config.notifications``
    says, and sends what is due with ``flush``; see the module docstring. Without a
    ``[notifications]`` table it queues nothing and returns no outcomes."""

    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        *,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
    ) -> None:
        self.config = config
        self.settings = config.notifications
        self.outbox = outbox
        self.redactor = redactor if redactor is not None else Redactor(config.secret_values())
        self._clock = clock
        self.channels: list[Channel] = []
        if self.settings is not None:
            if self.settings.email and self.settings.smtp is not None:
                self.channels.append(EmailChannel(self))
            self.channels.append(ChatChannel(self))

    def __repr__(self) -> str:
        on = "off" if self.settings is None else ",".join(self.settings.events) or "no events"
        return f"Notifier({on})"

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    # --- the public calls

    def notify(self, event: Event, now: datetime | None = None) -> list[Outcome]:
        """Queue ``event``'s notices (once per event and channel); sends nothing. Call it in
        the transaction of the change it announces. Returns one outcome per channel that
        applies: ``queued``, ``held`` (quiet hours, until ``due``), ``duplicate`` (queued or
        sent before), ``failed`` (given up before) or ``skipped`` (nobody to send to)."""
        if self.settings is None or event.kind not in self.settings.events:
            return []
        now = now or self._clock()
        try:
            notices = self._notices(event)
        except Exception:  # a process boundary: a rendering bug must not stop ticket filing
            log.exception("notices for %s could not be rendered", event.key)
            return [Outcome("email", event.key, "failed", "unexpected error; see the log")]
        window = self._window(event.site_code)
        quiet = quiet_until(window, self._tz(event.site_code), now)
        outcomes = []
        for channel, kind, payload in notices:
            if "skip" in payload:
                outcomes.append(Outcome(kind, event.key, "skipped", payload["skip"]))
                continue
            item, new = self.outbox.enqueue_notice(
                channel,
                kind,
                event.ticket.key,
                event.key,
                payload,
                not_before=quiet or now,
                now=now,
            )
            outcomes.append(_queued(item, new, event.key, now))
        return outcomes

    def flush(self, now: datetime | None = None) -> list[Outcome]:
        """Send every notice that is due at ``now`` (default: the clock): those held for
        quiet hours that have ended, and those a transient failure left. Never raises for a
        server's failure."""
        if self.settings is None:
            return []
        now = now or self._clock()
        done = self.outbox.deliver(self.channels, now, kinds=NOTICE_KINDS)
        return [_outcome(d) for d in done if d.outcome != "held" and d.error != TAKEN]

    def pending(self) -> list[dict[str, Any]]:
        """What waits (for ``status``): channel, ticket key, event, site, due, attempts, error."""
        return [
            {
                "channel": i.kind,
                "ticket": i.key,
                "event": i.payload.get("event"),
                "site": i.payload.get("site"),
                "due": i.next_attempt_at,
                "attempts": i.attempts,
                "error": i.last_error or None,
            }
            for i in self.outbox.items(states=(PENDING, SENDING, UNKNOWN))
            if i.kind in NOTICE_KINDS
        ]

    # --- rendering: one notice per channel, already redacted

    def _notices(self, event: Event) -> list[tuple[str, str, dict[str, Any]]]:
        assert self.settings is not None
        site = self._site(event.site_code)
        view = self._redacted(event)
        base = {"site": event.site_code}
        notices: list[tuple[str, str, dict[str, Any]]] = []
        if self.settings.email and self.settings.smtp is not None:
            to, cc = _recipients(event.ticket)
            if not to:
                skip = {"skip": "the ticket has no requester or CC e-mail address"}
                notices.append((EMAIL_CHANNEL, EMAIL, skip))
            else:
                notices.append((EMAIL_CHANNEL, EMAIL, {**base, **self._email(view, site, to, cc)}))
        chat = self._chat_ref(event.site_code)
        if chat is not None:
            payload = {**base, "channel": chat, "text": self._chat_text(view, site)}
            notices.append((CHAT_CHANNEL, CHAT, payload))
        return notices

    def _redacted(self, event: Event) -> Event:
        """The event with every free text scrubbed *before* it is cut short or escaped: a
        secret cut in half or with a backslash in it would no longer be found by value."""
        r, t = self.redactor.text, event.ticket
        comment = t.comment.model_copy(update={"what": r(t.comment.what)})
        ticket = t.model_copy(update={"subject": r(t.subject), "comment": comment})
        return dataclasses.replace(
            event, ticket=ticket, detail=r(event.detail), author=r(event.author)
        )

    def _email(
        self, event: Event, site: SiteConfig | None, to: list[str], cc: list[str]
    ) -> dict[str, Any]:
        t, tz = event.ticket, _zone(site)
        subject = f"[{_number(t)}] {_one_line(t.subject)} — {_headline(event)}"
        facts = [
            ("Site", f"{t.site}" + (f" ({site.name})" if site else "")),
            ("Counters", ", ".join(t.counters) or "the whole site"),
            ("Category", t.category.value),
            ("Status", t.status.value),
            ("Next action", t.next_action.value),
            ("SLA", _sla_text(t, tz, event.at)),
        ]
        width = max(len(k) for k, _ in facts) + 1
        lines = [f"{_headline(event)}: ticket {_number(t)}, {_one_line(t.subject)}", ""]
        lines += [f"{k + ':':<{width}} {v}" for k, v in facts]
        if what := _what_happened(event, tz):
            lines += ["", what]
        lines += ["", "Summary:", _summary(t.comment.what, SUMMARY_CHARS)]
        lines += [
            "",
            "-- ",
            f"An automatic notice from ffc-agent, the people-counter monitor of site {t.site}.",
            "Reply in the support ticket, not to this e-mail.",
        ]
        digest = hashlib.sha256(event.key.encode()).hexdigest()[:16]
        return {
            "to": to,
            "cc": cc,
            "subject": self.redactor.text(subject),
            "body": self.redactor.text("\n".join(lines) + "\n"),
            "message_id": message_id(t.key, "n" + digest),
            "thread": message_id(t.key),
        }

    def _chat_text(self, event: Event, site: SiteConfig | None) -> str:
        assert self.settings is not None
        t, tz = event.ticket, _zone(site)
        slack = self.settings.chat_markup == "slack"

        def esc(text: str) -> str:
            text = _one_line(text)
            if slack:  # Slack's only escapes; a "<" would start a link or a mention
                return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            return re.sub(r"([*_~`])", r"\\\1", text)  # CommonMark escapes

        star = "*" if slack else "**"
        where = f"{t.site} {site.name}" if site else t.site
        head = (
            f"{star}[{esc(_number(t))}]{star} {esc(t.subject)} — {_headline(event)} ({esc(where)})"
        )
        facts = (
            f"Status: {star}{esc(t.status.value)}{star} · Next: {esc(t.next_action.value)}"
            f" · SLA: {esc(_sla_text(t, tz, event.at))}"
        )
        lines = [head, facts]
        if event.kind == "message" and event.detail:
            by = f"{esc(event.author)}: " if event.author else ""
            lines.append(f"> {by}{esc(_summary(event.detail, CHAT_SUMMARY_CHARS))}")
        elif event.kind == "filed":
            lines.append(f"> {esc(_summary(t.comment.what, CHAT_SUMMARY_CHARS))}")
        elif event.kind == "store_action":
            lines.append(f"> {esc(_summary(event.detail, CHAT_SUMMARY_CHARS))}")
        return self.redactor.text("\n".join(lines))

    # --- configuration lookups

    def _site(self, code: str) -> SiteConfig | None:
        try:
            return self.config.site(code)
        except KeyError:
            return None

    def _window(self, code: str) -> tuple[time, time] | None:
        site = self._site(code)
        return site.quiet_window() if site is not None else None

    def _tz(self, code: str) -> tzinfo:
        return _zone(self._site(code))

    def hold_until(self, code: str, now: datetime) -> datetime | None:
        """When the quiet hours of site ``code`` that ``now`` is in end; None when not quiet."""
        return quiet_until(self._window(code), self._tz(code), now)

    def _chat_ref(self, code: str) -> str | None:
        """Which configured chat channel a notice for site ``code`` goes to: the site's own
        (its code) or the default (``DEFAULT_CHAT``); None when there is none. The URL itself
        is a secret and stays in the configuration."""
        site = self._site(code)
        if site is not None and site.chat_webhook_url is not None:
            return site.code
        if self.settings is not None and self.settings.chat_webhook_url is not None:
            return DEFAULT_CHAT
        return None

    def webhook_url(self, ref: str) -> str | None:
        """The URL of the chat channel ``ref`` names, as configured now."""
        if ref == DEFAULT_CHAT:
            secret = self.settings.chat_webhook_url if self.settings is not None else None
        else:
            site = self._site(ref)
            secret = site.chat_webhook_url if site is not None else None
        return secret.get_secret_value() if secret is not None else None


# ---------------------------------------------------------------------------------------------
# The channels: how the outbox sends a notice


class EmailChannel:
    """E-mail to the requester and CC through ``[notifications.smtp]``."""

    name = EMAIL_CHANNEL

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def destination(self, payload: Mapping[str, Any]) -> str:
        return "email"

    def hold_until(self, payload: Mapping[str, Any], now: datetime) -> datetime | None:
        return self.notifier.hold_until(str(payload.get("site", "")), now)

    def send(self, payload: Mapping[str, Any], now: datetime) -> None:
        settings = self.notifier.settings
        smtp = settings.smtp if settings is not None else None
        if smtp is None:  # e-mail was switched off since this was queued
            raise SinkError("notifications: e-mail is not configured any more", permanent=True)
        message = EmailMessage(policy=POLICY)
        message["From"] = smtp.sender
        message["To"] = ", ".join(payload["to"])
        if payload["cc"]:
            message["Cc"] = ", ".join(payload["cc"])
        message["Subject"] = payload["subject"]
        message["Date"] = email.utils.format_datetime(now)
        message["Message-ID"] = payload["message_id"]
        message["In-Reply-To"] = payload["thread"]
        message["References"] = payload["thread"]
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
        message.set_content(payload["body"], cte="quoted-printable")
        try:
            send_message(smtp, message, to=payload["to"], cc=payload["cc"], name="notifications")
        except SinkError as exc:
            raise _redacted_error(exc, self.notifier.redactor) from None


class ChatChannel:
    """A post to the chat channel a notice names, through its incoming webhook. ``{"text":
    ...}`` is the one payload Mattermost, Rocket.Chat and Slack all accept."""

    name = CHAT_CHANNEL

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def destination(self, payload: Mapping[str, Any]) -> str:
        url = self.notifier.webhook_url(str(payload.get("channel", ""))) or ""
        return "chat:" + hashlib.sha256(url.encode()).hexdigest()[:16]

    def hold_until(self, payload: Mapping[str, Any], now: datetime) -> datetime | None:
        return self.notifier.hold_until(str(payload.get("site", "")), now)

    def send(self, payload: Mapping[str, Any], now: datetime) -> None:
        cfg = self.notifier.settings
        url = self.notifier.webhook_url(str(payload.get("channel", "")))
        if cfg is None or url is None:
            raise SinkError(
                "notifications: the chat webhook is not configured any more", permanent=True
            )
        parts = urlsplit(url)
        where = f"chat ({parts.scheme}://{parts.netloc})"
        body_json: dict[str, str] = {"text": payload["text"]}
        if cfg.chat_username:
            body_json["username"] = cfg.chat_username
        if cfg.chat_icon_emoji:
            body_json["icon_emoji"] = cfg.chat_icon_emoji
        body = json.dumps(body_json, ensure_ascii=False).encode("utf-8")
        verify: bool | str = str(cfg.chat_ca_file) if cfg.chat_ca_file else True
        timeout = (min(cfg.chat_timeout_seconds, CONNECT_TIMEOUT_S), cfg.chat_timeout_seconds)
        try:
            with make_session(verify=verify) as session:
                reply = request(
                    session,
                    "POST",
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout,
                    max_bytes=MAX_REPLY_BYTES,
                    truncate=True,
                )
        except ProbeError as exc:
            raise _chat_failed(exc, where, cfg.chat_timeout_seconds) from None
        status, answer = reply.status, reply.body
        if 200 <= status < 300:
            return
        said = " ".join(answer.decode("utf-8", "replace").split())[:200]
        said = f": {self.notifier.redactor.text(said)}" if said else ""
        if status >= 500 or status in _TRANSIENT_HTTP:
            raise SinkError(f"{where}: HTTP {status}{said}")
        if 300 <= status < 400:
            raise SinkError(
                f"{where}: HTTP {status}, a redirect; set the webhook URL to the final address",
                permanent=True,
            )
        hint = "; check the webhook URL (it may have been revoked)" if status in (403, 404) else ""
        raise SinkError(f"{where}: HTTP {status}{said}{hint}", permanent=True)


# ---------------------------------------------------------------------------------------------
# Small helpers


def _queued(item: Item, new: bool, event: str, now: datetime) -> Outcome:
    """What ``notify`` says about a notice it queued (``new``) or found queued before."""
    if not new and item.state == DELIVERED:
        return Outcome(item.kind, event, "duplicate")
    if not new and item.state == FAILED:
        error = f"given up earlier: {item.last_error}".strip()
        return Outcome(item.kind, event, "failed", error, True)
    if item.next_attempt_at > now:
        return Outcome(item.kind, event, "held", due=item.next_attempt_at)
    return Outcome(item.kind, event, "queued" if new else "duplicate", due=item.next_attempt_at)


def _outcome(d: Delivery) -> Outcome:
    """What ``flush`` says about one notice the outbox tried."""
    event = str(d.item.payload.get("event", d.item.key))
    if d.outcome == "delivered":
        return Outcome(d.item.kind, event, "sent")
    permanent = d.outcome == "failed"
    return Outcome(d.item.kind, event, "failed", d.error or None, permanent)


def _redacted_error(exc: SinkError, redactor: Redactor) -> SinkError:
    """The same error with its text scrubbed: an SMTP reply may quote an address or a token."""
    clean = SinkError(redactor.text(str(exc)), permanent=exc.permanent, status=exc.status)
    clean.retry_after = exc.retry_after
    return clean


def _chat_failed(exc: ProbeError, where: str, timeout_s: float) -> SinkError:
    """A chat POST that got no HTTP answer: transient, unless a setting must change. An answer
    lost after sending is retried too (a chat message may then show twice: see above)."""
    early = unanswered(exc, where, ca_setting="chat_ca_file")
    if early is not None:
        return early
    if exc.code is ProbeErrorCode.TIMEOUT:
        return SinkError(f"{where}: no answer in {timeout_s:g} s")
    return SinkError(f"{where}: the connection dropped ({exc.detail})")


def _zone(site: SiteConfig | None) -> tzinfo:
    return ZoneInfo(site.timezone) if site is not None else UTC


def _recipients(ticket: Ticket) -> tuple[list[str], list[str]]:
    """(To, Cc): the requester, with the CC list; the CC list alone when the requester is not
    an address (a name, or blank)."""
    cc = [a for a in dict.fromkeys(ticket.cc) if _ADDRESS_RE.fullmatch(a)]
    if _ADDRESS_RE.fullmatch(ticket.requester or ""):
        return [ticket.requester], [a for a in cc if a != ticket.requester]
    return cc, []


def _number(ticket: Ticket) -> str:
    return ticket.number or ticket.key  # a store action comes before any ticket number


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _summary(text: str, limit: int) -> str:
    """Link-free and short: a notice points at the ticket; it is not the ticket."""
    text = _URL_RE.sub("[link removed]", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _when(at: datetime, tz: tzinfo) -> str:
    return at.astimezone(tz).strftime("%a %d %b %Y %H:%M %Z")


def _sla_text(ticket: Ticket, tz: tzinfo, now: datetime) -> str:
    due = sla_due(ticket)
    if due is None:
        return "none for this category"
    days = plural(ticket.sla_days or 0, "day")  # set: it has a due time
    state = "overdue since" if now >= due and ticket.is_open else "due"
    return f"{days}, {state} {_when(due, tz)}"


def _handover(event: Event) -> tuple[Stage, Stage] | None:
    """The lines of an ``Event.escalated``, or None for any other event."""
    if event.kind != "sla_overdue" or _TO not in event.detail:
        return None
    line, _, to = event.detail.partition(_TO)
    return Stage(line), Stage(to)


def _headline(event: Event) -> str:
    if event.kind == "status":
        return f"Status: {event.ticket.status.value}"
    handover = _handover(event)
    if handover is not None:
        return f"SLA overdue: escalated to the {handover[1].label.lower()}"
    return _HEADLINES[event.kind]


def _what_happened(event: Event, tz: tzinfo) -> str:
    t = event.ticket
    if event.kind == "message":
        by = event.author or "someone"
        return f"{by} wrote on {_when(event.at, tz)}:\n{_summary(event.detail, SUMMARY_CHARS)}"
    if event.kind == "status":
        return (
            f"The ticket is now '{t.status.value}' ({_when(event.at, tz)}); "
            f"next action: {t.next_action.value}."
        )
    handover = _handover(event)
    if handover is not None:
        line, to = handover
        return (
            f"The {line.label.lower()} ran past its {line.sla_days}-day SLA; the agent "
            f"escalated the ticket to the {to.label.lower()} ({to.description}) on "
            f"{_when(event.at, tz)}."
        )
    if event.kind == "store_action":
        return f"Noticed on {_when(event.at, tz)}. {event.detail}"
    if event.kind == "sla_overdue":
        due = sla_due(t)
        when = f" at {_when(due, tz)}" if due else ""
        return f"The SLA ran out{when} and the ticket is still '{t.status.value}'."
    return f"Filed on {_when(event.at, tz)}."


__all__ = [
    "GIVE_UP_AFTER",
    "Event",
    "Notifier",
    "Outcome",
    "quiet_until",
    "sla_due",
]
