"""``ffc-agent status``: the fleet at a glance, from what the agent already knows.

Nothing is probed: this reads the state directory, so it is instant and safe to run on a busy
gateway. Per counter: reachable or not (and since when), the last count slot received, the live
view, today's counts against what was expected, the open incident and its ticket; then the
gateway's own health and the outbox.
"""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from typing import Any

from agent.config import Config
from agent.delivery.bundling import Evidence
from agent.delivery.outbox import FAILED, Outbox
from agent.rmas import Rmas
from agent.store import Store


def fleet_status(config: Config, store: Store, evidence: Evidence, now: datetime) -> dict[str, Any]:
    incidents = {(i.check_id, i.subject): i for i in store.incidents(open_only=True)}
    latest = {(r["check_id"], r["subject"]): r for r in store.latest_findings()}
    rmas = {r.counter: r for r in Rmas(store).all(open_only=True)}
    counters = []
    for c in config.counters:
        api = store.observations(c.serial, "api", limit=1)
        mark = store.watermark(c.serial)
        view = latest.get(("counter.liveview.blocked", c.serial))
        today = _today(config, evidence, c.serial, c.site, now)
        open_here = [i for (check, subject), i in incidents.items() if subject == c.serial]
        counters.append(
            {
                "serial": c.serial,
                "name": c.name,
                "site": c.site,
                "reachable": api[0].ok if api else None,
                "last_probe_at": api[0].at.isoformat() if api else None,
                "last_error": (api[0].error if api and not api[0].ok else ""),
                "last_slot": mark.isoformat() if mark else None,
                "live_view": {"status": view["status"], "summary": view["summary"]}
                if view
                else None,
                "today": today,
                "rma": (
                    {"id": rmas[c.serial].id, "state": rmas[c.serial].state.value}
                    if c.serial in rmas
                    else None
                ),
                "incidents": [
                    {
                        "id": i.id,
                        "check_id": i.check_id,
                        "state": i.state,
                        "since": i.opened_at.isoformat(),
                        "summary": i.summary,
                        "ticket": i.ticket_number,
                    }
                    for i in open_here
                ],
            }
        )
    gateway = latest.get(("gateway.health", "gateway"))
    outbox = Outbox(store, config.agent.state_dir)
    return {
        "at": now.isoformat(),
        "counters": counters,
        "gateway": {
            "status": gateway["status"],
            "summary": gateway["summary"],
            "details": json.loads(gateway["evidence"]),
        }
        if gateway
        else None,
        "outbox": {
            "pending": {
                s: {"depth": n, "oldest_age_s": round(a)} for s, (n, a) in outbox.depth(now).items()
            },
            "failed": len(outbox.items(states=(FAILED,))),
        },
        "site_incidents": [
            {
                "id": i.id,
                "check_id": i.check_id,
                "site": i.site,
                "state": i.state,
                "summary": i.summary,
                "ticket": i.ticket_number,
            }
            for (check, subject), i in incidents.items()
            if not subject or subject == "gateway"
        ],
    }


def _today(
    config: Config, evidence: Evidence, serial: str, site: str, now: datetime
) -> dict[str, Any] | None:
    """Counts so far today (site time) against what the baseline expected for them."""
    tz = config.site(site).calendar().tz
    midnight = datetime.combine(now.astimezone(tz).date(), time(0), tzinfo=tz)
    rows = evidence.series(serial, midnight, now, now)
    if not rows:
        return None
    arrived = [r for r in rows if not r.missing]
    counted = sum(r.observed or 0 for r in arrived)
    # expected over the slots that arrived: missing ones are reported apart, not as a shortfall
    expected = [r.expected for r in arrived if r.expected is not None]
    missing = len(rows) - len(arrived)
    return {
        "counted": counted,
        "expected": round(sum(expected)) if expected else None,
        "missing_slots": missing,
        "since": midnight.isoformat(),
        "slots": len(rows),
        "through": (rows[-1].start + timedelta(minutes=15)).isoformat(),
    }
