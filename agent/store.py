"""The agent's memory: one SQLite file in WAL mode under the state directory.

It holds observations, count slots (with the time each arrived, so late uploads show), the
findings of every cycle, incidents and their transitions, and an audit log. The schema is
versioned from the first release: ``MIGRATIONS`` only ever grows, the steps a file lacks run
once, in one transaction that a second process opening the file waits for, and a database from
a newer agent is refused rather than damaged.

Times are stored as UTC: slot starts as integer epoch seconds (fast range scans over a year of
slots), everything else as ISO-8601 text.

Faults, and what the store promises (docs/reliability.md, "State"):

- a damaged file (``PRAGMA quick_check`` fails, or it is not a database at all) is never written
  into: it is renamed aside with its ``-wal``/``-shm`` (``ffc-agent.db.damaged-<UTC stamp>``),
  one warning says so, and a fresh store starts in its place;
- a schema this agent does not know (newer, or older than the version it claims) is
  ``StoreSchemaError``: the file stays untouched and the command or service exits
  ``EX_SCHEMA`` (65), which the unit does not restart;
- a full disk is ``StoreFull`` (a ``StoreError``), raised by the write that failed, whose
  transaction is rolled back: the caller decides what to keep in memory;
- the state directory is created 0700 and the database files are 0600 whatever the umask:
  the store holds counts, device addresses and ticket texts;
- ``prune`` bounds the raw history (findings, observations, cycles, count slots) by age, in
  small batches, and hands the freed pages back to the file system (``auto_vacuum =
  INCREMENTAL``); incidents, transitions, tickets, the outbox and the audit log are kept.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnostics.model import SYSTEM_CLOCK, Assessed, CountSlot, Observation, ProbeErrorCode

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from diagnostics.series import SlotColumns

DB_NAME = "ffc-agent.db"
EX_SCHEMA = 65  # sysexits.h EX_DATAERR: the state file is another agent version's; no restart
PRUNE_EVERY = timedelta(days=1)
PRUNE_BATCH = 2000  # rows per transaction: a prune never holds the database for long
VACUUM_EXISTING_MAX = 64 * 1024 * 1024  # switch an older file to auto_vacuum if this small

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
    # 6: outbox ids are never reused (AUTOINCREMENT), and
    # each item names its own files: the folder they were staged in under a key of their own,
    # and their sha256 by name. An item queued by an older agent keeps its folder (its id).
    # ``tried_since``: when its tries began (queued, or ``tickets retry``): the give-up clock
    """
    CREATE TABLE outbox_v6 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
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
        delivered_at TEXT,
        result TEXT
    );
    INSERT INTO outbox_v6 (id, sink, kind, key, digest, payload, state, attempts,
        next_attempt_at, last_error, number, incident_id, created_at, delivered_at, result)
        SELECT id, sink, kind, key, digest, payload, state, attempts, next_attempt_at,
            last_error, number, incident_id, created_at, delivered_at, result FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v6 RENAME TO outbox;
    CREATE UNIQUE INDEX outbox_once ON outbox (sink, kind, key, digest);
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    CREATE INDEX outbox_record ON outbox (sink, state, key);
    ALTER TABLE outbox ADD COLUMN files TEXT;
    ALTER TABLE outbox ADD COLUMN tried_since TEXT;
    UPDATE outbox SET files = json_object('dir', CAST(id AS TEXT))
        WHERE state != 'delivered' AND kind NOT IN ('email', 'chat');
    """,
)


def _created_tables(script: str) -> set[str]:
    return set(re.findall(r"CREATE TABLE (\w+)", script))


def _added_columns(script: str) -> set[tuple[str, str]]:
    return set(re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", script))


# the tables and columns each schema version must not hold yet: a file that has them lies
# about its version
_TABLES_AFTER = [
    set().union(*(_created_tables(m) for m in MIGRATIONS[v:])) for v in range(len(MIGRATIONS) + 1)
]
_COLUMNS_AFTER = [
    set().union(*(_added_columns(m) for m in MIGRATIONS[v:])) for v in range(len(MIGRATIONS) + 1)
]


def _private_dir(folder: Path) -> None:
    """Create ``folder`` (and missing parents) 0700 whatever the umask; an existing folder
    keeps its mode: it may be the unit's StateDirectory= or one a person chose."""
    if folder.is_dir():
        return
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(made, 0o700)


def _tighten(path: Path) -> None:
    """Take group and world access away from a state file made by an older agent."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)
    except FileNotFoundError:
        return
    except PermissionError:
        return  # not ours (root left it for the service): tmpfiles' Z line hands it back


class StoreError(Exception):
    """The state database cannot be used (newer schema, corrupt, unwritable).

    ``str()`` is the one line a person reads; ``exit_code`` is what a command exits with."""

    exit_code = 1


class StoreSchemaError(StoreError):
    """The file's schema is not one this agent knows: kept untouched, the agent stops."""

    exit_code = EX_SCHEMA


class StoreFull(StoreError):
    """A write failed for want of space (SQLITE_FULL, ENOSPC, EFBIG): nothing was written."""


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the file-size limit) is full."""
    if isinstance(exc, StoreFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        # SQLITE_FULL is 13; SQLITE_IOERR_WRITE (778) is what a short write (EFBIG) becomes
        return code in (sqlite3.SQLITE_FULL, 778) or "database or disk is full" in str(exc)
    return False


class _DamagedFile(Exception):
    """The file failed its integrity check or is not a database: move it aside."""


def _damaged(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or any(
        words in str(exc) for words in ("malformed", "not a database")
    )


def damage_in(exc: BaseException | None) -> str | None:
    """The damage ``exc`` (or an exception it was raised from or during) reports, if any: how a
    caller that caught a failure tells a damaged file from any other error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _damaged(exc):
            return " ".join(str(exc).split())
        exc = exc.__cause__ or exc.__context__
    return None


class _Connection(sqlite3.Connection):
    """A connection that remembers the first sign of a damaged file met by any statement, so
    the damage is noticed even where the error itself is caught and turned into a finding."""

    damage: str | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as exc:
            if _damaged(exc) and self.damage is None:
                self.damage = " ".join(str(exc).split())
            raise


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
        self.moved_aside: Path | None = None  # where a damaged file went, if it did
        self._lock = threading.RLock()
        try:
            _private_dir(self.path.parent)
            try:
                self._db = self._connect()
            except _DamagedFile as exc:
                self._move_aside(str(exc))
                self._db = self._connect()
        except OSError as exc:
            if is_disk_full(exc):
                raise StoreFull(f"state database {self.path}: the disk is full") from None
            raise StoreError(
                f"cannot open state database {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            if is_disk_full(exc):
                raise StoreFull(f"state database {self.path}: the disk is full") from None
            raise StoreError(f"cannot prepare state database {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        """Open, check and tune the file; a damaged one raises ``_DamagedFile``."""
        new = not self.path.exists()
        if new:
            # created 0600 before SQLite touches it: its -wal and -shm take the same mode
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        _tighten(self.path)
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, factory=_Connection
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from None
        try:
            db.row_factory = sqlite3.Row
            # before the first table: lets pruning hand pages back to the disk. Asked by every
            # connection that finds the file still empty, not only the one that created it:
            # two processes opening a new state directory at once race to create the tables,
            # and the file takes the mode of whichever does (a file with pages is not written
            # to here: it may be a damaged one, which is moved aside untouched)
            if db.execute("PRAGMA page_count").fetchone()[0] == 0:
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA journal_mode=WAL")
            for suffix in ("-wal", "-shm"):
                _tighten(Path(f"{self.path}{suffix}"))
            problems = [r[0] for r in db.execute("PRAGMA quick_check(3)").fetchall()]
            if problems != ["ok"]:
                db.close()
                raise _DamagedFile(f"quick_check: {'; '.join(problems)}")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            db.close()
            if _damaged(exc):
                raise _DamagedFile(str(exc)) from None
            if is_disk_full(exc):
                raise StoreFull(f"state database {self.path}: the disk is full") from None
            raise StoreError(f"cannot open state database {self.path}: {exc}") from None
        return db

    def _move_aside(self, why: str) -> None:
        """Rename the damaged file and its -wal/-shm out of the way, never writing into them."""
        why = " ".join(why.split())  # quick_check's lines: one log line, for journalctl -p err
        stamp = SYSTEM_CLOCK.now().strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            for suffix in ("-wal", "-shm", ""):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(f"{aside}{suffix}")
        except OSError as exc:
            raise StoreError(
                f"state database {self.path} is damaged ({why}) and cannot be moved aside: "
                f"{exc.strerror or exc}"
            ) from None
        log.error(
            "state database %s is damaged (%s): kept aside as %s, starting a fresh one "
            "(history, incidents and the undelivered outbox stay in the old file)",
            self.path,
            why[:200],
            aside.name,
        )
        self.moved_aside = aside

    @property
    def damage(self) -> str | None:
        """What showed the open file to be damaged since it was opened, or None."""
        return self._db.damage if isinstance(self._db, _Connection) else None

    def check_integrity(self) -> str | None:
        """``PRAGMA quick_check`` on the open file (the service runs it once a day): the damage
        it found, also remembered in ``damage``, or None."""
        try:
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check(3)").fetchall()]
        except sqlite3.Error as exc:
            return damage_in(exc) or self.damage
        if problems != ["ok"] and isinstance(self._db, _Connection):
            self._db.damage = self._db.damage or "quick_check: " + "; ".join(problems)
        return self.damage

    def recover(self, why: str) -> None:
        """The open file turned out damaged: close it, keep it aside untouched (one error
        line) and go on with a fresh store in its place. The same ``Store`` object stays in
        use, so every part that holds it writes into the fresh file from now on."""
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._move_aside(why)
            self._db = self._connect()
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
        if self.schema_version < len(MIGRATIONS):
            # one process migrates; another opening the file at the same moment (``check``
            # beside the service on a fresh install) waits for it, then finds it done
            with self.transaction():
                self._migrate_steps()
        else:
            self._migrate_steps()
        self._vacuum_mode()

    def _migrate_steps(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreSchemaError(
                f"state database {self.path} has schema {current}, newer than this agent "
                f"understands ({len(MIGRATIONS)}): upgrade ffc-agent; the file is left untouched"
            )
        tables = {
            r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        later = current < len(MIGRATIONS) and bool(
            tables & _TABLES_AFTER[current]
            or any(
                column in self._columns(table)
                for table, column in _COLUMNS_AFTER[current]
                if table in tables
            )
        )
        if later:
            raise StoreSchemaError(
                f"state database {self.path} says schema {current} but holds tables or columns "
                f"of a later one: not a file this agent can upgrade; the file is left untouched "
                f"(move it aside to start afresh)"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version:d}")

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}

    def _vacuum_mode(self) -> None:
        """Switch a file made before auto_vacuum to it, when that is cheap (one VACUUM)."""
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 0:
            return
        if self.path.stat().st_size > VACUUM_EXISTING_MAX:
            return  # a rebuild would take minutes on a gateway: pruning still bounds the rows
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        try:
            self._db.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            # another process is using the file (the service, while ``check`` opens it): the
            # switch is only a saving, made at a later opening; this one goes on without it
            log.info("state database %s: auto_vacuum left for later (%s)", self.path, exc)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the store's connection (slow work waits outside)."""
        return self._db.in_transaction

    @contextmanager
    def rolled_back(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that is always rolled back: to see what a change would do before
        making it (which incidents a cycle will file, so their bundles are built beforehand).
        Never inside another transaction, whose changes it would take back with its own."""
        with self._lock:
            if self._db.in_transaction:
                raise StoreError("a rolled-back trial cannot run inside a transaction")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            finally:
                self._db.execute("ROLLBACK")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception. Re-entrant."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back already
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if is_disk_full(exc):
                    raise StoreFull(f"state database {self.path}: the disk is full") from None
                raise

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

    def slot_columns(
        self, counters: Iterable[str], since: datetime, until: datetime | None = None
    ) -> dict[str, SlotColumns]:
        """Each counter's slots from ``since`` as numpy columns, read straight from SQLite with
        no object per slot: a month of a whole fleet's slots is read in a fraction of a second."""
        import numpy as np  # here, not at the top: `status` and `--help` never load numpy

        from diagnostics.series import SlotColumns

        cur = self._db.cursor()
        cur.row_factory = None  # plain tuples, not sqlite3.Row
        query = "SELECT start, minutes, count_in, count_out FROM count_slots WHERE counter = ? "
        query += "AND start >= ?" + (" AND start < ?" if until is not None else "")
        query += " ORDER BY start"
        out: dict[str, SlotColumns] = {}
        for counter in counters:
            args: list[Any] = [counter, _ts(since)]
            if until is not None:
                args.append(_ts(until))
            rows = cur.execute(query, args).fetchall()
            out[counter] = SlotColumns.from_rows(np.array(rows, dtype=np.int64).reshape(-1, 4))
        return out

    def slot_starts(self, counter: str, since: datetime) -> set[datetime]:
        rows = self._db.execute(
            "SELECT start FROM count_slots WHERE counter = ? AND start >= ?",
            (counter, _ts(since)),
        ).fetchall()
        return {datetime.fromtimestamp(r[0], UTC) for r in rows}

    def first_slot(self, counter: str) -> datetime | None:
        """The start of the oldest slot held for the counter, or None before the first."""
        row = self._db.execute(
            "SELECT MIN(start) FROM count_slots WHERE counter = ?", (counter,)
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

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

    def ticket_statuses(self, key: str) -> list[dict[str, Any]]:
        """Ticket ``key``'s status as last read from each destination: sink, number, status,
        synced_at; the most recently read first."""
        rows = self._db.execute(
            "SELECT sink, number, status, synced_at FROM ticket_states WHERE key = ? "
            "ORDER BY synced_at DESC",
            (key,),
        ).fetchall()
        return [{**dict(r), "synced_at": _from_iso(r["synced_at"])} for r in rows]

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

    def incidents(
        self,
        *,
        open_only: bool = False,
        subject: str | None = None,
        check_id: str | None = None,
        site: str | None = None,
    ) -> list[Incident]:
        """Incidents, oldest first; only the open ones, or one subject's (of one check and
        site), when asked: the table keeps every incident ever opened, and a question about
        one counter reads that counter's."""
        where, args = [], []
        if open_only:
            where.append("state != 'resolved'")
        for column, value in (("subject", subject), ("check_id", check_id), ("site", site)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""  # our columns; values bound
        query = "SELECT * FROM incidents" + clause + " ORDER BY id"  # noqa: S608
        return [_incident(r) for r in self._db.execute(query, args).fetchall()]

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

    # -- retention -----------------------------------------------------------------------------

    def last_pruned(self) -> datetime | None:
        row = self._db.execute(
            "SELECT MAX(at) FROM audit WHERE actor = 'agent' AND action = 'state.pruned'"
        ).fetchone()
        return _from_iso(row[0]) if row and row[0] else None

    def maintain(
        self,
        now: datetime,
        *,
        findings_days: int,
        observations_days: int,
        slots_days: int,
        quiet_days: int = 2,
        heartbeat: Callable[[], object] = lambda: None,
    ) -> dict[str, int] | None:
        """Check the file and prune it once a day at most (the audit log remembers when);
        None if not due, or if the check found the file damaged (``damage`` says how: the
        service keeps it aside and goes on with a fresh one)."""
        last = self.last_pruned()
        if last is not None and now - last < PRUNE_EVERY:
            return None
        if self.check_integrity() is not None:
            return None  # never rewrite the pages of a damaged file
        removed = self.prune(
            now,
            findings_days=findings_days,
            observations_days=observations_days,
            slots_days=slots_days,
            quiet_days=quiet_days,
            heartbeat=heartbeat,
        )
        self.audit(now, "agent", "state.pruned", detail=removed)
        if any(removed.values()):
            log.info("pruned the state: %s", removed)
        return removed

    def prune(
        self,
        now: datetime,
        *,
        findings_days: int,
        observations_days: int,
        slots_days: int,
        quiet_days: int = 2,
        batch: int = PRUNE_BATCH,
        heartbeat: Callable[[], object] = lambda: None,
    ) -> dict[str, int]:
        """Delete raw history older than its age, ``batch`` rows per transaction, then hand
        the freed pages back (``incremental_vacuum``). Findings that found nothing wrong (ok,
        skip) and successful observations are kept only ``quiet_days``, but for the newest of
        each. Incidents, transitions,
        the audit log, silences, shadow tickets, the outbox and ticket states are never pruned.

        The newest observation of each (counter, probe), and the newest successful one, stay
        whatever their age: "last seen" must not turn into "never seen" after a month."""
        removed = dict.fromkeys(
            ("findings", "quiet_findings", "cycles", "observations", "quiet_observations", "slots"),
            0,
        )
        cutoff = _iso(now - timedelta(days=findings_days))
        removed["findings"] = self._prune_ids("findings", cutoff, "at", set(), batch, heartbeat)
        # "ok" and "skip" are nine in ten findings and say only "nothing wrong": past a short
        # window (the flapping and confirmation windows need it) only the newest of each
        # (check, site, subject) stays, so "last judged healthy at" still has an answer.
        quiet_cutoff = _iso(now - timedelta(days=min(quiet_days, findings_days)))
        keep = {
            int(r[0])
            for r in self._db.execute(
                "SELECT MAX(id) FROM findings WHERE status IN ('ok', 'skip') "
                "GROUP BY check_id, site, subject"
            )
        }
        removed["quiet_findings"] = self._delete_below(
            "findings",
            self._first_id("findings", "at", quiet_cutoff),
            keep,
            batch,
            heartbeat,
            where="status IN ('ok', 'skip')",
        )
        bound = self._first_id("cycles", "started_at", cutoff)
        referenced = {  # the cycles of the few old findings kept: the foreign key holds
            int(r[0])
            for r in self._db.execute(
                "SELECT DISTINCT cycle_id FROM findings WHERE cycle_id < ?", (bound,)
            )
        }
        removed["cycles"] = self._delete_below("cycles", bound, referenced, batch, heartbeat)
        keep = {
            int(r[0])
            for r in self._db.execute(
                "SELECT MAX(id) FROM observations GROUP BY counter, probe UNION "
                "SELECT MAX(id) FROM observations WHERE ok = 1 GROUP BY counter, probe"
            )
        }
        removed["observations"] = self._prune_ids(
            "observations",
            _iso(now - timedelta(days=observations_days)),
            "at",
            keep,
            batch,
            heartbeat,
        )
        # successful probes are most rows and say only "it answered": past the quiet window
        # the failures (what an outage looked like) stay, the successes but the newest go
        removed["quiet_observations"] = self._delete_below(
            "observations",
            self._first_id(
                "observations", "at", _iso(now - timedelta(days=min(quiet_days, observations_days)))
            ),
            keep,
            batch,
            heartbeat,
            where="ok = 1",
        )
        slot_cutoff = _ts(now - timedelta(days=slots_days))
        counters = [r[0] for r in self._db.execute("SELECT DISTINCT counter FROM count_slots")]
        for counter in counters:
            while True:
                with self.transaction() as db:
                    n = db.execute(
                        "DELETE FROM count_slots WHERE counter = ? AND start IN (SELECT start "
                        "FROM count_slots WHERE counter = ? AND start < ? ORDER BY start "
                        "LIMIT ?)",
                        (counter, counter, slot_cutoff, batch),
                    ).rowcount
                removed["slots"] += n
                heartbeat()
                if n < batch:
                    break
        if any(removed.values()):
            with self._lock:  # executescript steps it to the end; execute frees one page
                self._db.executescript("PRAGMA incremental_vacuum")
            # the WAL grew by the pages touched: fold it back so the file system gets them
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def _first_id(self, table: str, column: str, cutoff: str) -> int:
        """The first id at or after ``cutoff``: ids grow with time, so every older row lies
        below it (a row out of order by a few seconds waits for the next day's prune)."""
        row = self._db.execute(
            f"SELECT id FROM {table} WHERE {column} >= ? ORDER BY id LIMIT 1",  # noqa: S608
            (cutoff,),
        ).fetchone()
        if row is not None:
            return int(row[0])
        top = self._db.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]  # noqa: S608
        return int(top or 0) + 1

    def _prune_ids(
        self,
        table: str,
        cutoff: str,
        column: str,
        keep: set[int],
        batch: int,
        heartbeat: Callable[[], object],
    ) -> int:
        return self._delete_below(
            table, self._first_id(table, column, cutoff), keep, batch, heartbeat
        )

    def _delete_below(
        self,
        table: str,
        bound: int,
        keep: set[int],
        batch: int,
        heartbeat: Callable[[], object],
        where: str = "1",
    ) -> int:
        total, start = 0, 0
        while True:
            with self.transaction() as db:
                ids = [
                    int(r[0])
                    for r in db.execute(
                        f"SELECT id FROM {table} WHERE id >= ? AND id < ? AND {where} "  # noqa: S608
                        "ORDER BY id LIMIT ?",
                        (start, bound, batch),
                    )
                ]
                gone = [(i,) for i in ids if i not in keep]
                db.executemany(f"DELETE FROM {table} WHERE id = ?", gone)  # noqa: S608
            total += len(gone)
            heartbeat()
            if len(ids) < batch:
                return total
            start = ids[-1] + 1

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
