"""Live view blocked: the counter's camera no longer sees the view it was tuned on.

A covered, turned, fogged or frozen camera keeps answering its API and keeps reporting counts,
just wrong ones, so neither the offline nor the counting checks see it. One odd snapshot (a
delivery trolley parked for a minute, a cleaner's ladder) is not a fault: a blockage must be
confirmed over consecutive snapshots before it fails.

Evidence: ``evidence.extra["liveview"]``, filled by the runner, a dict with

- ``"history"``: list of ``ViewSample`` (snapshot time and its ``ViewResult``), oldest first,
  newest last, at least the last ``max(confirm_snapshots, frozen_snapshots)`` snapshots;
- ``"reference_source"``: ``"configured"`` (the tuning image), ``"learned"`` (the first good
  snapshots, see ``diagnostics.liveview.LearnedReference``) or ``"learning"`` (not yet);
- ``"learning"``: optional ``(have, need)`` while the reference is being learned.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from diagnostics.checks.base import Check, CounterEvidence, Family, TicketKind
from diagnostics.liveview import ViewResult, frozen
from diagnostics.model import Finding, Status


@dataclass(frozen=True)
class ViewSample:
    at: datetime
    result: ViewResult


class LiveViewBlocked(Check):
    id: ClassVar[str] = "counter.liveview.blocked"
    title: ClassVar[str] = "Counter's live view matches its tuned reference view"
    applies_to = "counter"
    family = Family.LIVEVIEW
    ticket = TicketKind.TECHNICAL
    priority = 50
    ticket_subject = "{who} live view {code} {since}"
    ticket_what = (
        "The live view of {low} is {code}, so it cannot see and count visitors reliably. {said}"
    )
    remediation: ClassVar[str] = (
        "Look at the snapshot beside the reference image: remove what covers or stands in "
        "front of the counter, clean or dry the lens, restore the lighting, or re-aim the "
        "counter to its tuned position; restart the counter if its picture is frozen. If the "
        "view stays blocked, raise a ticket with both images attached (the counts are wrong "
        "until it is fixed, and it may need re-tuning)."
    )

    class Options(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        confirm_snapshots: int = Field(
            3, ge=1, description="consecutive blocked snapshots before it fails"
        )
        frozen_snapshots: int = Field(
            4, ge=2, description="identical snapshots while the store is open mean frozen"
        )
        ignore_dark_when_closed: bool = Field(
            True, description="a dark view while the store is closed is fine (lights off)"
        )

    options: Options

    def run(self, evidence: CounterEvidence) -> list[Finding]:
        opts = self.options
        lv = evidence.extra.get("liveview") or {}
        history: list[ViewSample] = list(lv.get("history") or [])
        source = lv.get("reference_source", "configured")
        if not history:
            if source == "learning":
                have, need = lv.get("learning", (0, 0))
                why = f"learning the normal view from the first good snapshots ({have} of {need})"
                return [self.finding(evidence, Status.SKIP, "learning", why)]
            return [self.finding(evidence, Status.SKIP, "no_snapshot", "no snapshot yet")]
        ref_note = (
            "reference learned from the first good snapshots (no tuning image configured)"
            if source == "learned"
            else "against the tuning reference image"
        )
        cal = evidence.calendar
        last = history[-opts.frozen_snapshots :]
        prints = [s.result.fingerprint for s in last if s.result.fingerprint is not None]
        open_all = all(cal.is_open(s.at) for s in last)
        if len(prints) == opts.frozen_snapshots and frozen(prints, expected_traffic=open_all):
            summary = (
                f"live view frozen: {len(last)} identical snapshots since "
                f"{last[0].at.astimezone(cal.tz):%a %d %b %H:%M} while the store was open"
            )
            return [
                self.finding(
                    evidence,
                    Status.FAIL,
                    "frozen",
                    summary,
                    kind="frozen",
                    blocked_fraction=1.0,
                    since=last[0].at.isoformat(),
                    snapshots=len(last),
                    reference=ref_note,
                )
            ]
        run: list[ViewSample] = []
        for sample in reversed(history):
            if not sample.result.blocked:
                break
            run.insert(0, sample)
        latest = history[-1].result
        details: dict[str, object] = {
            "reference": ref_note,
            "metrics": latest.metrics,
            "reasons": list(latest.reasons),
        }
        if not run:
            return [self.finding(evidence, Status.OK, "clear", "live view clear", **details)]
        if opts.ignore_dark_when_closed and all(
            s.result.kind == "dark" and not cal.is_open(s.at) for s in run
        ):
            summary = "live view dark while the store is closed (lights off)"
            return [self.finding(evidence, Status.OK, "dark_closed", summary, **details)]
        kind = Counter(s.result.kind for s in run).most_common(1)[0][0] or "blocked"
        fraction = sorted(s.result.blocked_fraction for s in run)[len(run) // 2]
        details |= {
            "kind": kind,
            "blocked_fraction": round(fraction, 3),
            "since": run[0].at.isoformat(),
            "snapshots": len(run),
        }
        if len(run) < opts.confirm_snapshots:
            summary = (
                f"{len(run)} of {opts.confirm_snapshots} snapshots blocked ({kind}); "
                "awaiting confirmation"
            )
            return [self.finding(evidence, Status.OK, "unconfirmed", summary, **details)]
        summary = (
            f"live view blocked ({kind}, {fraction:.0%} of the view) in the last {len(run)} "
            f"snapshots since {run[0].at.astimezone(cal.tz):%a %d %b %H:%M}"
        )
        return [self.finding(evidence, Status.FAIL, kind, summary, **details)]
