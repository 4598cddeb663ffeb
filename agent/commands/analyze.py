"""``ffc-agent analyze counts``: judge an exported count CSV without a running fleet.

A store manager, or first-line support, holds a CSV of counts and a question: is this a real
data problem, worth a data-accuracy ticket, or a false alarm? This reads the file for the
sites and counters of the configuration, runs the same count checks as the service over the
whole file (every episode, not just the current state), folds a whole-site outage into one
finding, and passes everything through the same false-alarm gate. Only problems are listed,
each with its verdict and reasons; what the reader tolerated (unknown counters, duplicates)
comes back as warnings.

JSON (one object per problem; stable, documented in the README and docs/counts.md):
``site``, ``counter`` (serial, or null for a site-level finding), ``kind`` (missing, zero_run,
under_count, over_count, imbalance, site_outage), ``start``/``end`` (ISO-8601 with offset),
``verdict`` (genuine, false_alarm, pending), ``reasons``, ``expected``/``observed`` (counts
over the span), and ``status``, ``summary``, ``check_id``, ``rule``, ``until``, ``details``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.commands.common import (
    EX_DATAERR,
    _aware,
    _load,
    _print_json,
    clock,
    config_option_with,
    fail,
    json_option,
    out,
    table,
)
from diagnostics.model import plural

if TYPE_CHECKING:  # the judgement is imported when a command runs: `--help` loads none of it
    from agent.config import Config
    from diagnostics.assess import Silence
    from diagnostics.checks.base import Check
    from diagnostics.checks.counts import CountCheck
    from diagnostics.model import Assessed, CountSlot, Finding
    from diagnostics.series import CountModel
    from diagnostics.share import HeldSplit


def _count_kinds(applies_to: str) -> tuple[type[Check], ...]:
    """Every count check the registry knows for counter or site evidence, judged over the
    whole file (imported here, when a command runs)."""
    from diagnostics.checks import REGISTRY, Family
    from diagnostics.checks.counts import CountCheck

    return tuple(
        c
        for c in REGISTRY.values()
        if c.family is Family.COUNTS
        and issubclass(c, CountCheck)
        and not c.derived
        and c.applies_to == applies_to
    )


@dataclass(frozen=True)
class CountProblem:
    """One problem found in the file, with the gate's verdict."""

    site: str
    counter: str | None
    kind: str
    start: datetime | None
    end: datetime | None
    verdict: str
    reasons: tuple[str, ...]
    expected: float | None
    observed: float | None
    status: str
    summary: str
    check_id: str
    rule: str = ""
    until: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_assessed(cls, item: Assessed) -> CountProblem:
        from diagnostics.model import as_datetime

        f, v = item.finding, item.verdict
        ev = f.evidence
        start = as_datetime(ev.get("start")) or as_datetime(ev.get("zero_since"))
        end = as_datetime(ev.get("end")) or as_datetime(ev.get("last_slot_end"))
        return cls(
            site=f.site or "",
            counter=f.subject,
            kind=f.code,
            start=start,
            end=end,
            verdict=str(v.decision) if v else "",
            reasons=v.reasons if v else (),
            expected=ev.get("expected"),
            observed=ev.get("observed"),
            status=str(f.status),
            summary=f.summary,
            check_id=f.check_id,
            rule=v.rule if v else "",
            until=v.until if v else None,
            details=dict(ev),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "counter": self.counter,
            "kind": self.kind,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "expected": self.expected,
            "observed": self.observed,
            "status": self.status,
            "summary": self.summary,
            "check_id": self.check_id,
            "rule": self.rule,
            "until": self.until.isoformat() if self.until else None,
            "details": self.details,
        }


@dataclass
class AnalysisResult:
    """The problems found (``findings``), what the reader tolerated (``warnings``), the time
    the file was judged as of, and every assessed finding including the ok ones."""

    findings: list[CountProblem]
    warnings: list[str]
    now: datetime | None
    assessed: list[Assessed] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.findings]


def analyze_counts(
    config: Config, text: str, *, site: str | None = None, now: datetime | None = None
) -> AnalysisResult:
    """Judge the count CSV ``text`` for the configuration's counters as of ``now``.

    ``now`` defaults to the end of the last slot in the file. ``site`` limits the judgement
    to one site (rows of other configured sites are skipped silently). Raises
    ``diagnostics.countcsv.CountCsvError`` for a row it cannot trust and ``KeyError`` for an
    unknown site code.
    """
    from diagnostics.countcsv import parse_counts_csv

    slots, warnings = parse_counts_csv(text, {c.serial for c in config.counters})
    return analyze_slots(config, slots, warnings, site=site, now=now)


def analyze_slots(
    config: Config,
    slots: dict[str, list[CountSlot]],
    warnings: list[str],
    *,
    site: str | None = None,
    now: datetime | None = None,
    silences: Sequence[Silence] = (),
    stored: bool = False,
) -> AnalysisResult:
    """Judge count slots (from a CSV or the agent's own store) through the same gate as the
    service: the calendar, the upload window, untuned counters, peers, luck and silences.
    ``stored``: the slots come from the agent's store, not a file (a warning names which)."""
    from diagnostics.assess import Gate, assess
    from diagnostics.checks.counts_missing import fold_site_outages

    sites = [config.site(site)] if site is not None else list(config.sites)
    if now is None:
        ends = [s.start + timedelta(minutes=s.minutes) for seq in slots.values() for s in seq]
        if not ends:
            return AnalysisResult(
                [], [*warnings, "no count rows for the configured counters"], None
            )
        now = max(ends)
    findings: list[Finding] = []
    for s in sites:
        findings.extend(_judge_site(config, s, slots, now, warnings, stored=stored))
    gate = Gate(
        calendars={s.code: s.calendar() for s in sites},
        now=now,
        silences=silences,
        untuned=frozenset(c.serial for c in config.counters if not c.tuned),
    )
    assessed = assess(fold_site_outages(findings), gate=gate)
    problems = [CountProblem.from_assessed(a) for a in assessed if a.finding.problem]
    far = datetime.max.replace(tzinfo=now.tzinfo)
    problems.sort(key=lambda p: (p.site, p.start or far, p.counter or ""))
    return AnalysisResult(problems, warnings, now, assessed)


def _judge_site(
    config: Config,
    site: Any,
    slots: dict[str, list[CountSlot]],
    now: datetime,
    warnings: list[str],
    *,
    stored: bool = False,
) -> list[Finding]:
    from diagnostics.checks.counts import local
    from diagnostics.series import CountArrays, CountModel

    counters = config.counters_at(site.code)
    present = {c.serial: [s for s in slots.get(c.serial, []) if s.start < now] for c in counters}
    for serial, seq in present.items():
        if not seq and stored:
            warnings.append(f"no stored counts for {serial} ({site.code}): not judged")
        elif not seq:
            warnings.append(f"counter {serial} ({site.code}) has no rows in the file: not judged")
    present = {k: v for k, v in present.items() if v}
    if not present:
        return []
    cal = site.calendar()
    arrays = CountArrays.from_slots(present, cal, now=now)
    rows = {serial: i for i, serial in enumerate(arrays.serials)}
    peers = [[rows[p] for p in config.peers(serial) if p in rows] for serial in arrays.serials]
    model = CountModel(arrays, cal, now, peers)
    first = arrays.grid.start
    for serial, seq in present.items():
        if seq[0].start > first:
            warnings.append(
                f"counter {serial}'s rows begin {local(seq[0].start, cal.tz)}, after the site's "
                f"first row ({local(first, cal.tz)}): the time before is not judged"
            )
    names = {serial: config.counter(serial).name for serial in arrays.serials}
    return judge_model(model, site.code, names)


def judge_model(
    model: CountModel,
    site: str,
    names: dict[str, str],
    held_split: dict[str, HeldSplit] | None = None,
) -> list[Finding]:
    """Every count check over the whole of ``model``, each episode a finding (not yet folded
    or assessed). Shared with the evaluation in ``bench/eval_counts.py``, which also hands
    the open imbalance incidents' usual shares (``held_split``) as the runner does."""
    from diagnostics.checks.base import CounterEvidence, SiteEvidence
    from diagnostics.checks.counts_missing import SiteCountsOutage

    out: list[Finding] = []
    for serial in model.arrays.serials:
        ev = CounterEvidence(
            serial=serial,
            name=names.get(serial, serial),
            site=site,
            calendar=model.calendar,
            now=model.now,
            held_split=held_split or {},
        )
        for kind in _count_kinds("counter"):
            out.extend(_all(kind).judge(model, ev))
    site_ev = SiteEvidence(site=site, calendar=model.calendar, now=model.now)
    for site_kind in _count_kinds("site"):
        if site_kind is SiteCountsOutage and len(model.arrays.serials) < 2:
            continue
        out.extend(_all(site_kind).judge(model, site_ev))
    return out


def _all(kind: type[Check]) -> CountCheck:
    """The check set to report every episode in the file, not only the current state."""
    from diagnostics.checks.counts import CountCheck

    check = kind(kind.Options(scope="all"))  # type: ignore[call-arg]
    assert isinstance(check, CountCheck)
    return check


# -- the command ----------------------------------------------------------------------------------


@click.group()
def analyze() -> None:
    """Judge exported data (a count CSV, snapshots, a manual tally) without a running fleet."""


@analyze.command("counts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option_with("The sites and counters the CSV is about.")
@click.option("--site", help="Judge only this site.")
@click.option(
    "--now",
    "now_text",
    metavar="ISO-8601",
    help="Judge as of this time (default: the end of the last slot in the file).",
)
@json_option
def analyze_counts_cmd(
    file: Path, config_path: Path, site: str | None, now_text: str | None, as_json: bool
) -> None:
    """Judge the count CSV FILE (timestamp,counter,in,out): real problems or false alarms."""
    from diagnostics.countcsv import CountCsvError

    cfg = _load(config_path)
    now = _aware(now_text, "--now") if now_text else None
    if site is not None and site not in {s.code for s in cfg.sites}:
        raise click.BadParameter(f"no site {site!r} in {config_path}", param_hint="--site")
    try:
        result = analyze_counts(cfg, file.read_text(encoding="utf-8-sig"), site=site, now=now)
    except CountCsvError as exc:
        click.echo(f"{file}: {exc}", err=True)
        sys.exit(EX_DATAERR)
    except UnicodeDecodeError:
        click.echo(f"{file}: not a text file", err=True)
        sys.exit(EX_DATAERR)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json(result.to_json())
        return
    as_of = result.now.isoformat() if result.now else "no data"  # None: no row was ours
    if not result.findings:  # one line, not an empty table
        out.print(f"no count problems found as of {as_of}")
        return
    shown = table(
        f"Count problems as of {as_of}",
        ("counter", "kind", "when", "verdict", "expected", "observed", "why"),
        whole=("counter",),
    )
    for p in result.findings:
        shown.add_row(
            p.counter or f"site {p.site}",
            p.kind,
            _span(p.start, p.end),
            p.verdict,
            _num(p.expected),
            _num(p.observed),
            "; ".join(p.reasons),
        )
    out.print(shown)


@analyze.command("image")
@click.argument("snapshots", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--reference",
    required=True,
    type=click.Path(path_type=Path),
    help="The reference view taken when the counter was tuned.",
)
@json_option
def analyze_image_cmd(snapshots: tuple[Path, ...], reference: Path, as_json: bool) -> None:
    """Judge SNAPSHOTS against the counter's reference view: clear or blocked, and how."""
    from diagnostics import liveview as lv
    from diagnostics.checks.liveview import LiveView, Snapshot, judge

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            click.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
            sys.exit(2)

    try:
        ref = lv.prepare_reference(read(reference))
    except lv.ImageError as exc:
        click.echo(f"{reference}: {exc}", err=True)
        sys.exit(2)
    # the live-view check's own judgement (one way to judge a view), on the files given
    at = clock().now()
    judged = judge(LiveView(tuple(Snapshot(at, read(p), str(p)) for p in snapshots), ref))
    for name, why in judged.unreadable:
        click.echo(f"{name}: {why}", err=True)
        sys.exit(2)
    results: list[dict[str, Any]] = [
        {"snapshot": s.name, **s.result.to_json()} for s in judged.samples
    ]
    if as_json:
        _print_json(results)
        return
    # a path is one long word: it folds whole onto the next lines, never cut to a common prefix
    shown = table(
        f"Live view against {reference}", ("snapshot", "verdict", "kind", "hidden", "why")
    )
    for r in results:
        style = "red" if r["verdict"] == "blocked" else "green"
        shown.add_row(
            r["snapshot"],
            f"[{style}]{r['verdict']}[/]",
            r["kind"] or "-",
            f"{r['blocked_fraction']:.0%}",
            "; ".join(r["reasons"]),
        )
    out.print(shown)


def _span(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{start:%d %b %H:%M} – {end:%d %b %H:%M}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


# -- the manual accuracy audit ----------------------------------------------------------------


@analyze.command("audit")
@click.argument(
    "manual", metavar="TALLY", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--counter", "serial", required=True, help="The counter the tally is about.")
@config_option_with("The agent's configuration (its state directory holds the stored counts).")
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 0.999),
    default=0.95,
    show_default=True,
    help="Confidence of the interval on each direction's accuracy.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the result to FILE (.csv: one row per window; else JSON), to attach "
    "to a Data Accuracy ticket with `ffc-agent tickets attach N FILE`.",
)
@json_option
def analyze_audit_cmd(
    manual: Path,
    serial: str,
    config_path: Path,
    confidence: float,
    output: Path | None,
    as_json: bool,
) -> None:
    """Compare the manual TALLY (start,end,in,out) with the counter's stored counts: within 5 %?

    Exits 0 passes, 1 inconclusive (tally more), 2 fails, 3 no stored counts for the tallied
    windows (nothing to compare), as `check` orders OK, WARNING, CRITICAL, UNKNOWN.
    """
    from agent.app import App
    from diagnostics.audit import FAILS, INCONCLUSIVE, PASSES, AuditCsvError, audit, parse_tally_csv

    # the verdicts as exit codes, in check's order: OK, WARNING, CRITICAL (UNKNOWN: no data)
    exit_code = {PASSES: 0, INCONCLUSIVE: 1, FAILS: 2}

    cfg = _load(config_path)
    if serial not in {c.serial for c in cfg.counters}:
        raise click.BadParameter(f"no counter {serial!r} in {config_path}", param_hint="--counter")
    try:
        windows = parse_tally_csv(manual.read_text(encoding="utf-8-sig"))
    except AuditCsvError as exc:
        click.echo(f"{manual}: {exc}", err=True)
        sys.exit(EX_DATAERR)
    except UnicodeDecodeError:
        click.echo(f"{manual}: not a text file", err=True)
        sys.exit(EX_DATAERR)
    if not windows:
        click.echo(f"{manual}: no tally windows", err=True)
        sys.exit(EX_DATAERR)
    with App.open(cfg, clock()) as app:
        slots = app.store.slots(serial, windows[0].start, windows[-1].end)
    result = audit(serial, windows, slots, confidence=confidence)
    if not any(w.covered_minutes for w in result.windows):  # not one stored slot inside them
        span = f"{windows[0].start:%Y-%m-%d %H:%M} – {windows[-1].end:%Y-%m-%d %H:%M %Z}"
        fail(
            f"{serial} has no stored counts for these windows ({span}): nothing to compare",
            as_json=as_json,
            code=3,
        )
    data = result.to_json()
    if output is not None:
        try:
            output.write_text(_audit_csv(data) if output.suffix == ".csv" else _json_text(data))
        except OSError as exc:
            raise click.ClickException(f"{output}: cannot write: {exc.strerror or exc}") from None
        click.echo(
            f"wrote {output}; attach it to a Data Accuracy ticket with "
            f"`ffc-agent tickets attach NUMBER {output}`",
            err=True,
        )
    if as_json:
        _print_json(data)
        sys.exit(exit_code[result.verdict])
    shown = table(
        f"Manual audit of {serial}",
        ("direction", "tallied", "counted", "accuracy", f"{confidence:.0%} interval", ""),
    )
    for d in result.directions:
        acc = "-" if d.accuracy is None else f"{d.accuracy:.1%}"
        interval = (
            "-" if d.low is None or d.high is None else f"{d.low - 1:+.1%} … {d.high - 1:+.1%}"
        )
        shown.add_row(d.name.upper(), f"{d.manual:,}", f"{d.counted:,}", acc, interval, d.verdict)
    out.print(shown)
    partial = data["partial_windows"]
    out.print(
        f"{plural(data['full_windows'], 'full window')}, {partial} partial (left out: not on "
        f"slot boundaries, or slots missing); acceptance ±{result.acceptance:.0%}: "
        f"{result.verdict}"
    )
    sys.exit(exit_code[result.verdict])


def _json_text(data: Any) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


def _audit_csv(data: dict[str, Any]) -> str:
    """One row per window, then one summary row per direction (window columns empty)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = ["start", "end", "manual_in", "manual_out", "counted_in", "counted_out", "full"]
    writer.writerow([*cols, "direction", "accuracy", "ratio_low", "ratio_high", "verdict"])
    for w in data["windows"]:
        writer.writerow([w[c] for c in cols] + [""] * 5)
    for d in data["directions"]:
        row = [d["direction"], d["accuracy"], d["ratio_low"], d["ratio_high"], d["verdict"]]
        writer.writerow([""] * len(cols) + row)
    return buf.getvalue()
