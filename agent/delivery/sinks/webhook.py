"""Tickets as signed JSON over HTTPS, for a chain's own ticketing or integration service.

A chain that runs its own intake (an internal portal, an integration bus, a serverless
function) receives each ticket as one POST it can verify and de-duplicate, without giving the
gateways any credential to its systems: the shared secret only signs, it is never sent.

The request (``Content-Type: application/json``, UTF-8)::

    POST <url>
    Idempotency-Key: <ticket key>            (".message.<hash>" / ".status.<hash>" appended
                                              for follow-ups: the same for every retry)
    X-FFC-Event: ticket.created | ticket.message | ticket.status
    X-FFC-Timestamp: <unix seconds when this attempt was signed>
    X-FFC-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body bytes)>

    {"event": "ticket.created", "ticket": {...Ticket JSON...},
     "attachments": [{"name", "content_type", "size", "sha256", "content_base64"}]}
    {"event": "ticket.message", "key", "number", "message": {"at", "author", "body"},
     "attachments": [...as above; only when files go with the message]}
    {"event": "ticket.status", "key", "number", "status", "next_action", "at"}

A receiver verifies with ``verify_signature`` (or its own ten lines): recompute the HMAC over
the timestamp header, a dot, and the body exactly as received; compare in constant time; and
reject a timestamp more than 5 minutes from its clock, so a captured request cannot be
replayed later. Within that window it de-duplicates on ``Idempotency-Key``. A 2xx answer may
carry ``{"number": "..."}``, the receiver's ticket number; without one the number is ``W-``
and 12 hex digits of the key's SHA-256.

A webhook cannot be read back: the outbox's record of what it delivered here (a 2xx), in
``agent.delivery.sinks.writeonly``, answers ``find_by_key``, ``find_open``, ``get`` and ``list``.

Errors: a read timeout or a dropped connection after the request went out is
``OutcomeUnknown``. The outbox then sends the event once more, with the same Idempotency-Key
(so the receiver drops the copy), no sooner than 15 minutes later and inside ``patient()``,
which waits four times ``timeout_seconds`` for its answer; unanswered again, it is not sent a
third time but fails (see ``agent.delivery.outbox``). So a receiver that answers late gets
one POST, or two with one key, never one per pass. Refused connections, connect timeouts, 5xx,
408, 409, 425 and 429 are transient, and carry the answer's ``Retry-After`` in seconds as
``WebhookError.retry_after``; any other 4xx, a redirect, and a TLS certificate that does not
verify are permanent (a setting to fix). A POST is never retried here, redirects are not
followed, and the answer is read to at most 64 KiB. Error texts name the receiver by scheme,
host and port only: webhook URLs often carry a token.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.delivery.sinks.base import OutcomeUnknown, SinkError, unanswered
from agent.delivery.sinks.writeonly import (
    ReadFromOutbox,
    describe,
    number_for,
    renamed,
    with_attachments,
)
from agent.transport.http import make_session, request
from diagnostics.model import SYSTEM_CLOCK, ProbeError, ProbeErrorCode
from rma.tickets import Attachment, NextAction, Ticket, TicketStatus

if TYPE_CHECKING:
    from agent.config import WebhookSinkConfig

log = logging.getLogger(__name__)

PREFIX = "W-"
SIGNATURE_HEADER = "X-FFC-Signature"
TIMESTAMP_HEADER = "X-FFC-Timestamp"
EVENT_HEADER = "X-FFC-Event"
DEFAULT_TOLERANCE_S = 300
MAX_REQUEST_BYTES = 48 * 1024 * 1024  # a capped bundle, base64'd, with room to spare
MAX_REPLY_BYTES = 64 * 1024
MAX_RETRY_AFTER_S = 24 * 3600
CONNECT_TIMEOUT_S = 10.0
_TRANSIENT = {408, 409, 425, 429}  # 409: the same Idempotency-Key is still being processed
_NUMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:#-]{0,63}")


class WebhookError(SinkError):
    """A receiver's refusal. ``status`` and ``retry_after`` as in ``SinkError``."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-FFC-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Is ``header`` a valid signature of ``body`` made within ``tolerance_s`` of ``now``?"""
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


class WebhookSink(ReadFromOutbox):
    """Tickets POSTed to ``config.url``; see the module docstring for the protocol."""

    def __init__(
        self,
        config: WebhookSinkConfig,
        *,
        state_dir: Path,
        clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
    ) -> None:
        if config.secret is None:
            raise ValueError("a webhook sink needs its secret")
        self.config = config
        self.name = config.label
        self._read_from(state_dir)  # the agent's state directory, where the outbox is
        self._clock = clock
        self._patience = 1.0
        parts = urlsplit(config.url)
        self._origin = f"{parts.scheme}://{parts.netloc}"

    def __repr__(self) -> str:
        return f"WebhookSink({self.name!r}, {self._origin})"

    # --- the Sink contract

    def file(self, ticket: Ticket, attachments: Mapping[str, bytes] | None = None) -> Ticket:
        files = describe(attachments)
        existing = self.find_by_key(ticket.key)
        if existing is not None:
            return existing
        payload = {
            "event": "ticket.created",
            "ticket": ticket.to_json(),
            "attachments": [
                {**meta.model_dump(), "content_base64": base64.b64encode(data).decode()}
                for meta, data in files
            ],
        }
        reply = self._post("ticket.created", ticket.key, payload)
        number = self._number_from(reply)
        if number is not None and self.get(number) is not None:
            # Two keys under one number would hide one ticket from find_by_key, and the
            # outbox would then file it again and again.
            log.warning(
                "%s: the receiver gave %s twice; numbering the ticket itself", self.name, number
            )
            number = None
        number = number or number_for(PREFIX, ticket.key)
        filed = ticket.filed(number, [meta for meta, _ in files])
        log.info("posted ticket %s to %s: %s", number, self._origin, filed.subject)
        return filed

    def add_message(
        self,
        number: str,
        author: str,
        body: str,
        at: datetime,
        attachments: Mapping[str, bytes] | None = None,
    ) -> Ticket:
        def payload(ticket: Ticket) -> dict[str, Any]:
            message = {"at": at.isoformat(), "author": author, "body": body}
            return {
                "event": "ticket.message",
                "key": ticket.key,
                "number": number,
                "message": message,
            }

        ticket, files = self._follow_up(number, "message", payload, describe(attachments))
        return with_attachments(ticket.with_message(at, author, body), files)

    # --- beyond the contract: the follow-up moves the ticket along

    def set_status(
        self,
        number: str,
        status: TicketStatus | str,
        at: datetime,
        next_action: NextAction | str | None = None,
    ) -> Ticket:
        status = TicketStatus(status)
        action = NextAction(next_action) if next_action is not None else None

        def payload(ticket: Ticket) -> dict[str, Any]:
            return {
                "event": "ticket.status",
                "key": ticket.key,
                "number": number,
                "status": status.value,
                "next_action": action.value if action else None,
                "at": at.isoformat(),
            }

        ticket, _ = self._follow_up(number, "status", payload)
        return ticket.with_status(status, at, action)

    @contextmanager
    def patient(self, factor: float) -> Iterator[None]:
        """Within it, wait ``factor`` times ``timeout_seconds`` for each answer: how the
        outbox re-sends an event whose first answer did not come in time."""
        self._patience = max(1.0, factor)
        try:
            yield
        finally:
            self._patience = 1.0

    # --- inside

    def _follow_up(
        self,
        number: str,
        event: str,
        payload: Callable[[Ticket], dict[str, Any]],
        files: list[tuple[Attachment, bytes]] | None = None,
    ) -> tuple[Ticket, list[tuple[Attachment, bytes]]]:
        """POST one follow-up event, with ``files`` in its ``attachments``; returns the
        ticket as it was before it, and the files under the names they were sent as."""
        ticket = self.get(number)
        if ticket is None:
            raise SinkError(f"no ticket {number!r} was posted by {self.name}", permanent=True)
        data = payload(ticket)
        # the files' hashes by their given names are part of the follow-up's identity
        # (another file is another event), stable however they are renamed below
        identity = {**data, "files": [(m.name, m.sha256) for m, _ in files or []]}
        if not files:
            identity = data
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        ref = f"{ticket.key}.{event}.{digest[:16]}"
        sent = renamed(files or [], ticket)
        if sent:
            data["attachments"] = [
                {**meta.model_dump(), "content_base64": base64.b64encode(raw).decode()}
                for meta, raw in sent
            ]
        self._post(f"ticket.{event}", ref, data)
        return ticket, sent

    def _post(self, event: str, idempotency_key: str, payload: Mapping[str, Any]) -> bytes:
        """POST once; return the 2xx answer's body (at most MAX_REPLY_BYTES) or raise."""
        cfg, where = self.config, f"{self.name} ({self._origin})"
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(body) > MAX_REQUEST_BYTES:
            raise WebhookError(
                f"{where}: the request is {len(body)} bytes, more than the "
                f"{MAX_REQUEST_BYTES} a webhook may carry; send the bundle another way",
                permanent=True,
            )
        assert cfg.secret is not None  # checked in __init__
        timestamp = str(int(self._clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            EVENT_HEADER: event,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(cfg.secret.get_secret_value().encode(), timestamp, body),
        }
        verify: bool | str = cfg.verify_tls
        if cfg.verify_tls and cfg.ca_file is not None:
            verify = str(cfg.ca_file)
        read = cfg.timeout_seconds * self._patience
        timeout = (min(cfg.timeout_seconds, CONNECT_TIMEOUT_S), read)
        try:
            with make_session(verify=verify) as session:
                answer = request(
                    session,
                    "POST",
                    cfg.url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    max_bytes=MAX_REPLY_BYTES,
                    truncate=True,
                )
        except ProbeError as exc:
            raise self._failed(exc, idempotency_key) from None
        status, reply = answer.status, answer.body
        retry_after = answer.headers.get("Retry-After")

        if 200 <= status < 300:
            return reply
        said = " ".join(reply[:200].decode("utf-8", "replace").split())
        said = f": {said}" if said else ""
        if status >= 500 or status in _TRANSIENT:
            seconds = _retry_after(retry_after, self._clock())
            wait = f" (Retry-After {seconds:g} s)" if seconds is not None else ""
            raise WebhookError(
                f"{where}: HTTP {status}{wait}{said}", status=status, retry_after=seconds
            )
        if 300 <= status < 400:
            raise WebhookError(
                f"{where}: HTTP {status}, a redirect; a POST is not followed: set url to the "
                "final address",
                permanent=True,
                status=status,
            )
        if status in (401, 403):
            said = f": the receiver refused the signature; check the secret{said}"
        if status >= 400:
            raise WebhookError(f"{where}: HTTP {status}{said}", permanent=True, status=status)
        raise WebhookError(f"{where}: unexpected HTTP {status}", status=status)

    def _failed(self, exc: ProbeError, idempotency_key: str) -> SinkError:
        """What a POST that got no HTTP answer means (see the module docstring)."""
        cfg, where = self.config, f"{self.name} ({self._origin})"
        early = unanswered(exc, where, error=WebhookError)
        if early is not None:
            return early
        lost = (
            f"no answer within {cfg.timeout_seconds * self._patience:g} s after the request "
            "was sent"
            if exc.code is ProbeErrorCode.TIMEOUT
            else "the connection dropped after the request was sent"
        )
        return OutcomeUnknown(
            f"{where}: {lost}; it may have arrived. A retry re-sends it as {idempotency_key}."
        )

    def _number_from(self, reply: bytes) -> str | None:
        if not reply.strip():
            return None
        try:
            data = json.loads(reply)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning(
                "%s: the receiver's answer is not JSON; numbering the ticket itself", self.name
            )
            return None
        number = data.get("number") if isinstance(data, dict) else None
        if isinstance(number, int) and not isinstance(number, bool):
            number = str(number)
        if number is None:
            return None
        if isinstance(number, str) and _NUMBER_RE.fullmatch(number):
            return number
        log.warning(
            "%s: ignoring the receiver's ticket number %.40r: not a plain number", self.name, number
        )
        return None


def _retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; capped."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value), MAX_RETRY_AFTER_S))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min((when - now).total_seconds(), float(MAX_RETRY_AFTER_S)))
