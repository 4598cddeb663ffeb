"""How the agent fares against hostile counters: one cycle over the whole corpus, with figures.

Runs every behaviour of ``tests/hostile.py`` (hangs, drips, bombs, lies, absurd numbers ...)
as its own counter on 127.0.0.1, beside healthy simulated counters, through one real cycle
(probe → record → checks → incidents → tickets in a local sink). Prints the wall time of the
probe phase and of the whole cycle, the peak RSS, and the finding each behaviour produced.
Then the starvation case: ``max_parallel`` counters dripping their status line beside healthy
ones. Asserts nothing; ``tests/agent/test_hostile.py`` does.

Run: ``python3 bench/hostile.py [--timeout 1.0] [--healthy 2]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.app import make_runner
from agent.config import parse_config
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite
from tests.hostile import (
    CORPUS,
    Case,
    counter_entries,
    drip,
    everywhere,
    hostile_counters,
    serial_of,
)

NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config_for(fleet: Fleet, tmp: Path, servers, cases, timeout: float, **agent):
    settings = {"confirm_checks": 1, "snapshot_seconds": 300, **agent}
    text = fleet.agent_config_toml(tmp / "state", probe_timeout_seconds=timeout, agent=settings)
    data = tomllib.loads(text)
    data["counters"] += counter_entries(cases, servers, "LDN01")
    return parse_config(data, base_dir=tmp)


def corpus(timeout: float, healthy: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ffc-hostile-"))
    clock = FakeClock(NOW)
    sites = [SimSite("LDN01", "London", "Europe/London", WEEK)]
    counters = [SimCounter(s, s, "LDN01", base_rate=150.0) for s in healthy]
    with Fleet(sites, counters, seed=3, clock=clock) as fleet, hostile_counters(CORPUS) as servers:
        fleet.start()
        config = config_for(fleet, tmp, servers, CORPUS, timeout)
        with Store.open(tmp / "state") as store:
            runner = make_runner(config, store, clock=clock)
            before = rss_mib()
            started = time.monotonic()
            result = runner.run_cycle()
            wall = time.monotonic() - started
            after = rss_mib()
    slowest = max(o.elapsed_s for o in result.observations)
    print(f"corpus: {len(CORPUS)} hostile + {len(healthy)} healthy counters, probe timeout "
          f"{timeout:g} s, max_parallel {config.agent.max_parallel}")  # fmt: skip
    print(f"  slowest probe       {slowest:6.2f} s   (deadline: 2 x {timeout:g} s)")
    print(f"  whole cycle         {wall:6.2f} s   (with {len(result.tickets)} tickets filed)")
    print(f"  peak RSS            {after:6.0f} MiB (+{after - before:.0f} MiB in the cycle)")
    agent_errors = [a.finding for a in result.assessed if a.finding.check_id == "agent.probe"]
    print(f"  agent.probe errors  {len(agent_errors)}")
    print()
    print(f"  {'behaviour':24} {'probe':9} {'expected':13} {'got':13} {'s':>5}  message")
    ok = 0
    for case in CORPUS:
        serial = serial_of(case)
        obs = next(
            (o for o in result.observations if o.counter == serial and o.probe == case.probe), None
        )
        got = "—" if obs is None else ("ok" if obs.ok else str(obs.error_code))
        ok += got == case.code
        secs = f"{obs.elapsed_s:5.2f}" if obs else "    —"
        print(f"  {case.name:24} {case.probe:9} {case.code:13} {got:13} {secs}  "
              f"{(obs.error if obs else '')[:70]}")  # fmt: skip
    for serial in healthy:
        states = [f"{o.probe}={'ok' if o.ok else o.error_code}" for o in result.observations
                  if o.counter == serial]  # fmt: skip
        print(f"  {serial:24} healthy   {' '.join(states)}")
    print(f"\n  {ok}/{len(CORPUS)} behaviours gave the expected finding")
    print(f"  probe threads alive after the cycle: {_probe_threads_after(5.0)}")


def _probe_threads_after(seconds: float) -> int:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        alive = [t for t in threading.enumerate() if t.name.startswith("probe-")]
        if not alive:
            return 0
        threading.Event().wait(0.05)
    return len(alive)


def starvation(timeout: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ffc-starve-"))
    healthy = [f"OK-{i}" for i in range(6)]
    slow = [
        Case(f"drip_{i}", everywhere(drip(b"", b"HTTP/1.1 200 OK\r\n" * 50)), "api", "timeout")
        for i in range(8)
    ]
    clock = FakeClock(NOW)
    sites = [SimSite("LDN01", "London", "Europe/London", WEEK)]
    counters = [SimCounter(s, s, "LDN01", base_rate=150.0) for s in healthy]
    with Fleet(sites, counters, seed=3, clock=clock) as fleet, hostile_counters(slow) as servers:
        fleet.start()
        config = config_for(fleet, tmp, servers, slow, timeout, max_parallel=8)
        with Store.open(tmp / "state") as store:
            runner = make_runner(config, store, clock=clock)
            started = time.monotonic()
            results = runner.probe_all(NOW)
            took = time.monotonic() - started
    up = sum(all(o.ok for o in results[s].observations if o.probe == "api") for s in healthy)
    print("\nstarvation: 8 counters dripping their status line (= max_parallel) + 6 healthy")
    print(f"  probe phase         {took:6.2f} s   (deadline: 2 x {timeout:g} s)")
    print(f"  healthy answered    {up}/{len(healthy)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1.0, help="probe timeout, seconds")
    parser.add_argument("--healthy", type=int, default=2, help="healthy counters beside them")
    args = parser.parse_args()
    corpus(args.timeout, [f"HEALTHY-{i}" for i in range(1, args.healthy + 1)])
    starvation(args.timeout)


if __name__ == "__main__":
    main()
