"""``ffc-agent shadow report``: what shadow mode kept back, and what was ruled out.

Run in shadow mode for a week before letting the agent file tickets: this lists the tickets it
would have filed and the findings it ruled out as false alarms, with the reasons.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from agent.commands.common import (
    _aware,
    _load,
    _print_json,
    clock,
    config_option,
    json_option,
    out,
    table,
)


@click.group()
def shadow() -> None:
    """Shadow mode: what the agent would have filed, and what it ruled out."""


@shadow.command("report")
@click.option("--since", "since_text", metavar="ISO-8601", help="Default: 7 days ago.")
@config_option
@json_option
def shadow_report(since_text: str | None, config_path: Path, as_json: bool) -> None:
    """List the tickets kept back by shadow mode and the findings ruled out as false alarms."""
    from agent.app import App

    cfg = _load(config_path)
    now = clock().now()
    since = _aware(since_text, "--since") if since_text else now - timedelta(days=7)
    with App.open(cfg, clock()) as app:
        store = app.store
        held = store.shadow_tickets(since)
        ruled = store.findings_between(since, now + timedelta(days=1), verdict="false_alarm")
    data: dict[str, Any] = {
        "since": since.isoformat(),
        "would_have_filed": [
            {
                "at": h["at"],
                "incident": h["incident_id"],
                "why_held": h["reason"],
                "ticket": h["ticket"],
            }
            for h in held
        ],
        "ruled_out": [
            {
                "at": r["at"],
                "check_id": r["check_id"],
                "site": r["site"],
                "counter": r["subject"],
                "summary": r["summary"],
                "reasons": json.loads(r["reasons"]),
            }
            for r in ruled
        ],
    }
    if as_json:
        _print_json(data)
        return
    # an empty table says less than one line: each part is a table only when it holds rows
    when = f"{since:%Y-%m-%d %H:%M}"
    if data["would_have_filed"]:
        held_table = table(
            f"Would have filed since {when}", ("at", "category", "subject", "held because")
        )
        for h in data["would_have_filed"]:
            ticket = h["ticket"]
            held_table.add_row(h["at"], ticket["category"], ticket["subject"], h["why_held"])
        out.print(held_table)
    else:
        out.print(f"nothing held back since {when}")
    if data["ruled_out"]:
        ruled_table = table(
            "Ruled out as false alarms", ("at", "counter", "check", "why"), whole=("counter",)
        )
        for r in data["ruled_out"]:
            ruled_table.add_row(
                r["at"], r["counter"] or r["site"] or "-", r["check_id"], "; ".join(r["reasons"])
            )
        out.print(ruled_table)
    else:
        out.print(f"nothing ruled out as a false alarm since {when}")
