"""Evaluate live-view detection on real photographs with synthesised blockages.

    python -m tests.diagnostics.eval_liveview --split held-out --n 6 [--markdown] [--json FILE]

Builds the evaluation set deterministically (seeded) from the real photographs bundled with
scikit-image, scikit-learn, matplotlib and PyWavelets (``liveview_synth``), judges every
snapshot against its scene's reference and prints, per kind: the detection rate (blocked
variants called blocked), the kind accuracy, and the false-alarm rate (benign variants called
blocked); near-threshold cases and harsher benign changes are reported apart, then the confusion
matrix between kinds and the frozen-view sequences. ``--split tuning`` uses the photographs
the method was developed on; ``--split held-out`` the others, quoted in docs/liveview.md.
Needs the ``[test]`` extra (scikit-image, scikit-learn, matplotlib, PyWavelets). Not
collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
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


def scene_variants(
    scene: str, others: tuple[str, ...], seed: int, n: int, cache: str | None
) -> list[synth.Variant]:
    """The scene's variants, kept in ``cache`` (a directory) when given: drawing them costs
    far more than judging them, and they depend only on these arguments."""
    if not cache:
        return synth.variants(scene, others, seed, n)
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"{scene}-{seed}-{n}-{len(others)}-v2.pickle")
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return list(pickle.load(fh))  # our own cache file
    out = synth.variants(scene, others, seed, n)
    with open(path, "wb") as fh:
        pickle.dump(out, fh)
    return out


def judge_scenes(scenes: tuple[str, ...], n: int, seed: int, cache: str | None = None) -> list[Row]:
    rows: list[Row] = []
    for i, scene in enumerate(scenes):
        ref = lv.prepare_reference(synth.reference(scene))
        others = tuple(s for s in scenes if s != scene)
        for v in scene_variants(scene, others, seed + 1000 * i, n, cache):
            t0 = time.perf_counter()
            r = lv.analyze(v.data, ref)
            ms = (time.perf_counter() - t0) * 1000
            found = (r.verdict, r.kind, r.blocked_fraction)
            rows.append(Row(scene, v.group, v.kind, v.sub, v.detail, *found, v.fraction, ms))
    return rows


def frozen_rows(scenes: tuple[str, ...], n: int, seed: int) -> list[tuple[str, bool]]:
    """Sequences of 4 snapshots as the counter sends them: live ones and frozen ones.

    Live: sensor noise sigma 1-3 (a real sensor's floor) at a JPEG quality drawn for every
    snapshot, with people in some of them, or an empty, still store. Frozen: one frame sent
    again and again, or re-encoded at a quality drawn for every snapshot (10-98).
    """
    out: list[tuple[str, bool]] = []
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng(seed + 7 + 1000 * i)
        view = synth.World.of(scene).render()

        def quality(r: np.random.Generator = rng) -> int:
            return int(r.integers(30, 96))

        for _ in range(n):
            live = []
            for _ in range(4):
                img = view
                if rng.random() < 0.5:
                    img = synth.people(img, rng, int(rng.integers(1, 3)), (0.08, 0.16))[0]
                live.append(synth.encode(synth.add_noise(img, rng, rng.uniform(1, 3)), quality()))
            out.append(("live (people, noise)", lv.frozen(live, expected_traffic=True)))
            s = rng.uniform(1, 3)
            still = [synth.encode(synth.add_noise(view, rng, s), quality()) for _ in range(4)]
            out.append(("live (empty store, noise 1-3)", lv.frozen(still, expected_traffic=True)))
            frame = synth.encode(synth.add_noise(view, rng, 2.0), quality())
            out.append(("frozen (same frame)", lv.frozen([frame] * 4, expected_traffic=True)))
            raw = synth.add_noise(view, rng, rng.uniform(0, 3))
            again = [synth.encode(raw, int(rng.integers(10, 99))) for _ in range(4)]
            out.append(
                ("frozen (re-encoded, quality 10-98)", lv.frozen(again, expected_traffic=True))
            )
    return out


def table(rows: list[Row], frozen: list[tuple[str, bool]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    by: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by[(r.group, r.kind, "")].append(r)
        if r.sub:  # a sub-kind has a row of its own as well (not counted twice in its kind's)
            by[(r.group, r.kind, r.sub)].append(r)

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


def confusion(rows: list[Row]) -> list[tuple[str, ...]]:
    """Blocked variants: the true kind (rows) against the kind found (columns, "clear" = missed)."""
    found_kinds = [*lv.KINDS[:-1], "clear"]
    lines: list[tuple[str, ...]] = []
    for kind in lv.KINDS[:-1]:
        rs = [r for r in rows if r.group == "blocked" and r.kind == kind]
        if not rs:
            continue
        counts = [sum((r.found or "clear") == f for r in rs) for f in found_kinds]
        lines.append((kind, *(str(c) for c in counts)))
    return [("true \\ found", *found_kinds), *lines]


def render_table(lines: list[tuple[str, ...]], markdown: bool) -> str:
    head, body = lines[0], lines[1:]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines)


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
    ap.add_argument("--split", choices=("tuning", "held-out"), default="held-out")
    ap.add_argument("--n", type=int, default=6, help="variants of each kind per scene")
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="write every judged variant to this file")
    ap.add_argument("--cache", help="keep the drawn variants in this directory")
    args = ap.parse_args(argv)
    scenes = synth.HELD_OUT_SCENES if args.split == "held-out" else synth.TUNING_SCENES
    rows = judge_scenes(scenes, args.n, args.seed, args.cache)
    frozen = frozen_rows(scenes, max(1, args.n // 2), args.seed)
    print(f"split {args.split}: scenes {', '.join(scenes)}; {args.n} per kind per scene")
    print(render(table(rows, frozen), args.markdown))
    print("\nconfusion between kinds (blocked variants; clear = missed):")
    print(render_table(confusion(rows), args.markdown))
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
