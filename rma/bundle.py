"""The diagnostics bundle: one ``.tar.gz`` that lets support judge a ticket without asking back.

Second-line support decides from the bundle whether a counter is replaced, so it holds the
evidence, not opinions: the findings and their verdicts with reasons, the counts around the
incident next to what was expected, the latest snapshot next to the tuned reference, the device
command outputs, an excerpt of the agent's log, the remediation steps tried, and ``report.html``
(``rma.report``) that shows all of it on one page. ``manifest.json`` says what was collected by
which check, how long it took, which probes timed out, the size and sha256 of every file, what
the size cap left out and how often each redaction rule fired.

Contract:

- ``build_bundle(inp, redactor)`` is pure: inputs in, bytes out; the agent collects and passes
  everything in ``BundleInput``. Every text passes the redactor before it is written (layer
  one, per part), then every text file is scrubbed again as a whole (layer two, archive-wide,
  the way ``sos report`` does); what layer two still finds is counted in the manifest as
  ``second_layer``, which should stay absent.
- Images are decoded, downscaled to ``IMAGE_WIDTH`` pixels wide and re-encoded as JPEG, so
  faces are not recognisable and EXIF (camera serials, GPS) is gone. An unreadable image is
  left out with a note, never an error.
- The archive fits ``max_bytes`` (4 MiB by default: a helpdesk's attachment limit). The least
  important parts go first, each noted in the manifest under ``dropped``: the log excerpt
  (cut to its most recent part, then dropped), the reference image, the snapshot, device
  outputs (largest first), then the count CSVs. ``manifest.json``, ``findings.json`` and
  ``report.html`` are never dropped; if they alone exceed the cap the manifest says
  ``"fits": false`` and the caller decides.
- The same input (and a fresh redactor) gives the same bytes: sorted names with the manifest
  first, every mtime ``created_at``, owner root, gzip header without name or clock.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageOps

from diagnostics.model import Assessed, Finding
from rma.redact import Redactor
from rma.report import render_report
from rma.tickets import Attachment

FORMAT = "ffc-bundle/1"
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
IMAGE_WIDTH = 320  # enough to see a covered or moved view, too few pixels for a face
JPEG_QUALITY = 72
LOG_LIMIT = 1024 * 1024  # an excerpt, not the journal
OUTPUT_LIMIT = 256 * 1024  # per command output; head and tail are kept
CONTENT_TYPE = "application/gzip"


# --- what the agent passes in ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One count slot of one counter with what was expected of it (in + out per slot).

    A ``missing`` slot never arrived: its counts are None, never zero."""

    start: datetime
    counter: str
    count_in: int | None
    count_out: int | None
    expected: float | None = None
    expected_low: float | None = None
    expected_high: float | None = None
    missing: bool = False

    @property
    def total(self) -> int | None:
        if self.missing or self.count_in is None or self.count_out is None:
            return None
        return self.count_in + self.count_out

    @property
    def gap(self) -> bool:
        """Missing, or zero where even the low end of the expected range is above zero."""
        if self.missing:
            return True
        return self.total == 0 and (self.expected_low or 0) > 0


@dataclass(frozen=True, slots=True)
class CommandOutput:
    """One device command as the SSH probe recorded it. ``exit_status`` None: cut off."""

    command: str
    exit_status: int | None
    stdout: str
    stderr: str = ""
    elapsed_s: float = 0.0
    counter: str = ""
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RemediationStep:
    """One rung of the remediation ladder that was tried, and how it went."""

    at: datetime
    step: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Collected:
    """What one check or probe collected for the bundle, how long it took, how it ended."""

    what: str
    check: str
    elapsed_s: float = 0.0
    ok: bool = True
    timed_out: bool = False
    error: str = ""
    size: int | None = None  # bytes collected, when known
    at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "check": self.check,
            "at": self.at.isoformat() if self.at else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "ok": self.ok,
            "timed_out": self.timed_out,
            "error": self.error,
            "size": self.size,
        }


@dataclass(frozen=True)
class BundleInput:
    """Everything one bundle shows; the agent collects it, ``build_bundle`` redacts it.

    ``key`` is the incident's (the ticket's idempotency key); ``subject`` and ``category`` are
    the ticket's. ``findings`` are ``Assessed`` (or bare ``Finding``, or their JSON)."""

    agent_version: str
    created_at: datetime
    key: str
    site: str
    site_name: str = ""
    timezone: str = "UTC"
    counters: tuple[str, ...] = ()
    subject: str = ""
    category: str = ""
    started_at: datetime | None = None
    findings: Sequence[Assessed | Finding | Mapping[str, Any]] = ()
    series: Sequence[SeriesRow] = ()
    snapshot: bytes | None = None
    snapshot_at: datetime | None = None
    reference: bytes | None = None
    commands: Sequence[CommandOutput] = ()
    log_excerpt: str = ""
    remediation: Sequence[RemediationStep] = ()
    collected: Sequence[Collected] = ()

    def __repr__(self) -> str:  # never the texts: they may hold what the redactor is for
        return (
            f"BundleInput(key={self.key!r}, site={self.site!r}, {len(self.findings)} findings, "
            f"{len(self.series)} rows, {len(self.commands)} commands, "
            f"log {len(self.log_excerpt)} chars)"
        )


@dataclass(frozen=True)
class Bundle:
    """The archive, its manifest (as written inside it) and its file name."""

    data: bytes = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    name: str

    content_type = CONTENT_TYPE

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def attachment(self) -> Attachment:
        """The ticket's ``Attachment`` for this archive."""
        return Attachment(
            name=self.name, content_type=CONTENT_TYPE, size=self.size, sha256=self.sha256
        )


# --- building ---------------------------------------------------------------------------------


def build_bundle(
    inp: BundleInput, redactor: Redactor, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Bundle:
    """Redact ``inp``, lay it out as files, and pack it to fit ``max_bytes``."""
    if inp.created_at.tzinfo is None or inp.created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    log_bytes = len(inp.log_excerpt.encode())
    if len(inp.log_excerpt) > 4 * LOG_LIMIT:
        # Scrubbing costs time by the byte; what the excerpt limit would cut anyway need not be
        # scrubbed first. (A key cut in half is still caught: see rma.redact's PEM rules.)
        inp = replace(inp, log_excerpt=inp.log_excerpt[-4 * LOG_LIMIT :])
    scoped = redactor.scoped()
    clean = _redacted(inp, scoped)
    first_layer = scoped.counts()
    builder = _Builder(clean, redactor, first_layer, max_bytes)
    builder.log_bytes = log_bytes
    builder.limit_inputs()
    builder.load_images(inp)
    data = builder.assemble()
    while len(data) > max_bytes and builder.shrink():
        data = builder.assemble()
    return Bundle(data=data, manifest=builder.manifest, name=builder.name + ".tar.gz")


def _redacted(inp: BundleInput, r: Redactor) -> BundleInput:
    names: dict[str, str] = {}

    def name(text: str) -> str:
        if text not in names:
            names[text] = r.text(text)
        return names[text]

    findings = []
    for f in inp.findings:
        if isinstance(f, Finding):
            f = Assessed(f)
        findings.append(r.data(f.to_json() if isinstance(f, Assessed) else dict(f)))
    return replace(
        inp,
        key=r.text(inp.key),
        site=r.text(inp.site),
        site_name=r.text(inp.site_name),
        counters=tuple(name(c) for c in inp.counters),
        subject=r.text(inp.subject),
        category=r.text(inp.category),
        findings=tuple(findings),
        series=tuple(replace(row, counter=name(row.counter)) for row in inp.series),
        commands=tuple(
            replace(
                c,
                command=r.text(c.command),
                stdout=r.text(c.stdout),
                stderr=r.text(c.stderr),
                counter=name(c.counter),
            )
            for c in inp.commands
        ),
        log_excerpt=r.text(inp.log_excerpt),
        remediation=tuple(
            replace(s, step=r.text(s.step), outcome=r.text(s.outcome), detail=r.text(s.detail))
            for s in inp.remediation
        ),
        collected=tuple(
            replace(c, what=r.text(c.what), check=r.text(c.check), error=r.text(c.error))
            for c in inp.collected
        ),
    )


class _Builder:
    """The bundle being laid out; ``shrink`` takes the next least important part out."""

    def __init__(
        self, clean: BundleInput, redactor: Redactor, first_layer: dict[str, int], cap: int
    ) -> None:
        self.inp = clean
        self.redactor = redactor
        self.first_layer = first_layer
        self.cap = cap
        self.log: str | None = clean.log_excerpt or None
        self.log_bytes = len(clean.log_excerpt.encode())  # as the agent passed it in
        # (position in the input, output): the position names the file, whatever is dropped
        self.commands = list(enumerate(clean.commands))
        self.images: dict[str, bytes] = {}
        self.image_info: dict[str, dict[str, Any]] = {}
        self.csv = bool(clean.series)
        self.fits = True
        # Layer two's redactor for the whole build, and its results by file content: the size
        # cap assembles the archive many times, and scrubbing a large log is the slow part.
        self.second = redactor.scoped()
        self.report_pass: Redactor | None = None
        self._again: dict[tuple[str, bytes], bytes] = {}
        self.dropped: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] = {}
        stamp = clean.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.name = f"ffc-bundle-{_slug(clean.site)}-{_slug(clean.key)}-{stamp}"

    # --- limits that hold whatever the cap

    def limit_inputs(self) -> None:
        if self.log is not None:
            # Layer two for the log here, whole, before any cut: a cut only takes lines away.
            self.log = self.second.text(self.log)
        if self.log is not None and len(self.log.encode()) > LOG_LIMIT:
            original = self.log_bytes
            self.log = _cut(self.log, LOG_LIMIT)
            self._note(
                "log-excerpt.txt",
                "truncated",
                f"longer than the {LOG_LIMIT // 1024} KiB excerpt limit: the most recent "
                "lines were kept",
                original,
                len(self.log.encode()),
            )
        for k, (i, c) in enumerate(self.commands):
            size = len(c.stdout.encode())
            if size > OUTPUT_LIMIT:
                c = replace(c, stdout=_head_tail(c.stdout, OUTPUT_LIMIT))
                self.commands[k] = (i, c)
                self._note(
                    _command_file(i, c),
                    "truncated",
                    f"output over {OUTPUT_LIMIT // 1024} KiB: its head and tail were kept",
                    size,
                    len(c.stdout.encode()),
                )

    def load_images(self, raw: BundleInput) -> None:
        for part, data in (("snapshot", raw.snapshot), ("reference", raw.reference)):
            if not data:
                continue
            try:
                jpeg, original, bundled = downscale(data)
            except ImageError as exc:
                self._note(f"{part}.jpg", "dropped", f"unreadable image ({exc})", len(data), 0)
                continue
            self.images[part] = jpeg
            self.image_info[part] = {
                "original_px": list(original),
                "bundled_px": list(bundled),
                "original_bytes": len(data),
            }

    # --- the size cap

    def shrink(self) -> bool:
        """Take out the least important part still in; False when nothing optional is left."""
        reason = f"size cap of {self.cap} bytes"
        if self.log is not None:
            self._trim_log(reason)
        elif "reference" in self.images or "snapshot" in self.images:
            part = "reference" if "reference" in self.images else "snapshot"
            self._note(f"{part}.jpg", "dropped", reason, len(self.images.pop(part)), 0)
        elif self.commands:
            k = max(range(len(self.commands)), key=lambda k: _command_size(self.commands[k][1]))
            i, c = self.commands.pop(k)
            self._note(_command_file(i, c), "dropped", reason, _command_size(c), 0)
        elif self.csv:
            size = len(self._counts_csv()) + len(self._expected_csv())
            self.csv = False
            self._note(
                "counts.csv, expected.csv",
                "dropped",
                reason + " (the report still charts the counts)",
                size,
                0,
            )
        else:
            if self.fits:  # one more pass, to write "fits": false into the manifest
                self.fits = False
                return True
            return False
        return True

    def _trim_log(self, reason: str) -> None:
        assert self.log is not None
        text, original = self.log, len(self.log.encode())
        # the excerpt limit may have cut it already: one note per file, sized from the start
        earlier = next((n for n in self.dropped if n["file"] == "log-excerpt.txt"), None)
        if earlier is not None:
            self.dropped.remove(earlier)
            original = earlier["original_bytes"]
        self.log = None
        note = self._note("log-excerpt.txt", "dropped", reason, original, 0)
        if len(self.assemble()) > self.cap:
            return
        note["action"] = "truncated"
        note["reason"] = reason + ": the most recent lines were kept"
        lo, hi = 0, len(text.encode())  # bytes kept from the end
        while lo < hi:
            mid = (lo + hi + 1) // 2
            self.log = _cut(text, mid)
            if len(self.assemble()) <= self.cap:
                lo = mid
            else:
                hi = mid - 1
        self.log = _cut(text, lo) if lo else None
        if self.log is None:
            note["action"], note["reason"] = "dropped", reason
        else:
            note["kept_bytes"] = len(self.log.encode())

    def _note(
        self, name: str, action: str, reason: str, original: int, kept: int
    ) -> dict[str, Any]:
        note = {
            "file": name,
            "action": action,
            "reason": reason,
            "original_bytes": original,
            "kept_bytes": kept,
        }
        self.dropped.append(note)
        return note

    # --- the files

    def files(self) -> dict[str, tuple[bytes, str]]:
        """name -> (content, description), without the report and the manifest."""
        out: dict[str, tuple[bytes, str]] = {
            "findings.json": (
                _json(list(self.inp.findings)),
                "the findings of the incident, each with its verdict and reasons",
            )
        }
        if self.csv:
            out["counts.csv"] = (
                self._counts_csv(),
                "counts per slot as timestamp,counter,in,out; missing slots have no row "
                "(ffc-agent analyze counts reads this file)",
            )
            out["expected.csv"] = (
                self._expected_csv(),
                "what each slot was expected to count (in + out), what it counted, and "
                "which slots are missing",
            )
        for part, data in self.images.items():
            out[f"{part}.jpg"] = (data, f"the {part} image, downscaled to {IMAGE_WIDTH} px wide")
        for i, c in self.commands:
            out[_command_file(i, c)] = (
                _command_text(c).encode(),
                f"output of {c.command!r}" + (f" on {c.counter}" if c.counter else ""),
            )
        if self.log is not None:
            out["log-excerpt.txt"] = (self.log.encode(), "the agent's log around the incident")
        return out

    def assemble(self) -> bytes:
        files = {
            name: (data if name == "log-excerpt.txt" else self._scrub_again(name, data), d)
            for name, (data, d) in self.files().items()
        }
        self.report_pass = second = self.redactor.scoped()
        shown = [{"name": n, "size": len(data)} for n, (data, _) in sorted(files.items())]
        inp = replace(self.inp, commands=tuple(c for _, c in self.commands))
        report = render_report(
            inp,
            images=self.images,
            files=shown,
            notes=[_note_words(n) for n in self.dropped],
            redaction=self._counts(),
        ).encode()
        files["report.html"] = (
            _scrub_again("report.html", report, second),
            "the whole bundle on one page, for people (open it in a browser; it loads nothing)",
        )
        self.manifest = self._manifest(files)
        manifest = _scrub_again("manifest.json", _json(self.manifest), second)
        return _pack(self.name, self.inp.created_at, manifest, files)

    def _scrub_again(self, name: str, data: bytes) -> bytes:
        key = (name, hashlib.sha256(data).digest())
        if key not in self._again:
            self._again[key] = _scrub_again(name, data, self.second)
        return self._again[key]

    def _counts(self) -> dict[str, int]:
        """Layer one's counts, and how often layer two still found something."""
        counts = Counter(self.first_layer)
        later = sum(self.second.counts().values())
        if self.report_pass is not None:
            later += sum(self.report_pass.counts().values())
        if later:
            counts["second_layer"] += later
        return dict(sorted(counts.items()))

    def _manifest(self, files: Mapping[str, tuple[bytes, str]]) -> dict[str, Any]:
        inp = self.inp
        counts = self._counts()
        return {
            "format": FORMAT,
            "name": self.name,
            "agent_version": inp.agent_version,
            "created_at": inp.created_at.isoformat(),
            "incident": {
                "key": inp.key,
                "site": inp.site,
                "site_name": inp.site_name,
                "timezone": inp.timezone,
                "counters": list(inp.counters),
                "subject": inp.subject,
                "category": inp.category,
                "started_at": inp.started_at.isoformat() if inp.started_at else None,
            },
            "collected": [c.to_json() for c in inp.collected],
            "timeouts": [
                {"what": c.what, "check": c.check, "elapsed_s": round(c.elapsed_s, 3)}
                for c in inp.collected
                if c.timed_out
            ],
            "files": [
                {
                    "name": name,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "description": description,
                }
                for name, (data, description) in sorted(files.items())
            ],
            "images": self.image_info,
            "size_cap": self.cap,
            "fits": self.fits,
            "dropped": list(self.dropped),
            "redaction": {
                "layers": ["by_key", "by_value", "by_pattern"]
                + (["aliases"] if self.redactor.alias_hosts else []),
                "values_known": self.redactor.value_count,
                "rules": [{"rule": k, "count": n} for k, n in counts.items()],
                "total": sum(counts.values()),
                "aliased": self.redactor.alias_counts(),
            },
        }

    def _counts_csv(self) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["timestamp", "counter", "in", "out"])
        for r in sorted(self.inp.series, key=lambda r: (r.counter, r.start)):
            if r.total is not None:  # a missing row is missing data, never zero
                w.writerow([r.start.isoformat(), r.counter, r.count_in, r.count_out])
        return buf.getvalue().encode()

    def _expected_csv(self) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "timestamp",
                "counter",
                "expected",
                "expected_low",
                "expected_high",
                "counted",
                "missing",
            ]
        )
        for r in sorted(self.inp.series, key=lambda r: (r.counter, r.start)):
            w.writerow(
                [
                    r.start.isoformat(),
                    r.counter,
                    _float(r.expected),
                    _float(r.expected_low),
                    _float(r.expected_high),
                    "" if r.total is None else r.total,
                    "yes" if r.missing else "no",
                ]
            )
        return buf.getvalue().encode()


# --- images ----------------------------------------------------------------------------------


class ImageError(ValueError):
    """The bytes are not an image Pillow can read (or one too large to decode safely)."""


def downscale(
    data: bytes, width: int = IMAGE_WIDTH, quality: int = JPEG_QUALITY
) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """``data`` as a JPEG at most ``width`` pixels wide, without EXIF or other metadata;
    with the original and the new size in pixels."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            original = im.size
            # JPEGs decode straight to about the target size: a 12 MP snapshot costs little.
            im.draft("RGB", (width, max(1, original[1] * width // max(original[0], 1))))
            img = ImageOps.exif_transpose(im) or im
            img = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(str(exc) or type(exc).__name__) from None
    if img.width > width:
        height = max(1, round(img.height * width / img.width))
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue(), original, img.size


# --- small helpers ---------------------------------------------------------------------------


def _pack(
    name: str, created_at: datetime, manifest: bytes, files: Mapping[str, tuple[bytes, str]]
) -> bytes:
    mtime = int(created_at.timestamp())
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for fname, data in [("manifest.json", manifest)] + [
            (n, files[n][0]) for n in sorted(files)
        ]:
            info = tarfile.TarInfo(f"{name}/{fname}")
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    # The gzip header records no file name and created_at as its time: same input, same bytes.
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=mtime)


_TEXT_SUFFIXES = (".json", ".csv", ".txt", ".html")


def _scrub_again(name: str, data: bytes, second: Redactor) -> bytes:
    """Layer two: the whole file through the redactor again; what it finds is counted."""
    if not name.endswith(_TEXT_SUFFIXES):
        return data
    text = data.decode("utf-8", "replace")
    again = second.text(text)
    return data if again == text else again.encode()


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def _float(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


_SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str, limit: int = 40) -> str:
    return _SLUG_RE.sub("-", text).strip("-.")[:limit] or "x"


def _command_file(i: int, c: CommandOutput) -> str:
    word = _slug(" ".join(c.command.split()[:2]).lower(), 30)
    who = f"{_slug(c.counter, 20)}-" if c.counter else ""
    return f"device/{i + 1:02d}-{who}{word}.txt"


def _command_text(c: CommandOutput) -> str:
    status = "none (cut off or timed out)" if c.exit_status is None else str(c.exit_status)
    head = [
        f"# command: {c.command}",
        f"# device: {c.counter or '-'}",
        f"# at: {c.at.isoformat() if c.at else '-'}",
        f"# exit status: {status}",
        f"# elapsed: {c.elapsed_s:.3f} s",
    ]
    return "\n".join(head) + "\n--- stdout ---\n" + c.stdout + "\n--- stderr ---\n" + c.stderr


def _command_size(c: CommandOutput) -> int:
    return len(c.stdout.encode()) + len(c.stderr.encode())


def _cut(text: str, keep: int) -> str:
    """The last ``keep`` bytes of ``text`` or less, from a line start, after a marker line."""
    data = text.encode()
    if len(data) <= keep:
        return text
    tail = data[len(data) - keep :]
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    kept = tail.decode("utf-8", "ignore")
    cut = len(data) - len(tail)
    return f"[... {cut} earlier bytes left out ...]\n{kept}"


def _head_tail(text: str, limit: int) -> str:
    data = text.encode()
    half = limit // 2
    cut = len(data) - 2 * half
    head = data[:half].decode("utf-8", "ignore")
    tail = data[-half:].decode("utf-8", "ignore")
    return f"{head}\n[... {cut} bytes left out ...]\n{tail}"


def _note_words(note: Mapping[str, Any]) -> str:
    if note["action"] == "truncated":
        return (
            f"{note['file']} cut from {note['original_bytes']} to {note['kept_bytes']} bytes "
            f"({note['reason']})"
        )
    return f"{note['file']} ({note['original_bytes']} bytes) left out: {note['reason']}"
