"""The daemon over many cycles: does its RSS, thread count or open files grow?

A simulated fleet of N counters (the mix of ``bench/fleet.py``: 20 % hung, 10 % slow, the
rest healthy; sites of ten) is served on 127.0.0.1 by a child process, and ``ffc-agent run``
runs as another child with a short ``cycle_seconds`` against it. A cycle is detected when
``ffc_agent_cycles_total`` in the daemon's metrics textfile goes up; right then the daemon's
RSS, thread count and open file descriptors are sampled with psutil on its pid. Prints the
series and the growth from cycle 5 (after the first cycles have filled the history and the
caches) to the last one. The daemon is stopped with SIGTERM and its exit code printed.
Asserts nothing.

Run: ``python3 bench/soak.py [--counters 200] [--cycles 30] [--cycle-seconds 12]
[--timeout 3]``; prefix ``taskset -c 0`` for a one-core gateway.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fleet import start_fleet, stop  # noqa: E402  (bench/ is not a package)

CYCLES = re.compile(r"^ffc_agent_cycles_total (\S+)$", re.M)


def cycles_done(textfile: Path) -> int:
    try:
        found = CYCLES.search(textfile.read_text())
    except OSError:
        return 0
    return int(float(found.group(1))) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--cycle-seconds", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=3.0, help="probe timeout, seconds")
    parser.add_argument("--max-parallel", type=int, default=64)
    parser.add_argument("--from-cycle", type=int, default=5, help="growth is measured from it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ffc-soak-"))
    extra = ["--max-parallel", str(args.max_parallel), "--cycle-seconds", str(args.cycle_seconds)]
    fleet, config = start_fleet(args.counters, tmp, args.timeout, 1.0, *extra)
    textfile = tmp / "state" / "metrics" / "ffc-agent.prom"
    log = (tmp / "daemon.log").open("wb")
    cmd = [sys.executable, "-m", "agent", "run", "--config", str(config)]
    daemon = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    proc = psutil.Process(daemon.pid)
    series: list[tuple[int, float, float, int, int]] = []
    began = time.monotonic()
    limit = began + args.cycles * args.cycle_seconds * 3 + 120
    try:
        seen = 0
        while seen < args.cycles and time.monotonic() < limit and daemon.poll() is None:
            done = cycles_done(textfile)
            if done > seen:
                seen = done
                rss = proc.memory_info().rss / 2**20
                at, threads, fds = time.monotonic() - began, proc.num_threads(), proc.num_fds()
                series.append((done, at, rss, threads, fds))
                print(f"  cycle {done:3d}  t={at:6.1f} s  RSS {rss:6.1f} MiB  "
                      f"threads {threads:3d}  fds {fds:3d}", flush=True)  # fmt: skip
            time.sleep(0.2)
    finally:
        cpu = proc.cpu_times() if daemon.poll() is None else None
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = "killed after 30 s"
        stop(fleet)
    print(f"{args.counters} counters (20 % hung, 10 % slow), cycle_seconds {args.cycle_seconds}, "
          f"probe timeout {args.timeout:g} s, max_parallel {args.max_parallel}: "
          f"{len(series)} cycles in {time.monotonic() - began:.0f} s; "
          f"daemon exit on SIGTERM: {code}")  # fmt: skip
    if cpu is not None and series:
        print(f"  daemon CPU: {cpu.user + cpu.system:.1f} s over {series[-1][1]:.0f} s")
    base = next((s for s in series if s[0] >= args.from_cycle), None)
    if base and series[-1][0] > base[0]:
        last = series[-1]
        print(f"  growth from cycle {base[0]} to {last[0]}: RSS {last[2] - base[2]:+.1f} MiB "
              f"({base[2]:.1f} -> {last[2]:.1f}), threads {last[3] - base[3]:+d}, "
              f"fds {last[4] - base[4]:+d}")  # fmt: skip
    else:
        print("  too few cycles to measure growth")
    print(f"  daemon log: {tmp / 'daemon.log'}")


if __name__ == "__main__":
    main()
