"""Attach files to a ticket that already exists: a remote-session transcript, a bundle, a photo.

Second-line support works a ticket over days; what it does on site (a recorded shell on a
counter, a diagnostics bundle built by hand, a photo of the mounting) belongs on that ticket,
where FootfallCam reads it, not in a folder on the gateway. ``attach_files`` puts the files on
ticket NUMBER in every configured destination that has it, as one message through the outbox,
so a helpdesk that is down gets them later, exactly once, and the audit log says who attached
what (``ticket.attach``: names and sha256 of the files as sent).

What may leave the gateway: every text file passes the redactor (the configuration's secrets
by value, then the pattern layer) before it is queued; a binary file cannot be scrubbed, so
only the kinds support asks for are taken (``BINARY_SUFFIXES``: bundles, photos, PDFs), and
none is larger than ``MAX_FILE_BYTES``. A refusal is an ``AttachError`` whose text says why;
nothing is queued or audited then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.delivery.notify import Event
from agent.delivery.numbers import find_tickets
from agent.delivery.sinks.base import Sink
from rma.tickets import Message, Ticket

if TYPE_CHECKING:
    from agent.app import App
    from rma.redact import Redactor

MAX_FILE_BYTES = 8 * 1024 * 1024
BINARY_SUFFIXES = (".tar.gz", ".gz", ".jpg", ".jpeg", ".png", ".pdf")
AUDIT_ACTION = "ticket.attach"


class AttachError(Exception):
    """A file or ticket that cannot be attached to; the text is for the person who asked."""


@dataclass(frozen=True)
class Attached:
    """What ``attach_files`` queued, and how the delivery right after it went."""

    number: str
    files: list[dict[str, Any]]  # name, size, sha256 (of the bytes sent, after redaction)
    items: list[dict[str, Any]] = field(default_factory=list)  # sink, number, item, state, error

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "files": self.files, "items": self.items}


def read_file(path: Path, redactor: Redactor) -> bytes:
    """The bytes of ``path`` as they may leave the gateway: text redacted, binary checked."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AttachError(
                f"{path}: {size:,} bytes, more than the {MAX_FILE_BYTES:,} a ticket attachment "
                "may have"
            )
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise AttachError(f"{path}: cannot read it: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_FILE_BYTES:  # it grew since the stat
        raise AttachError(f"{path}: more than the {MAX_FILE_BYTES:,} bytes allowed")
    if path.name.lower().endswith(BINARY_SUFFIXES):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise AttachError(
            f"{path}: a binary file, which cannot be scrubbed of secrets; only text files and "
            f"{', '.join(BINARY_SUFFIXES)} files can be attached"
        )
    return redactor.text(text).encode("utf-8")


def attach_files(
    app: App,
    number: str,
    paths: Sequence[Path],
    *,
    actor: str,
    now: datetime,
    message: str = "",
) -> Attached:
    """Queue ``paths`` as one message on ticket ``number`` in every destination that has it,
    audit it, then run one delivery. Raises ``AttachError`` (or ``numbers.AmbiguousNumber``)
    before anything is queued."""
    files: dict[str, bytes] = {}
    for path in paths:
        if path.name in files:
            raise AttachError(f"two files are named {path.name}: rename one")
        files[path.name] = read_file(path, app.redactor)
    if not files:
        raise AttachError("no file to attach")
    where = find_tickets(app.sinks, number)
    if not where:
        names = ", ".join(s.name for s in app.sinks) or "none"
        raise AttachError(f"no ticket {number} in any configured destination ({names})")

    described = [
        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    ]
    said = app.redactor.text(message.strip()) or f"{actor} attached files to this ticket."
    # The hashes in the text make a different file a different message, and the same file the
    # same one: the outbox and the destinations de-duplicate on it.
    body = (
        said
        + "\n\n"
        + "\n".join(f"- {f['name']} ({f['size']:,} bytes, sha256 {f['sha256']})" for f in described)
    )
    outbox = app.outbox
    queued: list[tuple[Sink, Ticket, int]] = []
    with app.store.transaction():
        for sink, ticket in where:
            [item_id] = outbox.enqueue_message(
                [sink],
                ticket.key,
                author=actor,
                body=body,
                at=now,
                attachments=files,
                number=ticket.number,
                now=now,
            )
            queued.append((sink, ticket, item_id))
        # one notice for the change, however many destinations carry it
        note = Message(at=now, author=actor, body=body)
        app.notifier.notify(Event.new_message(where[0][1], note), now)
        app.store.audit(
            now,
            actor,
            AUDIT_ACTION,
            number,
            {"files": described, "sinks": [s.name for s, _, _ in queued]},
        )
    app.tickets.deliver(now)
    states = {i.id: i for i in outbox.items()}
    items = [
        {
            "sink": sink.name,
            "number": ticket.number,
            "item": item_id,
            "state": states[item_id].state,
            "error": states[item_id].last_error,
        }
        for sink, ticket, item_id in queued
    ]
    return Attached(number=number, files=described, items=items)
