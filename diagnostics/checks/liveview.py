"""Live view blocked: the counter's camera no longer sees the view it was tuned on.

A covered, turned, fogged or frozen camera keeps answering its API and keeps reporting counts,
just wrong ones, so neither the offline nor the counting checks see it. One odd snapshot (a
delivery trolley parked for a minute, a cleaner's ladder) is not a fault: a blockage must be
confirmed over consecutive snapshots before it fails.

The judgement happens here, inside the check's isolation and timeout: the snapshots are decoded
(bounded: ``diagnostics.liveview.MAX_PIXELS`` and Pillow's own limit) and judged against the
reference by ``judge``, which ``ffc-agent analyze image`` calls too. The agent only gathers.

Evidence: ``evidence.extra["liveview"]``, a ``LiveView`` the agent fills: the ring of recent
snapshots as the counter sent them (oldest first, at least ``max(confirm_snapshots,
frozen_snapshots)``), the prepared reference and where it came from — ``"configured"`` (the
tuning image), ``"learned"`` (saved from an earlier cycle) or ``"learning"`` (none yet: the
reference is learned here from the first good snapshots, never from a blocked one, see
``diagnostics.liveview.LearnedReference``). A finding whose reference was learned this cycle
names those snapshots in ``evidence["learned_from"]`` (ISO times); the agent saves that view.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from diagnostics.checks.base import Check, CounterEvidence, Family, TicketKind
from diagnostics.liveview import (
    ImageError,
    LearnedReference,
    Reference,
    ViewResult,
    analyze,
    frozen,
)
from diagnostics.model import UNCONFIRMED, Finding, Status


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as the counter sent it (encoded bytes), when it was taken, and its name."""

    at: datetime
    data: bytes = field(repr=False)
    name: str = ""


@dataclass(frozen=True)
class LiveView:
    """What the agent gathers for the check; ``notes`` go into every finding as they are."""

    snapshots: tuple[Snapshot, ...] = ()
    reference: Reference | None = None
    source: str = "configured"  # "configured", "learned" or "learning" (none yet)
    notes: dict[str, str] = field(default_factory=dict)
    learn_needed: int = 3  # agreeing snapshots that make a learned reference
    # what the reference was prepared from (its file and that file's version), when the agent
    # knows: the same key means the same reference, whichever prepared copy is handed over
    reference_key: tuple[object, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ViewSample:
    at: datetime
    result: ViewResult
    name: str = ""
    data: bytes = field(default=b"", repr=False, compare=False)  # as sent: for ``frozen``


@dataclass(frozen=True)
class Judged:
    """Every readable snapshot's verdict (oldest first), the reference's source after learning,
    the snapshots that could not be read (name, why), the learning progress (have, need) while
    there is no reference, and the snapshots a reference was learned from this time."""

    samples: tuple[ViewSample, ...]
    source: str
    unreadable: tuple[tuple[str, str], ...] = ()
    learning: tuple[int, int] | None = None
    learned_from: tuple[datetime, ...] = ()


def judge(view: LiveView) -> Judged:
    """Decode and judge each snapshot against the reference; without one, learn it first."""
    reference, source = view.reference, view.source
    learned_from: tuple[datetime, ...] = ()
    unreadable: dict[str, str] = {}
    if reference is None:
        learner = LearnedReference(view.learn_needed)
        for snap in view.snapshots:
            try:
                learner.offer(snap.data, tag=snap.at)
            except ImageError as exc:
                unreadable[snap.name] = str(exc)
                continue
            if learner.reference is not None:
                break
        if learner.reference is None:
            return Judged((), "learning", tuple(unreadable.items()), learner.progress)
        reference, source = learner.reference, "learned"
        learned_from = tuple(t for t in learner.learned_from if isinstance(t, datetime))
    samples = []
    for snap in view.snapshots:
        try:
            samples.append(ViewSample(snap.at, analyze(snap.data, reference), snap.name, snap.data))
        except ImageError as exc:
            unreadable[snap.name] = str(exc)
    return Judged(tuple(samples), source, tuple(unreadable.items()), None, learned_from)


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
    ticket_ask = (
        "Please check the view remotely against the tuned reference, and re-aim or re-tune "
        "the counter if it was moved or the store cannot clear it."
    )
    store_questions = (
        "Is anything covering or standing in front of the counter (a sign, a display, stock)?",
        "Has the counter been knocked, moved or cleaned recently?",
    )
    ticket_evidence = ("kind", "blocked_fraction", "since", "snapshots", "reference", "reasons")
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
        view = evidence.extra.get("liveview") or LiveView()
        judged = judge(view)
        noted: dict[str, Any] = dict(view.notes)
        if judged.unreadable:
            noted["unreadable"] = [f"{name}: {why}" for name, why in judged.unreadable]
        if judged.learned_from:
            noted["learned_from"] = [at.isoformat() for at in judged.learned_from]
        return [
            replace(f, evidence={**noted, **f.evidence}) for f in self._decide(evidence, judged)
        ]

    def _decide(self, evidence: CounterEvidence, judged: Judged) -> list[Finding]:
        opts = self.options
        history = list(judged.samples)
        source = judged.source
        if not history:
            if source == "learning":
                have, need = judged.learning or (0, 0)
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
        open_all = all(cal.is_open(s.at) for s in last)
        if len(last) == opts.frozen_snapshots and frozen(
            [s.data for s in last], expected_traffic=open_all
        ):
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
            return [self.finding(evidence, Status.OK, UNCONFIRMED, summary, **details)]
        summary = (
            f"live view blocked ({kind}, {fraction:.0%} of the view) in the last {len(run)} "
            f"snapshots since {run[0].at.astimezone(cal.tz):%a %d %b %H:%M}"
        )
        return [self.finding(evidence, Status.FAIL, kind, summary, **details)]
