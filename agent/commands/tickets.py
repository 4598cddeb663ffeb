"""``ffc-agent tickets list|show|new|reply|task|preview|sync|attach|retry``: the tickets.

Reading goes to the destinations themselves (write-only ones answer from their sent-log);
``sync`` runs the outbox once, reads every ticket's status back and escalates a ticket whose
support line ran past its SLA. ``new``, ``reply`` and ``task`` write through the outbox
(``agent.delivery.conversation``); ``new`` asks for what its form is missing only when a
person is at a terminal (``commands.common.interactive``), and is a usage error otherwise.
``list`` shows each ticket's support line with its SLA in ``rma.sla``'s words, as the
overview does. A ticket number may be given bare: ``1`` for ``L-000001``; every command reads
it through ``agent.delivery.numbers`` (RT's own ``1`` first; a number naming different tickets
in two destinations is refused, exit 2, with the full number of each).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent.commands.common import (
    _actor,
    _load,
    _print_json,
    clock,
    config_option,
    fail,
    interactive,
    json_option,
    out,
)
from agent.commands.common import table as common_table
from diagnostics.model import plural
from rma.portal import TaskType

if TYPE_CHECKING:
    from agent.config import Config


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
    line = view.current
    return {
        **t.to_json(),
        "sink": sink.name,
        "sla_due": view.category_due.isoformat() if view.category_due else None,
        "sla_overdue": view.category_overdue,
        "line_due": line.due.isoformat() if line.due else None,
        "line_overdue": line.overdue,
        "sla": view.to_json(),
    }


@tickets.command("list")
@config_option
@state_dir_option
@json_option
def tickets_list(config_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """List tickets, newest first, with their category's SLA and the support line holding
    each with its own SLA (overdue ones marked)."""
    from agent.delivery.sinks import SinkError
    from rma.sla import category_text, line_text

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
    from rich.markup import escape

    # five columns, so that at 80 the words fit whole: a number over its destination, the
    # category over its SLA, the support line with its own, the subject over its counters
    table = common_table(
        "Tickets",
        ("ticket", "status", "category, SLA", "support line", "subject, counters"),
        whole=("ticket",),
        show_lines=True,  # a row of several lines reads apart from the next
    )
    for r in rows:
        table.add_row(
            f"{escape(r['number'] or '-')}\n{escape(r['sink'])}",
            r["status"],
            f"{r['category']}\n" + _red(category_text(r["sla"], now), r["sla_overdue"]),
            _red(line_text(r["sla"], now), r["line_overdue"]),
            escape(f"{r['subject']}\n" + (", ".join(r["counters"]) or f"site {r['site']}")),
        )
    out.print(table)


def _red(text: str, overdue: bool) -> str:
    return f"[red]{text}[/]" if overdue else text


@tickets.command("show")
@click.argument("number")
@config_option
@state_dir_option
@json_option
def tickets_show(number: str, config_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Show one ticket as support will read it (from the destination whose own number was
    given, when it is in several)."""
    from agent.delivery.numbers import AmbiguousNumber, named_tickets
    from agent.delivery.sinks.local import render_markdown

    try:
        found = named_tickets(_readable_sinks(config_path, state_dir), number)
    except AmbiguousNumber as exc:
        _ambiguous(exc, as_json)
    if not found:
        raise click.ClickException(f"no ticket {number}")
    sink, ticket = found[0]
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
    table = common_table(
        "SLA", ("clock", "promise", "since", "due", "state"), show_lines=True
    )  # ruled apart: a clock's cells wrap over several lines at 80 columns

    def when(d: datetime | None) -> str:
        return f"{d:%Y-%m-%d %H:%M %Z}".strip() if d else "-"

    def days(n: int | None) -> str:
        return plural(n, "day") if n is not None else "-"

    state = "-"
    if view.category_overdue:
        state = "[red]OVERDUE[/]"
    elif view.category_due:
        state = "running" if view.running else "paused (not with support)"
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
            if not view.running:
                shown += ", paused"
        table.add_row(line.stage.label, promise, when(line.since), when(line.due), shown)
    if view.plan or view.eta:
        table.caption = f"plan: {view.plan or '-'}; ETA: {view.eta or '-'}"
    return table


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def _ambiguous(exc: Exception, as_json: bool) -> NoReturn:
    """A number naming different tickets: one line with the full number of each, exit 2."""
    from agent.delivery.numbers import EX_AMBIGUOUS

    fail(str(exc), as_json=as_json, code=EX_AMBIGUOUS)


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
@click.option("--subject", help="A high-level description, one line.")
@click.option(
    "--category",
    help="training, configuration, service, technical, data (or the portal's name); "
    "the role setting decides which are allowed.",
)
@click.option(
    "--date",
    "occurred_on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="When it happened (default: today at the site).",
)
@click.option("--what", help="What is the problem (or the request)?")
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
@click.option(
    "--no-input",
    is_flag=True,
    help="Never ask: a missing --category, --subject or --what is an error (as it is "
    "whenever stdin is not a terminal, and with --json).",
)
@config_option
@json_option
def tickets_new(
    site: str | None,
    counters: tuple[str, ...],
    subject: str | None,
    category: str | None,
    occurred_on: datetime | None,
    what: str | None,
    where: str,
    when: str,
    device: str,
    how: str,
    cc: tuple[str, ...],
    requester: str,
    files: tuple[Path, ...],
    no_input: bool,
    config_path: Path,
    as_json: bool,
) -> None:
    """Raise a ticket by hand: a Training, Configuration or Service Request, or any category
    the role allows, in the portal form's fields. It goes to every configured destination
    through the outbox (a helpdesk that is down gets it later, once) and is audited.

    On a terminal, what is missing is asked for as the portal's form asks it: the category
    (of those the role allows), the site and the counters (the only ones configured by
    default), the subject and what it is about."""
    from agent.app import App
    from agent.delivery.conversation import ConversationError, HandForm, raise_ticket

    cfg = _load(config_path)
    ask = interactive() and not (no_input or as_json)
    missing = [
        option
        for option, given in (("--category", category), ("--subject", subject), ("--what", what))
        if not given
    ]
    if missing and not ask:
        raise click.UsageError(
            f"missing {', '.join(missing)} (questions are asked only on a terminal, "
            "without --json or --no-input)"
        )
    if not category:
        category = _ask_category(cfg)
    if site is None:
        if len(cfg.sites) == 1:
            site = cfg.sites[0].code
        elif ask and cfg.sites:
            site = _ask_site(cfg)
        else:
            codes = ", ".join(s.code for s in cfg.sites) or "none configured"
            raise click.UsageError(f"give --site (sites: {codes})")
    if ask and not counters:
        counters = _ask_counters(cfg, site)
    if not subject:
        subject = _ask_text("Subject, one line:")
    if not what:
        what = _ask_text("What is the problem (or the request)?")
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


def _ask_category(cfg: Config) -> str:
    """The category, picked by number from those the configured role may choose."""
    from rma.tickets import Category, Role

    role = Role(cfg.agent.role)
    allowed = [c for c in Category if c.allowed(role)]
    options = [
        f"{c.value}: {c.description}" + (f", SLA {plural(c.sla_days, 'day')}" if c.sla_days else "")
        for c in allowed
    ]
    title = f"Category (those the role {role.value!r} may choose)"
    return allowed[_pick("Category", title, options)].value


def _ask_site(cfg: Config) -> str:
    sites = cfg.sites
    return sites[_pick("Site", "Sites", [f"{s.code} {s.name}" for s in sites])].code


def _ask_counters(cfg: Config, site: str) -> tuple[str, ...]:
    """The counters the request is about, by number (none: the whole site); the only one
    by default."""
    here = cfg.counters_at(site)
    if not here:
        return ()
    click.echo(f"Counters at {site}:", err=True)
    click.echo("  0) none: the request is about the whole site", err=True)
    for i, c in enumerate(here, 1):
        click.echo(f"  {i}) {c.serial} {c.name}", err=True)
    picked: tuple[int, ...] = click.prompt(
        "Counters (numbers, comma-separated)",
        type=_Numbers(len(here)),
        default="1" if len(here) == 1 else "0",
        err=True,
    )
    return tuple(here[i - 1].serial for i in picked)


def _pick(name: str, title: str, options: list[str]) -> int:
    """A numbered choice, on stderr as every question is; the index picked."""
    click.echo(f"{title}:", err=True)
    for i, option in enumerate(options, 1):
        click.echo(f"  {i}) {option}", err=True)
    top = len(options)
    chosen: int = click.prompt(f"{name} (1-{top})", type=click.IntRange(1, top), err=True)
    return chosen - 1


def _ask_text(question: str) -> str:
    """A line of text; an empty answer is asked again."""
    while True:
        text: str = click.prompt(question, prompt_suffix=" ", err=True)
        if text.strip():
            return text.strip()


class _Numbers(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 only
    """Numbers from 0 to ``top``, comma- or space-separated; 0 alone means none."""

    name = "numbers"

    def __init__(self, top: int) -> None:
        self.top = top

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        words = str(value).replace(",", " ").split()
        if not all(w.isdigit() and 0 <= int(w) <= self.top for w in words) or not words:
            self.fail(f"give numbers from 0 to {self.top}, e.g. 1 or 1,2", param, ctx)
        picked = tuple(dict.fromkeys(int(w) for w in words))
        if 0 in picked and len(picked) > 1:
            self.fail("0 (the whole site) goes alone", param, ctx)
        return tuple(i for i in picked if i)


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
    from agent.delivery.numbers import AmbiguousNumber

    cfg = _load(config_path)
    with App.open(cfg, clock()) as app:
        try:
            done = reply(app, number, text, actor=_actor(), now=app.clock.now())
        except AmbiguousNumber as exc:
            _ambiguous(exc, as_json)
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
    from agent.delivery.numbers import AmbiguousNumber
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
        except AmbiguousNumber as exc:
            _ambiguous(exc, as_json)
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
    from agent.delivery.numbers import AmbiguousNumber

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        try:
            done = attach_files(app, number, files, actor=_actor(), now=now, message=message)
        except AmbiguousNumber as exc:
            _ambiguous(exc, as_json)
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
