"""``report.html``: the diagnostics bundle as one page a support engineer can read in a minute.

Support opens the bundle on a locked-down helpdesk PC, often offline, sometimes weeks later. So
the page is self-contained: inline CSS, the charts as inline SVG, the images as ``data:`` URIs,
no script, no external URL at all, and a Content-Security-Policy that forbids fetching anything
even if a redacted text were to hold a link. It shows, top to bottom: what is wrong where and
since when (the ticket's header); the counts of each counter per slot against the expected band,
with the missing or zero span shaded; the latest snapshot beside the tuned reference; every
finding with its verdict and reasons; the remediation steps tried; the device commands run; and
what was collected, what the size cap left out and what was redacted.

``render_report`` renders exactly what it is given: its input must already be redacted and its
images already downscaled, which ``rma.bundle.build_bundle`` does before calling it. Times are
shown in the site's time zone, as the store sees them. ``Report`` renders the same page in
parts, for the bundle, which renders it again for each try of its size cap: the parts that
show the input are rendered once, and only the list of files and notes changes. A page
rendered before its ticket was filed says so in its header; ``with_number`` puts the number
there once the helpdesk has given it.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from diagnostics.model import plural
from rma.inputs import BundleInput, CommandOutput, SeriesRow

# The chart's colours. Distinctive on purpose: the screenshot test looks for them.
BAND_COLOUR = "#9fdcb4"  # the expected band (mint)
LINE_COLOUR = "#1d3fbf"  # the observed counts (deep blue)
EXPECTED_COLOUR = "#2f855a"  # the expected value, dashed (green)
GAP_COLOUR = "#f9c89b"  # the missing or zero span (apricot)
START_COLOUR = "#b42318"  # the incident's start (red)

MAX_CHARTS = 6  # counters charted; a site of 20 doors lists the rest in words
_EVIDENCE_ITEMS = 12
# the header's ticket before the helpdesk numbered it (``with_number`` fills the number in)
UNNUMBERED = "not filed yet: the helpdesk numbers it on filing"

_W, _H = 1000, 290  # the chart's viewBox
_ML, _MR, _MT, _MB = 58, 18, 26, 46  # margins: left, right, top, bottom

_CSS = """
:root { --ink:#1f2933; --muted:#5f6b7a; --line:#d9dee5; --soft:#f4f6f9; }
* { box-sizing: border-box; }
body { margin:0; background:#eef1f5; color:var(--ink);
  font: 15px/1.5 "DejaVu Sans", "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto 40px; }
header.top { background:#1e2a3b; color:#fff; padding:22px 32px 20px; }
header.top .kicker { font-size:12px; letter-spacing:.08em; text-transform:uppercase;
  color:#aab6c8; }
header.top h1 { font-size:24px; line-height:1.3; margin:6px 0 14px; font-weight:700; }
dl.meta { display:grid; grid-template-columns: repeat(3, minmax(0,1fr)); gap:8px 28px; margin:0; }
dl.meta div { min-width:0; }
dl.meta dt { font-size:12px; color:#aab6c8; text-transform:uppercase; letter-spacing:.05em; }
dl.meta dd { margin:0; font-weight:600; overflow-wrap:anywhere; }
.tally { margin-top:14px; display:flex; gap:8px; flex-wrap:wrap; }
section { background:#fff; margin:16px 0 0; padding:18px 32px 22px;
  border-top:1px solid var(--line); border-bottom:1px solid var(--line); }
h2 { font-size:18px; margin:0 0 12px; }
h3 { font-size:15px; margin:14px 0 4px; }
p.note, .muted { color:var(--muted); font-size:13px; }
.chip { display:inline-block; padding:1px 9px; border-radius:10px; font-size:12px;
  font-weight:700; letter-spacing:.02em; border:1px solid transparent; }
.chip.genuine, .chip.fail { background:#fde8e7; color:#9b1c14; border-color:#f4b4ae; }
.chip.warn, .chip.pending { background:#fff4d6; color:#7a4d00; border-color:#f1d27a; }
.chip.false_alarm, .chip.ok { background:#e4f5ea; color:#1e6b3c; border-color:#a9dcbb; }
.chip.none, .chip.skip, .chip.error { background:var(--soft); color:var(--muted);
  border-color:var(--line); }
header.top .chip { border-color:transparent; }
.legend { display:flex; gap:18px; flex-wrap:wrap; font-size:13px; color:var(--muted);
  margin:2px 0 6px; }
.legend i { display:inline-block; width:22px; height:11px; margin-right:6px;
  vertical-align:-1px; border-radius:2px; }
figure.chart { margin:4px 0 14px; }
figure.chart svg { width:100%; height:auto; display:block; }
figure.chart figcaption { font-size:13px; color:var(--muted); }
.images { display:flex; gap:20px; flex-wrap:wrap; }
.images figure { margin:0; flex:1 1 300px; max-width:480px; }
.images img { width:100%; height:auto; border:1px solid var(--line); border-radius:4px;
  image-rendering:auto; display:block; }
.images .missing { border:1px dashed var(--line); border-radius:4px; padding:40px 16px;
  text-align:center; color:var(--muted); background:var(--soft); }
.images figcaption { font-size:13px; color:var(--muted); margin-top:4px; }
.finding { border:1px solid var(--line); border-left:5px solid #c7ced8; border-radius:4px;
  padding:10px 14px; margin:0 0 10px; }
.finding.genuine { border-left-color:#d64535; }
.finding.pending { border-left-color:#e0a100; }
.finding.false_alarm { border-left-color:#2f9e5b; }
.finding .head { display:flex; gap:8px; align-items:baseline; flex-wrap:wrap; }
.finding .summary { font-weight:600; }
.finding code, td code { font-size:12.5px; background:var(--soft); padding:0 4px;
  border-radius:3px; }
.finding ul { margin:6px 0 4px 0; padding-left:20px; }
.finding dl { display:grid; grid-template-columns:max-content 1fr; gap:1px 14px; margin:6px 0 0;
  font-size:13px; }
.finding dt { color:var(--muted); }
.finding dd { margin:0; overflow-wrap:anywhere; }
table { border-collapse:collapse; width:100%; font-size:13.5px; }
th, td { text-align:left; padding:5px 10px 5px 0; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
pre { white-space:pre-wrap; overflow-wrap:anywhere; font-size:12px; background:var(--soft);
  padding:8px; border-radius:4px; margin:4px 0; }
footer { color:var(--muted); font-size:12px; padding:14px 32px; }
svg text { font-family: "DejaVu Sans", "Segoe UI", Roboto, Arial, sans-serif; }
"""


def render_report(
    inp: BundleInput,
    *,
    images: Mapping[str, bytes] | None = None,
    files: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    redaction: Mapping[str, int] | None = None,
) -> str:
    """The page for ``inp`` (already redacted). ``images`` maps ``snapshot`` and ``reference``
    to JPEG bytes (already downscaled); ``files`` lists the bundle's other files (name, size);
    ``notes`` says what the size cap left out; ``redaction`` counts what was scrubbed."""
    parts = Report(inp).parts(images=images, files=files, notes=notes, redaction=redaction)
    return "".join(parts)


class Report:
    """The page for one input, rendered as parts, for a caller that renders it many times.

    The bundle renders its page again each time the size cap takes a part out, and only the
    parts that show what is in the archive change: the header, the charts, the findings and
    the steps tried are rendered once. ``parts`` returns strings whose concatenation is the
    page; the boundaries between them are markup the page writes itself, never a text of
    the input. Each image's base64 text is a part of its own, so a caller can tell it apart.
    """

    def __init__(self, inp: BundleInput) -> None:
        self.inp = inp
        self.page = page = _Page(_zone(inp.timezone))
        findings = [_finding_json(f) for f in inp.findings]
        self._top = [_header(inp, findings, page), _counts_section(inp, findings, page)]
        self._middle = [_findings_section(findings, page), _remediation_section(inp, page)]
        title = inp.subject or f"{inp.site} diagnostics"
        self._head = (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">\n'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "img-src data:; style-src 'unsafe-inline'\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style></head>\n"
            "<body><main>\n"
        )
        self._foot = (
            f"\n<footer>Built by ffc-agent {_e(inp.agent_version)} on "
            f"{_e(page.full(inp.created_at))}. Secrets were redacted before anything was "
            "written; see manifest.json for the counts and the sha256 of every file.</footer>\n"
            "</main></body></html>\n"
        )
        self._images: dict[tuple[tuple[str, bytes], ...], list[str]] = {}
        self._commands: dict[tuple[CommandOutput, ...], str] = {}

    def parts(
        self,
        *,
        images: Mapping[str, bytes] | None = None,
        commands: Sequence[CommandOutput] | None = None,
        files: Sequence[Mapping[str, Any]] = (),
        notes: Sequence[str] = (),
        redaction: Mapping[str, int] | None = None,
    ) -> list[str]:
        """As ``render_report``; ``commands`` are the input's unless given."""
        shown = tuple(sorted((images or {}).items()))
        if shown not in self._images:
            self._images[shown] = _images_section(self.inp, dict(shown), self.page)
        listed = tuple(self.inp.commands if commands is None else commands)
        if listed not in self._commands:
            self._commands[listed] = _commands_section(listed)
        sections = [
            *[[s] for s in self._top],
            self._images[shown],
            *[[s] for s in self._middle],
            [self._commands[listed]],
            [_collection_section(self.inp, files, notes, redaction, self.page)],
        ]
        out = [self._head]
        for section in (s for s in sections if any(s)):
            if len(out) > 1:
                out.append("\n")
            out += section
        out.append(self._foot)
        return out


# --- the header ----------------------------------------------------------------------------------


def _header(inp: BundleInput, findings: list[dict[str, Any]], page: _Page) -> str:
    site = f"{inp.site_name} ({inp.site})" if inp.site_name else inp.site
    counters = ", ".join(inp.counters) if inp.counters else "whole site"
    began = page.full(inp.started_at) if inp.started_at else "not known"
    items = [
        ("Site", site),
        ("Counter" + ("s" if len(inp.counters) > 1 else ""), counters),
        ("Category", inp.category or _first_summary(findings) or "not chosen"),
        ("Ticket", inp.ticket_number or UNNUMBERED),
        ("Began", f"{began} ({page.zone_name})"),
        ("Bundle built", page.full(inp.created_at)),
        ("Ticket key", inp.key),
    ]
    meta = "".join(_meta_item(k, v) for k, v in items)
    tally: dict[str, int] = {}
    for f in findings:
        # a problem's verdict; else what the check said: a skipped check is not "ok"
        decision = f.get("verdict") or str(f.get("status") or "ok")
        tally[decision] = tally.get(decision, 0) + 1
    words = {
        "genuine": "genuine",
        "false_alarm": "ruled out",
        "pending": "pending",
        "fail": "failed, not judged",
        "warn": "warning, not judged",
        "ok": "ok",
        "skip": "skipped",
        "error": "check errors",
    }
    chips = "".join(
        f'<span class="chip {_e(k)}">{n} {_e(words.get(k, k))}</span>'
        for k, n in sorted(tally.items(), key=lambda kv: list(words).index(kv[0]))
        if k in words
    )
    title = inp.subject or f"Diagnostics for {site}"
    return (
        '<header class="top">'
        f"{_kicker(inp.ticket_number)}{_e(inp.agent_version)}</div>"
        f'<h1>{_e(title)}</h1><dl class="meta">{meta}</dl>'
        + (f'<div class="tally">{chips}</div>' if chips else "")
        + "</header>"
    )


def _kicker(number: str) -> str:
    said = f"Ticket {number} · " if number else ""
    return f'<div class="kicker">{_e(said)}FootfallCam diagnostics bundle · ffc-agent '


def _meta_item(name: str, value: str) -> str:
    return f"<div><dt>{_e(name)}</dt><dd>{_e(value)}</dd></div>"


def with_number(page: str, number: str) -> str:
    """``page`` (a report rendered before its ticket was filed) as ``render_report`` renders
    it with the ticket's ``number``: the two places of the header that show the number. A page
    that does not show exactly one unnumbered header is a ``ValueError``."""
    out = page
    for before, after in (
        (_kicker(""), _kicker(number)),
        (_meta_item("Ticket", UNNUMBERED), _meta_item("Ticket", number)),
    ):
        if out.count(before) != 1:
            raise ValueError("the report has no unnumbered ticket header to number")
        out = out.replace(before, after)
    return out


def _first_summary(findings: list[dict[str, Any]]) -> str:
    for f in findings:
        if f.get("verdict") == "genuine":
            return str(f.get("summary") or f.get("code") or "")
    return ""


# --- the counts chart ----------------------------------------------------------------------------


def _counts_section(inp: BundleInput, findings: list[dict[str, Any]], page: _Page) -> str:
    by_counter: dict[str, list[SeriesRow]] = {}
    for row in sorted(inp.series, key=lambda r: (r.counter, r.start)):
        by_counter.setdefault(row.counter, []).append(row)
    if not by_counter:
        return (
            '<section id="counts"><h2>Counts</h2><p class="note">No count series was collected '
            "for this problem.</p></section>"
        )
    # The counters of the ticket first, then the others, so the doors that matter are charted.
    order = sorted(by_counter, key=lambda c: (c not in inp.counters, c))
    charts = [_chart(c, by_counter[c], inp.started_at, page) for c in order[:MAX_CHARTS]]
    more = order[MAX_CHARTS:]
    tail = (
        f'<p class="note">Not charted ({len(more)}): {_e(", ".join(more))}; their rows are in '
        "counts.csv.</p>"
        if more
        else ""
    )
    legend = (
        '<div class="legend">'
        f'<span><i style="background:{LINE_COLOUR}"></i>counted (in + out per slot)</span>'
        f'<span><i style="background:{BAND_COLOUR}"></i>expected range</span>'
        f'<span><i style="background:none;border-top:2px dashed {EXPECTED_COLOUR};height:0">'
        "</i>expected</span>"
        f'<span><i style="background:{GAP_COLOUR}"></i>missing or zero while expected</span>'
        f'<span><i style="background:none;border-top:2px dashed {START_COLOUR};height:0"></i>'
        "problem began</span></div>"
    )
    return (
        '<section id="counts"><h2>Counts against the expected band</h2>'
        f'<p class="note">Times are site time ({_e(page.zone_name)}). The expected range is '
        "what a normal week would have counted in each slot.</p>"
        f"{legend}{''.join(charts)}{tail}</section>"
    )


def _chart(counter: str, rows: list[SeriesRow], started: datetime | None, page: _Page) -> str:
    minutes = _slot_minutes(rows)
    step = timedelta(minutes=minutes)
    t0, t1 = rows[0].start, rows[-1].start + step
    span = max((t1 - t0).total_seconds(), 1.0)
    pw, ph = _W - _ML - _MR, _H - _MT - _MB

    def x(t: datetime) -> float:
        return _ML + pw * (t - t0).total_seconds() / span

    top = max(
        [r.total for r in rows if r.total is not None]
        + [v for r in rows for v in (r.expected, r.expected_high) if v is not None]
        + [1]
    )
    y_ticks = _nice_ticks(top)
    y_max = y_ticks[-1]

    def y(v: float) -> float:
        return _MT + ph * (1 - v / y_max)

    svg: list[str] = [
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="counts of {_e(counter)}">',
        f'<rect x="{_ML}" y="{_MT}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#c9d1db"/>',
    ]
    for v in y_ticks:
        yy = y(v)
        svg.append(
            f'<line x1="{_ML}" x2="{_ML + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eceff3"/>'
        )
        svg.append(
            f'<text x="{_ML - 8}" y="{yy + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="#5f6b7a">{_num(v)}</text>'
        )

    gaps = _gap_spans(rows, step)
    for g0, g1, _ in gaps:
        x0, x1 = x(g0), x(g1)
        svg.append(
            f'<rect x="{x0:.1f}" y="{_MT}" width="{max(x1 - x0, 1.5):.1f}" height="{ph}" '
            f'fill="{GAP_COLOUR}"/>'
        )

    # The band: a polygon per run of slots that have both bounds, through the slot centres.
    for run in _runs(rows, lambda r: r.expected_low is not None and r.expected_high is not None):
        upper = [(x(r.start + step / 2), y(float(r.expected_high or 0))) for r in run]
        lower = [(x(r.start + step / 2), y(float(r.expected_low or 0))) for r in reversed(run)]
        if len(run) == 1:
            (cx, hy), (_, ly) = upper[0], lower[0]
            half = pw * step.total_seconds() / span / 2
            upper, lower = [(cx - half, hy), (cx + half, hy)], [(cx + half, ly), (cx - half, ly)]
        outline = " ".join(f"{px:.1f},{py:.1f}" for px, py in upper + lower)
        svg.append(f'<polygon points="{outline}" fill="{BAND_COLOUR}" stroke="none"/>')

    for run in _runs(rows, lambda r: r.expected is not None):
        d = _path((x(r.start + step / 2), y(float(r.expected or 0))) for r in run)
        svg.append(
            f'<path d="{d}" fill="none" stroke="{EXPECTED_COLOUR}" stroke-width="1.6" '
            'stroke-dasharray="6 4"/>'
        )

    for run in _runs(rows, lambda r: r.total is not None and not r.missing):
        pts = [(x(r.start + step / 2), y(float(r.total or 0))) for r in run]
        if len(pts) == 1:
            px, py = pts[0]
            svg.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{LINE_COLOUR}"/>')
        else:
            svg.append(
                f'<path d="{_path(pts)}" fill="none" stroke="{LINE_COLOUR}" stroke-width="3" '
                'stroke-linejoin="round" stroke-linecap="round"/>'
            )

    for g0, g1, kind in gaps:
        if x(g1) - x(g0) >= 40:
            label = f"{kind} {page.clock(g0)}–{page.clock(g1)}"
            half = 3.6 * len(label) + 6  # about half the label's width at 12 px
            cx = min(max((x(g0) + x(g1)) / 2, _ML + half), _ML + pw - half)
            svg.append(
                f'<text x="{cx:.1f}" y="{_MT + 16}" text-anchor="middle" '
                f'font-size="12" font-weight="bold" fill="#8a3b00">{_e(label)}</text>'
            )

    if started is not None and t0 <= started <= t1:
        xs = x(started)
        svg.append(
            f'<line x1="{xs:.1f}" x2="{xs:.1f}" y1="{_MT - 4}" y2="{_MT + ph}" '
            f'stroke="{START_COLOUR}" stroke-width="1.6" stroke-dasharray="4 3"/>'
        )
        anchor = "end" if xs > _ML + pw * 0.8 else "start"
        dx = -5 if anchor == "end" else 5
        svg.append(
            f'<text x="{xs + dx:.1f}" y="{_MT - 8}" text-anchor="{anchor}" font-size="12" '
            f'fill="{START_COLOUR}">began {_e(page.clock(started))}</text>'
        )

    for tick, label, strong in _time_ticks(t0, t1, page):
        xt = x(tick)
        svg.append(
            f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{_MT + ph}" y2="{_MT + ph + 5}" '
            'stroke="#8a94a3"/>'
        )
        weight = ' font-weight="bold"' if strong else ""
        svg.append(
            f'<text x="{xt:.1f}" y="{_MT + ph + 19}" text-anchor="middle" font-size="12" '
            f'fill="#3e4a59"{weight}>{_e(label)}</text>'
        )
    svg.append(
        f'<text x="{_ML + pw / 2:.1f}" y="{_H - 6}" text-anchor="middle" font-size="12" '
        f'fill="#5f6b7a">site time ({_e(page.zone_name)}), {minutes}-minute slots</text>'
    )
    svg.append(
        f'<text x="14" y="{_MT + ph / 2:.1f}" text-anchor="middle" font-size="12" fill="#5f6b7a" '
        f'transform="rotate(-90 14 {_MT + ph / 2:.1f})">visitors per slot</text>'
    )
    svg.append("</svg>")

    counted = sum(r.total or 0 for r in rows)
    expected = sum(r.expected or 0 for r in rows)
    missing = sum(1 for r in rows if r.missing)
    caption = (
        f"{page.full(t0)} to {page.full(t1)}: counted {_num(counted)}, expected about "
        f"{_num(round(expected))}"
        + (f"; {plural(missing, 'slot')} missing" if missing else "")
        + "."
    )
    return (
        f'<figure class="chart"><h3>{_e(counter)}</h3>{"".join(svg)}'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _slot_minutes(rows: Sequence[SeriesRow]) -> int:
    steps = [
        int((b.start - a.start).total_seconds() // 60)
        for a, b in itertools.pairwise(rows)
        if b.start > a.start
    ]
    if not steps:
        return 15
    return max(1, min(steps))


def _gap_spans(rows: Sequence[SeriesRow], step: timedelta) -> list[tuple[datetime, datetime, str]]:
    """Runs of slots that are missing, or zero while the expected range says otherwise."""
    spans: list[tuple[datetime, datetime, str]] = []
    for row in rows:
        kind = "missing" if row.missing else ("zero" if row.gap else None)
        if kind is None:
            continue
        if spans and spans[-1][1] == row.start:
            g0, _, was = spans[-1]
            spans[-1] = (g0, row.start + step, was if was == kind else "no counts")
        else:
            spans.append((row.start, row.start + step, kind))
    return spans


def _runs(rows: Sequence[SeriesRow], keep: Any) -> list[list[SeriesRow]]:
    runs: list[list[SeriesRow]] = []
    current: list[SeriesRow] = []
    for row in rows:
        if keep(row):
            current.append(row)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _path(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(
        f"{'M' if i == 0 else 'L'} {px:.1f} {py:.1f}" for i, (px, py) in enumerate(points)
    )


def _nice_ticks(top: float) -> list[float]:
    """0 and four or five round steps covering ``top``."""
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if step < 1:
        step = 1
    count = math.ceil(top / step)
    return [i * step for i in range(count + 1)] if count else [0, step]


_TICK_STEPS_MIN = (15, 30, 60, 120, 180, 360, 720, 1440, 10080)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _time_ticks(t0: datetime, t1: datetime, page: _Page) -> list[tuple[datetime, str, bool]]:
    """Ticks on round local times, at most about nine; midnights carry the day's name."""
    span_min = (t1 - t0).total_seconds() / 60
    step = next((s for s in _TICK_STEPS_MIN if span_min / s <= 9), _TICK_STEPS_MIN[-1])
    walk = min(step, 1440)  # weekly ticks walk day by day and keep the Mondays
    local0 = t0.astimezone(page.tz)
    midnight = local0.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    # Walk in local wall-clock time so ticks stay on round hours across a DST change.
    into_day = (local0.replace(tzinfo=None) - midnight).total_seconds() / 60
    wall = midnight + timedelta(minutes=walk * math.ceil(into_day / walk))
    ticks: list[tuple[datetime, str, bool]] = []
    while len(ticks) < 40:
        at = wall.replace(tzinfo=page.tz).astimezone(UTC)
        if at > t1:
            break
        if at >= t0 and (step <= 1440 or wall.weekday() == 0):
            local = at.astimezone(page.tz)
            if local.hour == 0 and local.minute == 0:
                day = f"{_WEEKDAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]}"
                ticks.append((at, day, True))
            else:
                ticks.append((at, f"{local:%H:%M}", False))
        wall += timedelta(minutes=walk)
    return ticks


# --- the live view -------------------------------------------------------------------------------


def _images_section(inp: BundleInput, images: Mapping[str, bytes], page: _Page) -> list[str]:
    """The section as parts, each image's base64 text a part of its own; none without images."""
    if not images and inp.snapshot is None and inp.reference is None:
        return []
    taken = f", taken {page.full(inp.snapshot_at)}" if inp.snapshot_at else ""
    out: list[str] = []
    markup = (
        '<section id="liveview"><h2>Live view</h2>'
        '<p class="note">Downscaled for privacy: enough to see a blocked or moved view, not to '
        'recognise people.</p><div class="images">'
    )
    for name, caption, absent in (
        ("snapshot", f"Latest live-view snapshot{taken}", "no snapshot in this bundle"),
        ("reference", "Reference view, taken when the counter was tuned", "no reference image"),
    ):
        data = images.get(name)
        if data:
            out += [markup + '<figure><img src="data:image/jpeg;base64,', _base64(data)]
            markup = f'" alt="{_e(caption)}">'
        else:
            markup += f'<figure><div class="missing">{_e(absent)}</div>'
        markup += f"<figcaption>{_e(caption)}</figcaption></figure>"
    return [*out, markup + "</div></section>"]


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- findings, remediation, commands, collection -------------------------------------------------


def _findings_section(findings: list[dict[str, Any]], page: _Page) -> str:
    if not findings:
        return '<section id="findings"><h2>Findings</h2><p class="note">None.</p></section>'
    rank = {"genuine": 0, "pending": 1, "false_alarm": 2, None: 3}
    cards = []
    for f in sorted(findings, key=lambda f: rank.get(f.get("verdict"), 3)):
        verdict = f.get("verdict")
        status = str(f.get("status") or "")
        chip = (
            f'<span class="chip {_e(verdict)}">{_e(_VERDICT_WORDS.get(verdict, verdict))}</span>'
            if verdict
            else f'<span class="chip {_e(status)}">{_e(status or "no verdict")}</span>'
        )
        where = " · ".join(str(v) for v in (f.get("site"), f.get("counter")) if v)
        reasons = [str(r) for r in f.get("reasons") or []]
        parts = [
            f'<div class="head">{chip}<span class="summary">{_e(f.get("summary") or "")}'
            "</span></div>",
            f'<div class="muted"><code>{_e(f.get("check_id") or "")}</code> '
            f"{_e(f.get('code') or '')} · {_e(status)}"
            + (f" · {_e(where)}" if where else "")
            + (f" · {_e(page.full(_time(f.get('at'))))}" if _time(f.get("at")) else "")
            + (f" · rule <code>{_e(f['rule'])}</code>" if f.get("rule") else "")
            + "</div>",
        ]
        if reasons:
            parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>")
        if verdict == "pending" and _time(f.get("until")):
            until = page.full(_time(f["until"]))
            parts.append(f'<div class="muted">Waiting until {_e(until)}.</div>')
        evidence = f.get("evidence") or {}
        if isinstance(evidence, Mapping) and evidence:
            items = list(evidence.items())[:_EVIDENCE_ITEMS]
            rows = "".join(
                f"<dt>{_e(str(k).replace('_', ' '))}</dt><dd>{_e(page.value(v))}</dd>"
                for k, v in items
            )
            more = len(evidence) - len(items)
            parts.append(f"<dl>{rows}</dl>")
            if more > 0:
                parts.append(f'<div class="muted">and {more} more in findings.json</div>')
        if f.get("remediation"):
            parts.append(f'<div class="muted">Suggested: {_e(f["remediation"])}</div>')
        cards.append(f'<div class="finding {_e(verdict or "none")}">{"".join(parts)}</div>')
    return f'<section id="findings"><h2>Findings and verdicts</h2>{"".join(cards)}</section>'


_VERDICT_WORDS = {"genuine": "genuine", "false_alarm": "false alarm", "pending": "pending"}


def _remediation_section(inp: BundleInput, page: _Page) -> str:
    if not inp.remediation:
        body = '<p class="note">No remediation was tried before this bundle was built.</p>'
    else:
        rows = "".join(
            f"<tr><td>{_e(page.full(s.at))}</td><td>{_e(s.step)}</td><td>{_e(s.outcome)}"
            + (f'<div class="muted">{_e(s.detail)}</div>' if s.detail else "")
            + "</td></tr>"
            for s in sorted(inp.remediation, key=lambda s: s.at)
        )
        body = f"<table><tr><th>When</th><th>Step</th><th>Outcome</th></tr>{rows}</table>"
    return f'<section id="remediation"><h2>Remediation tried</h2>{body}</section>'


def _commands_section(commands: Sequence[CommandOutput]) -> str:
    if not commands:
        return ""
    rows = []
    for c in commands:
        status = "cut off" if c.exit_status is None else str(c.exit_status)
        first = next((line for line in (c.stdout or c.stderr).splitlines() if line.strip()), "")
        rows.append(
            f"<tr><td>{_e(c.counter)}</td><td><code>{_e(c.command)}</code>"
            + (f'<div class="muted">{_e(first[:160])}</div>' if first else "")
            + f'</td><td class="num">{_e(status)}</td><td class="num">{c.elapsed_s:.2f} s</td>'
            f'<td class="num">{len(c.stdout.encode()) + len(c.stderr.encode())}</td></tr>'
        )
    return (
        '<section id="commands"><h2>Device commands</h2>'
        '<p class="note">Read-only commands run on the device; full outputs are under device/.'
        "</p><table><tr><th>Device</th><th>Command</th><th>Exit</th><th>Took</th>"
        f"<th>Bytes</th></tr>{''.join(rows)}</table></section>"
    )


def _collection_section(
    inp: BundleInput,
    files: Sequence[Mapping[str, Any]],
    notes: Sequence[str],
    redaction: Mapping[str, int] | None,
    page: _Page,
) -> str:
    parts = ['<section id="collection"><h2>What was collected</h2>']
    if inp.collected:
        rows = "".join(
            f"<tr><td>{_e(c.what)}</td><td><code>{_e(c.check)}</code></td>"
            f'<td class="num">{c.elapsed_s:.2f} s</td><td>'
            + ("timed out" if c.timed_out else ("ok" if c.ok else "failed"))
            + (f'<div class="muted">{_e(c.error)}</div>' if c.error else "")
            + "</td></tr>"
            for c in inp.collected
        )
        parts.append(
            f"<table><tr><th>What</th><th>By</th><th>Took</th><th>Outcome</th></tr>{rows}</table>"
        )
    if files:
        listed = ", ".join(f"{f['name']} ({_size(int(f.get('size', 0)))})" for f in files)
        parts.append(f'<p class="note">Files in this bundle: {_e(listed)}.</p>')
    for note in notes:
        parts.append(f'<p class="note"><strong>Left out:</strong> {_e(note)}</p>')
    if redaction is not None:
        total = sum(redaction.values())
        detail = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in sorted(redaction.items()))
        parts.append(
            f'<p class="note">Redacted: {plural(total, "replacement")}'
            + (f" ({_e(detail)})" if detail else "")
            + ".</p>"
        )
    parts.append("</section>")
    return "".join(parts)


# --- small helpers -------------------------------------------------------------------------------


class _Page:
    """Formats times in the site's zone and evidence values in words."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.zone_name = getattr(tz, "key", None) or str(tz)

    def local(self, at: datetime) -> datetime:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return at.astimezone(self.tz)

    def clock(self, at: datetime) -> str:
        return f"{self.local(at):%H:%M}"

    def full(self, at: datetime | None) -> str:
        if at is None:
            return ""
        local = self.local(at)
        return (
            f"{_WEEKDAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year} "
            f"{local:%H:%M} {local.tzname() or ''}"
        ).strip()

    def value(self, v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return _num(v)
        when = _time(v)
        if when is not None:
            return self.full(when)
        if isinstance(v, Mapping):
            return ", ".join(f"{k}: {self.value(x)}" for k, x in list(v.items())[:6])
        if isinstance(v, list | tuple):
            shown = ", ".join(self.value(x) for x in v[:6])
            return shown + (f" and {len(v) - 6} more" if len(v) > 6 else "")
        text = str(v)
        return text if len(text) <= 300 else text[:299] + "…"


def _finding_json(f: Any) -> dict[str, Any]:
    if isinstance(f, Mapping):
        return dict(f)
    data: dict[str, Any] = f.to_json()
    return data


def _time(v: Any) -> datetime | None:
    if isinstance(v, datetime):
        return v
    if isinstance(v, str) and len(v) >= 16 and v[4:5] == "-" and v[10:11] in "T ":
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            return None
    return None


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _num(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v == int(v):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
