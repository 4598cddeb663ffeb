"""How big the state database gets after a year of cycles, for 20 and 200 counters.

Prints the figures, asserts nothing. Three steps:

1. **Measure** what one cycle writes: a real ``Runner`` runs real cycles against simulated
   counters on 127.0.0.1 (two counters, one offline); the rows of its steady cycles (not the
   first, which backfills four weeks of counts) are the templates, with their real sizes.
2. **Simulate** a few days of 5-minute cycles for N counters with a fake clock: every row
   a cycle writes (findings, observations, one count slot per counter per 15 minutes), at
   the measured rate, with one counter in twenty faulty all year (generous), and
   ``Store.maintain`` pruning once a day exactly as the agent does. The file size per day
   shows the quiet window (three days) filling and then holding flat.
3. **Project** the year without inserting a year of rows that pruning would delete again:
   for the remaining days, only what is left at the year's end is written — count slots
   (kept 400 days) and incidents (never pruned; one per counter per week, with transitions
   and audit lines, is generous) for every day; problem findings and failed probes for the
   last 30 days; quiet findings and successful probes for the last three — with the daily
   prune running over that window. The file size at the end is the projection. What this
   leaves out is the fragmentation of a year of daily churn; the simulated days measure it
   (the size stops growing once the quiet window is full), and ``incremental_vacuum``
   returns freed pages.

Run: ``python3 bench/state_size.py [--counters 20 200] [--days 4]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.app import make_runner
from agent.config import load_config
from agent.store import DB_NAME, Store
from simulator import Fleet, SimCounter, SimSite

CYCLE_S = 300
ALL_DAY = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t


def measure(workdir: Path) -> dict[str, Any]:
    """Rows per cycle, and template rows, from real cycles on a simulated fleet."""
    site = SimSite("S1", "Shop", "Europe/London", ALL_DAY)
    counters = [
        SimCounter("UP", "Door", "S1", base_rate=200.0, password="pw-bench"),
        SimCounter("DOWN", "Side", "S1", base_rate=150.0, password="pw-bench"),
    ]
    state = workdir / "measure"
    with Fleet([site], counters, seed=1) as fleet:
        fleet.set_fault("DOWN", "offline", since=datetime.now(UTC) - timedelta(hours=1))
        path = workdir / "measure.toml"
        path.write_text(fleet.agent_config_toml(state, probe_timeout_seconds=1))
        config = load_config(path)
        with Store.open(state) as store:
            runner = make_runner(config, store)
            for _ in range(3):
                runner.run_cycle()
    db = sqlite3.connect(state / DB_NAME)
    db.row_factory = sqlite3.Row
    last = db.execute("SELECT MAX(id) FROM cycles").fetchone()[0]
    findings = [dict(r) for r in db.execute("SELECT * FROM findings WHERE cycle_id = ?", (last,))]

    def obs(probe: str, counter: str) -> list[dict[str, Any]]:
        query = "SELECT * FROM observations WHERE probe = ? AND counter = ? ORDER BY id DESC"
        return [dict(r) for r in db.execute(query, (probe, counter)).fetchall()[:1]]

    m = {
        "healthy": [f for f in findings if f["subject"] == "UP"],
        "faulty": [f for f in findings if f["subject"] == "DOWN"],
        "fleet": [f for f in findings if f["subject"] not in ("UP", "DOWN")],
        "api": obs("api", "UP"),
        "api_failed": obs("api", "DOWN") or obs("api", "UP"),
        "snapshot": obs("snapshot", "UP") or obs("api", "UP"),
        "gateway": obs("gateway", "gateway"),
        "snapshot_every": config.agent.snapshot_seconds // CYCLE_S,
    }
    db.close()
    return m


QUIET_DAYS = 3  # what Runner.maintain passes at 5-minute cycles
FAULTY_SHARE = 0.05  # generous: one counter in twenty has an open problem all year


def _row(template: dict[str, Any], **changes: Any) -> tuple[Any, ...]:
    row = {k: v for k, v in template.items() if k != "id"}
    row.update(changes)
    return tuple(row.values())


class Writer:
    """Inserts one cycle's rows for ``serials`` at ``at``, as the runner would."""

    def __init__(self, db: sqlite3.Connection, m: dict[str, Any], serials: list[str]) -> None:
        self.db, self.m, self.serials = db, m, serials
        faulty = max(1, round(len(serials) * FAULTY_SHARE))
        self.faulty = set(serials[:faulty])
        self.f_cols = [k for k in m["healthy"][0] if k != "id"]
        self.o_cols = [k for k in m["api"][0] if k != "id"]

    def findings(self, cycle: int, iso: str, *, quiet: bool, problems: bool) -> None:
        rows = []
        for s in self.serials:
            for t in self.m["faulty" if s in self.faulty else "healthy"]:
                if (t["status"] in ("ok", "skip") and quiet) or (
                    t["status"] not in ("ok", "skip") and problems
                ):
                    rows.append(_row(t, cycle_id=cycle, at=iso, subject=s))
        rows += [_row(t, cycle_id=cycle, at=iso) for t in self.m["fleet"] if quiet]
        self.db.executemany(
            f"INSERT INTO findings ({', '.join(self.f_cols)}) VALUES "
            f"({', '.join('?' * len(self.f_cols))})",
            rows,
        )

    def observations(self, c: int, iso: str, *, quiet: bool = True) -> None:
        """The API every cycle, the live view on its schedule, the gateway; ``quiet=False``
        writes only the failures (the faulty counters' API probes), which pruning keeps."""
        m = self.m
        rows = [
            _row(m["api_failed" if s in self.faulty else "api"][0], counter=s, at=iso)
            for s in self.serials
            if quiet or s in self.faulty
        ]
        if quiet and c % max(m["snapshot_every"], 1) == 0:
            rows += [_row(m["snapshot"][0], counter=s, at=iso) for s in self.serials]
        rows += [_row(g, at=iso) for g in m["gateway"]] if quiet else []
        self.db.executemany(
            f"INSERT INTO observations ({', '.join(self.o_cols)}) VALUES "
            f"({', '.join('?' * len(self.o_cols))})",
            rows,
        )

    def cycle(self, at: datetime) -> tuple[int, str]:
        iso = at.isoformat()
        cur = self.db.execute(
            "INSERT INTO cycles (started_at, finished_at, summary) VALUES (?, ?, '{}')",
            (iso, iso),
        )
        return int(cur.lastrowid or 0), iso


def simulate(counters: int, days: int, m: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``days`` of whole cycles with daily pruning, then the rest of the year's survivors."""
    state = workdir / f"sim-{counters}"
    store = Store.open(state)
    db = store._db  # the bench writes in bulk, as hundreds of cycles would
    serials = [f"C{i:03d}" for i in range(counters)]
    w = Writer(db, m, serials)
    per_day = 86400 // CYCLE_S
    keep = {
        "findings_days": 30,
        "observations_days": 30,
        "slots_days": 400,
        "quiet_days": QUIET_DAYS,
    }
    sizes: list[tuple[int, int]] = []
    started = time.monotonic()
    for day in range(days):  # phase A: everything, pruned daily as the agent does
        with store.transaction():
            for c in range(per_day):
                cycle, iso = w.cycle(T0 + timedelta(days=day, seconds=c * CYCLE_S))
                w.findings(cycle, iso, quiet=True, problems=True)
                w.observations(c, iso)
            _slots(db, serials, T0 + timedelta(days=day))
            _incidents(db, serials, T0 + timedelta(days=day))
        store.maintain(T0 + timedelta(days=day + 1), **keep)
        sizes.append((day + 1, _size(state)))
    simulated_s = time.monotonic() - started
    # phase B: the rest of the year, only what pruning would leave at its end: slots and
    # incidents of every day; problems and failed probes of the last 30 days; quiet findings
    # and successful probes of the last 3 (the agent's window at 5-minute cycles: the quiet
    # rows in between would be inserted and pruned the next day)
    for day in range(days, 365):
        window = day >= 365 - 30
        with store.transaction():
            if window:
                for c in range(per_day):
                    cycle, iso = w.cycle(T0 + timedelta(days=day, seconds=c * CYCLE_S))
                    w.findings(cycle, iso, quiet=day >= 365 - QUIET_DAYS, problems=True)
                    w.observations(c, iso, quiet=day >= 365 - QUIET_DAYS)
            _slots(db, serials, T0 + timedelta(days=day))
            _incidents(db, serials, T0 + timedelta(days=day))
        if window:
            store.maintain(T0 + timedelta(days=day + 1), **keep)
    store.close()
    opened = time.monotonic()
    Store.open(state).close()  # what every command and the service pay: quick_check included
    open_s = time.monotonic() - opened
    return {
        "counters": counters,
        "sizes": sizes,
        "open_s": open_s,
        "year_bytes": _size(state),
        "simulated_s": simulated_s,
        "rows": _counts(state),
    }


def _slots(db: sqlite3.Connection, serials: list[str], day: datetime) -> None:
    start = int(day.timestamp())
    db.executemany(
        "INSERT INTO count_slots (counter, start, minutes, count_in, count_out, arrived_at) "
        "VALUES (?, ?, 15, 37, 35, ?)",
        [(s, start + i * 900, start + i * 900 + 960) for s in serials for i in range(96)],
    )


def _incidents(db: sqlite3.Connection, serials: list[str], day: datetime) -> None:
    """One incident per counter per week, four transitions and two audit lines each."""
    iso = day.isoformat()
    weekly = [s for i, s in enumerate(serials) if (day.toordinal() + i) % 7 == 0]
    for s in weekly:
        finding = json.dumps({"summary": "counter offline for 2h", "evidence": {"x": 1}})
        cur = db.execute(
            "INSERT INTO incidents (check_id, site, subject, state, code, summary, opened_at, "
            "updated_at, resolved_at, last_finding) VALUES ('counter.offline', 'S1', ?, "
            "'resolved', 'offline', 'counter offline', ?, ?, ?, ?)",
            (s, iso, iso, iso, finding),
        )
        for state in ("suspected", "open", "recovering", "resolved"):
            db.execute(
                "INSERT INTO transitions (incident_id, at, from_state, to_state, reason) "
                "VALUES (?, ?, NULL, ?, 'confirmed by 2 bad check(s) in a row')",
                (cur.lastrowid, iso, state),
            )
        for _ in range(2):
            db.execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES "
                "(?, 'agent', 'ticket.filed', ?, '{\"number\": \"L-1\"}')",
                (iso, s),
            )


def _size(state: Path) -> int:
    return sum(p.stat().st_size for p in state.glob(f"{DB_NAME}*"))


def _counts(state: Path) -> dict[str, int]:
    db = sqlite3.connect(state / DB_NAME)
    try:
        return {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("findings", "observations", "cycles", "count_slots", "incidents")
        }
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--days", type=int, default=4, help="days of whole cycles first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ffc-state-size-") as tmp:
        work = Path(tmp)
        m = measure(work)
        print(
            f"measured per cycle: {len(m['healthy'])} findings per healthy counter, "
            f"{len(m['faulty'])} per faulty one ({FAULTY_SHARE:.0%} of them), "
            f"{len(m['fleet'])} for the site and gateway; 1 API observation per counter, "
            f"a live view every {m['snapshot_every']} cycles"
        )
        for n in args.counters:
            r = simulate(n, args.days, m, work)
            mb = 1024 * 1024
            flat = [f"day {d}: {s / mb:.1f}" for d, s in r["sizes"]]
            print(f"\n{n} counters, {args.days} days of cycles in {r['simulated_s']:.0f}s:")
            print("  file size (MB) " + ", ".join(flat))
            print(
                f"  after a year: {r['year_bytes'] / mb:.1f} MB "
                f"({r['year_bytes'] / n / 1024:.0f} KB per counter); rows {r['rows']}"
            )
            print(f"  opening it (PRAGMA quick_check included): {r['open_s']:.1f}s")


if __name__ == "__main__":
    main()
