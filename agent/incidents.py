"""From findings to incidents: open, extend, resolve — and record every flip.

An incident is one problem of one counter (or one site) from the moment it is judged genuine
until it heals. It is keyed on the check and its subject, so a problem seen every cycle opens
one incident, never one per cycle, and a ticket is only ever raised on the flip that opens it.
Every change of state is written as a transition with its reason; only flips drive tickets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from agent.store import Incident, Store
from diagnostics.model import Assessed, Status

log = logging.getLogger(__name__)

OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Flip:
    incident: Incident
    from_state: str | None
    to_state: str
    reason: str


def apply(store: Store, assessed: list[Assessed], now: datetime) -> list[Flip]:
    """Update incidents from one cycle's assessed findings; return the flips it caused.

    A genuine problem opens an incident or extends the open one; an ``ok`` finding for a
    subject with an open incident resolves it. ``skip`` and ``error`` findings change nothing:
    not knowing is not healing. False alarms change nothing either.
    """
    flips: list[Flip] = []
    for item in assessed:
        f = item.finding
        site, subject = f.site or "", f.subject or ""
        current = store.open_incident(f.check_id, site, subject)
        if item.genuine:
            if current is None:
                incident = store.create_incident(
                    check_id=f.check_id,
                    site=site,
                    subject=subject,
                    state=OPEN,
                    code=f.code,
                    summary=f.summary,
                    at=now,
                    finding=f.to_json(),
                    reason=f"genuine: {f.summary}",
                )
                log.warning("incident %s opened: %s", incident.id, f.summary)
                flips.append(Flip(incident, None, OPEN, f.summary))
            else:
                store.update_incident(
                    current.id, at=now, code=f.code, summary=f.summary, finding=f.to_json()
                )
        elif f.status is Status.OK and current is not None:
            incident = store.update_incident(
                current.id, at=now, state=RESOLVED, reason=f"recovered: {f.summary}"
            )
            log.warning("incident %s resolved: %s", incident.id, f.summary)
            flips.append(Flip(incident, current.state, RESOLVED, f.summary))
    return flips
