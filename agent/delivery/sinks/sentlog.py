"""What a write-only destination was sent: a JSON-lines log in the state directory.

An e-mail intake or a webhook takes tickets but cannot be asked about them afterwards, yet the
agent must still answer "is this incident's ticket already filed?" before it files, or a
restart would e-mail the helpdesk again. The sink's answer is this log: one line per thing the
destination *accepted* (a line is appended only after the server said yes), replayed into
tickets by ``find_by_key``, ``get`` and ``list``. The status of a ticket here is the status the
agent sent, never the helpdesk's: nothing can be read back.

Format (``<state_dir>/<sink name>.sent.jsonl``, UTF-8, one JSON object a line, ``"v": 1``):

- ``{"v": 1, "event": "filed", "key", "number", "ref", "sent_at", "ticket": {...}}``
- ``{"v": 1, "event": "message", "key", "number", "ref", "sent_at", "at", "author", "body"}``,
  with ``"attachments": [{"name", "content_type", "size", "sha256"}]`` when files went with it
- ``{"v": 1, "event": "status", "key", "number", "ref", "sent_at", "at", "status",
  "next_action"}``

``ref`` is what the destination can de-duplicate on: the e-mail's ``Message-ID`` or the
webhook's ``Idempotency-Key``. ``sent_at`` is when the destination accepted it (ISO 8601).

Failure behaviour: writers hold an exclusive ``flock`` on ``<name>.lock`` from the "already
sent?" check to the append, so two processes of one gateway never both send. Each line is one
``write`` on an ``O_APPEND`` descriptor, then ``fsync``; a line torn by a crash is skipped with
a warning when read, as is any line that is not a valid record.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import mimetypes
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.delivery.sinks.base import SinkError, free_name, same_problem
from rma.tickets import Attachment, Category, NextAction, Ticket

log = logging.getLogger(__name__)

VERSION = 1


@dataclass
class Entry:
    """One filed ticket as replayed from the log; ``refs`` are all refs sent for it."""

    ticket: Ticket
    ref: str
    refs: set[str] = field(default_factory=set)


class SentLog:
    def __init__(self, state_dir: Path | str, name: str) -> None:
        self.directory = Path(state_dir)
        self.path = self.directory / f"{name}.sent.jsonl"
        self._lock_path = self.directory / f"{name}.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SinkError(f"cannot open the sent-log lock {self._lock_path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record; raises OSError (the caller knows what it had already sent)."""
        line = json.dumps({"v": VERSION, **record}, ensure_ascii=False, separators=(",", ":"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> dict[str, Entry]:
        """Filed tickets by number, oldest first, with their messages and statuses applied."""
        entries: dict[str, Entry] = {}
        for lineno, record in self._records():
            try:
                _apply(entries, record)
            except (KeyError, TypeError, ValueError, ValidationError) as exc:
                log.warning(
                    "%s:%d: skipping a record that cannot be read: %s",
                    self.path,
                    lineno,
                    type(exc).__name__,
                )
        return entries

    def find_by_key(self, key: str) -> Entry | None:
        return next((e for e in self.entries().values() if e.ticket.key == key), None)

    def tickets(self) -> builtins.list[Ticket]:
        return [e.ticket for e in self.entries().values()]

    def _records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SinkError(f"cannot read the sent-log {self.path}: {exc}") from None
        for lineno, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning(
                    "%s:%d: skipping a line that is not JSON (torn write?)", self.path, lineno
                )
                continue
            if isinstance(record, dict) and record.get("v") == VERSION:
                yield lineno, record
            else:
                log.warning("%s:%d: skipping a record of unknown version", self.path, lineno)


class ReadFromSentLog:
    """The reading half of the Sink contract for a destination that cannot be read back
    (e-mail, a webhook): every answer comes from what it accepted, as the sent-log holds it."""

    _sent: SentLog

    def find_by_key(self, key: str) -> Ticket | None:
        entry = self._sent.find_by_key(key)
        return entry.ticket if entry else None

    def find_open(
        self, site: str, counters: Iterable[str], category: Category | str
    ) -> Ticket | None:
        counters = builtins.list(counters)
        matches = [t for t in self.list() if same_problem(t, site, counters, category)]
        return matches[-1] if matches else None

    def get(self, number: str) -> Ticket | None:
        entry = self._sent.entries().get(number)
        return entry.ticket if entry else None

    def list(self) -> builtins.list[Ticket]:
        return self._sent.tickets()


def _apply(entries: dict[str, Entry], record: dict[str, Any]) -> None:
    event, number = record["event"], record["number"]
    if event == "filed":
        if number in entries:  # never happens under the lock; the first one stands
            return
        ticket = Ticket.from_json(record["ticket"])
        entries[number] = Entry(ticket=ticket, ref=record["ref"], refs={record["ref"]})
        return
    entry = entries.get(number)
    if entry is None:
        raise ValueError(f"{event} for unknown ticket")
    at = datetime.fromisoformat(record["at"])
    if event == "message":
        ticket = entry.ticket.with_message(at, record["author"], record["body"])
        files = [Attachment.model_validate(a) for a in record.get("attachments") or []]
        if files:
            ticket = ticket.model_copy(update={"attachments": [*ticket.attachments, *files]})
        entry.ticket = ticket
    elif event == "status":
        action = record.get("next_action")
        entry.ticket = entry.ticket.with_status(
            record["status"], at, NextAction(action) if action else None
        )
    else:
        raise ValueError(f"unknown event {event!r}")
    entry.refs.add(record["ref"])


# --- attachments, as every write-only destination describes them


def number_for(prefix: str, key: str) -> str:
    """A stable number from the key, so a re-send (or a second gateway) names it the same."""
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:12]


def content_type(name: str) -> str:
    kind, encoding = mimetypes.guess_type(name)
    # "bundle.tar.gz" is a gzip file to a mail client, not a tar it could open as it is
    if encoding in _COMPRESSED:
        return _COMPRESSED[encoding]
    return kind or "application/octet-stream"


_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def describe(attachments: Mapping[str, bytes] | None) -> builtins.list[tuple[Attachment, bytes]]:
    """Each attachment with its ticket metadata; an unsafe name is a permanent error."""
    described = []
    for name, data in (attachments or {}).items():
        base = os.path.basename(name.replace("\\", "/"))
        if not base or base.startswith(".") or "\0" in base or base != name:
            raise SinkError(
                f"unsafe attachment name {name!r}: use a plain file name", permanent=True
            )
        meta = Attachment(
            name=name,
            content_type=content_type(name),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        described.append((meta, bytes(data)))
    return described


def renamed(
    files: builtins.list[tuple[Attachment, bytes]], ticket: Ticket
) -> builtins.list[tuple[Attachment, bytes]]:
    """``files`` under names ``ticket`` does not have yet: a later file never shadows one."""
    taken = {a.name for a in ticket.attachments}
    out = []
    for meta, data in files:
        name = free_name(meta.name, taken)
        taken.add(name)
        out.append((meta.model_copy(update={"name": name}), data))
    return out


def with_attachments(ticket: Ticket, files: builtins.list[tuple[Attachment, bytes]]) -> Ticket:
    if not files:
        return ticket
    return ticket.model_copy(
        update={"attachments": [*ticket.attachments, *(meta for meta, _ in files)]}
    )
