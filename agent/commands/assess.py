"""``ffc-agent assess``: the assessment a store manager or first line makes before a ticket.

The support guide asks for it: before raising a data-accuracy ticket, make sure the problem is
not a false alarm. This answers, for every problem in a period — from the agent's own store or
from an exported CSV — whether it is real, a false alarm or still pending, the gate's reasons,
and the checklist a careful support engineer goes through: was the store open, was the rest of
the site online, did the peers see the same, can the data still arrive, is the counter tuned,
is its live view clear, did someone silence it.

The count problems are judged afresh from the data by the same checks and the same gate as the
service and ``analyze counts``; the device problems (offline, live view, health) come from the
findings the service stored, with the verdicts it gave them then.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.commands.analyze import CountProblem, analyze_slots
from agent.commands.common import (
    EX_DATAERR,
    _aware,
    _load,
    _print_json,
    clock,
    config_option,
    json_option,
    out,
)
from agent.store import Store

if TYPE_CHECKING:  # loaded when the command runs, not for `--help`
    from agent.config import Config
    from diagnostics.assess import Silence
from diagnostics.model import UNCONFIRMED, CountSlot, as_datetime


@dataclass(frozen=True)
class Point:
    """One line of the checklist: the question, what was found, and which way it points."""

    question: str
    answer: str
    points_to: str  # "real", "false_alarm" or "unknown"

    def to_json(self) -> dict[str, str]:
        return {"question": self.question, "answer": self.answer, "points_to": self.points_to}


@dataclass
class Assessment:
    site: str
    counter: str | None
    check_id: str
    kind: str
    start: datetime | None
    end: datetime | None
    verdict: str
    rule: str
    reasons: list[str]
    summary: str
    checklist: list[Point] = field(default_factory=list)
    source: str = "counts"  # "counts" (judged now from the data) or "stored" (the service's)

    @property
    def real(self) -> bool:
        return self.verdict == "genuine"

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "counter": self.counter,
            "check_id": self.check_id,
            "kind": self.kind,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "verdict": self.verdict,
            "real": self.real,
            "rule": self.rule,
            "reasons": self.reasons,
            "summary": self.summary,
            "checklist": [p.to_json() for p in self.checklist],
            "source": self.source,
        }


@dataclass
class Period:
    start: datetime
    end: datetime


def assess_period(
    config: Config,
    *,
    period: Period,
    store: Store | None = None,
    csv_slots: dict[str, list[CountSlot]] | None = None,
    site: str | None = None,
    counter: str | None = None,
) -> tuple[list[Assessment], list[str]]:
    """Every problem touching ``period``, assessed; and the warnings met on the way."""
    warnings: list[str] = []
    history = period.start - timedelta(days=35)  # the baselines need weeks before the period
    if csv_slots is not None:
        slots = csv_slots
    elif store is not None:
        slots = {c.serial: store.slots(c.serial, history, period.end) for c in config.counters}
    else:
        raise ValueError("give the store or the CSV's slots")
    silences = _silences(store)
    result = analyze_slots(
        config,
        slots,
        warnings,
        site=site,
        now=period.end,
        silences=silences,
        stored=csv_slots is None,
    )
    out = [
        _from_count_problem(config, p, slots, store, period)
        for p in result.findings
        if _wanted(p.counter, p.site, p.start, p.end, site, counter, period)
    ]
    if store is not None:
        for a, evidence in _stored(store, period, site, counter):
            a.checklist = checklist(config, a, evidence, slots, store, period)
            out.append(a)
    return out, result.warnings


def _wanted(
    serial: str | None,
    site_code: str,
    start: datetime | None,
    end: datetime | None,
    site: str | None,
    counter: str | None,
    period: Period,
) -> bool:
    if site is not None and site_code != site:
        return False
    if counter is not None and serial not in (counter, None):
        return False
    return not (end is not None and end <= period.start) and not (
        start is not None and start >= period.end
    )


def _silences(store: Store | None) -> list[Silence]:
    from diagnostics.assess import Silence

    if store is None:
        return []
    return [
        Silence(s["id"], s["target"], s["start"], s["until"], s["reason"], s["author"])
        for s in store.silences()
    ]


def _from_count_problem(
    config: Config,
    p: CountProblem,
    slots: dict[str, list[CountSlot]],
    store: Store | None,
    period: Period,
) -> Assessment:
    a = Assessment(
        site=p.site,
        counter=p.counter,
        check_id=p.check_id,
        kind=p.kind,
        start=p.start,
        end=p.end,
        verdict=p.verdict,
        rule=p.rule,
        reasons=list(p.reasons),
        summary=p.summary,
    )
    a.checklist = checklist(config, a, p.details, slots, store, period)
    return a


def checklist(
    config: Config,
    a: Assessment,
    details: dict[str, Any],
    slots: dict[str, list[CountSlot]],
    store: Store | None,
    period: Period,
) -> list[Point]:
    """The questions a careful support engineer asks, answered from the evidence."""
    site = config.site(a.site)
    cal = site.calendar()
    start, end = a.start or period.start, a.end or period.end
    points: list[Point] = []

    closed = cal.closed_reasons(start, end)
    open_minutes = sum(
        cal.open_fraction(start + timedelta(minutes=m), 15) * 15
        for m in range(0, max(15, int((end - start).total_seconds() // 60)), 15)
    )
    if open_minutes == 0:
        why = "; ".join(closed) if closed else "outside its opening hours"
        points.append(Point("Was the store open?", f"no: {why}", "false_alarm"))
    else:
        extra = f" (closed: {'; '.join(closed)})" if closed else ""
        answer = f"yes, for {open_minutes / 60:.1f} h of the span{extra}"
        points.append(Point("Was the store open?", answer, "real"))

    others = [c.serial for c in config.counters_at(a.site) if c.serial != a.counter]
    if others:
        reporting = [s for s in others if any(start <= x.start < end for x in slots.get(s, ()))]
        if len(reporting) == len(others):
            points.append(
                Point(
                    "Was the rest of the site online?",
                    f"yes: all {len(others)} other counters sent data",
                    "real",
                )
            )
        elif reporting:
            points.append(
                Point(
                    "Was the rest of the site online?",
                    f"partly: {len(reporting)} of {len(others)} other counters sent data",
                    "unknown",
                )
            )
        else:
            points.append(
                Point(
                    "Was the rest of the site online?",
                    "no other counter sent data: the site's power or network may be down",
                    "false_alarm",
                )
            )
    else:
        points.append(
            Point("Was the rest of the site online?", "the counter is alone at its site", "unknown")
        )

    factor = details.get("peer_factor")
    if factor is None:
        points.append(Point("Did its peers see the same?", "no peers to compare with", "unknown"))
    elif factor <= 0.8:
        points.append(
            Point(
                "Did its peers see the same?",
                f"yes: the peers were at {factor:.0%} of their usual level",
                "false_alarm",
            )
        )
    else:
        points.append(
            Point(
                "Did its peers see the same?",
                f"no: the peers were at {factor:.0%} of their usual level",
                "real",
            )
        )

    lost_at = as_datetime(details.get("lost_at"))
    if a.kind in ("missing", "site_outage") and lost_at is not None:
        if lost_at > period.end:
            points.append(
                Point(
                    "Can the data still arrive?",
                    f"yes: the counter keeps it until {lost_at:%Y-%m-%d %H:%M %Z}",
                    "false_alarm",
                )
            )
        else:
            points.append(
                Point(
                    "Can the data still arrive?",
                    f"no: it was lost on {lost_at:%Y-%m-%d %H:%M %Z}",
                    "real",
                )
            )
    else:
        points.append(Point("Can the data still arrive?", "not a missing-data problem", "unknown"))

    if a.counter:
        tuned = config.counter(a.counter).tuned
        points.append(
            Point(
                "Is the counter tuned?",
                "yes" if tuned else "no: its accuracy audit is not finished",
                "real" if tuned else "false_alarm",
            )
        )
        points.append(_live_view(store, a.counter, end))
    silenced = [
        s
        for s in _silences(store)
        if s.target in ("*", a.counter, a.site) and s.start < end and s.until > start
    ]
    if silenced:
        points.append(
            Point(
                "Did someone silence it?",
                "; ".join(
                    f"{s.target} until {s.until:%Y-%m-%d %H:%M}: {s.reason}" for s in silenced
                ),
                "false_alarm",
            )
        )
    else:
        points.append(Point("Did someone silence it?", "no", "real"))
    return points


def _live_view(store: Store | None, serial: str, before: datetime) -> Point:
    from diagnostics.checks import Family, meta

    question = "Is its live view clear?"
    if store is None:
        return Point(question, "unknown: an exported CSV has no snapshots", "unknown")
    rows = [
        r
        for r in store.findings_between(before - timedelta(days=7), before + timedelta(hours=1))
        if meta(r["check_id"]).family is Family.LIVEVIEW and r["subject"] == serial
    ]
    if not rows:
        return Point(question, "unknown: no snapshot judged in the week before", "unknown")
    last = rows[-1]
    if last["status"] == "fail":
        return Point(
            question, f"no: {last['summary']} — the counts are likely wrong because of it", "real"
        )
    at = f"{datetime.fromisoformat(last['at']):%Y-%m-%d %H:%M}"
    if last["status"] != "ok" or last["code"] == UNCONFIRMED:
        # skipped (no snapshot: offline), broken, or seen blocked but not yet confirmed
        return Point(question, f"unknown, at {at}: {last['summary']}", "unknown")
    return Point(question, f"yes, at {at}: {last['summary']}", "unknown")


def _stored(
    store: Store, period: Period, site: str | None, counter: str | None
) -> list[tuple[Assessment, dict[str, Any]]]:
    """The device problems the service judged in the period, the latest of each: reachability,
    live view, the device itself (count problems are judged afresh from the data; the gateway
    and the agent are not the store's)."""
    from diagnostics.checks import Family, meta

    families = frozenset({Family.CONNECTIVITY, Family.LIVEVIEW, Family.DEVICE})
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in store.findings_between(period.start, period.end):
        stored = meta(row["check_id"]).family in families
        if not stored or row["status"] not in ("warn", "fail"):
            continue
        if not _wanted(row["subject"], row["site"] or "", None, None, site, counter, period):
            continue
        latest[(row["check_id"], row["site"] or "", row["subject"] or "")] = row
    out = []
    for row in latest.values():
        evidence = json.loads(row["evidence"])
        since = as_datetime(evidence.get("failing_since")) or as_datetime(evidence.get("since"))
        assessment = Assessment(
            site=row["site"] or "",
            counter=row["subject"],
            check_id=row["check_id"],
            kind=row["code"],
            start=since,
            end=as_datetime(row["at"]),
            verdict=row["verdict"] or "",
            rule="",
            reasons=json.loads(row["reasons"]),
            summary=row["summary"],
            source="stored",
        )
        out.append((assessment, evidence))
    return out


# -- the command ----------------------------------------------------------------------------------


@click.command("assess")
@click.option("--site", help="Only this site.")
@click.option("--counter", "serial", help="Only this counter (and its site's problems).")
@click.option("--from", "start_text", metavar="DATE", help="Start (YYYY-MM-DD or ISO-8601).")
@click.option("--to", "end_text", metavar="DATE", help="End, included (default: now).")
@click.option(
    "--counts",
    "counts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Judge this exported count CSV instead of the stored data.",
)
@config_option
@json_option
def assess_cmd(
    site: str | None,
    serial: str | None,
    start_text: str | None,
    end_text: str | None,
    counts_file: Path | None,
    config_path: Path,
    as_json: bool,
) -> None:
    """Is it a real problem or a false alarm? The assessment to make before raising a ticket."""
    from agent.app import App
    from diagnostics.countcsv import CountCsvError, parse_counts_csv

    cfg = _load(config_path)
    if site is not None and site not in {s.code for s in cfg.sites}:
        raise click.BadParameter(f"no site {site!r} in {config_path}", param_hint="--site")
    if serial is not None and serial not in {c.serial for c in cfg.counters}:
        raise click.BadParameter(f"no counter {serial!r} in {config_path}", param_hint="--counter")
    tz = cfg.site(site).calendar().tz if site else cfg.sites[0].calendar().tz
    end = _day_or_time(end_text, "--to", tz, end_of_day=True) if end_text else None
    slots = None
    if counts_file is not None:
        try:
            slots, warnings = parse_counts_csv(
                counts_file.read_text(encoding="utf-8-sig"), {c.serial for c in cfg.counters}
            )
        except CountCsvError as exc:
            click.echo(f"{counts_file}: {exc}", err=True)
            sys.exit(EX_DATAERR)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        if end is None:
            ends = [x.start + timedelta(minutes=x.minutes) for seq in slots.values() for x in seq]
            end = max(ends) if ends else clock().now()
    end = end or clock().now()
    start = (
        _day_or_time(start_text, "--from", tz, end_of_day=False)
        if start_text
        else end - timedelta(days=7)
    )
    if start >= end:
        raise click.BadParameter("--from must be before --to", param_hint="--from")
    period = Period(start, end)
    if slots is not None:
        found, warnings = assess_period(
            cfg, period=period, csv_slots=slots, site=site, counter=serial
        )
    else:
        with App.open(cfg, clock()) as app:
            store = app.store
            found, warnings = assess_period(
                cfg, period=period, store=store, site=site, counter=serial
            )
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "problems": [a.to_json() for a in found],
            }
        )
        return
    out.print(
        f"[bold]Assessment {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M}[/]: "
        f"{sum(a.real for a in found)} real, {sum(not a.real for a in found)} not"
    )
    if not found:
        out.print("no problems in this period")
    marks = {"real": "[red]●[/]", "false_alarm": "[green]○[/]", "unknown": "[dim]?[/]"}
    for a in found:
        head = "REAL" if a.real else a.verdict.replace("_", " ").upper()
        style = "red" if a.real else "yellow" if a.verdict == "pending" else "green"
        out.print(f"\n[{style}]{head}[/] {a.counter or 'site ' + a.site} {a.kind}: {a.summary}")
        for reason in a.reasons:
            out.print(f"  because {reason}")
        for p in a.checklist:
            out.print(f"  {marks[p.points_to]} {p.question} {p.answer}")


def _day_or_time(text: str, what: str, tz: Any, *, end_of_day: bool) -> datetime:
    """``2026-11-25`` (a whole local day) or an ISO-8601 time with its offset."""
    if len(text) == 10:
        try:
            day = datetime.fromisoformat(text).replace(tzinfo=tz)
        except ValueError:
            raise click.BadParameter(f"not a date: {text!r}", param_hint=what) from None
        return day + timedelta(days=1) if end_of_day else day
    return _aware(text, what)
