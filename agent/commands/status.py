"""``ffc-agent status``: the fleet at a glance, from what the agent already knows.

Nothing is probed: this reads the state directory, so it is instant and safe to run on a busy
gateway. Per counter: reachable or not (and since when), the last count slot received, the live
view, today's counts against what was expected, the open incident and its ticket; then the
gateway's own health and the outbox.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.commands.common import (
    _load,
    _print_json,
    clock,
    config_option,
    json_option,
    out,
    table,
)

SLOT_MINUTES = 15

if TYPE_CHECKING:
    from agent.app import App
    from agent.config import Config
    from agent.delivery.bundling import Bundler
    from diagnostics.calendar import SiteCalendar


@click.command("status")
@config_option
@json_option
def status_cmd(config_path: Path, as_json: bool) -> None:
    """The fleet at a glance, from what the agent already knows (probes nothing)."""
    from agent.app import App

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        data = fleet_status(app, now)
    if as_json:
        _print_json(data)
        return
    shown = table(
        f"Counters at {now:%Y-%m-%d %H:%M %Z}",
        ("counter", "site", "reachable", "last slot", "live view", "today", "incident"),
        whole=("counter", "site"),
    )
    for c in data["counters"]:
        error = f" (last error: {c['last_error']})" if c["last_error"] else ""
        up = {True: "[green]yes[/]", False: f"[red]no[/]{error}", None: "?"}
        today = c["today"]
        counted = (
            f"{today['counted']:,} / {today['expected']:,} expected"
            if today and today["expected"] is not None
            else (f"{today['counted']:,}" if today else "-")
        )
        if today and today["closed"]:
            counted += f" ({'; '.join(today['closed'])})"
        view = c["live_view"]
        incident = "; ".join(
            f"{i['check_id']} {i['state']}"
            + (f", ticket {i['ticket']}" if i["ticket"] else "")
            + (
                f", ticket held until {_hhmm(i['ticket_held']['until'])} "
                f"({i['ticket_held']['why']})"
                if i["ticket_held"]
                else ""
            )
            for i in c["incidents"]
        )
        if c.get("rma"):
            incident = "; ".join(
                x for x in (incident, f"RMA {c['rma']['id']} {c['rma']['state']}") if x
            )
        shown.add_row(
            c["serial"],
            c["site"],
            up[c["reachable"]],
            # short words, so a narrow column wraps between them and cuts none
            f"{datetime.fromisoformat(c['last_slot']):%d %b %H:%M}" if c["last_slot"] else "-",
            f"{view['status']}: {view['summary']}" if view else "-",
            counted,
            incident or "-",
        )
    out.print(shown)
    gw = data["gateway"]
    out.print(f"gateway: {gw['status']} — {gw['summary']}" if gw else "gateway: not checked yet")
    pending = ", ".join(
        f"{s}: {v['depth']} waiting (oldest {v['oldest_age_s']}s)"
        for s, v in data["outbox"]["pending"].items()
    )
    out.print(f"outbox: {pending or 'empty'}; {data['outbox']['failed']} refused for good")


def _held(app: App, inc: Any, now: datetime) -> dict[str, str] | None:
    """Why an incident's ticket waits on purpose (a reboot ruled out, the store asked to clear
    its view first), and until when; None when it is filed or may be."""
    if inc.ticket_number:
        return None
    hold = app.tickets.held(inc, now)
    return {"why": hold.why, "until": hold.until.isoformat()} if hold else None


def _hhmm(iso: str) -> str:
    return f"{datetime.fromisoformat(iso).astimezone(UTC):%H:%M} UTC"


def fleet_status(app: App, now: datetime) -> dict[str, Any]:
    from agent.delivery.outbox import FAILED
    from diagnostics.checks import Family, ids
    from diagnostics.checks.gateway import GATEWAY, GatewayHealth

    config, store, evidence = app.config, app.store, app.bundler
    incidents = {(i.check_id, i.subject): i for i in store.incidents(open_only=True)}
    latest = {(r["check_id"], r["subject"]): r for r in store.latest_findings()}
    views = ids(family=Family.LIVEVIEW, applies_to="counter")
    rmas = {r.counter: r for r in app.rmas.all(open_only=True)}
    counters = []
    for c in config.counters:
        api = store.observations(c.serial, "api", limit=1)
        mark = store.watermark(c.serial)
        view = next((latest[(i, c.serial)] for i in views if (i, c.serial) in latest), None)
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
                        "ticket_held": _held(app, i, now),
                    }
                    for i in open_here
                ],
            }
        )
    gateway = latest.get((GatewayHealth.id, GATEWAY))
    outbox = app.outbox
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
            if not subject or subject == GATEWAY
        ],
    }


def _today(
    config: Config, evidence: Bundler, serial: str, site: str, now: datetime
) -> dict[str, Any] | None:
    """Counts so far today (site time) against what the baseline expected for them, for the
    hours the store is open today (a closure, a holiday or special hours expect nobody)."""
    cal = config.site(site).calendar()
    tz = cal.tz
    midnight = datetime.combine(now.astimezone(tz).date(), time(0), tzinfo=tz)
    rows = evidence.series(serial, midnight, now, now)
    if not rows:
        return None
    arrived = [r for r in rows if not r.missing]
    counted = sum(r.observed or 0 for r in arrived)
    # expected over the slots that arrived: missing ones are reported apart, not as a shortfall
    expected = [_open_today(r.expected, r.start, cal) for r in arrived if r.expected is not None]
    missing = len(rows) - len(arrived)
    return {
        "counted": counted,
        "expected": round(sum(expected)) if expected else None,
        "closed": cal.closed_reasons(midnight, now),
        "missing_slots": missing,
        "since": midnight.isoformat(),
        "slots": len(rows),
        "through": (rows[-1].start + timedelta(minutes=SLOT_MINUTES)).isoformat(),
    }


def _open_today(expected: float, start: datetime, cal: SiteCalendar) -> float:
    """A slot's expectation, learned over regular weeks, for the part of the slot the store is
    open today: nobody is expected while it is closed for a refit or a holiday."""
    regular = cal.open_fraction(start, SLOT_MINUTES, regular=True)
    if regular == 0:  # outside the regular hours: as learned (staff, deliveries)
        return expected
    return expected * cal.open_fraction(start, SLOT_MINUTES) / regular
