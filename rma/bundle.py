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
  everything in ``BundleInput`` (``rma.inputs``). Every text passes the redactor before it is
  written (layer one, per part), then every text file is scrubbed again as a whole (layer
  two, archive-wide, the way ``sos report`` does); what layer two still finds in the files
  of the archive is counted in the manifest as ``second_layer``, which should stay absent.
  ``report.html`` is scrubbed section by section (a boundary between sections is markup the
  page writes itself, never a text of the input), all but the base64 text of its images:
  those are the JPEGs below, which are no text and are not scrubbed in their own files either.
- Images are decoded, downscaled to ``IMAGE_WIDTH`` pixels wide and re-encoded as JPEG, so
  faces are not recognisable and EXIF (camera serials, GPS) is gone. An unreadable image is
  left out with a note, never an error.
- The archive fits ``max_bytes`` (4 MiB by default: a helpdesk's attachment limit). The least
  important parts go first, each noted in the manifest under ``dropped``: the log excerpt
  (cut to its most recent part, then dropped), the reference image, the snapshot, device
  outputs (largest first), then the count CSVs. ``manifest.json``, ``findings.json`` and
  ``report.html`` are never dropped; if they alone exceed the cap the manifest says
  ``"fits": false`` and the caller decides. That is decided on the archive that says
  ``"fits": true``: the one that says ``false`` compresses differently and may come out a
  few bytes smaller, even just under the cap.
- Fitting the cap is a bounded search that costs the archive's size a few times over, not
  the redaction again: both layers run once per text and build, and a try renders only what
  says what is in the archive (the manifest, the page's list of files and notes), scrubs
  that, packs the whole archive and measures it. Only a measured archive is returned, so
  nothing can loop; there are at most ``max_assemblies(parts)`` tries (about twice the log2
  of the parts the cap may take out, plus ``LOG_TRIES`` cuts of the log), and
  ``Bundle.assemblies`` says how many there were. A cut log keeps about as much as fits:
  the archive ends within a sixty-fourth of the cap (256 bytes to 4 KiB) below it.
- The same input (and a fresh redactor) gives the same bytes: sorted names with the manifest
  first, every mtime ``created_at``, owner root, gzip header without name or clock.
- A bundle is built before its ticket is filed, so without the helpdesk's number;
  ``numbered(data, number)`` writes the number into the report's header and the manifest
  afterwards (the outbox does, at delivery), packed the same way: the same bytes as a build
  with that number (when the cap cut nothing differently), and the same on every try.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import math
import re
import tarfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageOps

from diagnostics.model import Assessed, Finding
from rma.inputs import (
    BundleInput,
    Collected,
    CommandOutput,
    RemediationStep,
    SeriesRow,
)
from rma.redact import Redactor
from rma.report import Report, with_number
from rma.tickets import Attachment

# The input types live in rma.inputs (rma.report draws them too); callers find them here.
__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_BYTES",
    "FORMAT",
    "IMAGE_WIDTH",
    "LOG_LIMIT",
    "LOG_TRIES",
    "OUTPUT_LIMIT",
    "Bundle",
    "BundleInput",
    "Collected",
    "CommandOutput",
    "ImageError",
    "RemediationStep",
    "SeriesRow",
    "build_bundle",
    "downscale",
    "is_bundle",
    "max_assemblies",
    "numbered",
]

FORMAT = "ffc-bundle/1"
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
IMAGE_WIDTH = 320  # enough to see a covered or moved view, too few pixels for a face
JPEG_QUALITY = 72
LOG_LIMIT = 1024 * 1024  # an excerpt, not the journal
OUTPUT_LIMIT = 256 * 1024  # per command output; head and tail are kept
CONTENT_TYPE = "application/gzip"
PREFIX, SUFFIX = "ffc-bundle-", ".tar.gz"  # a bundle's file name
_NUMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # RT's "123", the store's "L-000001"


@dataclass(frozen=True)
class Bundle:
    """The archive, its manifest (as written inside it) and its file name."""

    data: bytes = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    name: str
    assemblies: int = 1  # archives packed to find the one that fits (``max_assemblies``)

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
    builder = _Builder(clean, redactor, scoped.counts(), max_bytes, log_bytes)
    builder.limit_inputs()
    builder.load_images(inp)
    builder.lay_out()
    packed = builder.fit()
    return Bundle(
        data=packed.data,
        manifest=packed.manifest,
        name=builder.name + SUFFIX,
        assemblies=builder.assemblies,
    )


def is_bundle(name: str) -> bool:
    """Is ``name`` the file name of a diagnostics bundle (``build_bundle``'s)?"""
    return name.startswith(PREFIX) and name.endswith(SUFFIX)


def numbered(data: bytes, number: str) -> Bundle:
    """The bundle ``data``, built before its ticket was filed, with the ticket's ``number``
    in its report's header and its manifest (``incident.ticket``): the archive a build with
    that number would give, less any difference the size cap would have made (a number adds
    a few bytes). Packed as ``build_bundle`` packs, so the same bundle and number give the
    same bytes, however often it is done (a delivery tried again after a crash).

    Nothing else is re-rendered, so nothing is redacted again: the number is the only new
    text, and it must be a plain ticket number (letters, digits, ``.``, ``_``, ``-``). A
    bundle numbered already with ``number`` is returned as it is; a ``ValueError`` for one
    with another number, a number that is not plain, or bytes that are no bundle."""
    if not _NUMBER_RE.fullmatch(number):
        raise ValueError("a ticket number is letters, digits, '.', '_' and '-'")
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            files: dict[str, bytes] = {}
            for m in members:
                got = tar.extractfile(m)
                assert got is not None
                files[m.name.split("/", 1)[-1]] = got.read()
        manifest = json.loads(files.pop("manifest.json"))
        name = str(manifest["name"])
        created_at = datetime.fromisoformat(manifest["created_at"])
        incident = manifest["incident"]
        page = files["report.html"].decode()
    except (OSError, EOFError, tarfile.TarError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a diagnostics bundle ({type(exc).__name__})") from None
    if manifest.get("format") != FORMAT or [m.name for m in members[:1]] != [
        f"{name}/manifest.json"
    ]:
        raise ValueError("not a diagnostics bundle of this format")
    if incident.get("ticket") == number:
        return Bundle(data=bytes(data), manifest=manifest, name=name + SUFFIX)
    if incident.get("ticket") is not None:
        raise ValueError("the bundle names another ticket")
    files["report.html"] = with_number(page, number).encode()
    incident["ticket"] = number
    for entry in manifest["files"]:
        if entry["name"] == "report.html":
            entry["size"] = len(files["report.html"])
            entry["sha256"] = hashlib.sha256(files["report.html"]).hexdigest()
    packed = _pack(name, created_at, _json(manifest), files)
    return Bundle(data=packed, manifest=manifest, name=name + SUFFIX)


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
        ticket_number=r.text(inp.ticket_number),
        findings=tuple(findings),
        series=tuple(
            row if name(row.counter) == row.counter else replace(row, counter=name(row.counter))
            for row in inp.series
        ),
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


LOG_TRIES = 10  # cuts of the log tried at most, when the log alone is too much for the cap


def max_assemblies(optional_parts: int) -> int:
    """How many archives ``build_bundle`` packs at most for a bundle with so many parts the
    size cap may take out (the log, each image, each device output, the count CSVs as one):
    see ``_Builder.fit``. The sample bundle's seven (a log, two images, three outputs, the
    CSVs): at most 19."""
    return 3 + 2 * math.ceil(math.log2(optional_parts + 1)) + LOG_TRIES


@dataclass(frozen=True)
class _File:
    """A file of the archive as written (layer two done), and what layer two found in it."""

    data: bytes
    description: str
    second_layer: int = 0


@dataclass(frozen=True)
class _Part:
    """A part the size cap may take out: the files it removes and the note that says so."""

    label: str
    files: tuple[str, ...]
    original_bytes: int
    why: str = ""


@dataclass(frozen=True)
class _Packed:
    data: bytes
    manifest: dict[str, Any]

    @property
    def size(self) -> int:
        return len(self.data)


class _Builder:
    """The bundle being laid out, and the search for the archive that fits the cap.

    Everything is redacted once before the search: layer one in ``_redacted``, layer two on
    each file as it is laid out (``lay_out``) and on each part of the page the first time it
    is seen. A try (``_try``) then only renders the parts of the page that say what is in the
    archive, scrubs them and the manifest, and packs; see ``fit`` for how many tries there are.
    """

    def __init__(
        self,
        clean: BundleInput,
        redactor: Redactor,
        first_layer: dict[str, int],
        cap: int,
        log_bytes: int,
    ) -> None:
        self.inp = clean
        self.redactor = redactor
        self.first_layer = first_layer
        self.cap = cap
        self.log: str | None = clean.log_excerpt or None
        self.log_bytes = log_bytes  # as the agent passed it in
        self.log_second_layer = 0
        # (position in the input, output): the position names the file, whatever is dropped
        self.commands = list(enumerate(clean.commands))
        self.images: dict[str, bytes] = {}
        self.image_info: dict[str, dict[str, Any]] = {}
        self.notes: list[dict[str, Any]] = []  # what holds whatever the cap: limits, bad images
        self.log_note: dict[str, Any] | None = None  # the excerpt limit's, until the cap's
        self.files: dict[str, _File] = {}  # every file but the log, the report, the manifest
        self.ladder: list[_Part] = []  # what the cap takes out, least important first
        self.report = Report(clean)
        self.assemblies = 0
        self._again: dict[str, tuple[str, int]] = {}
        self._image_text: set[str] = set()
        stamp = clean.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.name = f"{PREFIX}{_slug(clean.site)}-{_slug(clean.key)}-{stamp}"

    # --- limits that hold whatever the cap

    def limit_inputs(self) -> None:
        if self.log is not None:
            # Layer two for the log here, whole, before any cut: a cut only takes lines away.
            self.log, self.log_second_layer = _second_layer(self.log, self.redactor)
        if self.log is not None and len(self.log.encode()) > LOG_LIMIT:
            self.log = _cut(self.log, LOG_LIMIT)
            self.log_note = _note(
                "log-excerpt.txt",
                "truncated",
                f"longer than the {LOG_LIMIT // 1024} KiB excerpt limit: the most recent "
                "lines were kept",
                self.log_bytes,
                len(self.log.encode()),
            )
            self.notes.append(self.log_note)
        for k, (i, c) in enumerate(self.commands):
            size = len(c.stdout.encode())
            if size > OUTPUT_LIMIT:
                c = replace(c, stdout=_head_tail(c.stdout, OUTPUT_LIMIT))
                self.commands[k] = (i, c)
                self.notes.append(
                    _note(
                        _command_file(i, c),
                        "truncated",
                        f"output over {OUTPUT_LIMIT // 1024} KiB: its head and tail were kept",
                        size,
                        len(c.stdout.encode()),
                    )
                )

    def load_images(self, raw: BundleInput) -> None:
        for part, data in (("snapshot", raw.snapshot), ("reference", raw.reference)):
            if not data:
                continue
            try:
                jpeg, original, bundled = downscale(data)
            except ImageError as exc:
                self.notes.append(
                    _note(f"{part}.jpg", "dropped", f"unreadable image ({exc})", len(data), 0)
                )
                continue
            self.images[part] = jpeg
            self.image_info[part] = {
                "original_px": list(original),
                "bundled_px": list(bundled),
                "original_bytes": len(data),
            }

    # --- the files, each written (and scrubbed) once

    def lay_out(self) -> None:
        """Every file but the log, the page and the manifest, and the order the cap takes
        them out in: the log first (``fit`` does that), then the reference image, the
        snapshot, device outputs (largest first), then the count CSVs."""
        self.files["findings.json"] = self._text_file(
            _json(list(self.inp.findings)),
            "the findings of the incident, each with its verdict and reasons",
        )
        for part in ("reference", "snapshot"):
            if part in self.images:
                name = f"{part}.jpg"
                data = self.images[part]
                self.files[name] = _File(
                    data, f"the {part} image, downscaled to {IMAGE_WIDTH} px wide"
                )
                self.ladder.append(_Part(name, (name,), len(data)))
                self._image_text.add(_base64(data))
        for i, c in sorted(self.commands, key=lambda ic: (-_command_size(ic[1]), ic[0])):
            name = _command_file(i, c)
            self.files[name] = self._text_file(
                _command_text(c).encode(),
                f"output of {c.command!r}" + (f" on {c.counter}" if c.counter else ""),
            )
            self.ladder.append(_Part(name, (name,), _command_size(c)))
        if self.inp.series:
            counts, expected = self._counts_csv(), self._expected_csv()
            self.files["counts.csv"] = self._text_file(
                counts,
                "counts per slot as timestamp,counter,in,out; missing slots have no row "
                "(ffc-agent analyze counts reads this file)",
            )
            self.files["expected.csv"] = self._text_file(
                expected,
                "what each slot was expected to count (in + out), what it counted, and "
                "which slots are missing",
            )
            self.ladder.append(
                _Part(
                    "counts.csv, expected.csv",
                    ("counts.csv", "expected.csv"),
                    len(counts) + len(expected),
                    " (the report still charts the counts)",
                )
            )

    def _text_file(self, data: bytes, description: str) -> _File:
        text = data.decode("utf-8", "replace")
        again, found = _second_layer(text, self.redactor)
        return _File(data if again == text else again.encode(), description, found)

    def _scrub(self, text: str) -> tuple[str, int]:
        """Layer two on a part of the page, once per build (each try meets most again)."""
        if text not in self._again:
            self._again[text] = _second_layer(text, self.redactor)
        return self._again[text]

    # --- the size cap

    def fit(self) -> _Packed:
        """The archive with the fewest parts taken out, in the drop order, that fits the cap.

        Every try packs a whole archive, notes and all, and only an archive that was packed
        and measured is returned: what is returned is within the cap, or it holds the
        mandatory parts alone and says ``"fits": false``. Nothing is decided on an estimate
        that the next try could overturn, so there is nothing to loop on, and the tries are
        few (``max_assemblies``): one with everything; positions 1, 2, 4 ... down the drop
        order until one fits, then a binary search below it (most bundles only need the log
        cut, which the first of these finds); the last position once more to say it does
        not fit; and when only the log had to go, at most ``LOG_TRIES`` cuts of it.
        """
        full = self._try(self.log, 0)
        if full.size <= self.cap:
            return full
        has_log = int(self.log is not None)
        last = len(self.ladder) + has_log

        def state(position: int) -> tuple[str | None, int]:
            """0: everything; then the log out, then one part more each (when there is a log)."""
            return (self.log, 0) if position == 0 else (None, position - has_log)

        if last == 0:
            return self._try(self.log, 0, fits=False)
        lo, step = 0, 1  # lo: a position known not to fit
        while True:
            hi = min(step, last)
            found = self._try(*state(hi))
            if found.size <= self.cap:
                break
            if hi == last:  # even the mandatory parts alone are too much
                return self._try(*state(last), fits=False)
            lo, step = hi, 2 * step
        while hi - lo > 1:
            mid = (lo + hi) // 2
            packed = self._try(*state(mid))
            if packed.size <= self.cap:
                hi, found = mid, packed
            else:
                lo = mid
        if has_log and hi == 1:
            return self._cut_log(full, found)
        return found

    def _cut_log(self, full: _Packed, without: _Packed) -> _Packed:
        """The most recent lines of the log that fit with everything else: ``without`` is
        the archive without the log (it fits), ``full`` the one with all of it (it does not).

        The archive grows about linearly with the bytes kept, so a secant between the nearest
        try that fitted and the nearest that did not lands within ``_slack`` of the cap in a
        try or two (the Illinois rule halves the weight of an end that stayed twice, so the
        secant cannot creep up on the cap from one side)."""
        assert self.log is not None
        text, slack = self.log, _slack(self.cap)
        aim = self.cap - slack // 2
        # at both ends: bytes kept from the end, the archive's size less ``aim`` (weighted),
        # and the log as kept
        lo, lo_off, lo_text, best = 0, float(without.size - aim), "", without
        hi, hi_off, hi_text = len(text.encode()), float(full.size - aim), text
        moved = ""
        for _ in range(LOG_TRIES):
            if hi - lo <= 1 or self.cap - best.size <= slack:
                break
            keep = lo + round((hi - lo) * -lo_off / (hi_off - lo_off))
            keep = min(max(keep, lo + 1), hi - 1)
            cut = _cut(text, keep)
            # a cut starts at a line: one between two others may be one of them already
            packed = None if cut in (lo_text, hi_text) else self._try(cut, 0)
            if cut == lo_text or (packed is not None and packed.size <= self.cap):
                if packed is not None:
                    lo_off, lo_text, best = float(packed.size - aim), cut, packed
                lo, hi_off = keep, hi_off / 2 if moved == "lo" else hi_off
                moved = "lo"
            else:
                if packed is not None:
                    hi_off, hi_text = float(packed.size - aim), cut
                hi, lo_off = keep, lo_off / 2 if moved == "hi" else lo_off
                moved = "hi"
        return best

    def _try(self, log: str | None, dropped: int, *, fits: bool = True) -> _Packed:
        """The archive with ``log`` (the whole, a cut, or None) and the first ``dropped``
        parts of the drop order taken out. (The search keeps only the archives it may
        return: a gateway has little memory, and a try may be several MiB.)"""
        self.assemblies += 1
        gone = self.ladder[:dropped]
        out = {name for part in gone for name in part.files}
        files = {name: f for name, f in self.files.items() if name not in out}
        if log is not None:
            # layer two ran on the whole log; a cut only takes lines away
            files["log-excerpt.txt"] = _File(
                log.encode(), "the agent's log around the incident", self.log_second_layer
            )
        notes = self._notes(log, gone)
        found = sum(f.second_layer for f in files.values())
        parts = self.report.parts(
            images={p: d for p, d in self.images.items() if f"{p}.jpg" in files},
            commands=[c for i, c in self.commands if _command_file(i, c) in files],
            files=[{"name": n, "size": len(f.data)} for n, f in sorted(files.items())],
            notes=[_note_words(n) for n in notes],
            redaction=self._counts(found),
        )
        page: list[str] = []
        for part in parts:
            if part in self._image_text:
                # an image's base64 text: our own JPEG, which no layer scrubs in its file
                page.append(part)
            else:
                again, n = self._scrub(part)
                page.append(again)
                found += n
        files["report.html"] = _File(
            "".join(page).encode(),
            "the whole bundle on one page, for people (open it in a browser; it loads nothing)",
        )
        manifest = self._manifest(files, notes, fits, self._counts(found))
        written, _ = _second_layer(_json(manifest).decode(), self.redactor)
        data = _pack(
            self.name,
            self.inp.created_at,
            written.encode(),
            {name: f.data for name, f in files.items()},
        )
        return _Packed(data, manifest)

    def _notes(self, log: str | None, gone: Sequence[_Part]) -> list[dict[str, Any]]:
        """What was left out or cut, in the order it happened: the limits, then the log (one
        note, which replaces the excerpt limit's), then each part the cap took out."""
        reason = f"size cap of {self.cap} bytes"
        notes = list(self.notes)
        if self.log is not None and log != self.log:
            notes = [n for n in notes if n is not self.log_note]
            if log is None:
                notes.append(_note("log-excerpt.txt", "dropped", reason, self.log_bytes, 0))
            else:
                notes.append(
                    _note(
                        "log-excerpt.txt",
                        "truncated",
                        reason + ": the most recent lines were kept",
                        self.log_bytes,
                        len(log.encode()),
                    )
                )
        notes += [_note(p.label, "dropped", reason + p.why, p.original_bytes, 0) for p in gone]
        return notes

    def _counts(self, second_layer: int) -> dict[str, int]:
        """Layer one's counts, and how often layer two still found something."""
        counts = Counter(self.first_layer)
        if second_layer:
            counts["second_layer"] += second_layer
        return dict(sorted(counts.items()))

    def _manifest(
        self,
        files: Mapping[str, _File],
        notes: list[dict[str, Any]],
        fits: bool,
        counts: dict[str, int],
    ) -> dict[str, Any]:
        inp = self.inp
        return {
            "format": FORMAT,
            "name": self.name,
            "agent_version": inp.agent_version,
            "created_at": inp.created_at.isoformat(),
            "incident": {
                "key": inp.key,
                "ticket": inp.ticket_number or None,
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
                    "size": len(f.data),
                    "sha256": hashlib.sha256(f.data).hexdigest(),
                    "description": f.description,
                }
                for name, f in sorted(files.items())
            ],
            "images": self.image_info,
            "size_cap": self.cap,
            "fits": fits,
            "dropped": notes,
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


def _pack(name: str, created_at: datetime, manifest: bytes, files: Mapping[str, bytes]) -> bytes:
    mtime = int(created_at.timestamp())
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for fname, data in [("manifest.json", manifest)] + [(n, files[n]) for n in sorted(files)]:
            info = tarfile.TarInfo(f"{name}/{fname}")
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    # The gzip header records no file name and created_at as its time: same input, same bytes.
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=mtime)


def _second_layer(text: str, redactor: Redactor) -> tuple[str, int]:
    """Layer two: ``text`` through the redactor again, and how often a rule still fired."""
    second = redactor.scoped()
    return second.text(text), sum(second.counts().values())


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


def _note(name: str, action: str, reason: str, original: int, kept: int) -> dict[str, Any]:
    return {
        "file": name,
        "action": action,
        "reason": reason,
        "original_bytes": original,
        "kept_bytes": kept,
    }


def _slack(cap: int) -> int:
    """How far below the cap a cut of the log may end: a try less is worth more than a few
    hundred bytes of log (a sixty-fourth of the cap, between 256 bytes and 4 KiB)."""
    return min(4096, max(256, cap // 64))


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _note_words(note: Mapping[str, Any]) -> str:
    if note["action"] == "truncated":
        return (
            f"{note['file']} cut from {note['original_bytes']} to {note['kept_bytes']} bytes "
            f"({note['reason']})"
        )
    return f"{note['file']} ({note['original_bytes']} bytes) left out: {note['reason']}"
