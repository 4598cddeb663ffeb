"""The contract every ticket destination keeps: the local store, Request Tracker, e-mail, webhook.

A sink files a composed ``Ticket`` and returns it with the destination's number. Filing is
idempotent by the ticket's ``key`` (which comes from the incident, not the gateway), so a retry
after a crash, or a second gateway of a redundant pair, finds the ticket already there instead
of opening a duplicate. ``find_open`` lets the agent join a ticket a person already raised by
hand for the same counter and category, rather than filing a second one beside it.

Beyond the contract, a destination that can move a ticket along has ``set_status``, and one
that keeps the portal's support line and task list (the local store, RT) has ``set_stage`` and
``add_task``; the outbox calls them only where they exist (``hasattr``), so e-mail and webhook
destinations, which cannot be read back, take messages but no stages or tasks.

Failures are ``SinkError``; ``permanent`` tells the outbox whether retrying can ever help
(a rejected ticket, bad credentials) or only time can (a helpdesk that is down).
"""

from __future__ import annotations

import builtins
import mimetypes
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from diagnostics.model import ProbeError, ProbeErrorCode
from rma.tickets import Category, Ticket


class SinkError(Exception):
    """A destination could not take or give a ticket.

    ``permanent`` is True when retrying the same call cannot succeed (the destination refused
    it as invalid, or there is no such ticket), False when it may later (unreachable, busy).
    ``status`` is the destination's HTTP status when it answered one; ``retry_after`` the
    seconds its ``Retry-After`` asked for, when it sent one (the outbox honours it).
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


class OutcomeUnknown(SinkError):
    """A create was sent but its answer never came (a timeout or a dropped connection after
    sending): the ticket may or may not exist. Transient, but never to be repeated blindly —
    the outbox first asks ``find_by_key`` whether the destination has it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


def unanswered(
    exc: ProbeError, where: str, *, error: type[SinkError] = SinkError, ca_setting: str = "ca_file"
) -> SinkError | None:
    """What an HTTP request that got no answer means when nothing reached the server: a TLS
    certificate not trusted or a request that cannot be sent (permanent: a setting must
    change), or no connection (transient). None when it may have arrived (``exc.sent``): the
    caller knows whether that is an unknown outcome or a plain retry."""
    if exc.code is ProbeErrorCode.TLS_ERROR:
        return error(
            f"{where}: TLS failed: the certificate does not verify or the handshake was "
            f"refused; set {ca_setting} to the CA that signed it",
            permanent=True,
        )
    if exc.sent:
        return None
    if exc.code is ProbeErrorCode.BAD_RESPONSE:  # a URL or header that cannot be sent
        return error(f"{where}: invalid request ({exc.detail})", permanent=True)
    reason = {
        ProbeErrorCode.REFUSED: "connection refused",
        ProbeErrorCode.TIMEOUT: "connect timed out",
    }.get(exc.code, "cannot connect")
    return error(f"{where}: {reason}")


@runtime_checkable
class Sink(Protocol):
    name: str

    def file(self, ticket: Ticket, attachments: Mapping[str, bytes] | None = None) -> Ticket:
        """File ``ticket`` and return it with its number. If a ticket with the same ``key``
        exists, return that one unchanged (and ignore ``attachments``)."""
        ...

    def find_by_key(self, key: str) -> Ticket | None: ...

    def find_open(
        self, site: str, counters: Iterable[str], category: Category | str
    ) -> Ticket | None:
        """An open (not Closed) ticket about the same site, counter(s) and category."""
        ...

    def add_message(
        self,
        number: str,
        author: str,
        body: str,
        at: datetime,
        attachments: Mapping[str, bytes] | None = None,
    ) -> Ticket:
        """Add a message to ticket ``number``, with ``attachments`` (a session transcript, a
        bundle) sent with it in the same call. A name the ticket already has gets a suffix
        (``free_name``) where the destination keeps files by name: a file is never replaced."""
        ...

    def get(self, number: str) -> Ticket | None: ...

    def list(self) -> builtins.list[Ticket]: ...


_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def content_type(name: str) -> str:
    """The MIME type an attachment called ``name`` is labelled with, in every destination."""
    kind, encoding = mimetypes.guess_type(name)
    # "bundle.tar.gz" is a gzip file to a mail client, not a tar it could open as it is
    if encoding in _COMPRESSED:
        return _COMPRESSED[encoding]
    return kind or "application/octet-stream"


def free_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name`` with ``-2``, ``-3`` … before its extension(s) when it is taken:
    ``shell.txt`` -> ``shell-2.txt``, ``bundle.tar.gz`` -> ``bundle-2.tar.gz``."""
    used = set(taken)
    if name not in used:
        return name
    stem, dot, ext = name.partition(".")
    n = 2
    while f"{stem}-{n}{dot}{ext}" in used:
        n += 1
    return f"{stem}-{n}{dot}{ext}"


def same_problem(
    ticket: Ticket, site: str, counters: Iterable[str], category: Category | str
) -> bool:
    """Is ``ticket`` an open ticket about this site, counter(s) and category?

    Counter tickets match when they share a counter; a site-level question (no counters)
    matches only site-level tickets, so one counter's ticket never swallows a site outage.
    """
    if not ticket.is_open or ticket.site != site or ticket.category != Category(category):
        return False
    wanted = set(counters)
    if not wanted:
        return not ticket.counters
    return bool(wanted & set(ticket.counters))
