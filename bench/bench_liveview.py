"""Time live-view detection: milliseconds per 768x576 JPEG snapshot, decoding included.

    python bench/bench_liveview.py [--runs 200]

The gateway judges every counter's snapshot on each cycle, often on a small ARM box, so the
budget is 15 ms per snapshot on this machine. Each run takes the JPEG bytes as a probe
returns them, decodes them and judges them against a prepared reference (prepared once per
counter, outside the loop; its cost is printed apart). Snapshots cycle through a clear view,
passers-by, a shake, an obstruction, a cover and a turned camera, since some paths cost more.
Prints the median and p95; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diagnostics import liveview as lv
from tests.diagnostics import liveview_synth as synth


def snapshots(scene: str) -> list[bytes]:
    rng = np.random.default_rng(5)
    world = synth.World.of(scene)
    view = world.render()
    imgs = [
        view,
        synth.people(view, rng, 4, (0.08, 0.2))[0],
        world.render(shift=(0.015, 0.01)),
        synth.obstruct(view, rng, 0.5)[0],
        synth.cover(view, rng, 0.9)[0],
        world.render(angle=15),
    ]
    return [synth.encode(synth.add_noise(img, rng, 2), 80) for img in imgs]


def main() -> int:
    ap = argparse.ArgumentParser(description="ms per 768x576 JPEG snapshot, decoding included")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--scene", default="astronaut")
    args = ap.parse_args()
    ref_bytes = synth.reference(args.scene)
    datas = snapshots(args.scene)
    t0 = time.perf_counter()
    ref = lv.prepare_reference(ref_bytes)
    prep_ms = (time.perf_counter() - t0) * 1000
    for data in datas:  # warm up caches and numpy's FFT plans
        lv.analyze(data, ref)
    times = []
    for i in range(args.runs):
        data = datas[i % len(datas)]
        t = time.perf_counter()
        lv.analyze(data, ref)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    size = sum(len(d) for d in datas) // len(datas)
    print(f"live view: {args.runs} snapshots, 768x576 JPEG (~{size // 1024} KiB), decode + judge")
    print(f"  median {statistics.median(times):.2f} ms   p95 {p95:.2f} ms   max {times[-1]:.2f} ms")
    print("  target < 15 ms per snapshot")
    print(f"  reference preparation (once per counter): {prep_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
