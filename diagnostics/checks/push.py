"""Push silent: the counter's live MQTT push has gone quiet while people should be crossing.

A counter with push enabled sends one message per crossing, so silence through busy opening
hours means its push path is broken (its MQTT settings, its route to the broker, its firmware)
even when its REST API still answers. That is worth a warning, not an RMA: the REST export
still fills the counts. Silence is measured only over time the agent could hear (the link to
the broker up), and judged against traffic: the counter's own REST counts for the silent time
when they have arrived, else its usual rate while open (``expected_per_hour`` if the runner
gives one, else the mean of its recent open slots). A listener that is not connected is the
agent's or the gateway's problem: every counter is then skipped, naming the broker.

Evidence: ``CounterEvidence.extra["push"]`` as made by ``agent.probes.mqtt.push_evidence``;
without it the check skips, with ``extra["push_not_judged"]`` as the reason if given.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field

from diagnostics.checks.base import Check, CounterEvidence, Family, TicketKind
from diagnostics.model import Finding, Status, as_datetime


class PushSilent(Check):
    id: ClassVar[str] = "counter.push.silent"
    title: ClassVar[str] = "Counter sends its live MQTT push"
    applies_to = "counter"
    family = Family.CONNECTIVITY
    ticket = TicketKind.TECHNICAL
    priority = 100  # the REST export still fills the counts: every other problem leads
    ticket_subject = "{who} live push silent {since}"
    ticket_what = (
        "{who} has stopped sending its live MQTT push, though its counts still arrive by the "
        "REST export. {said}"
    )
    ticket_ask = "Please restore the counter's live MQTT push (its settings or its service)."
    ticket_evidence = ("silent_since", "silent_min", "counted_meanwhile", "expected")
    remediation: ClassVar[str] = (
        "Check the counter's MQTT settings (broker address, topic, credentials) and its network "
        "path to the broker, then restart the counter; counts still arrive by the REST export."
    )

    class Options(Check.Options):
        silent_minutes: int = Field(
            30, gt=0, description="minutes of opening time without a message before judging"
        )
        min_expected: float = Field(
            10.0, gt=0, description="crossings that should have happened by then to warn"
        )
        lookback_days: int = Field(7, ge=1, description="days of history for the usual rate")
        min_history_hours: float = Field(
            4.0, gt=0, description="hours of opening time of history to trust a rate"
        )

    options: Options

    def run(self, evidence: CounterEvidence) -> list[Finding]:
        push, now, opts = evidence.extra.get("push"), evidence.now, self.options
        if not push:
            why = evidence.extra.get("push_not_judged", "MQTT push not set up")
            return [self.finding(evidence, Status.SKIP, "not_configured", why)]
        if not push.get("connected"):
            why = push.get("link_error") or "not connected yet"
            summary = f"push not judged: the agent has no link to the MQTT broker {push['broker']}"
            return [self.finding(evidence, Status.SKIP, "listener_down", f"{summary} ({why})")]
        api = evidence.observations.get("api")
        if api is not None and not api.ok:
            return [self.finding(evidence, Status.SKIP, "offline", "counter offline: not judged")]
        since = as_datetime(push.get("silent_since")) or now
        silent = (now - since).total_seconds() / 60
        details: dict[str, Any] = {"silent_since": since.isoformat(), "silent_min": round(silent)}
        if silent < opts.silent_minutes:
            return [self.finding(evidence, Status.OK, "live", "live push arriving", **details)]
        open_min = _open_minutes(evidence, since)
        details["open_min"] = round(open_min)
        if open_min < opts.silent_minutes:
            summary = f"no push for {silent:.0f} min, but the store was mostly closed"
            return [self.finding(evidence, Status.OK, "closed", summary, **details)]
        inside = [s for s in evidence.slots if s.start >= since]
        counted = sum(s.total for s in inside)
        if inside and counted == 0 and sum(s.minutes for s in inside) >= opts.silent_minutes:
            summary = "no push, and the counter's own counts show nobody crossing either"
            return [self.finding(evidence, Status.OK, "no_crossings", summary, **details)]
        rate = push.get("expected_per_hour") or _usual_rate(evidence, opts)
        expected = rate * open_min / 60 if rate is not None else None
        details |= {"counted_meanwhile": counted, "expected": _round(expected)}
        if not counted and expected is not None and expected < opts.min_expected:
            summary = f"no push for {silent:.0f} min; only about {expected:.0f} crossings expected"
            return [self.finding(evidence, Status.OK, "quiet", summary, **details)]
        why = (
            f"{counted} crossings counted meanwhile"
            if counted
            else (f"about {expected:.0f} crossings expected" if expected else "traffic unknown")
        )
        summary = f"no live push for {silent:.0f} min while the store was open ({why})"
        return [self.finding(evidence, Status.WARN, "push_silent", summary, **details)]


def _open_minutes(evidence: CounterEvidence, since: datetime) -> float:
    total, t = 0.0, since
    while t < evidence.now:
        step = min(15, int((evidence.now - t).total_seconds() // 60)) or 1
        total += evidence.calendar.open_fraction(t, step) * step
        t += timedelta(minutes=step)
    return total


def _usual_rate(evidence: CounterEvidence, opts: PushSilent.Options) -> float | None:
    """Crossings (in + out) per open hour over the look-back, or None with too little history."""
    low = evidence.now - timedelta(days=opts.lookback_days)
    crossings = open_minutes = 0.0
    for s in evidence.slots:
        share = evidence.calendar.open_fraction(s.start, s.minutes, regular=True)
        if s.start >= low and share > 0:
            crossings += s.total
            open_minutes += share * s.minutes
    return crossings / open_minutes * 60 if open_minutes >= opts.min_history_hours * 60 else None


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None
