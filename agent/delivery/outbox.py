"""Durable, exactly-once delivery of tickets and their follow-ups to every destination.

A ticket enters the outbox in the same SQLite transaction as the incident change that caused
it, so a crash can lose neither; a worker then delivers each item with backoff. The rules that
make delivery exactly-once across crashes, kills and network outages:

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
  permanent (other 4xx, refused credentials: the item fails and stays failed). A destination
  that keeps failing permanently is reported as an agent-health finding, not retried forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.delivery.sinks.base import OutcomeUnknown, Sink, SinkError
from agent.store import Store
from diagnostics.checks.outbox import OutboxHealth
from diagnostics.model import Finding, Status
from rma.tickets import Ticket

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
PERMANENT_FAILURES_FOR_FINDING = 1
CRASH_ENV = "FFC_AGENT_TEST_CRASH_AT"


def crashpoint(step: str) -> None:
    """Die here, as SIGKILL would, when a test asks for it: how exactly-once is proven."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Item:
    id: int
    sink: str
    kind: str  # "create", "message" or "status"
    key: str  # the ticket's idempotency key
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    number: str | None
    incident_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    item: Item
    outcome: str  # "delivered", "joined", "found", "retry", "unknown", "failed", "skipped"
    number: str | None = None
    error: str = ""


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


class Outbox:
    """The outbox of one state directory. Items are rows of the store's ``outbox`` table;
    attachments are files under ``<state_dir>/outbox/<item id>/``."""

    def __init__(self, store: Store, state_dir: Path, *, rng: random.Random | None = None):
        self.store = store
        self.files = Path(state_dir) / "outbox"
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security

    # -- enqueue (inside the caller's transaction) ---------------------------------------------

    def enqueue_ticket(
        self,
        sinks: Sequence[Sink],
        ticket: Ticket,
        *,
        incident_id: int | None,
        attachments: Mapping[str, bytes] | None = None,
        now: datetime,
    ) -> list[int]:
        """One ``create`` item per destination. Call inside ``store.transaction()`` together
        with the incident change, so both happen or neither does."""
        return [
            self._enqueue(
                sink.name,
                "create",
                ticket.key,
                {"ticket": ticket.to_json()},
                incident_id,
                attachments,
                now,
            )
            for sink in sinks
        ]

    def enqueue_message(
        self,
        sinks: Sequence[Sink],
        key: str,
        *,
        author: str,
        body: str,
        at: datetime,
        status: str | None = None,
        incident_id: int | None = None,
        attachments: Mapping[str, bytes] | None = None,
        number: str | None = None,
        now: datetime,
    ) -> list[int]:
        """A follow-up on the ticket ``key``: a message, optionally with files and a status
        change. ``number`` names the ticket in a destination this outbox did not file it in
        (a ticket raised by hand, or by another gateway); give it for one sink at a time."""
        payload: dict[str, Any] = {"author": author, "body": body, "at": _iso(at), "status": status}
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
            cur = db.execute(
                "INSERT INTO outbox (sink, kind, key, digest, payload, state, attempts, "
                "next_attempt_at, incident_id, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
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
                ),
            )
            item_id = int(cur.lastrowid or 0)
        if attachments:
            folder = self.files / str(item_id)
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in attachments.items():
                tmp = folder / f".{name}.tmp"
                tmp.write_bytes(data)
                tmp.replace(folder / name)
        return item_id

    # -- reading ---------------------------------------------------------------------------------

    def items(self, *, states: Sequence[str] | None = None) -> list[Item]:
        query = "SELECT * FROM outbox"
        args: list[Any] = []
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args += list(states)
        rows = self.store._db.execute(query + " ORDER BY id", args).fetchall()
        return [_item(r) for r in rows]

    def depth(self, now: datetime) -> dict[str, tuple[int, float]]:
        """Per destination: items not yet delivered, and the age of the oldest, in seconds."""
        out: dict[str, tuple[int, float]] = {}
        for item in self.items(states=(PENDING, SENDING, UNKNOWN)):
            n, age = out.get(item.sink, (0, 0.0))
            out[item.sink] = (n + 1, max(age, (now - item.created_at).total_seconds()))
        return out

    def attachments(self, item_id: int) -> dict[str, bytes]:
        folder = self.files / str(item_id)
        if not folder.is_dir():
            return {}
        return {
            p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")
        }

    # -- delivery ----------------------------------------------------------------------------------

    def deliver(
        self,
        sinks: Sequence[Sink],
        now: datetime,
        *,
        limit: int = 100,
        heartbeat: Callable[[], object] = lambda: None,
    ) -> list[Delivery]:
        """Deliver every due item once; never raises for a destination's failure."""
        by_name = {s.name: s for s in sinks}
        rows = self.store._db.execute(
            "SELECT * FROM outbox WHERE state IN (?, ?, ?) AND next_attempt_at <= ? "
            "ORDER BY id LIMIT ?",
            (PENDING, SENDING, UNKNOWN, _iso(now), limit),
        ).fetchall()
        done: list[Delivery] = []
        for row in rows:
            item = _item(row)
            sink = by_name.get(item.sink)
            if sink is None:
                done.append(Delivery(item, "skipped", error="destination no longer configured"))
                continue
            if item.kind != "create" and not self._parent_number(item):
                if self._parent_failed(item):
                    # its ticket was refused for good: the follow-up can never be delivered
                    self._mark(item.id, FAILED, error="its ticket was refused by the destination")
                    done.append(Delivery(item, "failed", error="its ticket was refused"))
                else:
                    done.append(Delivery(item, "skipped", error="waiting for the ticket itself"))
                continue
            done.append(self._deliver_one(sink, item, now))
            heartbeat()  # a slow helpdesk must not look like a hung agent
        return done

    def _deliver_one(self, sink: Sink, item: Item, now: datetime) -> Delivery:
        uncertain = item.state in (SENDING, UNKNOWN)
        self._mark(item.id, SENDING, attempts=item.attempts + 1)  # committed before any send
        crashpoint("before_send")
        try:
            if item.kind == "create":
                number, outcome = self._create(sink, item, uncertain)
            else:
                number, outcome = self._follow_up(sink, item, uncertain or item.attempts > 0)
            crashpoint("after_send")
        except OutcomeUnknown as exc:
            self._retry(item, UNKNOWN, str(exc), now)
            log.warning(
                "%s: outcome of %s unknown, will search before retrying: %s",
                sink.name,
                item.key,
                exc,
            )
            return Delivery(item, "unknown", error=str(exc))
        except SinkError as exc:
            if exc.permanent:
                self._mark(item.id, FAILED, error=str(exc))
                log.error("%s refused %s for good: %s", sink.name, item.key, exc)
                return Delivery(item, "failed", error=str(exc))
            self._retry(item, PENDING, str(exc), now, exc.retry_after)
            return Delivery(item, "retry", error=str(exc))
        with self.store.transaction():
            self._mark(item.id, DELIVERED, number=number, delivered_at=now)
            if item.kind == "create" and item.incident_id is not None and number:
                self.store.set_incident_ticket(item.incident_id, item.key, number)
        shutil.rmtree(self.files / str(item.id), ignore_errors=True)
        return Delivery(item, outcome, number)

    def _create(self, sink: Sink, item: Item, uncertain: bool) -> tuple[str | None, str]:
        ticket = Ticket.from_json(item.payload["ticket"])
        if uncertain:
            found = sink.find_by_key(item.key)
            if found is not None:
                return found.number, "found"
        existing = sink.find_open(ticket.site, ticket.counters, ticket.category)
        if existing is not None and existing.key != ticket.key and existing.number:
            # The joined ticket keeps its own key, so find_by_key cannot tell whether an earlier
            # try got there (a kill after sending, a lost answer): the message carries ours.
            marker = f"[ffc-key:{ticket.key}]"
            tried = uncertain or item.attempts > 0
            if tried and any(marker in m.body for m in existing.messages):
                return existing.number, "found"
            body = (
                f"The agent found this problem again and adds its evidence here rather than "
                f"open a second ticket.\n\n{ticket.subject}\n\n"
                + ticket.comment.as_text()
                + f"\n\n{marker}"
            )
            sink.add_message(existing.number, "ffc-agent", body, ticket.updated_at)
            return existing.number, "joined"
        filed = sink.file(ticket, self.attachments(item.id))
        return filed.number, "delivered"

    def _follow_up(self, sink: Sink, item: Item, tried: bool) -> tuple[str | None, str]:
        number = self._parent_number(item)
        assert number is not None
        p = item.payload
        at = datetime.fromisoformat(p["at"])
        # Tried before, it may have got there (a kill after sending, a lost answer, the status
        # change failing after the message went), and a message cannot be searched by key:
        # the ticket is read first, and only what is missing is sent.
        current = sink.get(number) if tried else None
        if current is None or not self._on_ticket(item, current):
            if p.get("attachments"):
                files = self.attachments(item.id)
                if set(files) != set(p["attachments"]):
                    raise SinkError(
                        f"the files of outbox item {item.id} are gone from {self.files}",
                        permanent=True,
                    )
                sink.add_message(number, p["author"], p["body"], at, files)
            else:
                sink.add_message(number, p["author"], p["body"], at)
        if p.get("status") and hasattr(sink, "set_status"):
            if current is None or str(current.status) != p["status"]:
                sink.set_status(number, p["status"], at)
        return number, "delivered"

    def _on_ticket(self, item: Item, ticket: Ticket) -> bool:
        """Did an earlier try of this follow-up reach ``ticket``? It did when the ticket holds
        more copies of its text than this outbox delivered before (a text may recur: a
        problem that heals twice)."""
        body = str(item.payload["body"]).strip()
        there = sum(m.body.strip() == body for m in ticket.messages)
        sent = sum(
            other.sink == item.sink
            and other.key == item.key
            and other.kind != "create"
            and str(other.payload.get("body", "")).strip() == body
            for other in self.items(states=(DELIVERED,))
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

    def health(self, now: datetime) -> list[Finding]:
        """One agent-health finding per destination whose items fail for good."""
        out = []
        failed: dict[str, list[Item]] = {}
        for item in self.items(states=(FAILED,)):
            failed.setdefault(item.sink, []).append(item)
        for sink, items in failed.items():
            if len(items) < PERMANENT_FAILURES_FOR_FINDING:
                continue
            last = items[-1]
            out.append(
                Finding(
                    check_id=OutboxHealth.id,
                    status=Status.FAIL,
                    code="destination_refuses",
                    summary=f"the ticket destination {sink} refused {len(items)} item(s) for good; "
                    f"last: {last.last_error}",
                    at=now,
                    site=None,
                    subject=f"sink:{sink}",
                    evidence={
                        "sink": sink,
                        "failed": len(items),
                        "last_error": last.last_error,
                        "keys": [i.key for i in items][-10:],
                    },
                    remediation="Check the destination's settings and credentials in the config, "
                    "then retry with `ffc-agent tickets retry`.",
                )
            )
        return out

    def retry_failed(self, now: datetime) -> int:
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE outbox SET state = ?, next_attempt_at = ? WHERE state = ?",
                (PENDING, _iso(now), FAILED),
            )
            return cur.rowcount


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
    )
