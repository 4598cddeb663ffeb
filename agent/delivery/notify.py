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

Once, and never lost. An event's key is the ticket key, the kind and a hash of its detail;
each channel's delivery of it is written to ``<state_dir>/notify/sent.jsonl`` after the server
accepted it, and the same event is never sent twice to a channel. Deliveries that cannot go
yet wait in ``<state_dir>/notify/queue.json`` (already rendered and redacted, never with the
webhook URL): every ``notify`` and ``flush`` call first sends what is due, oldest first.

Quiet hours. During a site's ``quiet_hours`` (local time, e.g. ``"22:00-07:00"``, which wraps
midnight) nothing is sent for that site: e-mails and chat messages are held and go out with the
first ``notify``/``flush`` after the quiet hours end. That includes ``sla_overdue``: the SLA
clock is the helpdesk's to keep, and nobody at a shop can do anything about a counter at 3 a.m.

Failures never break a cycle and never lose a ticket: ``notify`` returns one ``Outcome`` per
channel and raises nothing. A transient failure (refused, timed out, 4xx SMTP, 5xx/408/429
HTTP) stays queued and is retried on the next call; after one transient failure a destination
is not tried again within the same call, so a hung chat server costs one timeout per call, not
one per message. A permanent failure (bad login, a refused recipient, 4xx HTTP, a certificate
that does not verify) is logged once and recorded as dropped; so is a delivery still failing
after ``GIVE_UP_AFTER``. A failure is logged when it first happens and when it clears.
Delivery is at-least-once: an answer lost after the request went out means a retry, and a
chat message may then show twice (e-mail copies share their Message-ID).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from agent.config import NOTIFY_EVENTS, NotifyEvent
from agent.delivery.sinks.base import SinkError, unanswered
from agent.delivery.sinks.mailer import POLICY, send_message
from agent.delivery.sinks.smtp import message_id
from agent.transport.http import make_session, request
from diagnostics.model import SYSTEM_CLOCK, ProbeError, ProbeErrorCode
from rma.redact import Redactor
from rma.tickets import Message, Ticket

if TYPE_CHECKING:
    from agent.config import Config, SiteConfig

log = logging.getLogger(__name__)

Channel = Literal["email", "chat"]
Status = Literal["sent", "held", "duplicate", "failed", "skipped"]

GIVE_UP_AFTER = timedelta(days=3)  # the longest SLA: after that the news is stale
SENT_LOG_MAX_BYTES = 1024 * 1024  # the sent-log is trimmed once it grows past this ...
SENT_LOG_KEEP = 2000  # ... to its newest records: about a thousand events, both channels
MAX_REPLY_BYTES = 4096
CONNECT_TIMEOUT_S = 5.0
SUMMARY_CHARS = 600  # e-mail; chat gets less
CHAT_SUMMARY_CHARS = 280
VERSION = 1

_URL_RE = re.compile(r"(?i)\b(?:https?|ftp|file)://\S+|\bwww\.\S+")
_ADDRESS_RE = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")
_TRANSIENT_HTTP = {408, 425, 429}

_HEADLINES: dict[str, str] = {
    "filed": "Ticket filed",
    "message": "New message",
    "status": "Status changed",
    "sla_overdue": "SLA overdue",
}


# ---------------------------------------------------------------------------------------------
# What happened, and what became of telling people


@dataclass(frozen=True)
class Event:
    """Something about a ticket that people should hear of.

    ``detail``: what distinguishes this event — the new status, the message body, the SLA due
    time. ``ref`` (optional) tells apart two events whose detail is the same, such as two equal
    messages at different times. ``site`` defaults to the ticket's site.
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
        digest = hashlib.sha256(f"{self.detail}\n{self.ref}".encode()).hexdigest()[:16]
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
    def sla_overdue(cls, ticket: Ticket, at: datetime) -> Event:
        due = sla_due(ticket)
        return cls("sla_overdue", ticket, at, detail=due.isoformat() if due else "")


@dataclass(frozen=True)
class Outcome:
    """What became of one channel's delivery of one event.

    ``status``: ``sent``; ``held`` (quiet hours, until ``due``); ``duplicate`` (sent before);
    ``failed`` (``permanent`` says whether it will be retried); ``skipped`` (nobody to send
    to, e.g. a ticket without a requester address). ``ok`` is False only for ``failed``.
    """

    channel: Channel
    event: str
    status: Status
    error: str | None = None
    permanent: bool = False
    due: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def sla_due(ticket: Ticket) -> datetime | None:
    """When the ticket's SLA runs out (filed + the category's SLA days), or None."""
    if not ticket.sla_days:
        return None
    return ticket.created_at + timedelta(days=ticket.sla_days)


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
# The notifier


@dataclass
class _Run:
    """One pass over the queue: what happened, and which destinations already failed."""

    now: datetime
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)  # destination -> its error


class Notifier:
    """Sends ``Event``s by e-mail and chat as ``config.notifications`` says; see the module
    docstring. Without a ``[notifications]`` table it sends nothing and returns no outcomes."""

    def __init__(
        self,
        config: Config,
        *,
        state_dir: Path,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
    ) -> None:
        self.config = config
        self.settings = config.notifications
        self.redactor = redactor if redactor is not None else Redactor(config.secret_values())
        self.directory = Path(state_dir) / "notify"
        self.queue_path = self.directory / "queue.json"
        self.sent_path = self.directory / "sent.jsonl"
        self._lock_path = self.directory / "lock"
        self._clock = clock

    def __repr__(self) -> str:
        on = "off" if self.settings is None else ",".join(self.settings.events) or "no events"
        return f"Notifier({on}, {self.directory})"

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    # --- the public calls

    def notify(self, event: Event) -> list[Outcome]:
        """Tell people about ``event`` (once), after sending whatever else is due; never raises.

        Returns one outcome per channel that applies: none when notifications are off or this
        kind of event is not wanted, e-mail only when the site has no chat webhook.
        """
        if self.settings is None or event.kind not in self.settings.events:
            return []
        now = self._clock()
        deliveries: list[dict[str, Any]] = []
        try:
            deliveries = self._deliveries(event, now)
            if not deliveries:
                return []
            with self._locked():
                sent, queue = self._read_sent(), self._read_queue()
                early: dict[str, Outcome] = {}
                for item in deliveries:
                    ref = item["ref"]
                    if ref in sent:
                        early[ref] = self._already(item, sent[ref])
                    elif item.get("skip"):
                        early[ref] = Outcome(item["channel"], event.key, "skipped", item["skip"])
                    elif not any(q["ref"] == ref for q in queue):
                        queue.append(item)
                run = self._run(queue, now)
                self._write_queue(queue)
        except (OSError, SinkError) as exc:
            # The state directory is unwritable or locked away: nothing was sent twice, but
            # nothing could be remembered either; say so once per call and carry on.
            reason = self.redactor.text(str(exc))
            log.warning("notifications for %s could not be processed: %s", event.key, reason)
            return [Outcome(d["channel"], event.key, "failed", reason) for d in deliveries]
        except Exception:  # a process boundary: a bug here must not stop a cycle filing tickets
            log.exception("notifications for %s failed unexpectedly", event.key)
            channels = [d["channel"] for d in deliveries] or ["email", "chat"]
            return [
                Outcome(c, event.key, "failed", "unexpected error; see the log") for c in channels
            ]
        outcomes = []
        for item in deliveries:
            ref = item["ref"]
            outcome = early.get(ref) or run.outcomes.get(ref)
            if outcome is None:  # queued and not due, or not tried
                pending = next((q for q in queue if q["ref"] == ref), item)
                outcome = Outcome(
                    item["channel"], event.key, "held", due=_parse_time(pending["due"])
                )
            outcomes.append(outcome)
        return outcomes

    def flush(self, now: datetime | None = None) -> list[Outcome]:
        """Send every queued delivery that is due at ``now`` (default: the clock): those held
        for quiet hours that have ended, and those a transient failure left. Never raises."""
        if self.settings is None:
            return []
        now = now or self._clock()
        try:
            with self._locked():
                queue = self._read_queue()
                if not queue:
                    return []
                run = self._run(queue, now)
                self._write_queue(queue)
        except (OSError, SinkError) as exc:
            log.warning("queued notifications could not be processed: %s", exc)
            return []
        except Exception:  # a process boundary, as in notify
            log.exception("queued notifications failed unexpectedly")
            return []
        return list(run.outcomes.values())

    def pending(self) -> list[dict[str, Any]]:
        """What waits in the queue (for ``status``): ref, channel, site, due, attempts, error."""
        keys = ("ref", "channel", "site", "due", "attempts", "error")
        try:
            return [{k: q.get(k) for k in keys} for q in self._read_queue()]
        except OSError:
            return []

    # --- rendering: one delivery per channel, already redacted

    def _deliveries(self, event: Event, now: datetime) -> list[dict[str, Any]]:
        assert self.settings is not None
        site = self._site(event.site_code)
        view = self._redacted(event)
        base = {
            "event": event.key,
            "kind": event.kind,
            "site": event.site_code,
            "ticket": event.ticket.key,
            "created": now.isoformat(),
            "due": now.isoformat(),
            "attempts": 0,
            "error": None,
        }
        items: list[dict[str, Any]] = []
        if self.settings.email and self.settings.smtp is not None:
            item = {**base, "ref": f"{event.key}.email", "channel": "email"}
            to, cc = _recipients(event.ticket)
            if not to:
                item["skip"] = "the ticket has no requester or CC e-mail address"
            else:
                item["email"] = self._email(view, site, to, cc)
            items.append(item)
        if self._webhook_url(event.site_code) is not None:
            items.append(
                {
                    **base,
                    "ref": f"{event.key}.chat",
                    "channel": "chat",
                    "chat": {"text": self._chat_text(view, site)},
                }
            )
        return items

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
        return self.redactor.text("\n".join(lines))

    # --- the queue, oldest first

    def _run(self, queue: list[dict[str, Any]], now: datetime) -> _Run:
        """Send what is due; edits ``queue`` in place (sent and dropped items leave it)."""
        run = _Run(now)
        for item in list(queue):
            ref, channel = item["ref"], item["channel"]
            quiet_end = quiet_until(self._window(item["site"]), self._tz(item["site"]), now)
            if quiet_end is not None:
                item["due"] = max(_parse_time(item["due"]), quiet_end).isoformat()
            if _parse_time(item["due"]) > now:
                continue
            if now - _parse_time(item["created"]) > GIVE_UP_AFTER:
                error = f"gave up after {GIVE_UP_AFTER.days} days: {item.get('error')}"
                log.warning("notification %s dropped: %s", ref, error)
                self._finish(queue, item, "dropped", now, error)
                run.outcomes[ref] = Outcome(channel, item["event"], "failed", error, True)
                continue
            destination = self._destination(item)
            if destination in run.down:
                error = f"not tried: {run.down[destination]}"
                run.outcomes[ref] = Outcome(channel, item["event"], "failed", error)
                continue
            try:
                self._send(item, now)
            except SinkError as exc:
                error = self.redactor.text(str(exc))
                if exc.permanent:
                    log.error("notification %s (%s) cannot be sent: %s", ref, channel, error)
                    self._finish(queue, item, "dropped", now, error)
                else:
                    item["attempts"] = int(item.get("attempts", 0)) + 1
                    if item["attempts"] == 1:
                        log.warning(
                            "notification %s (%s) failed, will retry: %s", ref, channel, error
                        )
                    item["error"] = error
                    run.down[destination] = error
                run.outcomes[ref] = Outcome(channel, item["event"], "failed", error, exc.permanent)
                continue
            if item.get("attempts"):
                log.info("notification %s (%s) sent after an earlier failure", ref, channel)
            self._finish(queue, item, "sent", now)
            run.outcomes[ref] = Outcome(channel, item["event"], "sent")
        return run

    def _finish(
        self,
        queue: list[dict[str, Any]],
        item: dict[str, Any],
        status: str,
        now: datetime,
        error: str | None = None,
    ) -> None:
        record = {
            "v": VERSION,
            "ref": item["ref"],
            "event": item["event"],
            "channel": item["channel"],
            "status": status,
            "at": now.isoformat(),
        }
        if error:
            record["error"] = error
        try:
            self._append_sent(record)
        except OSError as exc:
            # It went out, but cannot be remembered: keep it queued rather than forget that
            # it is done (a re-send is a duplicate; a lost line would be a lie).
            log.warning(
                "notification %s %s but %s cannot be written: %s",
                item["ref"],
                status,
                self.sent_path,
                exc.strerror or type(exc).__name__,
            )
            return
        queue.remove(item)

    def _already(self, item: dict[str, Any], record: Mapping[str, Any]) -> Outcome:
        if record.get("status") == "dropped":
            error = f"given up earlier: {record.get('error', '')}".strip()
            return Outcome(item["channel"], item["event"], "failed", error, True)
        return Outcome(item["channel"], item["event"], "duplicate")

    # --- sending

    def _destination(self, item: Mapping[str, Any]) -> str:
        if item["channel"] == "email":
            return "email"
        url = self._webhook_url(item["site"]) or ""
        return "chat:" + hashlib.sha256(url.encode()).hexdigest()[:16]

    def _send(self, item: Mapping[str, Any], now: datetime) -> None:
        if item["channel"] == "email":
            self._send_email(item["email"], now)
        else:
            self._send_chat(item["site"], item["chat"]["text"])

    def _send_email(self, mail: Mapping[str, Any], now: datetime) -> None:
        assert self.settings is not None
        smtp = self.settings.smtp
        if smtp is None:  # e-mail was switched off since this was queued
            raise SinkError("notifications: e-mail is not configured any more", permanent=True)
        message = EmailMessage(policy=POLICY)
        message["From"] = smtp.sender
        message["To"] = ", ".join(mail["to"])
        if mail["cc"]:
            message["Cc"] = ", ".join(mail["cc"])
        message["Subject"] = mail["subject"]
        message["Date"] = email.utils.format_datetime(now)
        message["Message-ID"] = mail["message_id"]
        message["In-Reply-To"] = mail["thread"]
        message["References"] = mail["thread"]
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
        message.set_content(mail["body"], cte="quoted-printable")
        send_message(smtp, message, to=mail["to"], cc=mail["cc"], name="notifications")

    def _send_chat(self, site_code: str, text: str) -> None:
        assert self.settings is not None
        cfg = self.settings
        url = self._webhook_url(site_code)
        if url is None:
            raise SinkError(
                "notifications: the chat webhook is not configured any more", permanent=True
            )
        parts = urlsplit(url)
        where = f"chat ({parts.scheme}://{parts.netloc})"
        payload: dict[str, str] = {"text": text}
        if cfg.chat_username:
            payload["username"] = cfg.chat_username
        if cfg.chat_icon_emoji:
            payload["icon_emoji"] = cfg.chat_icon_emoji
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
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
        said = f": {self.redactor.text(said)}" if said else ""
        if status >= 500 or status in _TRANSIENT_HTTP:
            raise SinkError(f"{where}: HTTP {status}{said}")
        if 300 <= status < 400:
            raise SinkError(
                f"{where}: HTTP {status}, a redirect; set the webhook URL to the final address",
                permanent=True,
            )
        hint = "; check the webhook URL (it may have been revoked)" if status in (403, 404) else ""
        raise SinkError(f"{where}: HTTP {status}{said}{hint}", permanent=True)

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

    def _webhook_url(self, code: str) -> str | None:
        site = self._site(code)
        secret = site.chat_webhook_url if site is not None else None
        if secret is None and self.settings is not None:
            secret = self.settings.chat_webhook_url
        return secret.get_secret_value() if secret is not None else None

    # --- the state directory

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time, from "sent already?" to the record of it."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_queue(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.queue_path.read_bytes())
        except FileNotFoundError:
            return []
        except (UnicodeDecodeError, json.JSONDecodeError):
            # Written by replace(), so never torn; a hand edit gone wrong. Keep it for a person.
            broken = self.queue_path.with_suffix(".broken")
            os.replace(self.queue_path, broken)
            log.error("%s is not JSON; moved to %s, starting empty", self.queue_path, broken)
            return []
        items = data.get("items") if isinstance(data, dict) else None
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def _write_queue(self, queue: Sequence[Mapping[str, Any]]) -> None:
        if not queue and not self.queue_path.exists():
            return
        data = json.dumps({"v": VERSION, "items": list(queue)}, ensure_ascii=False, indent=1)
        _write_atomic(self.queue_path, data.encode("utf-8"))

    def _read_sent(self) -> dict[str, dict[str, Any]]:
        sent: dict[str, dict[str, Any]] = {}
        for record in self._sent_records():
            ref = record.get("ref")
            if isinstance(ref, str):
                sent[ref] = record
        return sent

    def _sent_records(self) -> list[dict[str, Any]]:
        try:
            raw = self.sent_path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        for line in raw.splitlines():
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue  # a line torn by a crash: that delivery is simply not remembered
            if isinstance(record, dict) and record.get("v") == VERSION:
                records.append(record)
        return records

    def _append_sent(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        fd = os.open(self.sent_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > SENT_LOG_MAX_BYTES:
            # Only old events fall out; they are long past being notified again.
            kept = "".join(
                json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                for r in self._sent_records()[-SENT_LOG_KEEP:]
            )
            _write_atomic(self.sent_path, kept.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Small helpers


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _chat_failed(exc: ProbeError, where: str, timeout_s: float) -> SinkError:
    """A chat POST that got no HTTP answer: transient, unless a setting must change. An answer
    lost after sending is retried too (a chat message may then show twice: see above)."""
    early = unanswered(exc, where, ca_setting="chat_ca_file")
    if early is not None:
        return early
    if exc.code is ProbeErrorCode.TIMEOUT:
        return SinkError(f"{where}: no answer in {timeout_s:g} s")
    return SinkError(f"{where}: the connection dropped ({exc.detail})")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


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
    return ticket.number or ticket.key


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
    days = f"{ticket.sla_days} day{'s' if ticket.sla_days != 1 else ''}"
    state = "overdue since" if now >= due and ticket.is_open else "due"
    return f"{days}, {state} {_when(due, tz)}"


def _headline(event: Event) -> str:
    if event.kind == "status":
        return f"Status: {event.ticket.status.value}"
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
