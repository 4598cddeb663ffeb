"""How long the count checks take: a year of 15-minute slots for 100 counters.

Prints the figures, asserts nothing. Synthetic negative-binomial traffic with a weekly
pattern (ten sites of ten counters, doors grouped in pairs), a few faults, judged the way
``analyze counts`` does it: one model per site, every check over the whole year. Also times
the CSV reader on one counter-year of rows.

Run: ``python3 bench/bench_counts.py [--counters 100] [--days 365]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.commands.analyze import judge_model
from diagnostics.assess import assess
from diagnostics.calendar import Hours, SiteCalendar
from diagnostics.checks.counts import peers_by_group
from diagnostics.checks.counts_missing import fold_site_outages
from diagnostics.countcsv import parse_counts_csv
from diagnostics.series import CountArrays, CountModel, Grid

CAL = SiteCalendar(
    "Europe/London",
    tuple([Hours(datetime.min.time().replace(hour=9), datetime.min.time().replace(hour=20))] * 7),
    holiday_region="GB-ENG",
)


def site_arrays(grid: Grid, counters: int, rng: np.random.Generator):
    hour = grid.minute / 60
    shape = np.exp(-((hour - 14) ** 2) / 12) * (grid.open_regular > 0)
    shape *= np.where(grid.weekday >= 5, 1.4, 1.0)
    cin = np.empty((counters, grid.n))
    cout = np.empty((counters, grid.n))
    day_level = rng.gamma(8, 1 / 8, size=int(grid.day.max() - grid.day.min()) + 1)
    common = day_level[grid.day - grid.day.min()]
    for i in range(counters):
        mu = rng.uniform(5, 60) * shape * common
        total = rng.poisson(rng.gamma(10, np.maximum(mu, 1e-9) / 10))
        cin[i] = rng.binomial(total, 0.5)
        cout[i] = total - cin[i]
    # a few faults so that every detector has something to do
    cin[0, 5000:5040] = 0
    cout[0, 5000:5040] = 0
    cin[1, 9000:9100] = np.nan
    cout[1, 9000:9100] = np.nan
    cin[2, 20000:] = np.floor(cin[2, 20000:] * 0.6)
    return cin, cout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-site", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    start = datetime(2025, 1, 6, tzinfo=UTC)
    n = args.days * 96
    now = start + timedelta(minutes=15 * n)
    sites = max(1, args.counters // args.per_site)
    build = judge = 0.0
    build_cpu = judge_cpu = 0.0  # CPU seconds: what the work costs on a machine others share
    findings = 0
    began = time.perf_counter()
    for s in range(sites):
        grid = Grid.build(start, 15, n, CAL)
        cin, cout = site_arrays(grid, args.per_site, rng)
        serials = tuple(f"S{s:02d}C{i:02d}" for i in range(args.per_site))
        groups = {serial: f"g{i // 2}" for i, serial in enumerate(serials)}
        t0, c0 = time.perf_counter(), time.process_time()
        model = CountModel(
            CountArrays(grid, serials, cin, cout), CAL, now, peers_by_group(serials, groups)
        )
        t1, c1 = time.perf_counter(), time.process_time()
        out = assess(
            fold_site_outages(judge_model(model, f"SITE{s:02d}", {})), {f"SITE{s:02d}": CAL}
        )
        t2, c2 = time.perf_counter(), time.process_time()
        build += t1 - t0
        judge += t2 - t1
        build_cpu += c1 - c0
        judge_cpu += c2 - c1
        findings += sum(a.finding.problem for a in out)
    total = time.perf_counter() - began
    slots = sites * args.per_site * n
    print(
        f"{sites * args.per_site} counters x {args.days} days of 15-minute slots ({slots:,} slots)"
    )
    print(f"  models (baselines, dispersion, faulty days): {build:6.2f} s ({build_cpu:.2f} s CPU)")
    print(
        f"  checks (zero runs, gaps, level, imbalance, site): {judge:6.2f} s "
        f"({judge_cpu:.2f} s CPU)"
    )
    print(f"  total including synthetic data: {total:6.2f} s  ({findings} problem findings)")
    rows = ["timestamp,counter,in,out"]
    t = start
    for i in range(n):
        rows.append(f"{t.isoformat()},C1,{i % 7},{i % 5}")
        t += timedelta(minutes=15)
    text = "\n".join(rows)
    t0 = time.perf_counter()
    parse_counts_csv(text, {"C1"})
    print(f"  CSV reader: {n:,} rows (one counter-year) in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
