"""How big the state database gets after a year of cycles, for 20 and 200 counters.

Prints the figures, asserts nothing. Three steps:

1. **Measure** what one cycle writes: a real ``Runner`` runs real cycles against simulated
   counters on 127.0.0.1 (two counters, one offline); the rows of its steady cycles (not the
   first, which backfills four weeks of counts) are the templates, with their real sizes.
2. **Simulate** days of 5-minute cycles for N counters with a fake clock: each day's rows are
   inserted at the measured rate (observations: the API every cycle, the live view on its
   900 s schedule; findings as measured; one count slot per counter per 15 minutes), and
   ``Store.maintain`` prunes once a day exactly as the agent does.
3. **Project** the year: raw findings and observations are bounded by their age (30 days by
   default), so past day 30 their share of the file is flat; the simulation runs past that to
   show it. Count slots are kept 400 days, so a year of them is all kept: the remaining days'
   slots are inserted directly (they are cheap), and the final file size is the projection.
   Incidents, transitions and the audit log grow with faults, not with cycles: a generous
   allowance (one incident per counter per week, with four transitions) is inserted too.

Run: ``python3 bench/state_size.py [--counters 20 200] [--days 35]``. 200 counters take some
minutes on a gateway-class machine; ``--days`` past 30 only shows the flat part longer.
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

from agent.config import load_config
from agent.runner import Runner
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
    """Rows per counter per cycle, and template rows, from real cycles on a simulated fleet."""
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
            runner = Runner(config, store)
            for _ in range(3):
                runner.run_cycle()
    db = sqlite3.connect(state / DB_NAME)
    db.row_factory = sqlite3.Row
    last = db.execute("SELECT MAX(id) FROM cycles").fetchone()[0]
    findings = [dict(r) for r in db.execute("SELECT * FROM findings WHERE cycle_id = ?", (last,))]
    api = [dict(r) for r in db.execute("SELECT * FROM observations WHERE probe = 'api'")][-2:]
    snap = [dict(r) for r in db.execute("SELECT * FROM observations WHERE probe = 'snapshot'")]
    gateway = [dict(r) for r in db.execute("SELECT * FROM observations WHERE probe = 'gateway'")]
    db.close()
    n = len(counters)
    return {
        "findings_per_counter": len(findings) / n,
        "findings": findings,
        "api": api,
        "snapshot": snap[-1:] or api[-1:],
        "gateway": gateway[-1:],
        "snapshot_every": config.agent.snapshot_seconds // CYCLE_S,
    }


def _row(template: dict[str, Any], **changes: Any) -> tuple[Any, ...]:
    row = {k: v for k, v in template.items() if k != "id"}
    row.update(changes)
    return tuple(row.values())


def simulate(counters: int, days: int, m: dict[str, Any], workdir: Path) -> dict[str, Any]:
    state = workdir / f"sim-{counters}"
    clock = FakeClock(T0)
    store = Store.open(state)
    db = store._db  # the bench writes in bulk, as hundreds of cycles would
    serials = [f"C{i:03d}" for i in range(counters)]
    per_counter = max(1, round(m["findings_per_counter"]))
    f_tpl = (m["findings"] * per_counter)[:per_counter]
    f_cols = [k for k in f_tpl[0] if k != "id"]
    o_cols = [k for k in m["api"][0] if k != "id"]
    cycles_per_day = 86400 // CYCLE_S
    sizes: list[tuple[int, int]] = []
    started = time.monotonic()
    for day in range(days):
        with store.transaction():
            for c in range(cycles_per_day):
                at = T0 + timedelta(days=day, seconds=c * CYCLE_S)
                iso = at.isoformat()
                cycle = db.execute(
                    "INSERT INTO cycles (started_at, finished_at, summary) VALUES (?, ?, '{}')",
                    (iso, iso),
                ).lastrowid
                db.executemany(
                    f"INSERT INTO findings ({', '.join(f_cols)}) VALUES "  # noqa: S608
                    f"({', '.join('?' * len(f_cols))})",
                    [
                        _row(t, cycle_id=cycle, at=iso, subject=s)
                        for s in serials
                        for t in f_tpl
                    ],
                )
                obs = [_row(m["api"][0], counter=s, at=iso) for s in serials]
                if c % max(m["snapshot_every"], 1) == 0:
                    obs += [_row(m["snapshot"][0], counter=s, at=iso) for s in serials]
                obs += [_row(m["gateway"][0], at=iso)] if m["gateway"] else []
                db.executemany(
                    f"INSERT INTO observations ({', '.join(o_cols)}) VALUES "  # noqa: S608
                    f"({', '.join('?' * len(o_cols))})",
                    obs,
                )
            _slots(db, serials, T0 + timedelta(days=day), 1)
            _incidents(db, serials, T0 + timedelta(days=day))
        clock.t = T0 + timedelta(days=day + 1)
        store.maintain(clock.t, findings_days=30, observations_days=30, slots_days=400)
        sizes.append((day + 1, _size(state)))
    simulated_s = time.monotonic() - started
    # the rest of the year: slots (kept 400 days) and incidents; findings and observations
    # stay flat at their 30-day window, as the simulated days past 30 show
    for day in range(days, 365):
        with store.transaction():
            _slots(db, serials, T0 + timedelta(days=day), 1)
            _incidents(db, serials, T0 + timedelta(days=day))
    clock.t = T0 + timedelta(days=365)
    store.maintain(clock.t, findings_days=30, observations_days=30, slots_days=400)
    store.close()
    return {
        "counters": counters,
        "sizes": sizes,
        "year_bytes": _size(state),
        "simulated_s": simulated_s,
        "rows": _counts(state),
    }


def _slots(db: sqlite3.Connection, serials: list[str], day: datetime, days: int) -> None:
    start = int(day.timestamp())
    db.executemany(
        "INSERT INTO count_slots (counter, start, minutes, count_in, count_out, arrived_at) "
        "VALUES (?, ?, 15, 37, 35, ?)",
        [
            (s, start + i * 900, start + i * 900 + 960)
            for s in serials
            for i in range(96 * days)
        ],
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
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in ("findings", "observations", "cycles", "count_slots", "incidents")
        }
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--days", type=int, default=35, help="days of cycles simulated (>30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ffc-state-size-") as tmp:
        work = Path(tmp)
        m = measure(work)
        print(
            f"measured per cycle: {m['findings_per_counter']:.1f} findings per counter, "
            f"1 API observation per counter, a live view every {m['snapshot_every']} cycles"
        )
        for n in args.counters:
            r = simulate(n, args.days, m, work)
            mb = 1024 * 1024
            flat = [f"day {d}: {s / mb:.1f}" for d, s in r["sizes"] if d % 5 == 0 or d == 1]
            print(f"\n{n} counters, {args.days} days of cycles in {r['simulated_s']:.0f}s:")
            print("  file size (MB) " + ", ".join(flat))
            print(f"  after a year (slots and incidents for all 365 days): "
                  f"{r['year_bytes'] / mb:.1f} MB; rows {r['rows']}")


if __name__ == "__main__":
    main()
