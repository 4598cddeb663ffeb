"""What the write-only destinations (e-mail, a webhook) share: reading back from the outbox.

An e-mail intake or a webhook takes tickets but cannot be asked about them afterwards, yet the
agent must still answer "is this incident's ticket already filed?" before it files, or a
restart would e-mail the helpdesk again. The answer is the outbox's own record of what it
delivered to the destination (``agent.delivery.outbox.Record``): every delivered item keeps
the ticket as the destination took it, so ``find_by_key``, ``find_open``, ``get`` and ``list``
read the same rows that say what was delivered. One engine, one record: there is no log of
the sinks' own. The status of a ticket there is the status the agent sent, never the
helpdesk's (nothing can be read back), so ``readable`` is False and no status read from here is
news to anyone.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from agent.delivery.outbox import Record
from agent.delivery.sinks.base import SinkError, content_type, free_name, same_problem
from rma.tickets import Attachment, Category, Ticket


class ReadFromOutbox:
    """The reading half of the Sink contract for a destination that cannot be read back."""

    name: str
    readable = False  # its statuses are the agent's own: ``Ticketing.sync`` skips it
    _record: Record

    def _read_from(self, state_dir: Path | str) -> None:
        self._record = Record(state_dir, self.name)

    def find_by_key(self, key: str) -> Ticket | None:
        return next((t for t in self._record.tickets().values() if t.key == key), None)

    def find_open(
        self, site: str, counters: Iterable[str], category: Category | str
    ) -> Ticket | None:
        counters = builtins.list(counters)
        matches = [t for t in self.list() if same_problem(t, site, counters, category)]
        return matches[-1] if matches else None

    def get(self, number: str) -> Ticket | None:
        return self._record.tickets().get(number)

    def list(self) -> builtins.list[Ticket]:
        return builtins.list(self._record.tickets().values())


# --- attachments, as every write-only destination describes them


def number_for(prefix: str, key: str) -> str:
    """A stable number from the key, so a re-send (or a second gateway) names it the same."""
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:12]


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
