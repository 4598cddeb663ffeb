"""One steady-state cycle over a large simulated fleet: wall time, CPU per counter, peak RSS.

N simulated counters (sites of ten) are served on 127.0.0.1 by a child process (this script
with ``--serve``), so the simulator's own threads do not count in the agent's CPU or RSS.
20 % are ``hung`` (the device accepts and never answers) and 10 % ``slow`` (the simulator's
``slow`` kind, every answer delayed ``--slow-delay`` seconds, inside the probe timeout); the
devices hold three days of counts. The agent (a real ``Runner`` in this process, real clock)
runs cycles until one has asked every counter (the first ones back-fill each counter's
history; at most ``--warmup`` of them), then times the next one(s); a timed cycle that still
left counters unasked is labelled NOT settled. Printed: the wall time of each cycle and of
its probe phase, process CPU (all threads) per counter and per healthy counter, and peak RSS
(``ru_maxrss`` of this process only). Then the baseline in the same run: the naive
one-at-a-time prober, the runner's own ``probe_counter`` called on a sample of counters in
turn, each with the same budget as a cycle (twice the probe timeout), extrapolated to N.
Targets are printed beside the figures. Asserts nothing.

Run: ``python3 bench/fleet.py [--counters 1000] [--timeout 3] [--max-parallel 64]
[--cycles 1] [--warmup 12] [--sample 20]``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PER_SITE = 10
WEEK = {d: "00:00-23:59" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def fault_of(index: int) -> str | None:
    """20 % hung, 10 % slow, the rest healthy; spread evenly over the sites."""
    return {0: "hung", 5: "hung", 3: "slow"}.get(index % 10)


def serve(counters: int, state: Path, out: Path, timeout: float, slow_delay: float, **agent):
    """Child process: serve the fleet, write the agent's config to ``out``, wait for stdin EOF."""
    from simulator import Fleet, SimCounter, SimSite

    sites = [
        SimSite(f"S{s:03d}", f"Store {s}", "Europe/London", WEEK)
        for s in range(max(1, counters // PER_SITE))
    ]
    sims = [
        SimCounter(f"C{i:05d}", f"door {i}", sites[i // PER_SITE % len(sites)].code)
        for i in range(counters)
    ]
    with Fleet(sites, sims, seed=3, history_days=3) as fleet:
        for i, c in enumerate(sims):
            kind = fault_of(i)
            if kind == "slow":
                fleet.set_fault(c.serial, "slow", delay=slow_delay)
            elif kind:
                fleet.set_fault(c.serial, kind)
        text = fleet.agent_config_toml(state, probe_timeout_seconds=timeout, agent=agent)
        out.write_text(text)
        print("ready", flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin


def start_fleet(counters: int, tmp: Path, timeout: float, slow_delay: float, *serve_args: str):
    """Start ``--serve`` in a child; returns (process, config path) once it is listening."""
    out = tmp / "agent.toml"
    cmd = [sys.executable, __file__, "--serve", "--counters", str(counters)]
    cmd += ["--timeout", str(timeout), "--slow-delay", str(slow_delay), "--tmp", str(tmp)]
    child = subprocess.Popen([*cmd, *serve_args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = child.stdout.readline()
    if line.strip() != b"ready":
        child.kill()
        raise SystemExit(f"the simulator did not start ({line!r})")
    return child, out


def stop(child: subprocess.Popen) -> None:
    """End the simulator: close its stdin; kill it if its hung handlers keep it past 30 s."""
    child.stdin.close()
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args: argparse.Namespace) -> None:
    from agent.app import make_runner
    from agent.config import parse_config
    from agent.store import Store

    logging.disable(logging.INFO)  # the incident and ticket lines of each cycle
    tmp = Path(tempfile.mkdtemp(prefix="ffc-fleet-"))
    began = time.monotonic()
    child, path = start_fleet(
        args.counters, tmp, args.timeout, args.slow_delay, "--max-parallel", str(args.max_parallel)
    )
    served = time.monotonic() - began
    try:
        data = tomllib.loads(path.read_text())
        data["agent"]["confirm_checks"] = 1
        config = parse_config(data, base_dir=tmp)
        healthy = sum(fault_of(i) is None for i in range(args.counters))
        with Store.open(tmp / "state") as store:
            began = time.monotonic()
            runner = make_runner(config, store)
            built = time.monotonic() - began
            rows = []
            try:
                cycle, timing, timed_n = 0, False, 0
                while timed_n < args.cycles:
                    cpu = time.process_time()
                    started = time.monotonic()
                    probe = [0.0]
                    inner = runner.probe_all

                    def timed(now, inner=inner, probe=probe):
                        t = time.monotonic()
                        try:
                            return inner(now)
                        finally:
                            probe[0] = time.monotonic() - t

                    runner.probe_all = timed
                    result = runner.run_cycle()
                    runner.probe_all = inner
                    wall = time.monotonic() - started
                    used = time.process_time() - cpu
                    ok = sum(o.ok for o in result.observations if o.probe == "api")
                    never = len(runner.probe_errors)  # not started before the deadline
                    rows.append((cycle, timing, wall, probe[0], used, ok, never, rss_mib()))
                    timed_n += timing
                    cycle += 1
                    # steady once a cycle has asked every counter (its history is then filled)
                    timing = timing or not never or cycle >= args.warmup
                base = baseline(runner, config, args.sample)
            finally:
                runner.close()
    finally:
        stop(child)
    n, t = args.counters, args.timeout
    print(f"{n} simulated counters in sites of {PER_SITE} (20 % hung, 10 % slow by "
          f"{args.slow_delay:g} s, rest healthy = {healthy}); probe timeout {t:g} s, "
          f"max_parallel {config.agent.max_parallel}; simulator in a child process "
          f"(started in {served:.1f} s); runner built in {built:.2f} s")  # fmt: skip
    for cycle, timed, wall, probe, used, ok, never, rss in rows:
        if cycle == 0:
            label = "first (fills history)"
        elif not timed:
            label = f"#{cycle} catching up"
        else:  # timed: steady only if every counter was asked in it
            label = f"#{cycle} timed, " + ("NOT settled" if never else "steady")
        print(f"  cycle {label:24} wall {wall:6.2f} s (probe phase {probe:5.2f} s), "
              f"CPU {used:6.2f} s = {used * 1000 / n:5.1f} ms/counter, "
              f"{used * 1000 / healthy:5.1f} ms/healthy counter; api answered {ok}/{n} "
              f"(healthy + slow: {n - n // 5}), never started {never}; "
              f"peak RSS {rss:5.0f} MiB")  # fmt: skip
    steady = [r[2:] for r in rows if r[1]] or [r[2:] for r in rows[-args.cycles :]]
    worst = max(r[0] for r in steady)
    print(f"  target: cycle <= 2 x {t:g} s + start-up = {2 * t + built:.1f} s   "
          f"measured (worst steady): {worst:.2f} s")  # fmt: skip
    cpu_healthy = max(r[2] for r in steady) * 1000 / healthy
    print(f"  target: <= 5 ms CPU per healthy counter     measured: {cpu_healthy:.1f} ms "
          "(all CPU of the cycle charged to the healthy ones)")  # fmt: skip
    print(f"  target: peak RSS <= 150 MB at 1,000         measured: {rows[-1][7]:.0f} MiB "
          f"at {n}")  # fmt: skip
    took, k, kinds = base
    print(f"  baseline: naive one-at-a-time probe_counter on {k} counters ({kinds}): "
          f"{took:.1f} s, extrapolated to {n}: {took * n / k:.0f} s "
          f"({took * n / k / max(worst, 1e-9):.0f}x the steady cycle)")  # fmt: skip


def baseline(runner, config, sample: int) -> tuple[float, int, str]:
    """Probe ``sample`` counters one after another, each under the cycle's budget."""
    picked = config.counters[:sample]  # the same 20/10/70 mix as the fleet
    now = runner.clock.now() if hasattr(runner, "clock") else None
    if now is None:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
    budget = 2 * config.agent.probe_timeout_seconds
    began = time.monotonic()
    for counter in picked:
        runner.probe_counter(counter, now, time.monotonic() + budget, runner.plan(counter, now))
    took = time.monotonic() - began
    mix = [fault_of(i) or "healthy" for i in range(len(picked))]
    kinds = ", ".join(f"{mix.count(k)} {k}" for k in ("healthy", "hung", "slow"))
    return took, len(picked), kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=3.0, help="probe timeout, seconds")
    parser.add_argument("--max-parallel", type=int, default=64)
    parser.add_argument("--cycles", type=int, default=1, help="timed steady cycles")
    parser.add_argument(
        "--warmup", type=int, default=12, help="most cycles to wait for every counter to be asked"
    )
    parser.add_argument("--sample", type=int, default=20, help="counters for the naive baseline")
    parser.add_argument("--slow-delay", type=float, default=1.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--cycle-seconds", type=int, default=300, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        tmp = Path(args.tmp)
        agent = {"max_parallel": args.max_parallel, "cycle_seconds": args.cycle_seconds}
        serve(args.counters, tmp / "state", tmp / "agent.toml", args.timeout, args.slow_delay,
              **agent)  # fmt: skip
    else:
        measure(args)


if __name__ == "__main__":
    main()
