"""Evaluate live-view detection on real photographs with synthesised blockages.

    python -m tests.diagnostics.eval_liveview --split test --n 10 [--markdown] [--json FILE]

Builds the evaluation set deterministically (seeded) from scikit-image's bundled photographs
(``liveview_synth``), judges every snapshot against its scene's reference and prints, per
kind: the detection rate (blocked variants called blocked), the kind accuracy, and the
false-alarm rate (benign variants called blocked); near-threshold cases and harsher benign
changes are reported apart. ``--split dev`` uses the photographs the method was developed
on; ``--split test`` the held-out ones quoted in docs/liveview.md. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from diagnostics import liveview as lv
from tests.diagnostics import liveview_synth as synth


@dataclass
class Row:
    scene: str
    group: str
    kind: str
    sub: str
    detail: str
    verdict: str
    found: str | None
    fraction: float
    true_fraction: float
    ms: float


def judge_scenes(scenes: tuple[str, ...], n: int, seed: int) -> list[Row]:
    rows: list[Row] = []
    for i, scene in enumerate(scenes):
        ref = lv.prepare_reference(synth.reference(scene))
        others = tuple(s for s in scenes if s != scene)
        for v in synth.variants(scene, others, seed + 1000 * i, n):
            t0 = time.perf_counter()
            r = lv.analyze(v.data, ref)
            ms = (time.perf_counter() - t0) * 1000
            found = (r.verdict, r.kind, r.blocked_fraction)
            rows.append(Row(scene, v.group, v.kind, v.sub, v.detail, *found, v.fraction, ms))
    return rows


def frozen_rows(scenes: tuple[str, ...], n: int, seed: int) -> list[tuple[str, bool]]:
    """Sequences of 4 snapshots: live ones (noise, sometimes people) and frozen ones."""
    out: list[tuple[str, bool]] = []
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng(seed + 7 + 1000 * i)
        ref = lv.prepare_reference(synth.reference(scene))
        view = synth.World.of(scene).render()

        def fp(data: bytes, ref: lv.Reference = ref) -> np.ndarray:
            fingerprint = lv.analyze(data, ref).fingerprint
            assert fingerprint is not None
            return fingerprint

        for _ in range(n):
            live = []
            for _ in range(4):
                img = view
                if rng.random() < 0.5:
                    img = synth.people(img, rng, int(rng.integers(1, 3)), (0.08, 0.16))[0]
                live.append(fp(synth.encode(synth.add_noise(img, rng, rng.uniform(1, 3)))))
            out.append(("live (people, noise)", lv.frozen(live, expected_traffic=True)))
            still = [fp(synth.encode(synth.add_noise(view, rng, 1.0))) for _ in range(4)]
            out.append(("live (empty store, low noise)", lv.frozen(still, expected_traffic=True)))
            frame = synth.encode(synth.add_noise(view, rng, 2.0), 80)
            out.append(("frozen (same frame)", lv.frozen([fp(frame)] * 4, expected_traffic=True)))
            raw = synth.add_noise(view, rng, 2.0)
            again = [fp(synth.encode(raw, int(rng.integers(60, 91)))) for _ in range(4)]
            out.append(("frozen (re-encoded)", lv.frozen(again, expected_traffic=True)))
    return out


def table(rows: list[Row], frozen: list[tuple[str, bool]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    by: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by[(r.group, r.kind, r.sub)].append(r)
        by[(r.group, r.kind, "")].append(r)

    def pct(k: int, n: int) -> str:
        return f"{k / n:.0%} ({k}/{n})" if n else "-"

    order = ("blocked", "near-blocked", "benign", "near-clear", "stress")
    for group in order:
        keys = sorted(k for k in by if k[0] == group)
        for g, kind, sub in keys:
            if group != "blocked" and sub:
                continue  # sub-kinds are told apart for blockages only
            rs = by[(g, kind, sub)]
            n = len(rs)
            hits = sum(r.verdict == "blocked" for r in rs)
            right = sum(r.found == kind for r in rs)
            label = kind if not sub else f"  {kind} / {sub}"
            if group in ("blocked", "near-blocked"):
                out.append((group, label, str(n), pct(hits, n), pct(right, n), ""))
            else:
                out.append((group, label, str(n), "", "", pct(hits, n)))
    per: dict[str, list[bool]] = defaultdict(list)
    for name, verdict in frozen:
        per[name].append(verdict)
    for name, vs in sorted(per.items()):
        k, n = sum(vs), len(vs)
        if name.startswith("frozen"):
            out.append(("frozen", name, str(n), pct(k, n), pct(k, n), ""))
        else:
            out.append(("frozen", name, str(n), "", "", pct(k, n)))
    blocked = [r for r in rows if r.group == "blocked"]
    benign = [r for r in rows if r.group == "benign"]
    out.append(
        (
            "all",
            "blocked kinds / benign changes",
            f"{len(blocked)} / {len(benign)}",
            pct(sum(r.verdict == "blocked" for r in blocked), len(blocked)),
            pct(sum(r.found == r.kind for r in blocked), len(blocked)),
            pct(sum(r.verdict == "blocked" for r in benign), len(benign)),
        )
    )
    return out


HEAD = ("group", "kind", "n", "detected", "kind right", "false alarms")


def render(lines: list[tuple[str, ...]], markdown: bool) -> str:
    if markdown:
        rows = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        rows += [
            "| " + " | ".join(x.strip() if i else x for i, x in enumerate(r)) + " |" for r in lines
        ]
        return "\n".join(rows)
    widths = [max(len(str(r[i])) for r in [HEAD, *lines]) for i in range(len(HEAD))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [HEAD, *lines]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=("dev", "test"), default="test")
    ap.add_argument("--n", type=int, default=10, help="variants of each kind per scene")
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="write every judged variant to this file")
    args = ap.parse_args(argv)
    scenes = synth.TEST_SCENES if args.split == "test" else synth.DEV_SCENES
    rows = judge_scenes(scenes, args.n, args.seed)
    frozen = frozen_rows(scenes, max(1, args.n // 2), args.seed)
    print(f"split {args.split}: scenes {', '.join(scenes)}; {args.n} per kind per scene")
    print(render(table(rows, frozen), args.markdown))
    ms = np.array([r.ms for r in rows])
    print(
        f"\nanalysis per snapshot (JPEG bytes in, verdict out): median {np.median(ms):.1f} ms, "
        f"p95 {np.percentile(ms, 95):.1f} ms"
    )
    obstructed = [r for r in rows if r.kind == "obstructed" and r.group == "blocked"]
    errs = [abs(r.fraction - r.true_fraction) for r in obstructed if r.verdict == "blocked"]
    if errs:
        print(f"obstructed: blocked_fraction off the true share by {np.median(errs):.2f} (median)")
    for scene in scenes:
        rs = [r for r in rows if r.scene == scene]
        det = [r.verdict == "blocked" for r in rs if r.group == "blocked"]
        fa = [r.verdict == "blocked" for r in rs if r.group == "benign"]
        print(f"  {scene:22s} detected {np.mean(det):.0%}  false alarms {np.mean(fa):.0%}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([r.__dict__ for r in rows], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
