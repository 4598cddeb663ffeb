"""From findings to incidents: confirm, extend, recover, flap, resolve — and record every flip.

An incident is one problem of one counter (or one site, or the gateway) from the moment it is
confirmed until it heals, keyed on the check and its subject, so a problem seen every cycle is
one incident and a ticket is raised only on the flip that opens it. Every change of state is a
transition with its reason; only flips drive tickets and notifications.

States: ``suspected`` (seen, not yet confirmed: fewer than ``confirm_checks`` bad checks in a
row, or less than ``confirm_minutes``) → ``open`` (filed) → ``recovering`` (good again, fewer
than ``recover_checks`` good checks in a row) → ``resolved``. A problem going up and down is
``intermittent`` (Nagios's weighted state-change rate over the last 21 checks, from 20 % until
it falls below 5 %): one incident, one ticket, however often it flips. A skip, an error, a
false alarm or a pending verdict says nothing either way and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.store import Incident, Store
from diagnostics.flapping import WINDOW, is_flapping, state_change_percent
from diagnostics.model import Assessed, Status, plural

log = logging.getLogger(__name__)

SUSPECTED = "suspected"
OPEN = "open"
INTERMITTENT = "intermittent"
RECOVERING = "recovering"
RESOLVED = "resolved"
FILED_STATES = (OPEN, INTERMITTENT)  # a flip into one of these raises the ticket


@dataclass(frozen=True)
class Policy:
    confirm_checks: int = 2
    confirm_minutes: int = 0
    recover_checks: int = 2


@dataclass(frozen=True)
class Flip:
    incident: Incident
    from_state: str | None
    to_state: str
    reason: str


def _trailing(states: list[bool | None], value: bool) -> int:
    """How many of the newest judgements (neutral ones skipped) equal ``value`` in a row."""
    n = 0
    for state in reversed(states):
        if state is None:
            continue
        if state is not value:
            break
        n += 1
    return n


def apply(
    store: Store, assessed: list[Assessed], now: datetime, policy: Policy | None = None
) -> list[Flip]:
    """Update incidents from one cycle's assessed findings (already stored); return the flips."""
    policy = policy or Policy()
    flips: list[Flip] = []
    for item in assessed:
        f = item.finding
        bad = item.genuine
        good = f.status is Status.OK
        if not bad and not good:
            continue
        site, subject = f.site or "", f.subject or ""
        current = store.open_incident(f.check_id, site, subject)
        if current is None and not bad:
            continue
        states = store.recent_states(f.check_id, f.site, f.subject, WINDOW)
        flapping = is_flapping(
            [s for s in states if s is not None],
            was_flapping=current is not None and current.state == INTERMITTENT,
        )
        target, reason = _next_state(current, bad, flapping, states, policy, now)
        if current is None:
            assert target is not None
            incident = store.create_incident(
                check_id=f.check_id,
                site=site,
                subject=subject,
                state=target,
                code=f.code,
                summary=f.summary,
                at=now,
                finding=f.to_json(),
                reason=reason,
            )
            flips.append(Flip(incident, None, target, reason))
            log.warning("incident %s %s: %s", incident.id, target, f.summary)
            continue
        changes: dict[str, Any] = (
            {"code": f.code, "summary": f.summary, "finding": f.to_json()} if bad else {}
        )
        if target is None or target == current.state:
            if changes:
                store.update_incident(current.id, at=now, **changes)
            continue
        if target == RESOLVED:
            changes = {}
        incident = store.update_incident(current.id, at=now, state=target, reason=reason, **changes)
        flips.append(Flip(incident, current.state, target, reason))
        log.warning("incident %s %s -> %s: %s", incident.id, current.state, target, reason)
    return flips


def _next_state(
    current: Incident | None,
    bad: bool,
    flapping: bool,
    states: list[bool | None],
    policy: Policy,
    now: datetime,
) -> tuple[str | None, str]:
    """The state an incident moves to after one more judgement, and why."""
    state = current.state if current else None
    seen = [s for s in states if s is not None]
    if flapping:
        rate = state_change_percent(seen)
        return INTERMITTENT, f"intermittent: the state changed in {rate:.0f} % of recent checks"
    if state == INTERMITTENT:
        rate = state_change_percent(seen)
        if bad:
            return OPEN, f"no longer intermittent ({rate:.0f} %): the problem holds"
        return RESOLVED, f"no longer intermittent ({rate:.0f} %) and healthy"
    if bad:
        streak = _trailing(states, True)
        if state in (None, SUSPECTED):
            since = current.opened_at if current else now
            long_enough = policy.confirm_minutes and now - since >= timedelta(
                minutes=policy.confirm_minutes
            )
            if streak >= policy.confirm_checks or long_enough:
                return OPEN, f"confirmed by {plural(streak, 'bad check')} in a row"
            return SUSPECTED, f"seen {plural(streak, 'time')}; waiting for {policy.confirm_checks}"
        if state == RECOVERING:
            return OPEN, "the problem came back before recovery was confirmed"
        return None, ""
    streak = _trailing(states, False)
    if state == SUSPECTED:
        return RESOLVED, "not confirmed: healthy again"
    if streak >= policy.recover_checks:
        return RESOLVED, f"recovered: healthy on {plural(streak, 'check')} in a row"
    if state == OPEN:
        return (
            RECOVERING,
            f"healthy again; waiting for {plural(policy.recover_checks, 'good check')}",
        )
    return None, ""
