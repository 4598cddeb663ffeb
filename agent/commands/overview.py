"""``ffc-agent overview``: every open issue per site, who acts next and the plan; each
counter's data completeness over 7 and 30 days; the RMAs in progress.

Reads the state (probes nothing); ``--all-gateways`` also reads every Request Tracker
destination for the tickets all of the chain's gateways filed. Tables for people (wrapped at
any width, identifiers never cut), ``--json`` for scripts (the shape is in ``agent.overview``
and the README), ``--html FILE`` for a self-contained page with charts.
"""

from __future__ import annotations

from datetime import datetime
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
from diagnostics.model import plural


@click.command("overview")
@config_option
@json_option
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the overview as one self-contained HTML page with charts to FILE.",
)
@click.option(
    "--all-gateways",
    is_flag=True,
    help="Also read the open tickets every gateway filed from each RT destination.",
)
def overview_cmd(
    config_path: Path, as_json: bool, html_path: Path | None, all_gateways: bool
) -> None:
    """Open issues per site with SLA and action plan, data completeness, RMAs in progress."""
    from agent.app import App
    from agent.delivery.sinks.rt import RtSink
    from agent.overview import overview

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        if all_gateways and not any(isinstance(s, RtSink) for s in app.sinks):
            raise click.ClickException(
                "--all-gateways reads the shared helpdesk, and no RT destination "
                '([[sinks]] type = "rt") is configured'
            )
        data = overview(app, now, all_gateways=all_gateways)
    if html_path is not None:
        from rma.overview_page import render_overview

        try:
            html_path.write_text(render_overview(data), encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {html_path}: {exc.strerror}") from None
    if as_json:
        _print_json(data)
        return
    _print_tables(data)
    if html_path is not None:
        out.print(f"page: {html_path}", markup=False, highlight=False)


def _print_tables(data: dict[str, Any]) -> None:
    from rich.markup import escape

    now = datetime.fromisoformat(data["at"])
    t = data["totals"]
    out.print(
        f"Overview at {_when(data['at'])} ({data['scope']}): "
        f"{plural(t['open_issues'], 'open issue')}, {t['overdue']} overdue, "
        f"{plural(t['rmas_in_progress'], 'RMA')} in progress",
        soft_wrap=False,  # wrapped at the terminal's width, between words
    )
    for read in data["helpdesk"]:
        said = plural(read["tickets"], "open ticket") if read["error"] is None else read["error"]
        out.print(f"helpdesk {read['sink']}: {said}", markup=False, soft_wrap=False)
    if data["gateway"]["issues"]:
        out.print()
        out.print("[bold]The gateway and the agent[/] (the store's IT)", soft_wrap=False)
        out.print(_issue_table(data["gateway"]["issues"], now))
    for site in data["sites"]:
        name = site["code"] if site["name"] == site["code"] else f"{site['code']} {site['name']}"
        where = "" if site["here"] else " (another gateway's site)"
        out.print()
        out.print(f"[bold]{escape(name)}[/]{where}", soft_wrap=False)
        if site["issues"]:
            out.print(_issue_table(site["issues"], now))
        else:
            out.print("no open issues")
        if site["counters"]:
            completeness = table("Data completeness", ("counter", "7 days", "30 days"))
            for c in site["counters"]:
                completeness.add_row(
                    escape(c["serial"]), _ratio(c["windows"]["7d"]), _ratio(c["windows"]["30d"])
                )
            out.print(completeness)
        if site.get("rmas"):
            rmas = table("RMAs in progress", ("RMA", "counter", "state", "since"))
            for r in site["rmas"]:
                rmas.add_row(str(r["id"]), escape(r["counter"]), r["state"], _when(r["opened_at"]))
            out.print(rmas)


def _issue_table(issues: list[dict[str, Any]], now: datetime) -> Any:
    from rich.markup import escape

    shown = table("Open issues", ("issue", "ticket", "stage, SLA", "next action"), show_lines=True)
    for i in issues:
        tk = i["ticket"]
        issue = (i["summary"] or i["title"]) + (
            f"\n{', '.join(i['counters'])}" if i["counters"] else ""
        )
        if i["origin"] != "this gateway":
            issue += f"\n(filed by {i['origin']})"
        ticket = "-"
        if tk:
            ticket = f"{tk['number'] or 'queued'}\n{tk['status']}\n{tk['category']}"
        plan = "".join(f"\n- {s}" for s in i["action"]["plan"])
        action = f"{i['action']['owner']}: {i['action']['next']}{plan}"
        shown.add_row(escape(issue), escape(ticket), _stage_sla(i, now), escape(action))
    return shown


def _stage_sla(issue: dict[str, Any], now: datetime) -> str:
    """The support line with its clock, then the category's (``rma.sla``'s words, as
    ``tickets list`` has them); the stage alone for an issue with no ticket filed."""
    from rma.overview_page import STAGES
    from rma.sla import category_text, line_text

    sla = issue["sla"]
    if not sla:
        return STAGES.get(issue["stage"], (issue["stage"], ""))[0]
    line = line_text(sla, now)
    category = f"category {category_text(sla, now)}"
    if any(x["overdue"] for x in sla["lines"]):
        line = f"[red]{line}[/]"
    if sla["category"]["overdue"]:
        category = f"[red]{category}[/]"
    return f"{line}\n{category}"


def _when(iso: str | None) -> str:
    """A time as people read it, in UTC, with spaces to wrap at."""
    from datetime import UTC

    if not iso:
        return "-"
    return f"{datetime.fromisoformat(iso).astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _ratio(w: dict[str, Any]) -> str:
    if w["ratio"] is None:
        return "no slots due"
    return f"{w['ratio'] * 100:.1f} % ({w['recorded']}/{w['expected']})"
