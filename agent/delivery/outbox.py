"""Durable delivery of everything that leaves the gateway: tickets, their follow-ups, and the
notices (e-mails to the requester and CC, chat posts) that tell people about them.

An item enters the outbox in the same SQLite transaction as the change that caused it (the
incident change for a ticket or a follow-up, the follow-up or the delivery for its notice), so
a crash can lose neither; a worker then delivers each item with backoff. The rules that make
ticket delivery exactly-once across crashes, kills and network outages:

- before anything is sent, the item is marked ``sending`` (committed). An item found in
  ``sending`` or ``unknown`` after a restart or a timeout may or may not have reached the
  destination, so it is never sent blindly again: the destination is first searched for the
  ticket's idempotency key, and only if it is not there is the ticket filed;
- before a new ticket is filed, the destination is searched for an open ticket about the same
  counter and problem (one a person may have raised by hand); the agent then adds a message to
  that one instead of opening another;
- a message has no key to search by, so one tried before (the message that joins a ticket
  raised by hand, a follow-up) is looked for on the ticket first and sent only if it is not
  there: the joining message carries ``[ffc-key:<key>]``, and a follow-up is there when the
  ticket holds more copies of its text than this outbox delivered before. A follow-up's files
  (a session transcript) go with its message, so they are sent exactly when it is; the same
  files on the same ticket with the same text are one follow-up, whenever they were queued;
- errors are transient (timeouts, 5xx, 429: retried with exponential backoff and jitter) or
  permanent (other 4xx, refused credentials: the item fails and stays failed). A transient
  failure still there ``give_up_after`` (``agent.delivery_give_up_hours``, 72) after the item
  was queued (or sent again by ``tickets retry``) fails it too. Failed items are reported by
  the ``agent.outbox`` check (fed by ``Outbox.state``), not retried forever;
- an item's files are its own: they are written, and synced, into a new folder named by a
  random key (``outbox/<uuid>/``) before the row that names them (that key, and each file's
  name and sha256) is inserted, so the row and its files appear in the one commit. An item
  rolled back or killed before its commit leaves a folder no row names, which ``sweep``
  removes once it is 30 minutes old. A committed id is never handed out again
  (AUTOINCREMENT); one rolled back may be, so no file is keyed by an id. Only the files the
  row names are sent, each checked against its hash: a missing or changed file fails the item
  rather than send other bytes;
- one process at a time delivers from a state directory (the service, ``check`` from Nagios,
  ``tickets sync`` by hand): ``deliver`` holds an exclusive ``flock`` on
  ``<state_dir>/outbox/.lock`` for its pass, and a pass that finds it held delivers nothing
  (its items go with the holder's next pass). The kernel drops the lock of a killed process,
  so an item found ``sending`` by the holder was left by a dead process, never by a live one
  still waiting for its answer. Each item is still claimed by compare-and-set (``_claim``).

A ``task`` item puts a line on a ticket's task list (``add_task``, in the sinks that keep one:
the local store, RT); tried before, it is added only if the ticket does not show it yet. A
follow-up may carry a ``stage`` (an escalation to the next support line: ``set_stage``), applied
only when the ticket is not in that stage already.

A ticket's diagnostics bundle carries the ticket's number (its report's header, its
manifest's ``incident.ticket``), which the destination gives only when it files the ticket. So
where that number comes from a destination that can be read back (the local store, RT), the
ticket is filed without the bundle, saying that it follows, and the bundle is its first
follow-up: a ``message`` item queued in the same transaction, which waits for the ticket's
number like every follow-up, then numbers the bundle staged with it (``rma.bundle.numbered``:
the same staged bytes and number give the same archive on every try) and sends it with a
message that carries ``[ffc-bundle:<key>]``. The ticket is read first on every try, and a
ticket with that marker has its bundle (from an earlier try cut off by a kill, or another
gateway that filed it first): one bundle per ticket. E-mail and webhooks, which cannot be read
back, take the bundle with the ticket, as built.

Notices (kinds ``email`` and ``chat``) go through the same claim, retry and failure rules to a
notification channel (``Channel``) instead of a ticket sink. They are rendered and redacted
when queued, keyed by (ticket key, event kind, detail hash, channel) so one change is one
notice, and carry no secret: a chat item names its configured channel, and the channel looks
its webhook URL up when it sends. ``next_attempt_at`` is their "not before" (a site's quiet
hours); one still undelivered ``GIVE_UP_AFTER`` after it was queued fails (the news is stale).
A notice cannot be searched for, so an uncertain one is sent again: at least once, and an
e-mail's copies share their Message-ID. Within one ``deliver`` call a channel destination that
failed transiently is not tried again, so a hung chat server costs one timeout per pass.

Each delivered ticket item keeps the destination's answer (the ticket as it took it) in its
``result``: that is the record (``Record``) an e-mail intake or a webhook, which cannot be read
back, answers ``find_by_key``, ``get`` and ``list`` from. Searching such a destination is
reading that record, so for them "exactly once" weakens to at least once: a kill between the
server's yes and the record of it sends the ticket again, with the same Message-ID or
Idempotency-Key for the receiver to drop. A request to such a destination that got no answer
(a receiver that answers after our read timeout) is sent once more, with the same key, after
``RESEND_UNANSWERED`` and with ``PATIENCE`` times the timeout for its answer (``patient()``
on the sink, where it has one); unanswered again, the item fails instead of being sent on
every pass. So a late receiver gets one POST, at most two with one Idempotency-Key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from agent.delivery.sinks.base import OutcomeUnknown, Sink, SinkError
from agent.store import DB_NAME, Store, StoreError, StoreFull, is_disk_full
from diagnostics.checks.agent import OutboxHealth, OutboxState, SinkState
from diagnostics.model import Finding, plural
from rma.bundle import numbered
from rma.tickets import Task, Ticket

log = logging.getLogger(__name__)

PENDING, SENDING, UNKNOWN, DELIVERED, FAILED = (
    "pending",
    "sending",
    "unknown",
    "delivered",
    "failed",
)
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
EMAIL, CHAT = "email", "chat"
NOTICE_KINDS = (EMAIL, CHAT)  # the rest ("create", "message", "status", "task") go to sinks
TAKEN = "another process took it first"  # a skipped item's error: none of this pass's business
GIVE_UP_AFTER = timedelta(days=3)  # the longest SLA: a notice older than that is stale news
GIVE_UP_TRANSIENT = timedelta(hours=72)  # the default of agent.delivery_give_up_hours
# a destination that cannot be searched (a webhook, e-mail) and did not answer in time: the
# one re-send waits this long first, and PATIENCE times as long for its answer
RESEND_UNANSWERED = timedelta(minutes=15)
PATIENCE = 4
SWEEP_AFTER = timedelta(minutes=30)  # a staged folder no item names, untouched this long
LOCK_NAME = ".lock"  # in the attachments folder, beside what it guards
CRASH_ENV = "FFC_AGENT_TEST_CRASH_AT"


def crashpoint(step: str) -> None:
    """Die here, as SIGKILL would, when a test asks for it: how exactly-once is proven."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class Channel(Protocol):
    """Where notices go (``agent.delivery.notify`` has the e-mail and the chat channel)."""

    name: str

    def destination(self, payload: Mapping[str, Any]) -> str:
        """Which server this notice goes to: one that failed is not tried again this pass."""
        ...

    def hold_until(self, payload: Mapping[str, Any], now: datetime) -> datetime | None:
        """The end of the quiet hours ``now`` is in, for this notice; None when not quiet."""
        ...

    def send(self, payload: Mapping[str, Any], now: datetime) -> None:
        """Send once; ``SinkError`` (``permanent`` or not) when it could not be."""
        ...


@dataclass(frozen=True)
class Item:
    id: int
    sink: str  # a ticket sink's name, or a notification channel's
    kind: str  # "create", "message", "status", "task"; or a notice: "email", "chat"
    key: str  # the ticket's idempotency key
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    number: str | None
    incident_id: int | None
    created_at: datetime
    tried_since: datetime | None = None  # since ``tickets retry``; None: since created_at


@dataclass(frozen=True)
class Delivery:
    item: Item
    # "delivered", "joined", "found", "retry", "unknown", "failed", "skipped"; "held" (quiet)
    outcome: str
    number: str | None = None
    error: str = ""


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


class Outbox:
    """The outbox of one state directory. Items are rows of the store's ``outbox`` table;
    an item's attachments are files under ``<state_dir>/outbox/<its own random key>/``, named
    with their sha256 in its row. ``give_up_after``: how long transient failures are retried
    before the item fails for good (``agent.delivery_give_up_hours``)."""

    def __init__(
        self,
        store: Store,
        state_dir: Path,
        *,
        rng: random.Random | None = None,
        give_up_after: timedelta = GIVE_UP_TRANSIENT,
    ):
        self.store = store
        self.files = Path(state_dir) / "outbox"
        self.lock_path = self.files / LOCK_NAME
        self.deferred = False  # the last pass found another process delivering, and left it
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.give_up_after = give_up_after
        self._swept = float("-inf")
        self._kept_for: Path | None = None
        if store.moved_aside is not None:
            self._keep_with(store.moved_aside)

    def _keep_with(self, aside: Path) -> None:
        """The store was found damaged and moved aside (at open, or by ``Store.recover`` in
        the service): the attachment folders of its items go with it, into
        ``<aside>-outbox``, so the old outbox stays whole beside the old file and the sweep
        never takes them. Folders the fresh store names already stay."""
        self._kept_for = aside
        if not self.files.is_dir():
            return
        named = {
            json.loads(files)["dir"]
            for (files,) in self.store._db.execute(
                "SELECT files FROM outbox WHERE files IS NOT NULL"
            )
        }
        target = aside.with_name(f"{aside.name}-outbox")
        moved = 0
        try:
            for entry in self.files.iterdir():
                if entry.is_dir() and entry.name not in named:
                    target.mkdir(mode=0o700, exist_ok=True)
                    entry.rename(target / entry.name)
                    moved += 1
        except OSError as exc:
            log.warning("outbox: cannot keep attachments with %s: %s", aside, exc)
        if moved:
            log.warning("outbox: the damaged store's attachments are kept in %s", target.name)

    # -- enqueue (inside the caller's transaction) ---------------------------------------------

    def enqueue_ticket(
        self,
        sinks: Sequence[Sink],
        ticket: Ticket,
        *,
        incident_id: int | None,
        attachments: Mapping[str, bytes] | None = None,
        join: bool = True,
        bundle: str | None = None,
        now: datetime,
    ) -> list[int]:
        """One ``create`` item per destination. Call inside ``store.transaction()`` together
        with the incident change, so both happen or neither does. ``join=False`` (a ticket a
        person raises by hand) files a new ticket even beside an open one on the same problem.

        ``bundle`` names the attachment that is the diagnostics bundle. A destination that
        numbers the ticket when it files it and can be read back (the local store, RT) gets
        it as the ticket's first follow-up, numbered at delivery (``rma.bundle.numbered``),
        and the ticket says that it follows; the others (e-mail, a webhook) get it with the
        ticket, as built. Returns the ids of the ``create`` items."""
        payload: dict[str, Any] = {"ticket": ticket.to_json()}
        if not join:
            payload["join"] = False
        files = dict(attachments or {})
        later = bundle if bundle is not None and bundle in files else None
        ids = []
        for sink in sinks:
            if later is None or not getattr(sink, "readable", True):
                ids.append(
                    self._enqueue(sink.name, "create", ticket.key, payload, incident_id, files, now)
                )
                continue
            assert later is not None
            coming = ticket.with_message(ticket.updated_at, "ffc-agent", bundle_follows(later))
            ids.append(
                self._enqueue(
                    sink.name,
                    "create",
                    ticket.key,
                    {**payload, "ticket": coming.to_json()},
                    incident_id,
                    {n: d for n, d in files.items() if n != later},
                    now,
                )
            )
            self._enqueue(
                sink.name,
                "message",
                ticket.key,
                {
                    "author": "ffc-agent",
                    "body": bundle_attached(later, ticket.key),
                    "at": _iso(now),
                    "status": None,
                    "attachments": {later: hashlib.sha256(files[later]).hexdigest()},
                    "numbered": later,
                },
                incident_id,
                {later: files[later]},
                now,
            )
        return ids

    def enqueue_message(
        self,
        sinks: Sequence[Sink],
        key: str,
        *,
        author: str,
        body: str,
        at: datetime,
        status: str | None = None,
        stage: str | None = None,
        incident_id: int | None = None,
        attachments: Mapping[str, bytes] | None = None,
        number: str | None = None,
        now: datetime,
    ) -> list[int]:
        """A follow-up on the ticket ``key``: a message, optionally with files, a status
        change and a hand-over to support line ``stage`` (an escalation; only to sinks with
        ``set_stage``). ``number`` names the ticket in a destination this outbox did not file
        it in (a ticket raised by hand, or by another gateway); give it for one sink at a time."""
        payload: dict[str, Any] = {"author": author, "body": body, "at": _iso(at), "status": status}
        if stage is not None:
            payload["stage"] = stage
        if attachments:
            # the files' hashes make another file another follow-up (their bytes stay on disk)
            payload["attachments"] = {
                name: hashlib.sha256(data).hexdigest() for name, data in attachments.items()
            }
        if number is not None:
            payload["number"] = number
        kind = "status" if status else "message"
        return [
            self._enqueue(s.name, kind, key, payload, incident_id, attachments, now) for s in sinks
        ]

    def enqueue_task(
        self,
        sinks: Sequence[Sink],
        key: str,
        task: Task,
        *,
        at: datetime,
        number: str | None = None,
        incident_id: int | None = None,
        now: datetime,
    ) -> list[int]:
        """A ``task`` item: add ``task`` to the ticket ``key``'s task list (or update the task
        of its name) in each of ``sinks`` that keeps tasks (``add_task``); the others are
        skipped. ``number`` as for ``enqueue_message``."""
        payload: dict[str, Any] = {"task": task.model_dump(mode="json"), "at": _iso(at)}
        if number is not None:
            payload["number"] = number
        return [
            self._enqueue(s.name, "task", key, payload, incident_id, None, now)
            for s in sinks
            if hasattr(s, "add_task")
        ]

    def enqueue_notice(
        self,
        channel: str,
        kind: str,
        key: str,
        event: str,
        payload: Mapping[str, Any],
        *,
        not_before: datetime,
        now: datetime,
    ) -> tuple[Item, bool]:
        """One notice (kind ``email`` or ``chat``) about ticket ``key`` to ``channel``, once per
        ``event`` (the event's own key: its kind and a hash of its detail). ``payload`` is
        already rendered and redacted. Returns the item and whether it is new. Call inside the
        transaction of the change it announces."""
        assert kind in NOTICE_KINDS
        digest = hashlib.sha256(event.encode()).hexdigest()[:16]
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT * FROM outbox WHERE sink = ? AND kind = ? AND key = ? AND digest = ?",
                (channel, kind, key, digest),
            ).fetchone()
            if row is not None:
                return _item(row), False
            cur = db.execute(
                "INSERT INTO outbox (sink, kind, key, digest, payload, state, attempts, "
                "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?) RETURNING *",
                (
                    channel,
                    kind,
                    key,
                    digest,
                    json.dumps({**payload, "event": event}, ensure_ascii=False),
                    PENDING,
                    _iso(max(not_before, now)),
                    _iso(now),
                ),
            )
            return _item(cur.fetchone()), True

    def _enqueue(
        self,
        sink: str,
        kind: str,
        key: str,
        payload: dict[str, Any],
        incident_id: int | None,
        attachments: Mapping[str, bytes] | None,
        now: datetime,
    ) -> int:
        identity = payload
        if kind != "create" and payload.get("attachments"):
            # a file attached to a ticket is attached once, however often (and when) it is asked
            identity = {k: v for k, v in payload.items() if k != "at"}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT id FROM outbox WHERE sink = ? AND kind = ? AND key = ? AND digest = ?",
                (sink, kind, key, digest),
            ).fetchone()
            if row is not None:
                return int(row[0])  # the same follow-up twice is one follow-up
            # The files are staged, and made durable, under a key of their own before the row
            # that names them is written: the row and its files appear in the one commit, and a
            # rollback or a kill before it leaves a folder no row names (swept later).
            files = self._stage(attachments) if attachments else None
            try:
                cur = db.execute(
                    "INSERT INTO outbox (sink, kind, key, digest, payload, state, attempts, "
                    "next_attempt_at, incident_id, created_at, files) "
                    "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                    (
                        sink,
                        kind,
                        key,
                        digest,
                        json.dumps(payload),
                        PENDING,
                        _iso(now),
                        incident_id,
                        _iso(now),
                        json.dumps(files) if files else None,
                    ),
                )
            except BaseException:
                if files:
                    shutil.rmtree(self.files / files["dir"], ignore_errors=True)
                raise
            crashpoint("after_insert")
            return int(cur.lastrowid or 0)

    def _stage(self, attachments: Mapping[str, bytes]) -> dict[str, Any]:
        """Write ``attachments`` into a new folder of their own, synced to disk; returns what
        the row records of them. A full disk is ``StoreFull``, as a failed write to the store."""
        token = uuid.uuid4().hex
        folder = self.files / token
        try:
            self.files.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
            for name, data in attachments.items():
                if not _safe_name(name):
                    raise SinkError(f"an attachment may not be called {name!r}", permanent=True)
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            crashpoint("after_staging")
            _fsync_dir(folder)
            _fsync_dir(self.files)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            if is_disk_full(exc):
                raise StoreFull(f"outbox {self.files}: the disk is full") from None
            raise StoreError(
                f"outbox {self.files}: cannot write attachments: {exc.strerror or exc}"
            ) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return {
            "dir": token,
            "sha256": {
                name: hashlib.sha256(data).hexdigest() for name, data in attachments.items()
            },
        }

    # -- reading ---------------------------------------------------------------------------------

    def items(
        self,
        *,
        states: Sequence[str] | None = None,
        sink: str | None = None,
        key: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[Item]:
        """The outbox's items, oldest first, of these states, destination, ticket and kinds
        (each filter only when given). The outbox keeps every item it ever delivered: a
        question about one ticket asks for that ticket's, not for all of them (read and
        parsed for each ticket each cycle, those grew with every ticket ever filed)."""
        where: list[str] = []
        args: list[Any] = []
        for column, values in (
            ("state", states),
            ("sink", None if sink is None else [sink]),
            ("key", None if key is None else [key]),
            ("kind", kinds),
        ):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args += list(values)
        clause = f" WHERE {' AND '.join(where)}" if where else ""  # our columns; values bound
        query = "SELECT * FROM outbox" + clause  # noqa: S608
        rows = self.store._db.execute(query + " ORDER BY id", args).fetchall()
        return [_item(r) for r in rows]

    def ticket(self, key: str) -> Ticket | None:
        """The ticket ``key`` as it was queued, with the number of its first delivery."""
        row = self.store._db.execute(
            "SELECT payload, number FROM outbox WHERE kind = 'create' AND key = ? "
            "ORDER BY (state = ?) DESC, id LIMIT 1",
            (key, DELIVERED),
        ).fetchone()
        if row is None:
            return None
        return Ticket.from_json({**json.loads(row[0])["ticket"], "number": row[1]})

    def depth(self, now: datetime) -> dict[str, tuple[int, float]]:
        """Per destination: items not yet delivered, and the age of the oldest, in seconds."""
        out: dict[str, tuple[int, float]] = {}
        for item in self.items(states=(PENDING, SENDING, UNKNOWN)):
            n, age = out.get(item.sink, (0, 0.0))
            out[item.sink] = (n + 1, max(age, (now - item.created_at).total_seconds()))
        return out

    def attachments(self, item_id: int) -> dict[str, bytes]:
        """The files of item ``item_id``: exactly those its row names, each checked against
        its sha256. A file missing or changed is a permanent ``SinkError``: nothing but the
        item's own bytes is ever sent."""
        row = self.store._db.execute("SELECT files FROM outbox WHERE id = ?", (item_id,)).fetchone()
        if row is None or not row[0]:
            return {}
        files = json.loads(row[0])
        folder = self.files / files["dir"]
        if "sha256" not in files:
            # queued by an agent before schema 6, in a folder named by its id: what is there
            if not folder.is_dir():
                return {}
            return {
                p.name: p.read_bytes()
                for p in sorted(folder.iterdir())
                if not p.name.startswith(".")
            }
        out: dict[str, bytes] = {}
        for name, digest in files["sha256"].items():
            try:
                data = (folder / name).read_bytes()
            except OSError as exc:
                raise SinkError(
                    f"outbox item {item_id}: its file {name} cannot be read from {folder}: "
                    f"{exc.strerror or exc}",
                    permanent=True,
                ) from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise SinkError(
                    f"outbox item {item_id}: its file {name} in {folder} changed since it was "
                    "queued",
                    permanent=True,
                )
            out[name] = data
        return out

    def _folder(self, item_id: int) -> Path | None:
        row = self.store._db.execute("SELECT files FROM outbox WHERE id = ?", (item_id,)).fetchone()
        if row is None or not row[0]:
            return None
        return self.files / json.loads(row[0])["dir"]

    def sweep(self, *, older_than: timedelta = SWEEP_AFTER) -> list[str]:
        """Remove the attachment folders no undelivered item names: staged by a transaction
        that rolled back or a process killed before its commit, or left by a delivered item
        (a kill between its record and the clean-up). Only folders untouched for
        ``older_than`` (by the file system's clock), so one being staged now is never taken.
        Returns the folders removed."""
        try:
            entries = list(self.files.iterdir())
        except OSError:
            return []
        cutoff = time.time() - older_than.total_seconds()
        old = []
        for entry in entries:
            try:
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    old.append(entry)
            except OSError:
                continue
        if not old:
            return []
        named = {
            json.loads(files)["dir"]
            for (files,) in self.store._db.execute(
                "SELECT files FROM outbox WHERE files IS NOT NULL AND state != ?", (DELIVERED,)
            )
        }
        removed = []
        for entry in old:
            if entry.name not in named:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        if removed:
            log.info("outbox: removed %s no item names", plural(len(removed), "attachment folder"))
        return removed

    # -- delivery ----------------------------------------------------------------------------------

    def deliver(
        self,
        sinks: Sequence[Sink | Channel],
        now: datetime,
        *,
        limit: int = 100,
        heartbeat: Callable[[], object] = lambda: None,
        kinds: Sequence[str] | None = None,
        announce: Callable[[Delivery], object] | None = None,
    ) -> list[Delivery]:
        """Deliver every due item (of ``kinds``, default all) once, to the ticket sinks and
        notification channels in ``sinks``; never raises for a destination's failure.
        ``announce`` is called with each ticket item delivered, inside the transaction that
        records it, so the notice it queues is kept exactly when the delivery is.

        One process at a time delivers from a state directory: the pass holds an exclusive
        ``flock`` on ``<state_dir>/outbox/.lock``, and a pass that finds it held (the service
        delivering while ``check`` or ``tickets sync`` runs beside it) delivers nothing and
        returns ``[]``; what it queued goes with the holder's next pass. So an item found
        ``sending`` was left by a process that died, never one still sending."""
        with self._delivery_lock() as mine:
            self.deferred = not mine
            if not mine:
                log.info(
                    "another ffc-agent process is delivering from %s: its passes deliver "
                    "what is queued",
                    self.files.parent,
                )
                return []
            if self.store.moved_aside not in (None, self._kept_for):
                self._keep_with(self.store.moved_aside)  # recovered while running
            if time.monotonic() - self._swept >= SWEEP_AFTER.total_seconds() / 3:
                self.sweep()  # the first pass of a process, then every ten minutes
                self._swept = time.monotonic()
            return self._deliver(sinks, now, limit, heartbeat, kinds, announce)

    @contextlib.contextmanager
    def _delivery_lock(self) -> Iterator[bool]:
        """The state directory's delivery lock, taken without waiting: yields whether this
        process holds it. The kernel drops it when the holder dies, SIGKILL included."""
        try:
            self.files.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("outbox: cannot open %s: %s", self.lock_path, exc.strerror or exc)
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _deliver(
        self,
        sinks: Sequence[Sink | Channel],
        now: datetime,
        limit: int,
        heartbeat: Callable[[], object],
        kinds: Sequence[str] | None,
        announce: Callable[[Delivery], object] | None,
    ) -> list[Delivery]:
        by_name = {s.name: s for s in sinks}
        query = "SELECT * FROM outbox WHERE state IN (?, ?, ?) AND next_attempt_at <= ?"
        args: list[Any] = [PENDING, SENDING, UNKNOWN, _iso(now)]
        if kinds is not None:
            query += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        rows = self.store._db.execute(query + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        done: list[Delivery] = []
        down: dict[str, str] = {}  # notification destinations that failed in this pass
        for row in rows:
            item = _item(row)
            sink = by_name.get(item.sink)
            if sink is None:
                done.append(Delivery(item, "skipped", error="destination no longer configured"))
                continue
            if item.kind in NOTICE_KINDS:
                done.append(self._deliver_notice(sink, item, now, down))  # type: ignore[arg-type]
                heartbeat()
                continue
            if item.kind != "create" and not self._parent_number(item):
                if self._parent_failed(item):
                    # its ticket was refused for good: the follow-up can never be delivered
                    self._mark(item.id, FAILED, error="its ticket was refused by the destination")
                    done.append(Delivery(item, "failed", error="its ticket was refused"))
                else:
                    done.append(Delivery(item, "skipped", error="waiting for the ticket itself"))
                continue
            done.append(self._deliver_one(sink, item, now, announce))  # type: ignore[arg-type]
            heartbeat()  # a slow helpdesk must not look like a hung agent
        return done

    def _deliver_notice(
        self, channel: Channel, item: Item, now: datetime, down: dict[str, str]
    ) -> Delivery:
        hold = channel.hold_until(item.payload, now)
        if hold is not None and hold > now:  # a retry that fell into the quiet hours
            self._mark(item.id, item.state, next_attempt_at=hold)
            return Delivery(item, "held")
        if now - item.created_at > GIVE_UP_AFTER:
            error = f"gave up after {GIVE_UP_AFTER.days} days: {item.last_error}".rstrip(": ")
            self._mark(item.id, FAILED, error=error)
            log.warning("%s: notice %s dropped: %s", item.sink, item.payload.get("event"), error)
            return Delivery(item, "failed", error=error)
        destination = channel.destination(item.payload)
        if destination in down:
            return Delivery(item, "skipped", error=f"not tried: {down[destination]}")
        if not self._claim(item):  # committed before any send
            return Delivery(item, "skipped", error=TAKEN)
        crashpoint("before_send")
        try:
            channel.send(item.payload, now)
            crashpoint("after_send")
        except SinkError as exc:
            error = str(exc)
            if exc.permanent:
                self._mark(item.id, FAILED, error=error)
                log.error("%s: notice %s cannot be sent: %s", item.sink, item.key, error)
                return Delivery(item, "failed", error=error)
            if item.attempts == 0:  # logged when it first fails, not on every retry
                log.warning("%s: notice %s failed, will retry: %s", item.sink, item.key, error)
            self._retry(item, PENDING, error, now, exc.retry_after)
            down[destination] = error
            return Delivery(item, "retry", error=error)
        self._mark(item.id, DELIVERED, delivered_at=now)
        if item.attempts:
            log.info("%s: notice %s sent after an earlier failure", item.sink, item.key)
        return Delivery(item, "delivered")

    def _deliver_one(
        self,
        sink: Sink,
        item: Item,
        now: datetime,
        announce: Callable[[Delivery], object] | None = None,
    ) -> Delivery:
        uncertain = item.state in (SENDING, UNKNOWN)
        searchable = getattr(sink, "readable", True)
        if not self._claim(item):  # committed before any send
            return Delivery(item, "skipped", error=TAKEN)
        crashpoint("before_send")
        # a destination that cannot be searched gets an uncertain item again with more
        # patience for its answer (a receiver that answers late has the first copy)
        patient = getattr(sink, "patient", None)
        wait = patient(PATIENCE) if uncertain and not searchable and patient else nullcontext()
        try:
            with wait:
                if item.kind == "create":
                    answer, outcome = self._create(sink, item, uncertain)
                elif item.kind == "task":
                    answer, outcome = self._task(sink, item, uncertain or item.attempts > 0)
                else:
                    answer, outcome = self._follow_up(sink, item, uncertain or item.attempts > 0)
            number = answer.number if answer is not None else self._parent_number(item)
            crashpoint("after_send")
        except OutcomeUnknown as exc:
            return self._unknown(sink, item, exc, now, uncertain=uncertain, searchable=searchable)
        except SinkError as exc:
            if exc.permanent:
                self._mark(item.id, FAILED, error=str(exc))
                log.error("%s refused %s for good: %s", sink.name, item.key, exc)
                return Delivery(item, "failed", error=str(exc))
            if self._given_up(item, str(exc), now):
                return Delivery(item, "failed", error=self._give_up_error(str(exc)))
            self._retry(item, PENDING, str(exc), now, exc.retry_after)
            return Delivery(item, "retry", error=str(exc))
        delivery = Delivery(item, outcome, number)
        with self.store.transaction():
            # the destination's answer is the record a write-only destination is read from
            result = json.dumps(answer.to_json()) if answer is not None else None
            self._mark(item.id, DELIVERED, number=number, delivered_at=now, result=result)
            if item.kind == "create" and item.incident_id is not None and number:
                self.store.set_incident_ticket(item.incident_id, item.key, number)
            if announce is not None:
                announce(delivery)
        folder = self._folder(item.id)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return delivery

    def _unknown(
        self,
        sink: Sink,
        item: Item,
        exc: OutcomeUnknown,
        now: datetime,
        *,
        uncertain: bool,
        searchable: bool,
    ) -> Delivery:
        """The request went out and no answer came. A destination that can be searched is
        searched before the next try; one that cannot (a webhook, e-mail) gets the item once
        more, with the same Idempotency-Key or Message-ID, after ``RESEND_UNANSWERED``, and
        never a third time: the item then fails, and ``agent.outbox`` says so."""
        error = str(exc)
        if not searchable and uncertain:
            error = (
                f"no answer to two sends; it may have arrived, so it is not sent again "
                f"(raise the destination's timeout_seconds, then `ffc-agent tickets retry`): "
                f"{error}"
            )
            self._mark(item.id, FAILED, error=error)
            log.error("%s: %s", sink.name, error)
            return Delivery(item, "failed", error=error)
        if self._given_up(item, error, now):
            return Delivery(item, "failed", error=self._give_up_error(error))
        if searchable:
            self._retry(item, UNKNOWN, error, now)
            log.warning(
                "%s: outcome of %s unknown, will search before retrying: %s",
                sink.name,
                item.key,
                error,
            )
        else:
            self._mark(item.id, UNKNOWN, error=error, next_attempt_at=now + RESEND_UNANSWERED)
            log.warning(
                "%s: no answer for %s; sent once more, with the same key, in %d minutes",
                sink.name,
                item.key,
                RESEND_UNANSWERED.total_seconds() // 60,
            )
        return Delivery(item, "unknown", error=error)

    def _given_up(self, item: Item, error: str, now: datetime) -> bool:
        """Fail ``item`` for good when it has failed transiently for ``give_up_after``."""
        if now - (item.tried_since or item.created_at) < self.give_up_after:
            return False
        self._mark(item.id, FAILED, error=self._give_up_error(error))
        log.error("%s: gave up on %s: %s", item.sink, item.key, self._give_up_error(error))
        return True

    def _give_up_error(self, error: str) -> str:
        hours = self.give_up_after.total_seconds() / 3600
        return f"still failing after {hours:g} hours, given up: {error}"

    def _create(self, sink: Sink, item: Item, uncertain: bool) -> tuple[Ticket | None, str]:
        """File the ticket, or find it there; returns the ticket as the destination has it."""
        ticket = Ticket.from_json(item.payload["ticket"])
        if uncertain:
            found = sink.find_by_key(item.key)
            if found is not None:
                return found, "found"
        existing = None
        if item.payload.get("join", True):
            existing = sink.find_open(ticket.site, ticket.counters, ticket.category)
        if existing is not None and existing.key != ticket.key and existing.number:
            # The joined ticket keeps its own key, so find_by_key cannot tell whether an earlier
            # try got there (a kill after sending, a lost answer): the message carries ours.
            marker = f"[ffc-key:{ticket.key}]"
            tried = uncertain or item.attempts > 0
            if tried and any(marker in m.body for m in existing.messages):
                return existing, "found"
            body = (
                f"The agent found this problem again and adds its evidence here rather than "
                f"open a second ticket.\n\n{ticket.subject}\n\n"
                + ticket.comment.as_text()
                + f"\n\n{marker}"
            )
            joined = sink.add_message(existing.number, "ffc-agent", body, ticket.updated_at)
            return joined, "joined"
        filed = sink.file(ticket, self.attachments(item.id))
        return filed, "delivered"

    def _follow_up(self, sink: Sink, item: Item, tried: bool) -> tuple[Ticket | None, str]:
        """Send what of the follow-up is not on the ticket yet; returns the ticket after it."""
        number = self._parent_number(item)
        assert number is not None
        p = item.payload
        at = datetime.fromisoformat(p["at"])
        # Tried before, it may have got there (a kill after sending, a lost answer, the status
        # change failing after the message went), and a message cannot be searched by key:
        # the ticket is read first, and only what is missing is sent. A ticket's bundle is
        # looked for every time: a ticket another gateway filed first may have its bundle.
        bundle = p.get("numbered")
        current = sink.get(number) if tried or bundle else None
        answer = current
        if current is None or not self._on_ticket(item, current):
            if p.get("attachments"):
                files = self.attachments(item.id)
                if set(files) != set(p["attachments"]):
                    raise SinkError(
                        f"the files of outbox item {item.id} are gone from {self.files}",
                        permanent=True,
                    )
                if bundle:
                    files[bundle] = self._numbered(item, files[bundle], number)
                    crashpoint("before_bundle")
                answer = sink.add_message(number, p["author"], p["body"], at, files)
                if bundle:
                    crashpoint("after_bundle")
            else:
                answer = sink.add_message(number, p["author"], p["body"], at)
        if p.get("status") and hasattr(sink, "set_status"):
            if current is None or str(current.status) != p["status"]:
                changed = sink.set_status(number, p["status"], at)
                if answer is not None and len(changed.messages) < len(answer.messages):
                    # a write-only destination answers from its record, which does not have
                    # the message of this same item yet
                    changed = answer.with_status(changed.status, at, changed.next_action)
                answer = changed
        if p.get("stage") and hasattr(sink, "set_stage"):
            if current is None or str(current.stage) != p["stage"]:
                answer = sink.set_stage(number, p["stage"], at)
        if answer is not None and answer.number != number:
            answer = answer.model_copy(update={"number": number})
        return answer, "delivered"

    def _task(self, sink: Sink, item: Item, tried: bool) -> tuple[Ticket | None, str]:
        """Add the item's task; tried before, only if the ticket does not show it yet."""
        number = self._parent_number(item)
        assert number is not None
        task = Task.model_validate(item.payload["task"])
        if not hasattr(sink, "add_task"):
            raise SinkError(f"{sink.name} keeps no task list", permanent=True)
        if tried:
            current = sink.get(number)
            if current is not None and task in current.tasks:
                return current, "found"
        answer: Ticket = sink.add_task(number, task, datetime.fromisoformat(item.payload["at"]))
        return answer.model_copy(update={"number": number}), "delivered"

    def _numbered(self, item: Item, data: bytes, number: str) -> bytes:
        """The staged bundle of ``item`` with the ticket's ``number`` in it: the same bytes
        on every try. One that cannot be numbered still goes, as it was built."""
        try:
            return numbered(data, number).data
        except ValueError as exc:
            log.warning("%s: bundle of %s sent without its number: %s", item.sink, item.key, exc)
            return data

    def _on_ticket(self, item: Item, ticket: Ticket) -> bool:
        """Did an earlier try of this follow-up reach ``ticket``? It did when the ticket holds
        more copies of its text than this outbox delivered before (a text may recur: a
        problem that heals twice). A ticket's bundle is there when any message carries its
        marker (``bundle_attached``), whoever sent it: one bundle per ticket."""
        if item.payload.get("numbered"):
            marker = bundle_marker(item.key)
            return any(marker in m.body for m in ticket.messages)
        body = str(item.payload["body"]).strip()
        there = sum(m.body.strip() == body for m in ticket.messages)
        sent = sum(
            other.kind != "create" and str(other.payload.get("body", "")).strip() == body
            for other in self.items(states=(DELIVERED,), sink=item.sink, key=item.key)
        )
        return there > sent

    def _parent_failed(self, item: Item) -> bool:
        row = self.store._db.execute(
            "SELECT state FROM outbox WHERE sink = ? AND key = ? AND kind = 'create' "
            "ORDER BY id DESC LIMIT 1",
            (item.sink, item.key),
        ).fetchone()
        return row is not None and row[0] == FAILED

    def _parent_number(self, item: Item) -> str | None:
        row = self.store._db.execute(
            "SELECT number FROM outbox WHERE sink = ? AND key = ? AND kind = 'create' AND "
            "state = ? ORDER BY id DESC LIMIT 1",
            (item.sink, item.key, DELIVERED),
        ).fetchone()
        if row is None and item.kind != "create":
            return item.payload.get("number")  # a ticket this outbox did not file
        return row[0] if row else None

    def _claim(self, item: Item) -> bool:
        """Mark ``item`` sending, if it is still as this pass read it: two processes (the
        service and ``tickets sync``, say) never both send an item they both found pending."""
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE outbox SET state = ?, attempts = ? WHERE id = ? AND state = ? "
                "AND attempts = ?",
                (SENDING, item.attempts + 1, item.id, item.state, item.attempts),
            )
            return cur.rowcount == 1

    def _retry(
        self, item: Item, state: str, error: str, now: datetime, retry_after: float | None = None
    ) -> None:
        delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(item.attempts, 10)))
        delay = delay * (0.5 + self.rng.random() / 2)  # jitter: gateways must not retry in step
        if retry_after:
            delay = max(delay, timedelta(seconds=min(float(retry_after), 86400)))
        self._mark(item.id, state, error=error, next_attempt_at=now + delay)

    def _mark(self, item_id: int, state: str, **fields: Any) -> None:
        sets = ["state = ?"]
        args: list[Any] = [state]
        for name, value in fields.items():
            column = {"error": "last_error"}.get(name, name)
            sets.append(f"{column} = ?")
            args.append(_iso(value) if isinstance(value, datetime) else value)
        with self.store.transaction() as db:
            db.execute(f"UPDATE outbox SET {', '.join(sets)} WHERE id = ?", (*args, item_id))  # noqa: S608

    # -- health ----------------------------------------------------------------------------------

    def state(self, now: datetime) -> OutboxState:
        """What the ``agent.outbox`` check judges: per destination, items by state, the oldest
        undelivered one's age, and the items refused for good (read without their payloads:
        delivered items pile up over the months)."""
        db = self.store._db
        counts: dict[str, dict[str, int]] = {}
        for sink, state, n in db.execute("SELECT sink, state, COUNT(*) FROM outbox GROUP BY 1, 2"):
            counts.setdefault(sink, {})[state] = n
        oldest: dict[str, float] = {}
        for sink, created in db.execute(
            "SELECT sink, MIN(created_at) FROM outbox WHERE state IN (?, ?, ?) GROUP BY 1",
            (PENDING, SENDING, UNKNOWN),
        ):
            oldest[sink] = max(0.0, (now - datetime.fromisoformat(created)).total_seconds())
        failed: dict[str, list[tuple[str, str]]] = {}
        for sink, key, error in db.execute(
            "SELECT sink, key, last_error FROM outbox WHERE state = ? ORDER BY id", (FAILED,)
        ):
            failed.setdefault(sink, []).append((key, error or ""))
        return OutboxState(
            now=now,
            sinks={
                sink: SinkState(
                    by_state,
                    oldest.get(sink, 0.0),
                    tuple(k for k, _ in failed.get(sink, ())),
                    failed[sink][-1][1] if sink in failed else "",
                )
                for sink, by_state in counts.items()
            },
        )

    def health(self, now: datetime) -> list[Finding]:
        """The ``agent.outbox`` check's problems on this outbox, for callers outside a cycle (the
        runner runs the check itself, isolated like every other)."""
        return [f for f in OutboxHealth().run(self.state(now)) if f.problem]

    def retry_failed(self, now: datetime) -> int:
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE outbox SET state = ?, next_attempt_at = ?, tried_since = ? WHERE state = ?",
                (PENDING, _iso(now), _iso(now), FAILED),
            )
            return cur.rowcount


def bundle_follows(name: str) -> str:
    """What a ticket filed without its bundle says of it (``enqueue_ticket``)."""
    return (
        f"The diagnostics bundle ({name}) follows in the next message, once the helpdesk has "
        "numbered this ticket: its report and manifest then name the ticket's number."
    )


def bundle_marker(key: str) -> str:
    return f"[ffc-bundle:{key}]"


def bundle_attached(name: str, key: str) -> str:
    """The message that carries ticket ``key``'s bundle; its marker says it is there."""
    return (
        f"The diagnostics bundle of this ticket is attached: {name}. Its report (report.html) "
        f"and manifest name this ticket's number. {bundle_marker(key)}"
    )


def _safe_name(name: str) -> bool:
    """A plain file name: the folder's own, never a path out of it."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _item(row: Any) -> Item:
    return Item(
        id=row["id"],
        sink=row["sink"],
        kind=row["kind"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=datetime.fromisoformat(row["next_attempt_at"]),
        last_error=row["last_error"] or "",
        number=row["number"],
        incident_id=row["incident_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
        tried_since=datetime.fromisoformat(row["tried_since"]) if row["tried_since"] else None,
    )


class Record:
    """What the outbox delivered to one destination, as the destination answered: how the
    destinations that cannot be read back (e-mail, a webhook) answer ``find_by_key``, ``get``
    and ``list``. One ticket per number, as its latest delivered item left it (a ticket's
    status there is the one the agent sent, never the helpdesk's). Something sent whose
    delivery was not recorded yet (a crash between the two) is not in it: its item is still
    ``sending``, and is sent again, with the same Message-ID or Idempotency-Key.

    It reads ``<state_dir>/ffc-agent.db`` over a connection of its own, so a sink built
    without a store (``tickets list``) answers from the same record as the running agent."""

    def __init__(self, state_dir: Path | str, sink: str) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.sink = sink

    def tickets(self) -> dict[str, Ticket]:
        """The destination's tickets by number, oldest first."""
        if not self.path.exists():
            return {}
        try:
            db = sqlite3.connect(self.path, timeout=5.0)
        except sqlite3.Error as exc:
            raise SinkError(f"{self.sink}: cannot read the outbox {self.path}: {exc}") from None
        try:
            rows = db.execute(
                "SELECT number, result FROM outbox WHERE sink = ? AND state = ? AND "
                "result IS NOT NULL AND number IS NOT NULL ORDER BY id",
                (self.sink, DELIVERED),
            ).fetchall()
        except sqlite3.Error as exc:  # an older schema (not migrated yet): nothing delivered
            if "no such" in str(exc):
                return {}
            raise SinkError(f"{self.sink}: cannot read the outbox {self.path}: {exc}") from None
        finally:
            db.close()
        out: dict[str, Ticket] = {}
        for number, result in rows:
            # the latest answer stands; a dict keeps the order of first filing
            out[number] = Ticket.from_json({**json.loads(result), "number": number})
        return out
