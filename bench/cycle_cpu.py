"""CPU time of the runner's detect phase per counter: the first cycle and the steady state.

A store in a temporary directory is filled with a month of synthetic 15-minute slots for N
counters (sites of ten, doors in pairs; negative-binomial traffic with a daily shape), without
any network: the slots go into the store as the runner's ``record`` would put them. Then the
detect phase — the runner's ``history`` and every counter and site check — runs cycle after
cycle, the clock moving ``--cycle-seconds`` each time and every counter's new slot recorded as
it ends. Prints CPU milliseconds per counter (all threads of the process) for the first cycle
and the mean of the steady-state cycles. Asserts nothing.

Run: ``python3 bench/cycle_cpu.py [--counters 200] [--days 35] [--cycles 12]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.app import make_runner
from agent.config import parse_config
from agent.runner import Runner
from agent.store import Store
from diagnostics.checks import SiteEvidence
from diagnostics.model import CountSlot, Observation
from simulator import FakeClock

PER_SITE = 10
NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # a Wednesday afternoon


def config(counters: int, state: Path, per_site: int = PER_SITE, grouped: bool = True):
    sites = max(1, counters // per_site)
    hours = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    return parse_config(
        {
            "agent": {"state_dir": str(state), "cycle_seconds": 300},
            "sites": [
                {
                    "code": f"S{s:03d}",
                    "name": f"Store {s}",
                    "timezone": "Europe/London",
                    "opening_hours": hours,
                }
                for s in range(sites)
            ],
            "counters": [
                {"serial": f"S{s:03d}C{i:02d}", "name": f"door {i}", "site": f"S{s:03d}"}
                | ({"group": f"g{i // 2}"} if grouped else {})
                for s in range(sites)
                for i in range(per_site)
            ],
            "sinks": [{"type": "local"}],
        },
        base_dir=state,
    )


class Traffic:
    """Each counter's expected count per 15-minute slot: a daily shape, London hours."""

    def __init__(self, serials: list[str], seed: int = 5) -> None:
        self.rng = np.random.default_rng(seed)
        self.rate = {s: self.rng.uniform(5, 60) for s in serials}

    def slots(self, serial: str, starts: list[datetime], now: datetime) -> list[CountSlot]:
        hour = np.array([t.hour + t.minute / 60 for t in starts])  # UTC = London in winter
        shape = np.exp(-((hour - 14) ** 2) / 12) * ((hour >= 9) & (hour < 20))
        mu = self.rate[serial] * shape
        total = self.rng.poisson(self.rng.gamma(10, np.maximum(mu, 1e-9) / 10))
        cin = self.rng.binomial(total, 0.5)
        return [
            CountSlot(serial, t, 15, int(a), int(n - a), now)
            for t, a, n in zip(starts, cin, total, strict=True)
        ]


def detect(runner: Runner, now: datetime) -> None:
    """The detect phase of ``Runner.run_cycle``: history, the counter checks, the site checks."""
    history = runner.history(now)
    for counter in runner.config.counters:
        runner.run_checks(runner.evidence(counter, now, history))
    for site in runner.config.sites:
        members = runner.config.counters_at(site.code)
        kept = hasattr(runner, "models")  # False on the code before the count cache
        evidence = SiteEvidence(
            site=site.code,
            calendar=site.calendar(),
            now=now,
            groups={c.serial: c.group for c in members},
            **(
                {"counts": {c.serial: history[c.serial] for c in members}, "models": runner.models}
                if kept
                else {"counters": {c.serial: history[c.serial] for c in members}}
            ),
        )
        runner.run_checks(evidence, checks=runner.site_checks)
    if hasattr(runner, "models"):
        runner.models.sweep()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=200)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--cycle-seconds", type=int, default=300)
    parser.add_argument("--per-site", type=int, default=PER_SITE)
    parser.add_argument("--ungrouped", action="store_true", help="every door peers every other")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        cfg = config(args.counters, state, args.per_site, not args.ungrouped)
        serials = [c.serial for c in cfg.counters]
        traffic = Traffic(serials)
        step = timedelta(minutes=15)
        first = NOW - timedelta(days=args.days)
        starts = [first + i * step for i in range(int((NOW - first) / step))]
        clock = FakeClock(NOW)
        with Store.open(state) as store:
            for serial in serials:
                store.add_slots(traffic.slots(serial, starts, NOW), NOW)
            runner = make_runner(cfg, store, clock=clock, dry_run=True)
            try:
                figures = []
                now = NOW
                for cycle in range(args.cycles + 1):
                    if cycle:
                        now += timedelta(seconds=args.cycle_seconds)
                        ended = [t for t in [starts[-1] + step] if t + step <= now]
                        if ended:
                            starts.append(ended[0])
                            for serial in serials:
                                fresh = traffic.slots(serial, ended, now)
                                store.add_slots(fresh, now)
                                if hasattr(runner, "counts"):
                                    runner.counts.note(fresh)  # as Runner.record does
                    for serial in serials:  # what the api probe records every cycle
                        store.add_observation(Observation(serial, "api", now, True, elapsed_s=0.01))
                    began = time.process_time()
                    detect(runner, now)
                    figures.append((time.process_time() - began) * 1000 / len(serials))
            finally:
                runner.close()
    steady = figures[1:]
    layout = f"sites of {args.per_site}, " + ("ungrouped" if args.ungrouped else "doors in pairs")
    print(
        f"{len(serials)} counters ({layout}), {args.days} days of 15-minute slots, "
        f"a cycle every {args.cycle_seconds} s (detect phase, CPU of all threads)"
    )
    print(f"  first cycle:  {figures[0]:7.1f} ms CPU per counter")
    print(
        f"  steady state: {np.mean(steady):7.1f} ms CPU per counter "
        f"(mean of {len(steady)} cycles; per cycle: " + " ".join(f"{f:.1f}" for f in steady) + ")"
    )


if __name__ == "__main__":
    main()
