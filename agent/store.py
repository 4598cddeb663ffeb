"""The agent's memory: one SQLite file in WAL mode under the state directory.

It holds observations, count slots (with the time each arrived, so late uploads show), the
findings of every cycle, incidents and their transitions, and an audit log. The schema is
versioned from the first release: ``MIGRATIONS`` only ever grows, each step runs once in its
own transaction, and a database from a newer agent is refused rather than damaged.

Times are stored as UTC: slot starts as integer epoch seconds (fast range scans over a year of
slots), everything else as ISO-8601 text.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diagnostics.model import Assessed, CountSlot, Observation, ProbeErrorCode

DB_NAME = "ffc-agent.db"

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE observations (
        id INTEGER PRIMARY KEY,
        counter TEXT NOT NULL,
        probe TEXT NOT NULL,
        at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        error_code TEXT,
        error TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL DEFAULT '{}',
        elapsed_s REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX observations_counter ON observations (counter, probe, at);
    CREATE TABLE count_slots (
        counter TEXT NOT NULL,
        start INTEGER NOT NULL,
        minutes INTEGER NOT NULL,
        count_in INTEGER NOT NULL,
        count_out INTEGER NOT NULL,
        arrived_at INTEGER NOT NULL,
        PRIMARY KEY (counter, start)
    ) WITHOUT ROWID;
    CREATE TABLE cycles (
        id INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        summary TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE findings (
        id INTEGER PRIMARY KEY,
        cycle_id INTEGER REFERENCES cycles (id),
        at TEXT NOT NULL,
        check_id TEXT NOT NULL,
        site TEXT,
        subject TEXT,
        status TEXT NOT NULL,
        code TEXT NOT NULL,
        summary TEXT NOT NULL,
        evidence TEXT NOT NULL DEFAULT '{}',
        verdict TEXT NOT NULL,
        reasons TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX findings_subject ON findings (check_id, site, subject, at);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        check_id TEXT NOT NULL,
        site TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        code TEXT NOT NULL,
        summary TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        resolved_at TEXT,
        ticket_key TEXT,
        ticket_number TEXT,
        last_finding TEXT NOT NULL DEFAULT '{}'
    );
    CREATE UNIQUE INDEX incidents_one_open ON incidents (check_id, site, subject)
        WHERE state != 'resolved';
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        at TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 2: silences and maintenance windows set by people; tickets shadow mode kept back
    """
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        start TEXT NOT NULL,
        until TEXT NOT NULL,
        reason TEXT NOT NULL,
        author TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        removed_at TEXT
    );
    CREATE TABLE shadow_tickets (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        reason TEXT NOT NULL,
        ticket TEXT NOT NULL
    );
    """,
    # 3: the durable outbox of tickets and follow-ups, one row per destination
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        digest TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        number TEXT,
        incident_id INTEGER REFERENCES incidents (id),
        created_at TEXT NOT NULL,
        delivered_at TEXT
    );
    CREATE UNIQUE INDEX outbox_once ON outbox (sink, kind, key, digest);
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    CREATE TABLE ticket_states (
        sink TEXT NOT NULL,
        number TEXT NOT NULL,
        key TEXT NOT NULL,
        status TEXT NOT NULL,
        synced_at TEXT NOT NULL,
        PRIMARY KEY (sink, number)
    );
    """,
    # 4: one delivery engine: notices (e-mail, chat) are outbox items too, and each delivered
    # item keeps the destination's answer, the record write-only destinations are read from
    """
    ALTER TABLE outbox ADD COLUMN result TEXT;
    CREATE INDEX outbox_record ON outbox (sink, state, key);
    UPDATE outbox SET result = json_set(json_extract(payload, '$.ticket'), '$.number', number)
        WHERE kind = 'create' AND state = 'delivered' AND number IS NOT NULL;
    """,
    # 5 (rma branch; the lead renumbers): the RMA road — remediation attempts, RMAs, their
    # moves, the workflow steps done (so a killed run resumes without doing one twice), and
    # the link from a replaced unit's serial to its successor's
    """
    CREATE TABLE repairs (
        id INTEGER PRIMARY KEY,
        counter TEXT NOT NULL,
        step TEXT NOT NULL,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        incident_id INTEGER REFERENCES incidents (id)
    );
    CREATE INDEX repairs_counter ON repairs (counter, at);
    CREATE TABLE rmas (
        id INTEGER PRIMARY KEY,
        counter TEXT NOT NULL,
        site TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        incident_id INTEGER REFERENCES incidents (id),
        ticket_key TEXT,
        new_serial TEXT,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE UNIQUE INDEX rmas_one_open ON rmas (counter)
        WHERE state NOT IN ('closed', 'rejected', 'cancelled');
    CREATE TABLE rma_moves (
        id INTEGER PRIMARY KEY,
        rma_id INTEGER NOT NULL REFERENCES rmas (id),
        at TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE rma_steps (
        rma_id INTEGER NOT NULL REFERENCES rmas (id),
        name TEXT NOT NULL,
        done_at TEXT NOT NULL,
        result TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (rma_id, name)
    );
    CREATE TABLE serial_links (
        old_serial TEXT NOT NULL,
        new_serial TEXT NOT NULL,
        rma_id INTEGER REFERENCES rmas (id),
        at TEXT NOT NULL,
        PRIMARY KEY (old_serial, new_serial)
    );
    """,
)


class StoreError(Exception):
    """The state database cannot be used (newer schema, corrupt, unwritable)."""


def _ts(at: datetime) -> int:
    return int(at.timestamp())


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Incident:
    id: int
    check_id: str
    site: str
    subject: str
    state: str
    code: str
    summary: str
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    ticket_key: str | None
    ticket_number: str | None
    last_finding: dict[str, Any]


class Store:
    """One connection, used from one thread at a time (the runner's main thread)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._migrate()

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        return cls(Path(state_dir) / DB_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"state database {self.path} has schema {current}, newer than this agent "
                f"understands ({len(MIGRATIONS)}): upgrade ffc-agent"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version:d}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception. Re-entrant."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- observations ------------------------------------------------------------------------

    def add_observation(self, obs: Observation) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO observations (counter, probe, at, ok, error_code, error, data, "
                "elapsed_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    obs.counter,
                    obs.probe,
                    _iso(obs.at),
                    int(obs.ok),
                    str(obs.error_code) if obs.error_code else None,
                    obs.error,
                    json.dumps(obs.data, default=str),
                    obs.elapsed_s,
                ),
            )

    def observations(self, counter: str, probe: str, limit: int = 50) -> list[Observation]:
        """The latest observations of one probe of one counter, newest first."""
        rows = self._db.execute(
            "SELECT * FROM observations WHERE counter = ? AND probe = ? ORDER BY at DESC, id DESC "
            "LIMIT ?",
            (counter, probe, limit),
        ).fetchall()
        return [_observation(r) for r in rows]

    def last_success(self, counter: str, probe: str) -> datetime | None:
        row = self._db.execute(
            "SELECT MAX(at) FROM observations WHERE counter = ? AND probe = ? AND ok = 1",
            (counter, probe),
        ).fetchone()
        return _from_iso(row[0]) if row and row[0] else None

    # -- count slots -------------------------------------------------------------------------

    def add_slots(self, slots: Iterable[CountSlot], arrived_at: datetime) -> int:
        """Store slots; a slot seen before keeps its first arrival time but takes new counts
        (a device may revise its latest, still-open interval). Returns how many were new."""
        arrived = _ts(arrived_at)
        new = 0
        with self.transaction() as db:
            for s in slots:
                cur = db.execute(
                    "INSERT INTO count_slots (counter, start, minutes, count_in, count_out, "
                    "arrived_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (counter, start) DO "
                    "UPDATE SET count_in = excluded.count_in, count_out = excluded.count_out, "
                    "minutes = excluded.minutes WHERE count_in != excluded.count_in OR "
                    "count_out != excluded.count_out RETURNING arrived_at",
                    (s.counter, _ts(s.start), s.minutes, s.count_in, s.count_out, arrived),
                )
                row = cur.fetchone()
                if row is not None and row[0] == arrived:
                    new += 1
        return new

    def slots(
        self, counter: str, since: datetime, until: datetime | None = None
    ) -> list[CountSlot]:
        query = "SELECT * FROM count_slots WHERE counter = ? AND start >= ?"
        args: list[Any] = [counter, _ts(since)]
        if until is not None:
            query += " AND start < ?"
            args.append(_ts(until))
        rows = self._db.execute(query + " ORDER BY start", args).fetchall()
        return [
            CountSlot(
                r["counter"],
                datetime.fromtimestamp(r["start"], UTC),
                r["minutes"],
                r["count_in"],
                r["count_out"],
                datetime.fromtimestamp(r["arrived_at"], UTC),
            )
            for r in rows
        ]

    def slot_starts(self, counter: str, since: datetime) -> set[datetime]:
        rows = self._db.execute(
            "SELECT start FROM count_slots WHERE counter = ? AND start >= ?",
            (counter, _ts(since)),
        ).fetchall()
        return {datetime.fromtimestamp(r[0], UTC) for r in rows}

    def watermark(self, counter: str) -> datetime | None:
        """The start of the newest slot held for the counter, or None before the first."""
        row = self._db.execute(
            "SELECT MAX(start) FROM count_slots WHERE counter = ?", (counter,)
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    # -- cycles and findings -------------------------------------------------------------------

    def begin_cycle(self, at: datetime) -> int:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO cycles (started_at) VALUES (?)", (_iso(at),))
            return int(cur.lastrowid or 0)

    def end_cycle(self, cycle_id: int, at: datetime, summary: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE cycles SET finished_at = ?, summary = ? WHERE id = ?",
                (_iso(at), json.dumps(summary), cycle_id),
            )

    def add_findings(self, cycle_id: int, assessed: Iterable[Assessed]) -> None:
        with self.transaction() as db:
            for a in assessed:
                f = a.finding
                db.execute(
                    "INSERT INTO findings (cycle_id, at, check_id, site, subject, status, code, "
                    "summary, evidence, verdict, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cycle_id,
                        _iso(f.at),
                        f.check_id,
                        f.site,
                        f.subject,
                        str(f.status),
                        f.code,
                        f.summary,
                        json.dumps(f.evidence, default=str),
                        str(a.verdict.decision) if a.verdict else "",
                        json.dumps(list(a.verdict.reasons) if a.verdict else []),
                    ),
                )

    def latest_findings(self) -> list[dict[str, Any]]:
        """The findings of the newest finished cycle."""
        row = self._db.execute(
            "SELECT id FROM cycles WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return []
        rows = self._db.execute(
            "SELECT * FROM findings WHERE cycle_id = ? ORDER BY id", (row[0],)
        ).fetchall()
        return [dict(r) for r in rows]

    def recent_states(
        self, check_id: str, site: str | None, subject: str | None, limit: int
    ) -> list[bool | None]:
        """The last ``limit`` judgements of one check on one subject, oldest first: True for
        a genuine problem, False for ok, None for anything that says neither (skip, error,
        a false alarm, pending)."""
        rows = self._db.execute(
            "SELECT status, verdict FROM findings WHERE check_id = ? AND site IS ? AND "
            "subject IS ? ORDER BY id DESC LIMIT ?",
            (check_id, site, subject, limit),
        ).fetchall()
        out: list[bool | None] = []
        for row in reversed(rows):
            if row["verdict"] == "genuine":
                out.append(True)
            elif row["status"] == "ok":
                out.append(False)
            else:
                out.append(None)
        return out

    def findings_between(
        self, start: datetime, end: datetime, *, verdict: str | None = None
    ) -> list[dict[str, Any]]:
        query = "SELECT * FROM findings WHERE at >= ? AND at < ?"
        args: list[Any] = [_iso(start), _iso(end)]
        if verdict is not None:
            query += " AND verdict = ?"
            args.append(verdict)
        return [dict(r) for r in self._db.execute(query + " ORDER BY id", args).fetchall()]

    # -- silences --------------------------------------------------------------------------------

    def add_silence(
        self,
        *,
        target: str,
        start: datetime,
        until: datetime,
        reason: str,
        author: str,
        at: datetime,
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO silences (target, start, until, reason, author, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (target, _iso(start), _iso(until), reason, author, _iso(at)),
            )
            return int(cur.lastrowid or 0)

    def silences(self, *, active_at: datetime | None = None) -> list[dict[str, Any]]:
        """Silences not removed; with ``active_at``, only those not yet over by then."""
        query = "SELECT * FROM silences WHERE removed_at IS NULL"
        args: list[Any] = []
        if active_at is not None:
            query += " AND until > ?"
            args.append(_iso(active_at))
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [
            {**dict(r), "start": _from_iso(r["start"]), "until": _from_iso(r["until"])}
            for r in rows
        ]

    def remove_silence(self, silence_id: int, at: datetime) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE silences SET removed_at = ? WHERE id = ? AND removed_at IS NULL",
                (_iso(at), silence_id),
            )
            return cur.rowcount > 0

    # -- shadow mode -----------------------------------------------------------------------------

    def add_shadow_ticket(
        self, at: datetime, incident_id: int, reason: str, ticket: dict[str, Any]
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO shadow_tickets (at, incident_id, reason, ticket) VALUES (?, ?, ?, ?)",
                (_iso(at), incident_id, reason, json.dumps(ticket, default=str)),
            )

    def shadow_tickets(self, since: datetime | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM shadow_tickets"
        args: list[Any] = []
        if since is not None:
            query += " WHERE at >= ?"
            args.append(_iso(since))
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [{**dict(r), "ticket": json.loads(r["ticket"])} for r in rows]

    # -- ticket status, as last read from each destination -----------------------------------------

    def ticket_status(self, sink: str, number: str) -> str | None:
        row = self._db.execute(
            "SELECT status FROM ticket_states WHERE sink = ? AND number = ?", (sink, number)
        ).fetchone()
        return row[0] if row else None

    def set_ticket_status(
        self, sink: str, number: str, key: str, status: str, at: datetime
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO ticket_states (sink, number, key, status, synced_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sink, number) DO UPDATE SET "
                "status = excluded.status, synced_at = excluded.synced_at",
                (sink, number, key, status, _iso(at)),
            )

    # -- incidents -----------------------------------------------------------------------------

    def open_incident(self, check_id: str, site: str, subject: str) -> Incident | None:
        row = self._db.execute(
            "SELECT * FROM incidents WHERE check_id = ? AND site = ? AND subject = ? "
            "AND state != 'resolved'",
            (check_id, site, subject),
        ).fetchone()
        return _incident(row) if row else None

    def incidents(self, *, open_only: bool = False) -> list[Incident]:
        query = "SELECT * FROM incidents"
        if open_only:
            query += " WHERE state != 'resolved'"
        return [_incident(r) for r in self._db.execute(query + " ORDER BY id").fetchall()]

    def incident(self, incident_id: int) -> Incident | None:
        row = self._db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return _incident(row) if row else None

    def create_incident(
        self,
        *,
        check_id: str,
        site: str,
        subject: str,
        state: str,
        code: str,
        summary: str,
        at: datetime,
        finding: dict[str, Any],
        reason: str,
    ) -> Incident:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO incidents (check_id, site, subject, state, code, summary, opened_at, "
                "updated_at, last_finding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    check_id,
                    site,
                    subject,
                    state,
                    code,
                    summary,
                    _iso(at),
                    _iso(at),
                    json.dumps(finding, default=str),
                ),
            )
            incident_id = int(cur.lastrowid or 0)
            self._transition(incident_id, at, None, state, reason)
        found = self.incident(incident_id)
        assert found is not None
        return found

    def update_incident(
        self,
        incident_id: int,
        *,
        at: datetime,
        state: str | None = None,
        reason: str = "",
        code: str | None = None,
        summary: str | None = None,
        finding: dict[str, Any] | None = None,
    ) -> Incident:
        with self.transaction() as db:
            current = self.incident(incident_id)
            if current is None:
                raise StoreError(f"no incident {incident_id}")
            db.execute(
                "UPDATE incidents SET updated_at = ?, state = ?, code = ?, summary = ?, "
                "last_finding = ?, resolved_at = ? WHERE id = ?",
                (
                    _iso(at),
                    state or current.state,
                    code or current.code,
                    summary or current.summary,
                    json.dumps(
                        finding if finding is not None else current.last_finding, default=str
                    ),
                    _iso(at) if state == "resolved" else None,
                    incident_id,
                ),
            )
            if state and state != current.state:
                self._transition(incident_id, at, current.state, state, reason)
        updated = self.incident(incident_id)
        assert updated is not None
        return updated

    def set_incident_ticket(self, incident_id: int, key: str, number: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE incidents SET ticket_key = ?, ticket_number = ? WHERE id = ?",
                (key, number, incident_id),
            )

    def transitions(self, incident_id: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT at, from_state, to_state, reason FROM transitions WHERE incident_id = ? "
            "ORDER BY id",
            (incident_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    def _transition(
        self, incident_id: int, at: datetime, from_state: str | None, to_state: str, reason: str
    ) -> None:
        self._db.execute(
            "INSERT INTO transitions (incident_id, at, from_state, to_state, reason) "
            "VALUES (?, ?, ?, ?, ?)",
            (incident_id, _iso(at), from_state, to_state, reason),
        )

    # -- audit ---------------------------------------------------------------------------------

    def audit(
        self,
        at: datetime,
        actor: str,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (_iso(at), actor, action, target, json.dumps(detail or {}, default=str)),
            )


def _observation(row: sqlite3.Row) -> Observation:
    return Observation(
        counter=row["counter"],
        probe=row["probe"],
        at=_from_iso(row["at"]),
        ok=bool(row["ok"]),
        data=json.loads(row["data"]),
        error_code=ProbeErrorCode(row["error_code"]) if row["error_code"] else None,
        error=row["error"],
        elapsed_s=row["elapsed_s"],
    )


def _incident(row: sqlite3.Row) -> Incident:
    return Incident(
        id=row["id"],
        check_id=row["check_id"],
        site=row["site"],
        subject=row["subject"],
        state=row["state"],
        code=row["code"],
        summary=row["summary"],
        opened_at=_from_iso(row["opened_at"]),
        updated_at=_from_iso(row["updated_at"]),
        resolved_at=_from_iso(row["resolved_at"]) if row["resolved_at"] else None,
        ticket_key=row["ticket_key"],
        ticket_number=row["ticket_number"],
        last_finding=json.loads(row["last_finding"]),
    )
