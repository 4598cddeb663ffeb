"""The RMA road's memory: remediation attempts, RMAs and their moves, in the agent's SQLite store.

``rma/ladder.py`` and ``rma/workflow.py`` decide; this module remembers, so that the budget
holds across restarts, a killed workflow resumes where it stopped, and every move and repair
can be shown to a person (`ffc-agent rma show`) and to support. Each repair is written to the
``repairs`` table and the audit log in one transaction: there is no repair without its audit
row. Workflow steps that touch the outside (the rescue, the RMA ticket, the closing message)
are recorded in ``rma_steps`` when done; a resumed run asks ``done(rma, step)`` first.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.store import Store, StoreError
from rma.ladder import Attempt, Outcome, Step
from rma.workflow import FINAL, Facts, Move, State, check_transition, task_line, tasks_for

if TYPE_CHECKING:
    from rma.tickets import Task

# (ticket key, task-list lines, the follow-up's text, incident id, now): one move on a ticket
PostTasks = Callable[[str, list["Task"], str, int | None, datetime], object]

FINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(FINAL))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class Rma:
    id: int
    counter: str
    site: str
    state: State
    reason: str
    opened_at: datetime
    updated_at: datetime
    incident_id: int | None
    ticket_key: str | None
    new_serial: str | None
    data: dict[str, Any]

    @property
    def open(self) -> bool:
        return self.state not in FINAL

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "counter": self.counter,
            "site": self.site,
            "state": self.state.value,
            "reason": self.reason,
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "incident_id": self.incident_id,
            "ticket_key": self.ticket_key,
            "new_serial": self.new_serial,
            "data": self.data,
        }


class RmaError(Exception):
    """A request the RMA memory cannot honour (no such RMA); the message is for a person."""


class Rmas:
    """RMA and repair records over one ``Store``; use from the thread that owns the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- repairs ------------------------------------------------------------------------------

    def record_attempt(self, attempt: Attempt, *, incident_id: int | None = None) -> None:
        """One rung tried, into ``repairs`` and the audit log together."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO repairs (counter, step, at, outcome, actor, detail, incident_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.counter,
                    attempt.step.value,
                    _iso(attempt.at),
                    attempt.outcome.value,
                    attempt.actor,
                    attempt.detail,
                    incident_id,
                ),
            )
            self.store.audit(
                attempt.at,
                attempt.actor,
                f"remediate.{attempt.step.value}",
                attempt.counter,
                {
                    "outcome": attempt.outcome.value,
                    "detail": attempt.detail,
                    "incident_id": incident_id,
                },
            )

    def pending(self) -> list[Attempt]:
        """Every rung sent whose recheck is still to come (``Outcome.PENDING``), oldest first."""
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT * FROM repairs WHERE outcome = ? ORDER BY at, id", (Outcome.PENDING.value,)
            ).fetchall()
        return [_attempt(r) for r in rows]

    def settle(self, attempt: Attempt, outcome: Outcome, detail: str, at: datetime) -> None:
        """A pending rung's recheck came in: its outcome and detail, audited with the recheck."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE repairs SET outcome = ?, detail = ? "
                "WHERE counter = ? AND step = ? AND at = ? AND outcome = ?",
                (
                    outcome.value,
                    detail,
                    attempt.counter,
                    attempt.step.value,
                    _iso(attempt.at),
                    Outcome.PENDING.value,
                ),
            )
            self.store.audit(
                at,
                "agent",
                f"remediate.{attempt.step.value}.recheck",
                attempt.counter,
                {"outcome": outcome.value, "detail": detail, "sent_at": _iso(attempt.at)},
            )

    def attempts(self, counter: str, since: datetime | None = None) -> list[Attempt]:
        query, args = "SELECT * FROM repairs WHERE counter = ?", [counter]
        if since is not None:
            query += " AND at >= ?"
            args.append(_iso(since))
        with self.store.transaction() as db:
            rows = db.execute(query + " ORDER BY at, id", args).fetchall()
        return [_attempt(r) for r in rows]

    # -- RMAs ---------------------------------------------------------------------------------

    def get(self, rma_id: int) -> Rma:
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM rmas WHERE id = ?", (rma_id,)).fetchone()
        if row is None:
            raise RmaError(f"no RMA {rma_id}: see `ffc-agent rma list`")
        return _rma(row)

    def open_for(self, counter: str) -> Rma | None:
        with self.store.transaction() as db:
            row = db.execute(
                f"SELECT * FROM rmas WHERE counter = ? AND state NOT IN ({FINAL_SQL})",  # noqa: S608
                (counter,),
            ).fetchone()
        return _rma(row) if row else None

    def all(self, *, open_only: bool = False) -> list[Rma]:
        query = "SELECT * FROM rmas"
        if open_only:
            query += f" WHERE state NOT IN ({FINAL_SQL})"
        with self.store.transaction() as db:
            return [_rma(r) for r in db.execute(query + " ORDER BY id").fetchall()]

    def start(
        self,
        counter: str,
        *,
        site: str,
        actor: str,
        reason: str,
        at: datetime,
        state: State = State.CANDIDATE,
        incident_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> tuple[Rma, bool]:
        """The counter's open RMA, or a new one; True when it was created now."""
        with self.store.transaction() as db:
            existing = self.open_for(counter)
            if existing is not None:
                return existing, False
            cur = db.execute(
                "INSERT INTO rmas (counter, site, state, reason, opened_at, updated_at, "
                "incident_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    counter,
                    site,
                    state.value,
                    reason,
                    _iso(at),
                    _iso(at),
                    incident_id,
                    json.dumps(data or {}, default=str),
                ),
            )
            rma_id = int(cur.lastrowid or 0)
            self._move(db, rma_id, at, None, state, actor, reason)
            self.store.audit(at, actor, "rma.start", counter, {"rma": rma_id, "reason": reason})
        return self.get(rma_id), True

    def advance(
        self, rma_id: int, target: State | str, *, actor: str, reason: str, at: datetime
    ) -> Rma:
        """Move an RMA on; ``IllegalTransition`` when the road does not allow it."""
        with self.store.transaction() as db:
            rma = self.get(rma_id)
            facts = Facts(
                rescued=self.done(rma_id, "rescue"),
                replacement_verified=self.done(rma_id, "verify_replacement"),
            )
            to = check_transition(rma_id, rma.state, target, facts)
            db.execute(
                "UPDATE rmas SET state = ?, updated_at = ? WHERE id = ?",
                (to.value, _iso(at), rma_id),
            )
            self._move(db, rma_id, at, rma.state, to, actor, reason)
            self.store.audit(
                at,
                actor,
                "rma.advance",
                rma.counter,
                {"rma": rma_id, "from": rma.state.value, "to": to.value, "reason": reason},
            )
        return self.get(rma_id)

    def update(
        self,
        rma_id: int,
        *,
        at: datetime,
        ticket_key: str | None = None,
        new_serial: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Rma:
        """Set the ticket key or new serial, and merge ``data`` into the RMA's data."""
        with self.store.transaction() as db:
            rma = self.get(rma_id)
            merged = {**rma.data, **(data or {})}
            db.execute(
                "UPDATE rmas SET updated_at = ?, ticket_key = ?, new_serial = ?, data = ? "
                "WHERE id = ?",
                (
                    _iso(at),
                    ticket_key or rma.ticket_key,
                    new_serial or rma.new_serial,
                    json.dumps(merged, default=str),
                    rma_id,
                ),
            )
        return self.get(rma_id)

    def moves(self, rma_id: int) -> list[Move]:
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT * FROM rma_moves WHERE rma_id = ? ORDER BY id", (rma_id,)
            ).fetchall()
        return [
            Move(
                datetime.fromisoformat(r["at"]),
                State(r["from_state"]) if r["from_state"] else None,
                State(r["to_state"]),
                r["actor"],
                r["reason"],
            )
            for r in rows
        ]

    def post_tasks(self, rma: Rma, key: str, post: PostTasks, now: datetime) -> int:
        """Each move of the RMA not yet shown on its ticket ``key``: its lines in the ticket's
        task list (``rma.workflow.tasks_for``) and a follow-up saying it
        (``rma.workflow.task_line``), queued with its "posted" mark in one transaction, so a
        killed run never posts a move twice. Returns how many were posted."""
        posted = 0
        for i, move in enumerate(self.moves(rma.id)):
            name = f"task.{i}"
            if self.done(rma.id, name):
                continue
            with self.store.transaction():
                post(key, tasks_for(move), task_line(rma.id, move), rma.incident_id, now)
                self.mark_done(rma.id, name, now, {"ticket": key, "to": move.to_state}, "agent")
            posted += 1
        return posted

    # -- workflow steps done (resume without doing anything twice) --------------------------

    def done(self, rma_id: int, name: str) -> bool:
        return self.step_result(rma_id, name) is not None

    def step_result(self, rma_id: int, name: str) -> dict[str, Any] | None:
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT result FROM rma_steps WHERE rma_id = ? AND name = ?", (rma_id, name)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def mark_done(
        self, rma_id: int, name: str, at: datetime, result: dict[str, Any], actor: str
    ) -> None:
        with self.store.transaction() as db:
            rma = self.get(rma_id)
            db.execute(
                "INSERT INTO rma_steps (rma_id, name, done_at, result) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rma_id, name) DO UPDATE SET done_at = excluded.done_at, "
                "result = excluded.result",
                (rma_id, name, _iso(at), json.dumps(result, default=str)),
            )
            self.store.audit(at, actor, f"rma.{name}", rma.counter, {"rma": rma_id, **result})

    # -- serial links ---------------------------------------------------------------------------

    def link_serial(self, old: str, new: str, rma_id: int, at: datetime) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO serial_links (old_serial, new_serial, rma_id, at) "
                "VALUES (?, ?, ?, ?)",
                (old, new, rma_id, _iso(at)),
            )

    def predecessors(self, serial: str) -> list[str]:
        """Every earlier serial of this counter position, most recent first."""
        out: list[str] = []
        with self.store.transaction() as db:
            current = serial
            while True:
                row = db.execute(
                    "SELECT old_serial FROM serial_links WHERE new_serial = ? ORDER BY at DESC",
                    (current,),
                ).fetchone()
                if row is None or row[0] in out:
                    return out
                out.append(row[0])
                current = row[0]

    @staticmethod
    def _move(
        db: sqlite3.Connection,
        rma_id: int,
        at: datetime,
        from_state: State | None,
        to_state: State,
        actor: str,
        reason: str,
    ) -> None:
        db.execute(
            "INSERT INTO rma_moves (rma_id, at, from_state, to_state, actor, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                rma_id,
                _iso(at),
                from_state.value if from_state else None,
                to_state.value,
                actor,
                reason,
            ),
        )


def _attempt(r: sqlite3.Row) -> Attempt:
    return Attempt(
        r["counter"],
        Step(r["step"]),
        datetime.fromisoformat(r["at"]),
        Outcome(r["outcome"]),
        r["actor"],
        r["detail"],
    )


def _rma(row: sqlite3.Row) -> Rma:
    try:
        state = State(row["state"])
    except ValueError:
        raise StoreError(f"RMA {row['id']} has an unknown state {row['state']!r}") from None
    return Rma(
        id=row["id"],
        counter=row["counter"],
        site=row["site"],
        state=state,
        reason=row["reason"],
        opened_at=datetime.fromisoformat(row["opened_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        incident_id=row["incident_id"],
        ticket_key=row["ticket_key"],
        new_serial=row["new_serial"],
        data=json.loads(row["data"]),
    )
