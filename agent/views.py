"""Live-view evidence: each counter's recent snapshots on disk, and its reference view.

The live-view check needs the last few snapshots judged against the view the counter was tuned
on. Snapshots are kept as the JPEGs the counter sent (a short ring per counter under
``<state_dir>/snapshots/<serial>/``), so a one-shot ``ffc-agent check`` and the daemon see the
same history. The reference is the configured tuning image; without one, it is learned from
the first good snapshots (never a blocked one) and saved, so it survives restarts, and every
finding says which it was.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agent.config import CounterConfig
from diagnostics import liveview as lv
from diagnostics.checks.liveview import ViewSample

log = logging.getLogger(__name__)

KEEP = 6  # enough for the check's confirmation (3) and frozen (4) windows, plus one


class LiveViews:
    def __init__(self, state_dir: Path, keep: int = KEEP) -> None:
        self.snapshots = Path(state_dir) / "snapshots"
        self.references = Path(state_dir) / "references"
        self.keep = keep
        self._prepared: dict[str, tuple[Any, lv.Reference]] = {}

    def record(self, serial: str, at: datetime, jpeg: bytes) -> Path:
        """Keep a snapshot (atomically) and drop the oldest beyond the ring's size."""
        folder = self.snapshots / serial
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(at.timestamp())}.jpg"
        tmp = folder / f".{path.name}.tmp"
        try:
            tmp.write_bytes(jpeg)
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk must not keep half a snapshot as well
            raise
        for old in self._ring(serial)[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, serial: str) -> Path | None:
        ring = self._ring(serial)
        return ring[-1] if ring else None

    def _ring(self, serial: str) -> list[Path]:
        folder = self.snapshots / serial
        if not folder.is_dir():
            return []
        return sorted(
            (p for p in folder.glob("*.jpg") if p.stem.isdigit()), key=lambda p: int(p.stem)
        )

    def reference(self, counter: CounterConfig) -> tuple[lv.Reference | None, str, dict]:
        """The counter's reference, where it came from, and notes for the finding."""
        notes: dict[str, Any] = {}
        if counter.reference_image is not None:
            try:
                return self._prepare(counter.serial, counter.reference_image), "configured", notes
            except (OSError, lv.ImageError) as exc:
                notes["reference_error"] = (
                    f"the configured reference image {counter.reference_image} cannot be used "
                    f"({exc}); learning the normal view instead"
                )
        learned = self.references / f"{counter.serial}.learned.png"
        if learned.exists():
            try:
                return self._prepare(counter.serial, learned), "learned", notes
            except (OSError, lv.ImageError) as exc:
                log.warning(
                    "learned reference of %s unreadable, learning again: %s", counter.serial, exc
                )
        learner = lv.LearnedReference()
        for path in self._ring(counter.serial):
            try:
                learner.offer(path.read_bytes())
            except (OSError, lv.ImageError):
                continue
            if learner.reference is not None:
                self._save_learned(learned, learner.reference)
                return learner.reference, "learned", notes
        notes["learning"] = learner.progress
        return None, "learning", notes

    def _prepare(self, serial: str, path: Path) -> lv.Reference:
        stamp = (path, path.stat().st_mtime_ns)
        cached = self._prepared.get(serial)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        prepared = lv.prepare_reference(path.read_bytes())
        self._prepared[serial] = (stamp, prepared)
        return prepared

    def _save_learned(self, path: Path, reference: lv.Reference) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.asarray(reference.image) + 0.5, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        log.warning(
            "learned the normal view of %s from its first good snapshots",
            path.name.removesuffix(".learned.png"),
        )

    def evidence(self, counter: CounterConfig) -> dict[str, Any]:
        """``extra["liveview"]`` for the live-view check."""
        reference, source, notes = self.reference(counter)
        out: dict[str, Any] = {"reference_source": source, **notes, "history": []}
        if reference is None:
            return out
        for path in self._ring(counter.serial):
            try:
                result = lv.analyze(path.read_bytes(), reference)
            except (OSError, lv.ImageError) as exc:
                out.setdefault("unreadable", []).append(f"{path.name}: {exc}")
                continue
            out["history"].append(ViewSample(datetime.fromtimestamp(int(path.stem), UTC), result))
        return out
