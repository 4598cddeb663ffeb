"""Counting stopped: the counter answers, but counts nothing while the store is open.

A counter whose counting service died, or whose view is covered, keeps answering its API with
zeros, so an offline check never sees it. Zeros are judged only over the store's regular
opening hours (a shut store counts nothing, truthfully), and a run of zeros is called a fault
only when it is improbable under the counter's own expected traffic for those hours — scaled
by how its peers are doing right now, so a storm that empties the street is not a fault.

This module also holds what every count check shares: ``CountCheck`` (scope and look-back
options, building the ``CountModel`` from the evidence) and ``peers_by_group``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from diagnostics.calendar import SiteCalendar
from diagnostics.checks.base import (
    LED_QUESTION,
    Check,
    CounterEvidence,
    Family,
    SiteEvidence,
    TicketKind,
)
from diagnostics.model import Finding, Status
from diagnostics.series import (
    CountArrays,
    CountModel,
    Hold,
    ModelCache,
    SlotColumns,
    ZeroRun,
    ZeroRuns,
)


def peers_by_group(serials: Sequence[str], groups: Mapping[str, str | None]) -> list[list[int]]:
    """Each counter's peers as row numbers: its group at the site, else every other counter
    (the configuration's rule, so the service and ``analyze counts`` agree)."""
    out = []
    for i, serial in enumerate(serials):
        group = groups.get(serial)
        out.append(
            [
                j
                for j, other in enumerate(serials)
                if j != i and (group is None or groups.get(other) == group)
            ]
        )
    return out


def counter_columns(evidence: CounterEvidence) -> dict[str, SlotColumns]:
    """The counter's and its peers' slots as columns, in serial order (a model built from
    them is the same for every member of a group, so the group's counters share one)."""
    if evidence.counts is not None:
        found = dict(evidence.counts)
    else:
        found = {
            serial: SlotColumns.from_slots(seq)
            for serial, seq in {evidence.serial: evidence.slots, **evidence.peers}.items()
        }
    found.setdefault(evidence.serial, SlotColumns.empty())
    return {serial: found[serial] for serial in sorted(found)}


def site_columns(evidence: SiteEvidence) -> dict[str, SlotColumns]:
    if evidence.counts is not None:
        return dict(evidence.counts)
    return {serial: SlotColumns.from_slots(seq) for serial, seq in evidence.counters.items()}


def has_counts(evidence: CounterEvidence) -> bool:
    if evidence.counts is not None:
        own = evidence.counts.get(evidence.serial)
        return own is not None and len(own) > 0
    return bool(evidence.slots)


def _model(
    columns: dict[str, SlotColumns],
    calendar: SiteCalendar,
    now: datetime,
    peers: list[list[int]] | None,
    cache: ModelCache | None,
    held: Mapping[str, Hold],
) -> CountModel:
    held = {serial: hold for serial, hold in held.items() if serial in columns}

    def build() -> CountModel:
        arrays = CountArrays.from_columns(columns, calendar, now=now)
        return CountModel(arrays, calendar, now, peers, held=held)

    if peers is not None and all(
        sorted(set(p) - {i}) == [j for j in range(len(peers)) if j != i]
        for i, p in enumerate(peers)
    ):
        # every counter's peers are all the others: the model is the one ``peers=None`` builds,
        # so a site's model and its counters' model are one object in the cache, not two
        peers = None
    if cache is None:
        return build()
    # everything the model is a function of; ``now`` only through the grid it implies
    who = (tuple(columns), None if peers is None else tuple(tuple(p) for p in peers))
    inputs = (*cache.inputs_of(columns, calendar, now), tuple(sorted(held.items())))
    return cache.get(who, inputs, build)


def counter_model(evidence: CounterEvidence) -> CountModel:
    """The model of one counter and its peers, as the service gathers them."""
    columns = counter_columns(evidence)
    return _model(columns, evidence.calendar, evidence.now, None, evidence.models, evidence.held)


def site_model(evidence: SiteEvidence) -> CountModel:
    columns = site_columns(evidence)
    peers = peers_by_group(tuple(columns), evidence.groups)
    return _model(columns, evidence.calendar, evidence.now, peers, evidence.models, evidence.held)


def local(when: datetime, tz: ZoneInfo) -> str:
    return f"{when.astimezone(tz):%a %d %b %H:%M}"


def span(model: CountModel, first: int, last: int) -> tuple[datetime, datetime]:
    """The start of slot ``first`` and the end of slot ``last``."""
    return model.grid.at(first), model.grid.at(last + 1)


class CountCheck(Check):
    """A count check: judges a ``CountModel``, built from the evidence or handed in whole.

    ``scope="current"`` (the service) says how the counter is doing now — one finding, whose
    ok resolves an open incident; ``scope="all"`` (``analyze counts``) reports every episode
    in the data.
    """

    family = Family.COUNTS
    ticket = TicketKind.DATA

    class Options(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        scope: Literal["current", "all"] = Field(
            "current",
            description="current: how the counter is doing now (the service); all: every "
            "episode in the data (analyze counts)",
        )
        lookback_days: int = Field(7, ge=1, description="days of history the check looks at")

    options: Options

    def run(self, evidence: Any) -> list[Finding]:
        if not has_counts(evidence):
            return [self.finding(evidence, Status.SKIP, "no_data", "no count data received yet")]
        return self.judge(counter_model(evidence), evidence)

    def judge(self, model: CountModel, evidence: Any) -> list[Finding]:
        raise NotImplementedError

    def low(self, model: CountModel, evidence: Any) -> int:
        """The first slot this check looks at."""
        if self.options.scope == "all":
            return 0
        days = self.options.lookback_days
        return model.grid.index(evidence.now - timedelta(days=days))

    def settle(
        self, problems: list[Finding], evidence: Any, ok: str, summary: str, **details: Any
    ) -> list[Finding]:
        """The problems, or one ok finding when there are none."""
        return problems or [self.finding(evidence, Status.OK, ok, summary, **details)]


class CountingStopped(CountCheck):
    id: ClassVar[str] = "counter.counts.stopped"
    title: ClassVar[str] = "Counter counts while the store is open"
    applies_to = "counter"
    priority = 60
    ticket_subject = "{who} stopped counting {since}"
    ticket_what = (
        "{who} has stopped counting: it records no visitors while the store is open, so "
        "footfall data for this period is missing. {said}"
    )
    ticket_ask = (
        "Please restart the counter's counting service and recover the counts it missed; "
        "where they cannot be recovered, apply the attached estimate to the reports."
    )
    store_questions = (
        "Was the entrance open and used as usual during this time?",
        LED_QUESTION,
    )
    ticket_evidence = (
        "zero_since",
        "open_minutes",
        "observed",
        "expected",
        "peers_observed",
        "peers_expected",
        "last_slot_end",
    )
    remediation: ClassVar[str] = (
        "Look at the counter's live view for a blockage; restart the counting service or "
        "power-cycle the counter; if counts stay at zero, raise a data-accuracy ticket."
    )

    class Options(CountCheck.Options):
        # the gate rules on a candidate with the site's peers and its own threshold
        candidate_log10_probability: float = Field(
            -2.0,
            lt=0,
            description="a zero run at least this unusual (log10 chance on the counter's own "
            "history) goes to the gate",
        )
        min_open_minutes: int = Field(
            60, gt=0, description="never judge a shorter run (minutes of opening time)"
        )
        fallback_open_minutes: int = Field(
            180, gt=0, description="zeros this long warn on a counter with too little history"
        )
        min_history_weeks: int = Field(
            2, ge=1, description="weeks of history before the run's chance is computed"
        )

    options: Options

    def run(self, evidence: CounterEvidence) -> list[Finding]:
        api = evidence.observations.get("api")
        if api is not None and not api.ok:
            return [
                self.finding(
                    evidence,
                    Status.SKIP,
                    "offline",
                    "counting not judged: the counter is not answering",
                )
            ]
        return super().run(evidence)

    def judge(self, model: CountModel, evidence: Any) -> list[Finding]:
        i = model.index(evidence.serial)
        lo = self.low(model, evidence)
        if self.options.scope == "all":
            # a year holds thousands of runs, nearly all ordinary: words only for the others
            columns = model.zero_run_columns(i, lo)
            found = columns.runs(self._may_be_problem(model, i, columns))
            problems = [f for r in found if (f := self._judge_run(model, i, r, evidence)).problem]
            return self.settle(problems, evidence, "counting", "no improbable run of zeros")
        found = model.zero_runs(i, lo)
        if not model.present[i, lo:].any():
            return [self.finding(evidence, Status.SKIP, "no_data", "no recent count data")]
        last_count = model.present[i] & (model.total[i] > 0)
        if not found or (last_count[found[-1].last :].any()):
            return [self.finding(evidence, Status.OK, "counting", "the counter is counting")]
        return [self._judge_run(model, i, found[-1], evidence)]

    def _may_be_problem(self, model: CountModel, i: int, runs: ZeroRuns) -> np.ndarray:
        """False for each run ``_judge_run`` certainly finds ok (the same tests, without
        words, on every run at once)."""
        opts = self.options
        minutes = np.round(runs.open_minutes)  # as ``round``: half to even
        judged = (minutes >= opts.min_open_minutes) & (
            runs.log10_p_alone <= opts.candidate_log10_probability
        )
        peers_quiet = (runs.peers_observed == 0) & bool(model.peers[i].size)
        fallback = (minutes >= opts.fallback_open_minutes) & ~peers_quiet
        with_history = runs.history_weeks >= opts.min_history_weeks
        return (minutes != 0) & np.where(with_history, judged, fallback)

    def _judge_run(self, model: CountModel, i: int, run: ZeroRun, evidence: Any) -> Finding:
        opts = self.options
        tz = model.grid.tz
        start, end = span(model, run.first, run.last)
        minutes = round(run.open_minutes)
        if minutes == 0:
            return self.finding(
                evidence, Status.OK, "closed_hours", "zeros only outside the regular opening hours"
            )
        details: dict[str, Any] = {
            "zero_since": start.isoformat(),
            "last_slot_end": end.isoformat(),
            "open_minutes": minutes,
            "observed": 0,
            "baseline_weeks": run.history_weeks,
        }
        if model.peers[i].size:
            details |= {
                "peer_factor": round(run.peer_factor, 3),
                "peers_observed": round(run.peers_observed),
                "peers_expected": round(run.peers_expected, 1),
            }
        if run.history_weeks >= opts.min_history_weeks:
            details |= {
                "expected": round(run.expected, 1),
                "expected_alone": round(run.expected_alone, 1),
                "log10_probability": round(run.log10_p, 2),
                "log10_probability_alone": round(run.log10_p_alone, 2),
                "dispersion_k": round(float(model.k[i]), 2),
            }
            # a candidate when the run is unusual on the counter's own history; whether it is
            # a fault, a shared drop in traffic or plain luck is the gate's to say, with reasons
            if (
                minutes >= opts.min_open_minutes
                and run.log10_p_alone <= opts.candidate_log10_probability
            ):
                return self.finding(
                    evidence,
                    Status.FAIL,
                    "zero_run",
                    # how unlikely that is (``log10_probability``) is for the bundle's
                    # findings.json, not for the words a ticket quotes
                    f"no counts for {_hours(minutes)} of opening time since {local(start, tz)}; "
                    f"about {run.expected:.0f} visitors were expected",
                    **details,
                )
            return self.finding(
                evidence,
                Status.OK,
                "quiet",
                f"zeros for {_hours(minutes)} are usual here: about "
                f"{run.expected_alone:.1f} visitors expected",
                **details,
            )
        details |= {"expected": None, "rule": "fallback without history"}
        peers_quiet = model.peers[i].size and run.peers_observed == 0
        if minutes >= opts.fallback_open_minutes and not peers_quiet:
            return self.finding(
                evidence,
                Status.WARN,
                "zero_run",
                f"no counts for {_hours(minutes)} of opening time since {local(start, tz)} "
                "(too little history to say how unlikely that is)",
                **details,
            )
        return self.finding(
            evidence,
            Status.OK,
            "quiet",
            f"zeros for {_hours(minutes)}; too little history to judge",
            **details,
        )


def _hours(minutes: float) -> str:
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"
