"""``ffc-agent incidents``: the incidents the agent holds, with the ids other commands take.

``tickets preview INCIDENT`` and a person reading the state need the incident's id; this is
where it is shown, with its problem, its state and the ticket it filed (if any). Reads the
state only; probes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


@click.command("incidents")
@click.option("--all", "show_all", is_flag=True, help="Include resolved incidents.")
@config_option
@json_option
def incidents_cmd(show_all: bool, config_path: Path, as_json: bool) -> None:
    """List the incidents (open ones unless --all), with their ids and tickets."""
    from agent.app import App
    from diagnostics.checks import meta

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        found = app.store.incidents(open_only=not show_all)
        held = {
            i.id: hold
            for i in found
            if i.resolved_at is None
            and not i.ticket_number
            and meta(i.check_id).ticketed
            and (hold := app.tickets.held(i, now)) is not None
        }
    rows: list[dict[str, Any]] = [
        {
            "id": i.id,
            "check_id": i.check_id,
            "title": meta(i.check_id).title,
            "site": i.site or None,
            "subject": i.subject or None,
            "state": i.state,
            "code": i.code,
            "summary": i.summary,
            "opened_at": i.opened_at.isoformat(),
            "updated_at": i.updated_at.isoformat(),
            "resolved_at": i.resolved_at.isoformat() if i.resolved_at else None,
            "ticketed": meta(i.check_id).ticketed,
            "ticket_number": i.ticket_number,
            # a ticket that waits on purpose: a reboot ruled out, the store asked first
            "ticket_held": (
                {"why": held[i.id].why, "until": held[i.id].until.isoformat()}
                if i.id in held
                else None
            ),
        }
        for i in found
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no open incidents" if not show_all else "no incidents")
        return
    # the check id heads its summary: one wrapping column, so at 80 columns neither the
    # summary is squeezed away nor a serial or ticket number cut
    shown = table(
        "Incidents" if show_all else "Open incidents",
        ("id", "state", "where", "opened (UTC)", "ticket", "problem"),
        whole=("id", "where", "ticket"),
    )
    for r, i in zip(rows, found, strict=True):
        where = r["subject"] or (f"site {r['site']}" if r["site"] else "gateway")
        # no ticket for the gateway or the agent: the store's IT looks after those
        ticket = r["ticket_number"] or ("-" if r["ticketed"] else "store IT")
        if r["ticket_held"]:
            until = datetime.fromisoformat(r["ticket_held"]["until"])
            ticket = f"held until {until.astimezone(UTC):%H:%M} ({r['ticket_held']['why']})"
        shown.add_row(
            str(r["id"]),
            r["state"],
            where,
            f"{i.opened_at.astimezone(UTC):%d %b %H:%M}",
            ticket,
            f"{r['check_id']}\n{r['summary']}",
        )
    out.print(shown)
