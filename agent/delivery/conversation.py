"""What a person does with tickets by hand: raise one, reply on one, add a task to one.

Not every ticket starts from an incident: a store wants training for its new manager, a counter
moved and needs reconfiguring, an engineer must come out. ``raise_ticket`` files such a request
in the portal's own form (``HandForm``: site, counter(s) or none, subject, category, the date,
the five answers, CC, files), with the category checked against the operator's role as the
composer's are. ``reply`` adds a message to a ticket's conversation and ``add_task`` a line to
its task list.

All three go through the outbox like everything else that leaves the gateway — queued in one
transaction with their audit entry and their notice, then delivered once — so a helpdesk that
is down gets them later, exactly once, and the requester and CC get one e-mail per change
however many destinations carry the ticket. A hand-raised ticket is always a new ticket (the
outbox does not join it to an open one on the same problem: a second configuration request is
not the first). Text is redacted before it is queued; files are taken as ``tickets attach``
takes them (``agent.delivery.attach.read_file``). Refusals are ``ConversationError`` with a
text for the person who asked (a number naming different tickets: ``numbers.AmbiguousNumber``);
nothing is queued then.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from agent.delivery.attach import AttachError, read_file
from agent.delivery.notify import Event
from agent.delivery.numbers import find_tickets
from agent.delivery.sinks.base import Sink
from rma.tickets import (
    Category,
    CategoryNotAllowed,
    Comment,
    Message,
    Role,
    Task,
    Ticket,
    check_category,
)

if TYPE_CHECKING:
    from agent.app import App


class ConversationError(Exception):
    """A request that cannot be raised or a ticket that cannot be written to; says why."""


@dataclass(frozen=True)
class HandForm:
    """The portal's ticket form as a person fills it in. No counters: a site-level request
    (the portal's "counter unassigned")."""

    site: str
    subject: str
    category: str
    what: str
    counters: tuple[str, ...] = ()
    occurred_on: date | None = None  # default: today at the site
    where: str = ""
    when: str = ""
    which_device: str = ""
    how: str = ""
    cc: tuple[str, ...] = ()
    requester: str = ""  # default: the configured requester


@dataclass(frozen=True)
class Queued:
    """What was queued, and how the delivery right after it went, per destination."""

    number: str  # the ticket's number as asked for, or its key for a new ticket
    key: str
    items: list[dict[str, Any]] = field(default_factory=list)  # sink, number, item, state, error
    ticket: Ticket | None = None  # a new ticket as queued

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"number": self.number, "key": self.key, "items": self.items}
        if self.ticket is not None:
            data["ticket"] = self.ticket.to_json()
        return data


def hand_ticket(app: App, form: HandForm, *, actor: str, now: datetime) -> Ticket:
    """The ticket ``form`` makes, checked against the configuration and the role."""
    config = app.config
    codes = [s.code for s in config.sites]
    if form.site not in codes:
        known = ", ".join(codes) or "none configured"
        raise ConversationError(f"no site {form.site!r} in the configuration (sites: {known})")
    site = config.site(form.site)
    role = Role(config.agent.role)
    try:
        category = check_category(_category(form.category), role)
    except CategoryNotAllowed as exc:
        raise ConversationError(str(exc)) from None
    named = {c.serial: c for c in config.counters if c.site == site.code}
    unknown = [s for s in form.counters if s not in named]
    if unknown:
        raise ConversationError(
            f"no counter {', '.join(unknown)} at site {site.code} "
            f"(its counters: {', '.join(named) or 'none configured'})"
        )
    tz = ZoneInfo(site.timezone)
    occurred = form.occurred_on or now.astimezone(tz).date()
    if occurred > now.astimezone(tz).date():
        raise ConversationError(f"the date {occurred} is in the future at {site.code}")
    devices = ", ".join(f"{named[s].name} ({s})" for s in form.counters)
    clean = app.redactor.text
    try:
        comment = Comment(
            what=clean(form.what.strip()),
            where=clean(form.where.strip()) or f"{site.name} ({site.code})",
            when=clean(form.when.strip()) or f"{occurred:%A %d %B %Y}",
            which_device=clean(form.which_device.strip())
            or devices
            or "Not one device: the request is about the whole site.",
            how=clean(form.how.strip()) or f"Raised by hand by {actor} with ffc-agent.",
        )
        ticket = Ticket(
            key=_key(form, occurred, now),
            issue_level="counter" if form.counters else "site",
            counter_unassigned=not form.counters,
            site=site.code,
            counters=list(form.counters),
            subject=clean(" ".join(form.subject.split())),
            category=category,
            sla_days=category.sla_days,
            occurred_on=occurred,
            comment=comment,
            cc=list(dict.fromkeys([*config.agent.cc, *form.cc])),
            requester=form.requester or config.agent.requester,
            created_at=now,
            updated_at=now,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "form"
        raise ConversationError(f"{where}: {first['msg']}") from None
    return ticket


def raise_ticket(
    app: App,
    form: HandForm,
    paths: Sequence[Path] = (),
    *,
    actor: str,
    now: datetime,
) -> Queued:
    """File ``form`` as a new ticket in every configured destination, with ``paths`` attached;
    audited (``ticket.raise``), then one delivery is run."""
    ticket = hand_ticket(app, form, actor=actor, now=now)
    files = _files(app, paths)
    if not app.sinks:
        raise ConversationError("no ticket destination is configured")
    with app.store.transaction():
        ids = app.outbox.enqueue_ticket(
            app.sinks, ticket, incident_id=None, attachments=files, join=False, now=now
        )
        app.store.audit(
            now,
            actor,
            "ticket.raise",
            ticket.key,
            {"category": ticket.category.value, "site": ticket.site, "files": sorted(files)},
        )
    app.tickets.deliver(now)
    app.notifier.flush(now)
    return Queued(
        ticket.key, ticket.key, _states(app, list(zip(app.sinks, ids, strict=True))), ticket
    )


def reply(app: App, number: str, text: str, *, actor: str, now: datetime) -> Queued:
    """Add ``text`` to the conversation of ticket ``number`` in every destination that has it;
    audited (``ticket.reply``), one notice, then one delivery."""
    body = app.redactor.text(text.strip())
    if not body:
        raise ConversationError("the reply is empty: give its text with -m")
    where = _where(app, number)
    with app.store.transaction():
        queued = [
            (
                sink,
                app.outbox.enqueue_message(
                    [sink], t.key, author=actor, body=body, at=now, number=t.number, now=now
                )[0],
            )
            for sink, t in where
        ]
        app.notifier.notify(
            Event.new_message(where[0][1], Message(at=now, author=actor, body=body)), now
        )
        app.store.audit(
            now, actor, "ticket.reply", where[0][1].number or number, {"sinks": _names(queued)}
        )
    app.tickets.deliver(now)
    app.notifier.flush(now)
    return Queued(number, where[0][1].key, _states(app, queued))


def add_task(app: App, number: str, task: Task, *, actor: str, now: datetime) -> Queued:
    """Put ``task`` on the task list of ticket ``number`` (or update the task of its name) in
    every destination that has the ticket and keeps tasks; audited (``ticket.task``)."""
    where = [(s, t) for s, t in _where(app, number) if hasattr(s, "add_task")]
    if not where:
        raise ConversationError(f"no destination with ticket {number} keeps a task list")
    task = task.model_copy(update={"task": app.redactor.text(task.task)})
    with app.store.transaction():
        queued = [
            (
                sink,
                app.outbox.enqueue_task([sink], t.key, task, at=now, number=t.number, now=now)[0],
            )
            for sink, t in where
        ]
        app.store.audit(
            now,
            actor,
            "ticket.task",
            where[0][1].number or number,
            {"task": task.model_dump(mode="json"), "sinks": _names(queued)},
        )
    app.tickets.deliver(now)
    return Queued(number, where[0][1].key, _states(app, queued))


# --- inside


_SHORT = {
    "data": Category.DATA_ACCURACY_ISSUE,
    "technical": Category.TECHNICAL_ISSUE,
    "training": Category.TRAINING_REQUEST,
    "configuration": Category.CONFIGURATION_REQUEST,
    "service": Category.SERVICE_REQUEST,
    "device-bug": Category.DEVICE_BUG,
    "software-bug": Category.SOFTWARE_BUG,
    "business": Category.BUSINESS_REQUEST,
    "audit-obstacle": Category.ACCURACY_AUDIT_OBSTACLE,
}


def category_names() -> list[str]:
    """What ``--category`` takes: the short names, then the portal's own."""
    return [*_SHORT, *(c.value for c in Category)]


def _category(text: str) -> Category:
    wanted = " ".join(text.split()).lower()
    for category in Category:
        if category.value.lower() == wanted:
            return category
    if wanted in _SHORT:
        return _SHORT[wanted]
    raise ConversationError(f"no category {text!r}; one of: {', '.join(c.value for c in Category)}")


def _key(form: HandForm, occurred: date, now: datetime) -> str:
    """A key of its own per request raised: the same request raised twice is two requests."""
    data = json.dumps([form.site, form.counters, form.subject, form.category, str(occurred)])
    return "hand-" + hashlib.sha256(f"{data}\n{now.isoformat()}".encode()).hexdigest()[:16]


def _files(app: App, paths: Sequence[Path]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        for path in paths:
            if path.name in files:
                raise ConversationError(f"two files are named {path.name}: rename one")
            files[path.name] = read_file(path, app.redactor)
    except AttachError as exc:
        raise ConversationError(str(exc)) from None
    return files


def _where(app: App, number: str) -> list[tuple[Sink, Ticket]]:
    """Ticket ``number`` in every destination that has it (``numbers.find_tickets``; a number
    naming different tickets raises its ``AmbiguousNumber``)."""
    where = find_tickets(app.sinks, number)
    if not where:
        names = ", ".join(s.name for s in app.sinks) or "none"
        raise ConversationError(f"no ticket {number} in any configured destination ({names})")
    return where


def _names(queued: Sequence[tuple[Sink, int]]) -> list[str]:
    return [s.name for s, _ in queued]


def _states(app: App, queued: Sequence[tuple[Sink, int]]) -> list[dict[str, Any]]:
    items = {i.id: i for i in app.outbox.items()}
    return [
        {
            "sink": sink.name,
            "number": items[item_id].number or items[item_id].payload.get("number"),
            "item": item_id,
            "state": items[item_id].state,
            "error": items[item_id].last_error,
        }
        for sink, item_id in queued
    ]
