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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.config import Config
from diagnostics.assess import Gate, Silence, assess
from diagnostics.checks import REGISTRY, Family
from diagnostics.checks.base import Check, CounterEvidence, SiteEvidence
from diagnostics.checks.counts import CountCheck, local
from diagnostics.checks.counts_missing import SiteCountsOutage, fold_site_outages
from diagnostics.countcsv import parse_counts_csv
from diagnostics.model import Assessed, CountSlot, Finding, as_datetime
from diagnostics.series import CountArrays, CountModel

# every count check the registry knows, judged over the whole file
_COUNT_CHECKS = [
    c
    for c in REGISTRY.values()
    if c.family is Family.COUNTS and issubclass(c, CountCheck) and not c.derived
]
COUNTER_KINDS = tuple(c for c in _COUNT_CHECKS if c.applies_to == "counter")
SITE_KINDS = tuple(c for c in _COUNT_CHECKS if c.applies_to == "site")


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
) -> AnalysisResult:
    """Judge count slots (from a CSV or the agent's own store) through the same gate as the
    service: the calendar, the upload window, untuned counters, peers, luck and silences."""
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
        findings.extend(_judge_site(config, s, slots, now, warnings))
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
) -> list[Finding]:
    counters = config.counters_at(site.code)
    present = {c.serial: [s for s in slots.get(c.serial, []) if s.start < now] for c in counters}
    for serial, seq in present.items():
        if not seq:
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


def judge_model(model: CountModel, site: str, names: dict[str, str]) -> list[Finding]:
    """Every count check over the whole of ``model``, each episode a finding (not yet folded
    or assessed). Shared with the evaluation in ``bench/eval_counts.py``."""
    out: list[Finding] = []
    for serial in model.arrays.serials:
        ev = CounterEvidence(
            serial=serial,
            name=names.get(serial, serial),
            site=site,
            calendar=model.calendar,
            now=model.now,
        )
        for kind in COUNTER_KINDS:
            out.extend(_all(kind).judge(model, ev))
    site_ev = SiteEvidence(site=site, calendar=model.calendar, now=model.now)
    for site_kind in SITE_KINDS:
        if site_kind is SiteCountsOutage and len(model.arrays.serials) < 2:
            continue
        out.extend(_all(site_kind).judge(model, site_ev))
    return out


def _all(kind: type[Check]) -> CountCheck:
    """The check set to report every episode in the file, not only the current state."""
    check = kind(kind.Options(scope="all"))  # type: ignore[call-arg]
    assert isinstance(check, CountCheck)
    return check
