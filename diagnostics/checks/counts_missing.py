"""Missing data: count slots that never arrived, told apart from zeros — per counter and site.

A counter that loses its uplink keeps up to seven days of counts and uploads them when it is
back, so a fresh gap is *pending*, not lost; older than that it is gone for good. The check
says so before the week runs out ("data will be lost on DATE unless the counter comes back
online"), and the gate turns a fresh gap into a pending verdict. Each finding carries the
traffic the gap held, which is what a data-accuracy ticket is about: a gap at night lost
nothing. When every counter of a site is missing at once (the store's network or power), that
is one site finding, not one per counter: ``fold_site_outages`` removes the counters' own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import Field

from diagnostics.checks.base import SiteEvidence, TicketKind
from diagnostics.checks.counts import CountCheck, local, site_columns, site_model, span
from diagnostics.model import Finding, Status, as_datetime, plural
from diagnostics.series import CountModel, Gap, runs


class _Window(CountCheck.Options):
    lookback_days: int = Field(8, ge=1, description="days of history the check looks at")
    upload_window_days: float = Field(
        7.0, gt=0, description="how long a counter keeps unsent counts"
    )
    warn_after_days: float = Field(
        5.0, gt=0, description="raise a gap this long after it began, before the data is lost"
    )
    grace_minutes: int = Field(
        30, ge=0, description="a slot this fresh may simply not be fetched yet"
    )


class _Gaps(CountCheck):
    """Shared: which slots are due, where the upload window ends, and the words for it."""

    options: _Window

    def due(self, model: CountModel, now: datetime) -> int:
        """Slots before this index have ended at least ``grace_minutes`` ago."""
        step = model.grid.minutes * 60
        done = now - timedelta(minutes=self.options.grace_minutes) - model.grid.start
        return int(min(model.grid.n, max(0, done.total_seconds() // step)))

    def pieces(
        self, model: CountModel, first: int, last: int, now: datetime
    ) -> list[tuple[int, int]]:
        """Split a gap where the upload window ends: the older part is lost, the rest pending."""
        if self.options.scope != "all":
            return [(first, last)]
        # a slot exactly as old as the window is lost now: the pending part starts after it
        window = timedelta(days=self.options.upload_window_days)
        cut = model.grid.index(now - window + timedelta(seconds=1))
        if first < cut <= last:
            return [(first, cut - 1), (cut, last)]
        return [(first, last)]

    def timing(
        self, start: datetime, now: datetime, tz: ZoneInfo
    ) -> tuple[Status, dict[str, Any], str]:
        opts = self.options
        lost_at = start + timedelta(days=opts.upload_window_days)
        warn_at = start + timedelta(days=opts.warn_after_days)
        details = {"lost_at": lost_at.isoformat(), "warn_at": warn_at.isoformat()}
        if now >= lost_at:
            return (
                Status.FAIL,
                details | {"lost": True},
                f"the data is lost (older than the {opts.upload_window_days:g}-day upload window)",
            )
        when = local(lost_at, tz)
        if now >= warn_at:
            return (
                Status.WARN,
                details | {"lost": False, "at_risk": True},
                f"data will be lost on {when} unless the counter comes back online",
            )
        return (
            Status.WARN,
            details | {"lost": False, "at_risk": False},
            f"still inside the upload window: it may yet arrive (lost on {when} if not)",
        )


class CountsMissing(_Gaps):
    id: ClassVar[str] = "counter.counts.missing"
    title: ClassVar[str] = "Every count slot arrives"
    applies_to = "counter"
    priority = 70
    ticket_subject = "{who} missing count data {since}"
    ticket_what = "Count data from {low} is missing for part of the period. {said}"
    ticket_ask = (
        "Please recover the missing slots from the counter if it still holds them; where they "
        "cannot be recovered, apply the attached estimate to the reports."
    )
    store_questions = ("Was the store open and trading as usual during the missing period?",)
    ticket_evidence = ("start", "end", "slots", "open_minutes", "expected", "lost", "lost_at")
    remediation: ClassVar[str] = (
        "Bring the counter back online (power, network, the gateway's link) within the upload "
        "window so it can send the counts it kept; if the data is lost, raise a data-accuracy "
        "ticket naming the missing period."
    )

    class Options(_Window):
        pass

    def judge(self, model: CountModel, evidence: Any) -> list[Finding]:
        i = model.index(evidence.serial)
        seen = np.flatnonzero(model.present[i])
        if seen.size == 0:
            return [self.finding(evidence, Status.SKIP, "no_data", "no count data received yet")]
        # before its first slot a counter was not there yet: that is not missing data
        lo = max(self.low(model, evidence), int(seen[0]))
        gaps = model.gaps(i, lo, self.due(model, evidence.now))
        if not gaps:
            return [self.finding(evidence, Status.OK, "complete", "every slot arrived")]
        tz = model.grid.tz
        if self.options.scope == "all":
            out = []
            for gap in gaps:
                for first, last in self.pieces(model, gap.first, gap.last, evidence.now):
                    part = model.gaps(i, first, last + 1)[0]
                    out.append(self._finding(model, evidence, [part], tz))
            return out
        return [self._finding(model, evidence, gaps, tz)]

    def _finding(
        self, model: CountModel, evidence: Any, gaps: Sequence[Gap], tz: ZoneInfo
    ) -> Finding:
        start, _ = span(model, gaps[0].first, gaps[0].last)
        _, end = span(model, gaps[-1].first, gaps[-1].last)
        slots = sum(g.last - g.first + 1 for g in gaps)
        expected = sum(g.expected for g in gaps)
        status, details, words = self.timing(start, evidence.now, tz)
        listed = [
            [s.isoformat(), e.isoformat()]
            for s, e in (span(model, g.first, g.last) for g in gaps[:20])
        ]
        return self.finding(
            evidence,
            status,
            "missing",
            f"{plural(slots, 'slot')} missing from {local(start, tz)} to {local(end, tz)} "
            f"(about {expected:.0f} visitors); {words}",
            start=start.isoformat(),
            end=end.isoformat(),
            slots=slots,
            open_minutes=round(sum(g.open_minutes for g in gaps)),
            expected=round(expected, 1),
            observed=0,
            gaps=listed,
            **details,
        )


class SiteCountsOutage(_Gaps):
    id: ClassVar[str] = "site.counts.outage"
    title: ClassVar[str] = "Not every counter of the site goes silent at once"
    applies_to = "site"
    ticket = TicketKind.TECHNICAL  # the store's power or network, not the counts' accuracy
    priority = 10
    ticket_subject = "{who} outage {since} ({code})"
    ticket_what = "The whole of {low} is down at once, not just one counter. {said}"
    ticket_ask = (
        "Please recover the counts the counters kept during the outage; where they cannot be "
        "recovered, apply an estimate to the reports."
    )
    store_questions = (
        "Was the store closed, or without power or internet, during this time?",
        "Has the network equipment the counters hang off been restarted or changed?",
    )
    ticket_evidence = (
        "all_silent_from",
        "all_silent_to",
        "counters",
        "open_minutes",
        "expected",
        "lost",
        "lost_at",
    )
    remediation: ClassVar[str] = (
        "Every counter stopped sending at the same time: look at what they share — the "
        "store's power, network switch or internet link — before touching any counter."
    )

    class Options(_Window):
        pass

    def run(self, evidence: SiteEvidence) -> list[Finding]:
        if len([c for c in site_columns(evidence).values() if len(c)]) < 2:
            return [
                self.finding(
                    evidence,
                    Status.SKIP,
                    "too_few",
                    "a site outage needs two or more counters with data",
                )
            ]
        return self.judge(site_model(evidence), evidence)

    def judge(self, model: CountModel, evidence: Any) -> list[Finding]:
        rows = [i for i in range(len(model.arrays.serials)) if model.present[i].any()]
        hi = self.due(model, evidence.now)
        if len(rows) < 2 or hi == 0:
            return [
                self.finding(
                    evidence,
                    Status.SKIP,
                    "too_few",
                    "a site outage needs two or more counters with data",
                )
            ]
        begun = max(int(np.flatnonzero(model.present[i])[0]) for i in rows)
        lo = max(self.low(model, evidence), begun)
        silent = np.asarray(~model.present[rows, lo:hi].any(axis=0), dtype=bool)
        out = []
        for a, b in runs(silent):
            core = (lo + a, lo + b)
            for first, last in self.pieces(model, lo + a, lo + b, evidence.now):
                out.append(self._outage(model, evidence, rows, core, first, last))
        if self.options.scope != "all" and out:
            out = [out[-1]]
        return self.settle(out, evidence, "reporting", "the site's counters are reporting")

    def _outage(
        self,
        model: CountModel,
        evidence: Any,
        rows: list[int],
        core: tuple[int, int],
        first: int,
        last: int,
    ) -> Finding:
        """One outage: the time every counter was silent, widened to each counter's own gap
        around it, so the counters' findings it replaces fall inside it."""
        members: dict[str, list[str]] = {}
        lo_all, hi_all = first, last
        expected = 0.0
        for i in rows:
            gap = next(g for g in model.gaps(i) if g.first <= first and g.last >= last)
            own_first = gap.first if first == core[0] else first
            own_last = gap.last if last == core[1] else last
            lo_all, hi_all = min(lo_all, own_first), max(hi_all, own_last)
            s, e = span(model, own_first, own_last)
            members[model.arrays.serials[i]] = [s.isoformat(), e.isoformat()]
            expected += float(model.mu(i)[own_first : own_last + 1].sum())
        start, end = span(model, lo_all, hi_all)
        core_start, core_end = span(model, first, last)
        tz = model.grid.tz
        status, details, words = self.timing(start, evidence.now, tz)
        return self.finding(
            evidence,
            status,
            "site_outage",
            f"all {len(rows)} counters of the site stopped sending from "
            f"{local(core_start, tz)} to {local(core_end, tz)} (about {expected:.0f} visitors); "
            f"{words}",
            start=start.isoformat(),
            end=end.isoformat(),
            all_silent_from=core_start.isoformat(),
            all_silent_to=core_end.isoformat(),
            counters=members,
            expected=round(expected, 1),
            observed=0,
            open_minutes=round(
                float(model.grid.open_regular[first : last + 1].sum() * model.grid.minutes)
            ),
            **details,
        )


def fold_site_outages(findings: Iterable[Finding]) -> list[Finding]:
    """Drop each counter's missing-data finding that a whole-site outage already reports.

    A counter's finding is folded when its counter is one of the outage's and its span lies
    inside the outage's span; a gap of its own before or after the outage stays its own.
    """
    findings = list(findings)
    outages = [f for f in findings if f.check_id == SiteCountsOutage.id and f.problem]

    def folded(f: Finding) -> bool:
        if f.check_id != CountsMissing.id or not f.problem:
            return False
        start, end = _span(f)
        if start is None or end is None:
            return False
        for o in outages:
            o_start, o_end = _span(o)
            if (
                o.site == f.site
                and f.subject in o.evidence.get("counters", {})
                and o_start is not None
                and o_end is not None
                and o_start <= start
                and end <= o_end
            ):
                return True
        return False

    return [f for f in findings if not folded(f)]


def _span(f: Finding) -> tuple[datetime | None, datetime | None]:
    return as_datetime(f.evidence.get("start")), as_datetime(f.evidence.get("end"))
