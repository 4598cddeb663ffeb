"""``ffc-agent tickets list|show|new|reply|task|preview|sync|attach|retry``: the tickets.

Reading goes to the destinations themselves (write-only ones answer from their sent-log);
``sync`` runs the outbox once, reads every ticket's status back and escalates a ticket whose
support line ran past its SLA. ``new``, ``reply`` and ``task`` write through the outbox
(``agent.delivery.conversation``). A ticket number may be given bare: ``1`` for ``L-000001``.
"""

from __future__ import annotations

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
from agent.commands.common import table as common_table
from diagnostics.model import plural
from rma.portal import TaskType


def _task_types() -> list[TaskType]:
    return list(TaskType)


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
    from rma.sla import ticket_sla

    view = ticket_sla(t, now)
    return {
        **t.to_json(),
        "sink": sink.name,
        "sla_due": view.category_due.isoformat() if view.category_due else None,
        "sla_overdue": view.category_overdue,
        "sla": view.to_json(),
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
    # newest first; tickets filed in one cycle share a time, so the later number goes first
    rows.sort(key=lambda r: (r["created_at"], _digits(r["number"] or "")), reverse=True)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no tickets")
        return
    table = common_table(
        "Tickets",
        ("number", "sink", "status", "category", "SLA", "counters", "subject"),
        whole=("number", "counters"),
    )
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
    now = clock().now()
    if as_json:
        _print_json(_ticket_row(sink, ticket, now))
        return
    from rich.markdown import Markdown

    out.print(Markdown(render_markdown(ticket)), soft_wrap=False)  # wrapped, never cut
    out.print()
    out.print(_sla_table(ticket, now))


def _sla_table(ticket: Any, now: datetime) -> Any:
    """The category's SLA beside each support line's (``rma.sla.ticket_sla``)."""
    from rma.sla import ticket_sla

    view = ticket_sla(ticket, now)
    table = common_table("SLA", ("clock", "promise", "since", "due", "state"))

    def when(d: datetime | None) -> str:
        return f"{d:%Y-%m-%d %H:%M %Z}".strip() if d else "-"

    def days(n: int | None) -> str:
        return plural(n, "day") if n is not None else "-"

    state = "[red]OVERDUE[/]" if view.category_overdue else "running" if view.category_due else "-"
    table.add_row(
        f"category: {ticket.category.value}",
        days(view.category_days),
        when(ticket.created_at),
        when(view.category_due),
        state,
    )
    for line in view.lines:
        promise = days(line.sla_days) if line.sla_days else "a plan and an ETA"
        if line.state != "current":
            shown = {"done": "passed on", "ahead": "not reached"}[line.state]
        else:
            shown = "[red]OVERDUE[/]" if line.overdue else "holds the ticket"
        table.add_row(line.stage.label, promise, when(line.since), when(line.due), shown)
    if view.plan or view.eta:
        table.caption = f"plan: {view.plan or '-'}; ETA: {view.eta or '-'}"
    return table


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


def _conversation_failed(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _print_queued(done: Any, as_json: bool) -> None:
    if as_json:
        _print_json(done.to_json())
        return
    for i in done.items:
        error = f" ({i['error']})" if i["error"] else ""
        out.print(f"{i['sink']} ticket {i['number'] or '(not filed yet)'}: {i['state']}{error}")


@tickets.command("new")
@click.option("--site", help="The site's code (default: the only configured site).")
@click.option(
    "--counter",
    "counters",
    multiple=True,
    help="A counter's serial (repeat for more); none: a site-level request.",
)
@click.option("--subject", required=True, help="A high-level description, one line.")
@click.option(
    "--category",
    required=True,
    help="training, configuration, service, technical, data (or the portal's name); "
    "the role setting decides which are allowed.",
)
@click.option(
    "--date",
    "occurred_on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="When it happened (default: today at the site).",
)
@click.option("--what", required=True, help="What is the problem (or the request)?")
@click.option("--where", default="", help="Where is it? (default: the site and its name)")
@click.option("--when", default="", help="When did it happen? (default: the date)")
@click.option("--device", default="", help="Which device? (default: the counters named)")
@click.option("--how", default="", help="How did it happen?")
@click.option("--cc", multiple=True, help="An address to copy (repeat); adds to the configured.")
@click.option("--requester", default="", help="Who asks (default: the configured requester).")
@click.option(
    "--attach",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file to attach (repeat): text is scrubbed of secrets, as by `tickets attach`.",
)
@config_option
@json_option
def tickets_new(
    site: str | None,
    counters: tuple[str, ...],
    subject: str,
    category: str,
    occurred_on: datetime | None,
    what: str,
    where: str,
    when: str,
    device: str,
    how: str,
    cc: tuple[str, ...],
    requester: str,
    files: tuple[Path, ...],
    config_path: Path,
    as_json: bool,
) -> None:
    """Raise a ticket by hand: a Training, Configuration or Service Request, or any category
    the role allows, in the portal form's fields. It goes to every configured destination
    through the outbox (a helpdesk that is down gets it later, once) and is audited."""
    from agent.app import App
    from agent.delivery.conversation import ConversationError, HandForm, raise_ticket

    cfg = _load(config_path)
    if site is None:
        if len(cfg.sites) != 1:
            codes = ", ".join(s.code for s in cfg.sites) or "none configured"
            raise click.UsageError(f"give --site (sites: {codes})")
        site = cfg.sites[0].code
    form = HandForm(
        site=site,
        subject=subject,
        category=category,
        what=what,
        counters=counters,
        occurred_on=occurred_on.date() if occurred_on else None,
        where=where,
        when=when,
        which_device=device,
        how=how,
        cc=cc,
        requester=requester,
    )
    with App.open(cfg, clock()) as app:
        try:
            done = raise_ticket(app, form, files, actor=_actor(), now=app.clock.now())
        except ConversationError as exc:
            raise _conversation_failed(exc) from None
    _print_queued(done, as_json)


@tickets.command("reply")
@click.argument("number")
@click.option("--message", "-m", "text", required=True, help="The text of the reply.")
@config_option
@json_option
def tickets_reply(number: str, text: str, config_path: Path, as_json: bool) -> None:
    """Reply on ticket NUMBER's conversation, in every destination that has it (through the
    outbox, once; the requester and CC get one e-mail). `tickets show` lists the messages."""
    from agent.app import App
    from agent.delivery.conversation import ConversationError, reply

    cfg = _load(config_path)
    with App.open(cfg, clock()) as app:
        try:
            done = reply(app, number, text, actor=_actor(), now=app.clock.now())
        except ConversationError as exc:
            raise _conversation_failed(exc) from None
    _print_queued(done, as_json)


@tickets.command("task")
@click.argument("number")
@click.argument("task")
@click.option(
    "--type",
    "kind",
    type=click.Choice([t.value for t in _task_types()], case_sensitive=False),
    metavar="TYPE",
    default="support operation",
    show_default=True,
    help="One of: " + ", ".join(t.value for t in _task_types()) + ".",
)
@click.option("--hours", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--due", type=click.DateTime(formats=["%Y-%m-%d"]), help="The task's due date.")
@click.option("--status", default="open", show_default=True, help="open, done, …")
@config_option
@json_option
def tickets_task(
    number: str,
    task: str,
    kind: str,
    hours: float,
    due: datetime | None,
    status: str,
    config_path: Path,
    as_json: bool,
) -> None:
    """Add TASK to ticket NUMBER's task list, or update the task of that name (its hours,
    due date, status), in every destination that keeps tasks (local, RT)."""
    from agent.app import App
    from agent.delivery.conversation import ConversationError, add_task
    from rma.tickets import Task

    line = Task(
        task=task,
        hours=hours,
        type=TaskType(kind.lower()),
        due=due.date() if due else None,
        status=status,
    )
    cfg = _load(config_path)
    with App.open(cfg, clock()) as app:
        try:
            done = add_task(app, number, line, actor=_actor(), now=app.clock.now())
        except ConversationError as exc:
            raise _conversation_failed(exc) from None
    _print_queued(done, as_json)


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
        if inc.ticket_number:  # filed already: the preview shows it under its number
            ticket = ticket.model_copy(update={"number": inc.ticket_number})
        attachments = app.bundler.for_ticket(inc, ticket, now, [])
    files = [{"name": n, "size": len(d)} for n, d in attachments.items()]
    if as_json:
        _print_json({"ticket": ticket.to_json(), "attachments": files})
        return
    from rich.markdown import Markdown

    from agent.delivery.sinks.local import render_markdown

    out.print(Markdown(render_markdown(ticket)), soft_wrap=False)
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
            if app.tickets.escalated:  # the hand-over messages go now, not next time
                app.tickets.deliver(now)
            app.tickets.close_suggested(now)
            data = {
                "delivered": [t.number for t in delivered],
                "delivering_elsewhere": outbox.deferred,
                "status_changes": [
                    {"sink": c.sink, "number": c.number, "from": c.before, "to": c.after}
                    for c in changes
                ],
                "escalated": app.tickets.escalated,
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
    _print_sync(data)


def _print_sync(data: dict[str, Any]) -> None:
    """``tickets sync`` for a person: one line per thing that happened, or that nothing did."""
    if "would_deliver" in data:
        items = data["would_deliver"]
        out.print(f"would deliver {plural(len(items), 'item')}" + (":" if items else ""))
        for i in items:
            out.print(f"  {i['sink']}: {i['kind']} {i['key']} ({i['state']})")
        return
    delivered = data["delivered"]
    if data["delivering_elsewhere"]:
        out.print(
            "another ffc-agent process (the service) is delivering from this state directory: "
            "what is queued goes with its next pass"
        )
    out.print(
        f"delivered {plural(len(delivered), 'ticket')}"
        + (f": {', '.join(n or '?' for n in delivered)}" if delivered else "")
    )
    for c in data["status_changes"]:
        out.print(f"{c['sink']} ticket {c['number']}: {c['from']} → {c['to']}")
    for e in data["escalated"]:
        out.print(f"{e['sink']} ticket {e['number']}: escalated from {e['from']} to {e['to']}")
    for sink, q in data["outbox"].items():
        out.print(
            f"{sink}: {plural(q['depth'], 'item')} waiting, the oldest for "
            f"{q['oldest_age_s'] / 60:.0f} min"
        )
    for f in data["failed"]:
        out.print(f"{f['sink']}: {f['key']} failed for good: {f['error']}")
    if not (data["status_changes"] or data["escalated"] or data["outbox"] or data["failed"]):
        out.print("no status changes, nothing waiting")


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
    out.print(f"{plural(n, 'item')} queued again")
