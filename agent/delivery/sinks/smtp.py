"""Tickets as e-mail to a helpdesk's intake address, with the diagnostics bundle attached.

Most helpdesks open a ticket from an e-mail, so this is the destination that works with any of
them. Each ticket is one MIME message: the portal form as text (the same page the local store
writes), the bundle and other files as attachments, ``Reply-To`` the store's requester so the
helpdesk answers a person, ``Cc`` the ticket's CC list, and a subject tagged
``[ffc-key:<key>]`` that helpdesk rules and people can search for.

What e-mail cannot do, and what this sink does instead:

- It cannot be searched. The outbox's record of what it delivered here
  (``agent.delivery.sinks.writeonly``) answers ``find_by_key``, ``find_open``, ``get`` and
  ``list``. A ticket's status there stays as the agent last sent it.
- It cannot say whether a message whose answer was lost got through. A timeout or disconnect
  after DATA is ``OutcomeUnknown``; the outbox then has no delivery of it on record, so a retry
  sends it again *with the same* ``Message-ID`` (``<key@ffc-agent>``), as does a retry after a
  crash between the server's yes and the record of it. Delivery is therefore at-least-once,
  but a helpdesk that de-duplicates on Message-ID drops the second copy. That is the honest
  limit of e-mail; no client can do better.
- Numbers are ``M-`` and 12 hex digits of the key's SHA-256: stable, so a re-send, or the
  second gateway of a redundant pair, names the ticket the same.

``add_message`` sends a follow-up that threads under the ticket (``In-Reply-To`` and
``References`` are its Message-ID), with its own stable Message-ID, and any files it brings
(a remote-session transcript) as attachments of that mail.

Errors: refused connections, timeouts and 4xx replies (421, 450, 451, 452, 454) are transient;
5xx replies (535 bad login, 550, 552, 553, 554), a server without STARTTLS, a TLS certificate
that does not verify, and a helpdesk address the server refuses are permanent. A CC address
the server refuses is logged and dropped: the helpdesk still gets the ticket. The password is
sent only over TLS and never appears in an error or a log line.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

from agent.delivery.sinks.base import SinkError
from agent.delivery.sinks.local import render_markdown
from agent.delivery.sinks.mailer import POLICY, send_message
from agent.delivery.sinks.writeonly import (
    ReadFromOutbox,
    describe,
    number_for,
    renamed,
    with_attachments,
)
from diagnostics.model import SYSTEM_CLOCK
from rma.tickets import Attachment, Ticket

if TYPE_CHECKING:
    from agent.config import SmtpSinkConfig

log = logging.getLogger(__name__)

PREFIX = "M-"
MESSAGE_ID_DOMAIN = "ffc-agent"

_DOT_ATOM = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_ADDRESS = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")


def message_id(key: str, part: str = "") -> str:
    """The stable Message-ID for a ticket (``part`` empty) or one of its follow-ups."""
    local = key if _DOT_ATOM.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{local}{'.' + part if part else ''}@{MESSAGE_ID_DOMAIN}>"


def subject_tag(key: str) -> str:
    return f"[ffc-key:{key}]"


class SmtpSink(ReadFromOutbox):
    """E-mail tickets through ``config``'s SMTP server; see the module docstring."""

    def __init__(
        self,
        config: SmtpSinkConfig,
        *,
        state_dir: Path,
        clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
    ) -> None:
        self.config = config
        self.name = config.label
        self._read_from(state_dir)  # the agent's state directory, where the outbox is
        self._clock = clock

    def __repr__(self) -> str:
        return f"SmtpSink({self.name!r}, {self.config.host}:{self.config.port})"

    # --- the Sink contract

    def file(self, ticket: Ticket, attachments: Mapping[str, bytes] | None = None) -> Ticket:
        files = describe(attachments)
        existing = self.find_by_key(ticket.key)
        if existing is not None:
            return existing
        filed = ticket.filed(number_for(PREFIX, ticket.key), [meta for meta, _ in files])
        mid = message_id(ticket.key)
        message = self._message(filed, f"{filed.subject} {subject_tag(filed.key)}", mid)
        message.set_content(render_markdown(filed), cte="quoted-printable")
        for meta, data in files:
            _attach(message, meta, data)
        self._deliver(message, filed.cc)
        log.info(
            "e-mailed ticket %s to %s: %s", filed.number, ", ".join(self.config.to), filed.subject
        )
        return filed

    def add_message(
        self,
        number: str,
        author: str,
        body: str,
        at: datetime,
        attachments: Mapping[str, bytes] | None = None,
    ) -> Ticket:
        files = describe(attachments)
        ticket = self.get(number)
        if ticket is None:
            raise SinkError(f"no ticket {number!r} was e-mailed by {self.name}", permanent=True)
        # the files' hashes are part of the follow-up: another file is another message
        hashes = "".join(f"\n{meta.name}:{meta.sha256}" for meta, _ in files)
        text_id = f"{at.isoformat()}\n{author}\n{body}{hashes}"
        digest = hashlib.sha256(text_id.encode()).hexdigest()
        mid = message_id(ticket.key, "m" + digest[:16])
        files = renamed(files, ticket)
        message = self._message(ticket, f"Re: {ticket.subject} {subject_tag(ticket.key)}", mid)
        message["In-Reply-To"] = message_id(ticket.key)
        message["References"] = message_id(ticket.key)
        text = (
            f"{author} wrote on {at:%Y-%m-%d %H:%M %Z}, about ticket {number}:\n\n{body.rstrip()}\n"
        )
        message.set_content(text, cte="quoted-printable")
        for meta, data in files:
            _attach(message, meta, data)
        self._deliver(message, ticket.cc)
        return with_attachments(ticket.with_message(at, author, body), files)

    # --- the message

    def _message(self, ticket: Ticket, subject: str, mid: str) -> EmailMessage:
        cfg = self.config
        message = EmailMessage(policy=POLICY)
        message["From"] = cfg.sender
        message["To"] = ", ".join(cfg.to)
        if ticket.cc:
            message["Cc"] = ", ".join(ticket.cc)
        if _ADDRESS.fullmatch(ticket.requester):
            message["Reply-To"] = ticket.requester
        message["Subject"] = subject
        message["Date"] = email.utils.format_datetime(self._clock())
        message["Message-ID"] = mid
        message["X-FFC-Key"] = ticket.key
        return message

    # --- the SMTP exchange (shared with notifications: agent.delivery.sinks.mailer)

    def _deliver(self, message: EmailMessage, cc: Sequence[str]) -> None:
        send_message(
            self.config,
            message,
            to=self.config.to,
            cc=cc,
            name=self.name,
            to_label="the helpdesk address",
        )


def _attach(message: EmailMessage, meta: Attachment, data: bytes) -> None:
    maintype, _, subtype = meta.content_type.partition("/")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=meta.name)
