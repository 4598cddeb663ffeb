"""The management overview as data: every open issue per site with its action plan, each
counter's data completeness, the RMAs in progress — and, from a shared helpdesk, the whole
chain's tickets.

The support guide asks that management sees every open issue, tracks each and has a clear
action plan. ``overview`` assembles that from what the agent already holds (the store: the
incidents, the tickets it queued and their statuses as last read back, the count slots, the
RMAs) and, with ``all_gateways``, from every Request Tracker destination: all the gateways of
a chain file into the same RT, each ticket carrying the idempotency key (custom field or
subject tag) and the ticket's own record (site, counters, category), so one search finds every
site's tickets the agents filed. A ticket this gateway also holds is merged with its incident;
the others are marked as another gateway's.

An open issue: an incident not yet resolved, or a resolved one whose ticket is not known to
be closed and was resolved less than the portal's 7 days of Suggest To Close ago (the ball is
then the customer's). Completeness: of the count slots due in the site's opening hours
(closures and closed public holidays left out) over the last 7 and 30 days — from the
counter's first slot if it is newer — the share that arrived; a slot is due two cycles after
it ended. The result is JSON-ready and scrubbed of the configuration's secrets.

The shape (``version`` 1) is documented in the README's *Contracts* and pinned by the tests:
``at``, ``scope``, ``sites`` (``code``, ``name``, ``here``, ``issues``, ``counters``, ``rmas``),
``helpdesk`` (per RT destination read: ``sink``, ``tickets``, ``error``) and ``totals``;
``gateway`` (``issues``) holds the gateway's and the agent's own, which are the store's IT's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.incidents import RESOLVED
from rma.plan import SUGGEST_TO_CLOSE_DAYS, action_plan, overdue, ticket_clocks, ticket_kind
from rma.tickets import NextAction, Ticket, TicketStatus

if TYPE_CHECKING:
    from agent.app import App
    from agent.config import Config
    from agent.store import Incident, Store

VERSION = 1
WINDOWS = (7, 30)  # days of data completeness
HERE, ELSEWHERE = "this gateway", "another gateway"
NOT_FILED, STORE_IT = "not_filed", "store_it"  # the stage of an issue without a support line


def overview(app: App, now: datetime, *, all_gateways: bool = False) -> dict[str, Any]:
    """The overview at ``now`` (see the module docstring); ``all_gateways`` reads every RT
    destination for the whole chain's tickets."""
    config = app.config
    rmas = {r.counter: r for r in app.rmas.all(open_only=True)}
    issues = [_local_issue(app, inc, now, rmas) for inc in _open_incidents(app.store, now)]
    helpdesk: list[dict[str, Any]] = []
    if all_gateways:
        helpdesk = _merge_helpdesk(app, issues, now, rmas)
    sites: dict[str, dict[str, Any]] = {
        s.code: {"code": s.code, "name": s.name, "here": True, "issues": [], "counters": []}
        for s in config.sites
    }
    gateway: list[dict[str, Any]] = []
    for issue in issues:
        code = issue["site"]
        if not code:
            gateway.append(issue)  # the gateway's or the agent's own: the store's IT
            continue
        site = sites.setdefault(
            code, {"code": code, "name": code, "here": False, "issues": [], "counters": []}
        )
        site["issues"].append(issue)
    for site in sites.values():
        site["issues"].sort(key=_urgent)
        site["rmas"] = [_rma(r) for r in rmas.values() if r.site == site["code"]]
    for code, rows in completeness(config, app.store, now).items():
        sites[code]["counters"] = rows
    all_issues = [*gateway, *(i for s in sites.values() for i in s["issues"])]
    data = {
        "version": VERSION,
        "at": now.isoformat(),
        "scope": "all gateways" if all_gateways else "this gateway",
        "gateway": {"issues": sorted(gateway, key=_urgent)},
        "sites": list(sites.values()),
        "helpdesk": helpdesk,
        "totals": {
            "sites": len(sites),
            "open_issues": len(all_issues),
            "overdue": sum(1 for i in all_issues if i["overdue"]),
            "from_other_gateways": sum(1 for i in all_issues if i["origin"] == ELSEWHERE),
            "rmas_in_progress": len(rmas),
            "by_owner": _tally(i["action"]["owner"] for i in all_issues),
            "by_stage": _tally(i["stage"] for i in all_issues),
        },
    }
    scrubbed: dict[str, Any] = app.redactor.data(data)
    return scrubbed


def _urgent(issue: dict[str, Any]) -> tuple[bool, str]:
    return not issue["overdue"], issue["opened_at"]


def _tally(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


# --- the issues this gateway holds ------------------------------------------------------------


def _open_incidents(store: Store, now: datetime) -> list[Incident]:
    recent = now - timedelta(days=SUGGEST_TO_CLOSE_DAYS)
    out = []
    for inc in store.incidents():
        if inc.state != RESOLVED:
            out.append(inc)
        elif inc.ticket_key and inc.resolved_at and inc.resolved_at >= recent:
            statuses = store.ticket_statuses(inc.ticket_key)
            if not statuses or statuses[0]["status"] != TicketStatus.CLOSED.value:
                out.append(inc)
    return out


def _known_ticket(app: App, inc: Incident) -> tuple[Ticket | None, str | None]:
    """The incident's ticket as this gateway last knew it (queued, then its status as last
    read back, or the Suggest To Close it queued on recovery), and the destination read."""
    if inc.ticket_key is None:
        return None, None
    ticket = app.outbox.ticket(inc.ticket_key)
    if ticket is None:
        return None, None
    if inc.ticket_number:
        ticket = ticket.model_copy(update={"number": inc.ticket_number})
    statuses = app.store.ticket_statuses(inc.ticket_key)
    status, sink = TicketStatus.OPEN, None
    if statuses:
        try:
            status, sink = TicketStatus(statuses[0]["status"]), statuses[0]["sink"]
        except ValueError:
            pass
    if inc.state == RESOLVED and inc.resolved_at is not None:
        if not statuses or statuses[0]["synced_at"] < inc.resolved_at:
            status = TicketStatus.SUGGEST_TO_CLOSE  # follow_up queued it on recovery
    action = (
        NextAction.WAITING_ON_CUSTOMER
        if status is TicketStatus.SUGGEST_TO_CLOSE
        else ticket.next_action
    )
    return ticket.model_copy(update={"status": status, "next_action": action}), sink


def _local_issue(app: App, inc: Incident, now: datetime, rmas: dict[str, Any]) -> dict[str, Any]:
    from diagnostics.checks import meta

    m = meta(inc.check_id)
    ticket, sink = _known_ticket(app, inc)
    rma = rmas.get(inc.subject)
    counters = [inc.subject] if inc.subject in {c.serial for c in app.config.counters} else []
    issue = {
        "origin": HERE,
        "site": inc.site or None,
        "counters": counters,
        "title": m.title,
        "summary": inc.summary,
        "opened_at": inc.opened_at.isoformat(),
        "incident": {
            "id": inc.id,
            "check_id": inc.check_id,
            "state": inc.state,
            "opened_at": inc.opened_at.isoformat(),
            "resolved_at": inc.resolved_at.isoformat() if inc.resolved_at else None,
        },
        "kind": m.ticket.value,
        "rma": {"id": rma.id, "state": rma.state.value} if rma is not None else None,
        "helpdesk": None,
    }
    return _with_ticket(
        issue,
        ticket,
        sink,
        now,
        remediation=str(inc.last_finding.get("remediation") or ""),
        rma_state=rma.state if rma is not None else None,
    )


def _with_ticket(
    issue: dict[str, Any],
    ticket: Ticket | None,
    sink: str | None,
    now: datetime,
    *,
    remediation: str = "",
    rma_state: Any = None,
) -> dict[str, Any]:
    """The issue with its ticket, the ticket's clocks, its stage and its action plan."""
    clocks = ticket_clocks(ticket, now) if ticket is not None and ticket.number else None
    incident = issue["incident"]
    action = action_plan(
        kind=issue["kind"],
        incident_state=incident["state"] if incident else None,
        ticket=ticket,
        clocks=clocks,
        rma=rma_state,
        remediation=remediation,
    )
    if issue["kind"] == "none":
        stage = STORE_IT
    elif ticket is None or not ticket.number:
        stage = NOT_FILED
    else:
        stage = ticket.stage.value
    return issue | {
        "ticket": _ticket(ticket, sink) if ticket is not None else None,
        "stage": stage,
        "sla": clocks,
        "overdue": overdue(clocks),
        "action": action.to_json(),
    }


def _ticket(t: Ticket, sink: str | None) -> dict[str, Any]:
    return {
        "number": t.number,
        "sink": sink,
        "key": t.key,
        "subject": t.subject,
        "category": t.category.value,
        "status": t.status.value,
        "next_action": t.next_action.value,
        "stage": t.stage.value,
        "requester": t.requester,
        "created_at": t.created_at.isoformat(),
        "updated_at": t.updated_at.isoformat(),
    }


def _rma(r: Any) -> dict[str, Any]:
    from rma.workflow import DESCRIPTIONS

    return {
        "id": r.id,
        "counter": r.counter,
        "state": r.state.value,
        "meaning": DESCRIPTIONS[r.state],
        "opened_at": r.opened_at.isoformat(),
        "updated_at": r.updated_at.isoformat(),
        "new_serial": r.new_serial,
    }


# --- the chain's tickets, from the shared helpdesk --------------------------------------------


def _merge_helpdesk(
    app: App, issues: list[dict[str, Any]], now: datetime, rmas: dict[str, Any]
) -> list[dict[str, Any]]:
    """Read every RT destination's open ffc-agent tickets; a ticket this gateway holds
    replaces its last-known copy (RT is the truth now), the others join as another
    gateway's. One line per destination read: how many tickets, or why it failed."""
    from agent.delivery.sinks import SinkError
    from agent.delivery.sinks.rt import RtSink

    by_key = {i["ticket"]["key"]: i for i in issues if i["ticket"]}
    seen: set[str] = set()
    report: list[dict[str, Any]] = []
    for sink in app.sinks:
        if not isinstance(sink, RtSink):
            continue
        try:
            tickets = sink.list(active_only=True)
        except SinkError as exc:
            report.append({"sink": sink.name, "tickets": None, "error": str(exc)})
            continue
        report.append({"sink": sink.name, "tickets": len(tickets), "error": None})
        for t in tickets:
            if t.key in seen or not t.is_open:
                continue
            seen.add(t.key)
            mine = by_key.get(t.key)
            if mine is not None:
                rma = rmas.get(mine["counters"][0]) if mine["counters"] else None
                merged = _with_ticket(
                    mine, t, sink.name, now, rma_state=rma.state if rma is not None else None
                )
                mine.clear()
                mine.update(merged | {"helpdesk": sink.name})
                continue
            issue = {
                "origin": ELSEWHERE,
                "site": t.site or None,
                "counters": list(t.counters),
                "title": t.subject,
                "summary": t.comment.what,
                "opened_at": t.created_at.isoformat(),
                "incident": None,
                "kind": ticket_kind(t),
                "rma": None,
                "helpdesk": sink.name,
            }
            issues.append(_with_ticket(issue, t, sink.name, now))
    return report


# --- data completeness ------------------------------------------------------------------------


def completeness(config: Config, store: Store, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Per site, each counter's share of due opening-hours slots that arrived, over each of
    ``WINDOWS`` (see the module docstring)."""
    import numpy as np

    from diagnostics.series import CountArrays, grid_span

    longest = max(WINDOWS)
    due_by = now - timedelta(seconds=2 * config.agent.cycle_seconds)
    out: dict[str, list[dict[str, Any]]] = {}
    for site in config.sites:
        serials = [c.serial for c in config.counters_at(site.code)]
        if not serials:
            out[site.code] = []
            continue
        since = now - timedelta(days=longest)
        columns = store.slot_columns(serials, since)
        _, minutes, _ = grid_span(columns, now=due_by)
        step = minutes * 60
        start = datetime.fromtimestamp(-(-int(since.timestamp()) // step) * step, UTC)
        arrays = CountArrays.from_columns(
            columns, site.calendar(), now=due_by, start=start, minutes=minutes
        )
        grid = arrays.grid
        open_slot = grid.open_actual > 0
        present = arrays.present
        rows = []
        for i, serial in enumerate(arrays.serials):
            first = store.first_slot(serial)
            windows: dict[str, dict[str, Any]] = {}
            for days in WINDOWS:
                lo = grid.index(
                    max(now - timedelta(days=days), first or now - timedelta(days=days))
                )
                due = open_slot[lo:]
                expected = int(np.count_nonzero(due))
                recorded = int(np.count_nonzero(due & present[i, lo:]))
                windows[f"{days}d"] = {
                    "days": days,
                    "expected": expected,
                    "recorded": recorded,
                    "ratio": round(recorded / expected, 4) if expected else None,
                    "all_expected": int(grid.n - lo),
                    "all_recorded": int(np.count_nonzero(present[i, lo:])),
                }
            counter = config.counter(serial)
            rows.append(
                {
                    "serial": serial,
                    "name": counter.name,
                    "first_slot": first.isoformat() if first else None,
                    "minutes": minutes,
                    "windows": windows,
                }
            )
        out[site.code] = rows
    return out


def issue_rows(data: dict[str, Any]) -> Sequence[dict[str, Any]]:
    """Every issue of the overview, site by site."""
    return [i for s in data["sites"] for i in s["issues"]]
