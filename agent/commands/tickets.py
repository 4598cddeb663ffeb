"""``ffc-agent tickets list|show|preview|sync|attach|retry``: the tickets and their delivery.

Reading goes to the destinations themselves (write-only ones answer from their sent-log);
``sync`` runs the outbox once and reads every ticket's status back.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agent.commands.common import (
    _actor,
    _load,
    _print_json,
    clock,
    config_option,
    json_option,
    out,
)


@click.group()
def tickets() -> None:
    """The tickets the agent has filed, and their delivery."""


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read the local tickets of this state directory instead of the configured sinks.",
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Show what would be sent; send and change nothing."
)


def _readable_sinks(config_path: Path, state_dir: Path | None) -> list[Any]:
    """The destinations tickets can be read back from (write-only ones: the outbox's record)."""
    from agent.delivery.sinks import LocalSink, make_sinks

    if state_dir is not None:
        return [LocalSink(state_dir / "tickets")]
    return make_sinks(_load(config_path), clock())


def _ticket_row(sink: Any, t: Any, now: datetime) -> dict[str, Any]:
    from rma.sla import is_overdue, sla_due

    due = sla_due(t)
    return {
        **t.to_json(),
        "sink": sink.name,
        "sla_due": due.isoformat() if due else None,
        "sla_overdue": is_overdue(t, now),
    }


@tickets.command("list")
@config_option
@state_dir_option
@json_option
def tickets_list(config_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """List tickets, newest first, with their SLA (overdue ones marked)."""
    from agent.delivery.sinks import SinkError

    now = clock().now()
    rows = []
    for sink in _readable_sinks(config_path, state_dir):
        try:
            rows += [_ticket_row(sink, t, now) for t in sink.list()]
        except SinkError as exc:
            click.echo(f"warning: cannot list {sink.name}: {exc}", err=True)
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title="Tickets", title_justify="left")
    for col in ("number", "sink", "status", "category", "SLA", "counters", "subject"):
        table.add_column(col)
    for r in rows:
        sla = f"{r['sla_days']} d" if r["sla_days"] else "-"
        if r["sla_overdue"]:
            sla = f"[red]{sla} OVERDUE[/]"
        table.add_row(
            r["number"] or "-",
            r["sink"],
            r["status"],
            r["category"],
            sla,
            ", ".join(r["counters"]) or f"site {r['site']}",
            r["subject"],
        )
    out.print(table)


@tickets.command("show")
@click.argument("number")
@config_option
@state_dir_option
@json_option
def tickets_show(number: str, config_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Show one ticket as support will read it."""
    from agent.delivery.sinks import SinkError
    from agent.delivery.sinks.local import render_markdown

    for sink in _readable_sinks(config_path, state_dir):
        try:
            ticket = sink.get(number) or _by_bare_number(sink, number)
        except SinkError:
            continue
        if ticket is not None:
            break
    else:
        raise click.ClickException(f"no ticket {number}")
    if as_json:
        _print_json(_ticket_row(sink, ticket, clock().now()))
        return
    from rich.markdown import Markdown

    out.print(Markdown(render_markdown(ticket)))


def _by_bare_number(sink: Any, number: str) -> Any:
    """``1`` for ``L-000001``: the one ticket whose number's digits make the same integer."""
    if not number.isdigit():
        return None
    wanted = int(number)
    same = [
        t
        for t in sink.list()
        if t.number and _digits(t.number) and int(_digits(t.number)) == wanted
    ]
    return same[0] if len(same) == 1 else None


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


@tickets.command("preview")
@click.argument("incident", type=int)
@config_option
@json_option
def tickets_preview(incident: int, config_path: Path, as_json: bool) -> None:
    """Compose the ticket INCIDENT would file, with its attachments; file nothing."""
    from agent.app import App
    from diagnostics.checks import meta

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        inc = app.store.incident(incident)
        if inc is None:
            raise click.ClickException(f"no incident {incident} (`ffc-agent incidents` lists them)")
        if not meta(inc.check_id).ticketed:
            raise click.ClickException(
                f"incident {incident} ({inc.check_id}) is about the gateway or the agent: it "
                "belongs to the store's IT, and the agent files no support ticket for it"
            )
        ticket = app.tickets.compose(inc, now)
        attachments = app.bundler.for_ticket(inc, ticket, now, [])
    files = [{"name": n, "size": len(d)} for n, d in attachments.items()]
    if as_json:
        _print_json({"ticket": ticket.to_json(), "attachments": files})
        return
    from rich.markdown import Markdown

    from agent.delivery.sinks.local import render_markdown

    out.print(Markdown(render_markdown(ticket)))
    for f in files:
        out.print(f"attachment: {f['name']} ({f['size']:,} bytes)")


@tickets.command("sync")
@config_option
@dry_run_option
@json_option
def tickets_sync(config_path: Path, dry_run: bool, as_json: bool) -> None:
    """Deliver what is due, read every ticket's status back, close stale local ones."""
    from agent.app import App
    from agent.delivery.outbox import DELIVERED, FAILED

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        outbox = app.outbox
        data: dict[str, Any]
        if dry_run:
            due = [i for i in outbox.items() if i.state not in (DELIVERED, FAILED)]
            data = {
                "would_deliver": [
                    {"id": i.id, "sink": i.sink, "kind": i.kind, "key": i.key, "state": i.state}
                    for i in due
                ]
            }
        else:
            delivered = app.tickets.deliver(now)
            changes = app.tickets.sync(now)
            app.tickets.close_suggested(now)
            data = {
                "delivered": [t.number for t in delivered],
                "status_changes": [
                    {"sink": c.sink, "number": c.number, "from": c.before, "to": c.after}
                    for c in changes
                ],
                "outbox": {
                    k: {"depth": n, "oldest_age_s": age}
                    for k, (n, age) in outbox.depth(now).items()
                },
                "failed": [
                    {"sink": i.sink, "key": i.key, "error": i.last_error}
                    for i in outbox.items(states=(FAILED,))
                ],
            }
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        out.print(f"{key}: {json.dumps(value, default=str)}")


@tickets.command("attach")
@click.argument("number")
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--message", "-m", default="", help="The text that goes with the files.")
@config_option
@json_option
def tickets_attach(
    number: str, files: tuple[Path, ...], message: str, config_path: Path, as_json: bool
) -> None:
    """Attach FILE(s) to ticket NUMBER in every destination that has it, then deliver.

    Text files are scrubbed of secrets first; of binary files only .tar.gz, .gz, .jpg, .png
    and .pdf are taken, each at most 8 MiB. The attachment is audited (ticket.attach).
    """
    from agent.app import App
    from agent.delivery.attach import AttachError, attach_files

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        try:
            done = attach_files(app, number, files, actor=_actor(), now=now, message=message)
        except AttachError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json(done.to_json())
        return
    for f in done.files:
        out.print(f"{f['name']}: {f['size']:,} bytes, sha256 {f['sha256']}")
    for i in done.items:
        error = f" ({i['error']})" if i["error"] else ""
        out.print(f"{i['sink']} ticket {i['number']}: {i['state']}{error}")


@tickets.command("retry")
@config_option
def tickets_retry(config_path: Path) -> None:
    """Queue again what a destination refused for good (after fixing its settings)."""
    from agent.app import App

    cfg = _load(config_path)
    with App.open(cfg, clock()) as app:
        n = app.outbox.retry_failed(app.clock.now())
    out.print(f"{n} item(s) queued again")
