"""Live-view evidence: each counter's recent snapshots on disk, and its reference view.

The live-view check needs the last few snapshots and the view the counter was tuned on. The
agent only gathers them; the check decodes and judges them, inside its isolation and under its
timeout. Snapshots are kept as the JPEGs the counter sent (a short ring per counter under
``<state_dir>/snapshots/<serial>/``), so a one-shot ``ffc-agent check`` and the daemon see the
same history. The reference is the configured tuning image, prepared once and kept until the
file changes, within a memory budget: a prepared reference holds about 2 MB of rotated
spectra and tiles, and 1,000 of them would not fit a small gateway. A fleet whose references
fit ``PREPARED_BUDGET`` (about four counters: a store's doors) keeps them all; a larger one
keeps none between rounds (``diagnostics.kept``: keeping a few of 1,000 would save a few
preparations a round and hold the budget all cycle) and prepares a reference (10–20 ms) only
when its counter's view must be judged, once per new snapshot (every ``snapshot_seconds``,
900 s by default: at 1,000 counters about one a second, 1–2 % of a core, against 2 GB to keep
them all). The runner ends a round of references once a cycle (``end_round``).
The cycle gathers a view without preparing its reference (``prepare=False``) and knows it by
its file's version. Without a reference, the check learns it from the first good snapshots
(never a blocked one) and names them in its finding, and ``keep_learned`` saves that view
here, so it survives restarts.
Every finding says which reference it was.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agent.config import CounterConfig
from diagnostics import liveview as lv
from diagnostics.checks.liveview import LiveView, LiveViewBlocked, Snapshot
from diagnostics.kept import Kept
from diagnostics.model import Finding

log = logging.getLogger(__name__)

KEEP = 6  # enough for the check's confirmation (3) and frozen (4) windows, plus one
PREPARED_BUDGET = 8 * 2**20  # bytes of prepared references kept (about four counters)


def _nbytes(ref: lv.Reference) -> int:
    arrays = [v for v in vars(ref).values() if isinstance(v, np.ndarray)]
    arrays += [v for v in vars(ref.tiles).values() if isinstance(v, np.ndarray)]
    return sum(a.nbytes for a in arrays)


class LiveViews:
    def __init__(self, state_dir: Path, keep: int = KEEP, budget: int = PREPARED_BUDGET) -> None:
        self.snapshots = Path(state_dir) / "snapshots"
        self.references = Path(state_dir) / "references"
        self.keep = keep
        # serial → its prepared reference, by file stamp (``diagnostics.kept``)
        self._prepared: Kept[lv.Reference] = Kept(budget, _nbytes)

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

    def reference(self, counter: CounterConfig) -> tuple[lv.Reference | None, str, dict[str, Any]]:
        """The counter's prepared reference, where it came from, and notes for the finding.

        None with ``"learning"`` when there is none yet: the check learns it."""
        notes: dict[str, Any] = {}
        if counter.reference_image is not None:
            try:
                return self._prepare(counter.serial, counter.reference_image), "configured", notes
            except (OSError, lv.ImageError) as exc:
                notes["reference_error"] = (
                    f"the configured reference image {counter.reference_image} cannot be used "
                    f"({exc}); learning the normal view instead"
                )
        learned = self._learned(counter.serial)
        if learned.exists():
            try:
                return self._prepare(counter.serial, learned), "learned", notes
            except (OSError, lv.ImageError) as exc:
                log.warning(
                    "learned reference of %s unreadable, learning again: %s", counter.serial, exc
                )
        return None, "learning", notes

    def _learned(self, serial: str) -> Path:
        return self.references / f"{serial}.learned.png"

    def _prepare(self, serial: str, path: Path) -> lv.Reference:
        """Prepared once, and again only when the file changes (its path or its mtime)."""
        stamp = (path, path.stat().st_mtime_ns)
        return self._prepared.get(serial, stamp, lambda: lv.prepare_reference(path.read_bytes()))

    def end_round(self) -> None:
        """The cycle's views are judged: keep the references only if all of them fit."""
        self._prepared.end_round()

    @property
    def budget(self) -> int:
        """Bytes of prepared references kept (one larger than that is still kept in use)."""
        return self._prepared.budget

    @budget.setter
    def budget(self, value: int) -> None:
        self._prepared.budget = value

    @property
    def prepared_bytes(self) -> int:
        """Memory held by prepared references (within ``budget``, but for one)."""
        return self._prepared.held

    def evidence(self, counter: CounterConfig, *, prepare: bool = True) -> LiveView:
        """``extra["liveview"]`` for the live-view check: the ring's bytes and the reference.

        ``prepare=False`` (the cycle, which judges a view only when it changed) leaves a
        reference file that is not prepared in memory unprepared: the view then carries no
        reference but the file's version as ``reference_key``, and the caller asks again with
        ``prepare=True`` if it must judge."""
        if not prepare:
            deferred = self._deferred(counter)
            if deferred is not None:
                source, stamp = deferred
                return LiveView(
                    self._snapshots(counter.serial), None, source, {}, reference_key=stamp
                )
        reference, source, notes = self.reference(counter)
        return LiveView(
            self._snapshots(counter.serial),
            reference,
            source,
            notes,
            reference_key=self._stamp(counter.serial),
        )

    def _deferred(self, counter: CounterConfig) -> tuple[str, tuple[object, ...]] | None:
        """The reference file's source and version when it is not prepared in memory (so a
        view can be known without preparing it); None when it is held, or there is none."""
        candidates = [("learned", self._learned(counter.serial))]
        if counter.reference_image is not None:
            candidates.insert(0, ("configured", counter.reference_image))
        for source, path in candidates:
            try:
                stamp = (path, path.stat().st_mtime_ns)
            except OSError:
                continue
            return None if self._prepared.inputs(counter.serial) == stamp else (source, stamp)
        return None

    def _snapshots(self, serial: str) -> tuple[Snapshot, ...]:
        snapshots = []
        for path in self._ring(serial):
            try:
                data = path.read_bytes()
            except OSError as exc:  # dropped from the ring meanwhile, or the disk failed
                log.debug("snapshot %s unreadable: %s", path, exc)
                continue
            at = datetime.fromtimestamp(int(path.stem), UTC)
            snapshots.append(Snapshot(at, data, path.name))
        return tuple(snapshots)

    def _stamp(self, serial: str) -> tuple[object, ...] | None:
        """The file and version the counter's prepared reference came from, if one is held."""
        stamp = self._prepared.inputs(serial)
        return stamp if isinstance(stamp, tuple) else None

    def keep_learned(self, findings: Iterable[Finding]) -> None:
        """Save the views the live-view check learned this cycle (run after the checks)."""
        for f in findings:
            learned_from = f.evidence.get("learned_from")
            if f.check_id != LiveViewBlocked.id or not learned_from or f.subject is None:
                continue
            folder = self.snapshots / f.subject
            try:
                datas = [
                    (folder / f"{int(datetime.fromisoformat(at).timestamp())}.jpg").read_bytes()
                    for at in learned_from
                ]
                image = lv.median_view(datas)
            except (OSError, ValueError) as exc:  # gone from the ring: learned again next time
                log.warning("cannot save the learned view of %s: %s", f.subject, exc)
                continue
            self._save_learned(self._learned(f.subject), image)

    def _save_learned(self, path: Path, image: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(image + 0.5, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        log.warning(
            "learned the normal view of %s from its first good snapshots",
            path.name.removesuffix(".learned.png"),
        )
