"""The ticket side of a cycle: compose, queue, deliver, follow up, close.

Tickets go to FootfallCam only about counters and sites (never about the gateway or the agent
itself, which belong to the store's IT). A ticket is composed for every incident in a filed
state that has none yet, so a crash, a dry run or a full outbox never loses one; its bundle is
built before the incident transaction opens (``prepare``), and the ticket enters the outbox in
that transaction with the incident change (``queue``), and the outbox delivers it exactly
once. Where the helpdesk numbers the ticket (the local store, RT), the bundle follows the
ticket as its first message, with the number in its report (``Outbox.enqueue_ticket``). When
the problem heals, the ticket is told and closing is suggested; when it comes back, the new
ticket names the old one. In the local store, a ticket left in Suggest To Close closes itself
after 7 days.

Every ticket read back by ``sync`` (the local store, RT) is also held to its support line's own
SLA (``rma.sla.ticket_sla``): a line that ran out is escalated to the next one, once — a message
on the ticket that hands it over (a follow-up item carrying the new stage) and one notice
(``Event.escalated``) to the requester and CC. Once is kept by the outbox: a ticket with an
escalation to that line already queued or delivered in that destination is not escalated again,
whatever the ticket reads back as meanwhile. ``add_task`` puts a task on a ticket's task list
the same way, through the outbox, in every destination that keeps one.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from agent.config import Config
from agent.delivery.bundling import Bundler, problem_start
from agent.delivery.notify import Event, Notifier
from agent.delivery.outbox import DELIVERED, Channel, Delivery, Outbox
from agent.delivery.sinks import LocalSink, Sink, SinkError
from agent.incidents import (
    FILED_STATES,
    INTERMITTENT,
    OPEN,
    RECOVERING,
    RESOLVED,
    Flip,
    Policy,
    apply,
)
from agent.probes.counter_api import CounterClient
from agent.probes.reach import arp_entry
from agent.store import Incident, Store
from diagnostics.checks import Family, meta
from diagnostics.model import Assessed, Finding
from rma.bundle import is_bundle
from rma.redact import Redactor
from rma.sla import is_overdue, ticket_sla
from rma.tickets import (
    CounterRef,
    DeviceFacts,
    Message,
    ProblemContext,
    Role,
    Stage,
    Task,
    Ticket,
    compose,
    idempotency_key,
)

log = logging.getLogger(__name__)

SUGGEST_TO_CLOSE_DAYS = timedelta(days=7)


class Ticketing:
    def __init__(
        self,
        config: Config,
        store: Store,
        sinks: Sequence[Sink],
        evidence: Bundler,
        redactor: Redactor,
        notifier: Notifier | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.sinks = list(sinks)
        self.evidence = evidence  # the bundler (``App.bundler``)
        self.redactor = redactor
        give_up = timedelta(hours=config.agent.delivery_give_up_hours)
        self.outbox = (
            outbox
            if outbox is not None
            else Outbox(store, config.agent.state_dir, give_up_after=give_up)
        )
        self.notifier = notifier or Notifier(config, self.outbox, redactor=redactor)
        self.last_filed: Counter[str] = Counter()  # tickets filed per destination, last delivery
        self.escalated: list[dict[str, str]] = []  # hand-overs to the next line, last ``sync``
        self.heartbeat: Callable[[], object] = lambda: None  # between deliveries (watchdog)

    def shadowed(self, check_id: str, site: str) -> str:
        """Why tickets for this check and site are kept back (shadow mode), or ''."""
        agent = self.config.agent
        if agent.shadow:
            return "the whole agent runs in shadow mode"
        if check_id in agent.shadow_checks:
            return f"the check {check_id} runs in shadow mode"
        if site and any(s.code == site and s.shadow for s in self.config.sites):
            return f"the site {site} runs in shadow mode"
        return ""

    def _due(self, now: datetime) -> Iterator[Incident]:
        """Filed-state incidents with no ticket yet (a new flip, or one a crash or a dry run
        left without), about the counters and sites, and not held back (``held``)."""
        for inc in self._unfiled():
            if self.held(inc, now) is None:
                yield inc

    def _unfiled(self) -> Iterator[Incident]:
        for inc in self.store.incidents(open_only=True):
            if inc.state not in FILED_STATES or inc.ticket_key is not None:
                continue
            if not meta(inc.check_id).ticketed:
                continue  # the gateway and the agent belong to the store's IT, not FootfallCam
            yield inc

    def held(self, inc: Incident, now: datetime) -> Held | None:
        """Why this incident's ticket waits, and until when; None when it may be filed.

        An offline counter, or a whole site gone dark, waits ``offline_ticket_minutes`` from
        when it stopped answering (its check's ``reboot_wait``): a counter's reboot, or a
        switch's or router's at the site, is not a ticket. A covered or blocked view is first
        the store's to clear: it waits ``blocked_view_grace_minutes`` (the store is asked
        meanwhile, ``ask_store``), unless the counter's counts already suffer (an open count
        incident), when support must hear at once."""
        kind = meta(inc.check_id)
        agent = self.config.agent
        if kind.reboot_wait:
            wait, why = agent.offline_ticket_minutes, "ruling out a reboot"
        elif kind.family is Family.LIVEVIEW:
            if self._counts_affected(inc):
                return None
            wait, why = agent.blocked_view_grace_minutes, "the store is asked to clear the view"
        else:
            return None
        until = self.started(inc) + timedelta(minutes=wait)
        return Held(why, until) if now < until else None

    def started(self, inc: Incident) -> datetime:
        """When the incident's problem began, from its finding's evidence (an offline
        counter's first failed probe). A blocked view's from the finding that opened the
        incident: the check sees a short ring of snapshots, so its latest "since" slides on
        while the view stays blocked, and the ticket's key, subject and grace must not."""
        if meta(inc.check_id).family is not Family.LIVEVIEW:
            return problem_start(Finding.from_json(inc.last_finding), inc.opened_at)
        rows = self.store.findings_between(inc.opened_at, inc.opened_at + timedelta(seconds=1))
        for row in rows:
            if (row["check_id"], row["subject"]) == (inc.check_id, inc.subject or None):
                evidence = json.loads(row["evidence"] or "{}")
                first = replace(Finding.from_json(inc.last_finding), evidence=evidence)
                return min(problem_start(first, inc.opened_at), inc.opened_at)
        return inc.opened_at

    def _counts_affected(self, inc: Incident) -> bool:
        return any(
            other.subject == inc.subject
            and other.site == inc.site
            and other.state in FILED_STATES
            and meta(other.check_id).family is Family.COUNTS
            for other in self.store.incidents(open_only=True)
        )

    def waiting(self, now: datetime) -> list[Waiting]:
        """Every ticket held back on purpose (``held``), with the ticket that follows if the
        problem stays, and what the store is asked to do meanwhile ('' when nothing is the
        store's to do: a reboot is waited out, not asked about)."""
        out = []
        for inc in self._unfiled():
            hold = self.held(inc, now)
            if hold is None:
                continue
            ticket = self.compose(inc, now)
            ask = ""
            if meta(inc.check_id).family is Family.LIVEVIEW:
                finding = Finding.from_json(inc.last_finding)
                until = hold.until.astimezone(self.config.site(inc.site).calendar().tz)
                ask = (
                    f"{ticket.subject}. Please clear it at the store: "
                    f"{finding.remediation or 'see the ticket preview'} If it is still blocked "
                    f"at {until:%H:%M} on {until:%d %b}, a ticket goes to FootfallCam support."
                )
            out.append(Waiting(inc, ticket, hold, ask))
        return out

    def ask_store(self, now: datetime) -> list[Waiting]:
        """Tell the store (requester, CC, the site's chat) once about each held problem only
        it can fix — a covered or blocked view — and when a ticket follows if it stays. Every
        ticket held back this time, with what the store was asked (call inside the cycle's
        incident transaction: a notice is queued once per ask)."""
        waiting = self.waiting(now)
        for w in waiting:
            if w.ask:
                self.notifier.notify(Event.store_action(w.ticket, w.held.until, w.ask), now)
        return waiting

    def prepare(
        self, now: datetime, assessed: list[Assessed], policy: Policy, *, dry_run: bool = False
    ) -> dict[str, Prepared]:
        """Build, with no transaction open, the attachments of the tickets ``queue`` will file.

        Which incidents need a ticket is decided by ``apply`` in the incident transaction. It is
        asked here first, by running it in a transaction that is always rolled back (and is not
        logged: flips are logged once, when they happen); then the slow part — the bundle's
        image downscale, redaction and tar.gz — runs outside any transaction, so the incident
        transaction holds the write lock only to apply and enqueue. Keyed by ticket key."""
        if dry_run:
            return {}
        with self.store.rolled_back(), _unlogged(logging.getLogger(apply.__module__)):
            apply(self.store, assessed, now, policy)
            due = [
                (inc, self.compose(inc, now))
                for inc in self._due(now)
                if not self.shadowed(inc.check_id, inc.site)
            ]
        return {
            ticket.key: Prepared(
                ticket.to_json(), self.evidence.for_ticket(inc, ticket, now, assessed)
            )
            for inc, ticket in due
        }

    def queue(
        self,
        now: datetime,
        assessed: list[Assessed],
        *,
        dry_run: bool = False,
        prepared: Mapping[str, Prepared] | None = None,
    ) -> list[Ticket]:
        """Compose and queue a ticket for every filed-state incident that has none yet (a
        new flip, or one a crash or a dry run left without). Shadowed ones are kept back.

        Runs inside the incident transaction: the attachments come from ``prepared`` when it
        holds this very ticket, else they are built here (a ticket never leaves without its
        bundle; the runner prepares every one, so this is a fallback, not the way)."""
        out: list[Ticket] = []
        for inc in self._due(now):
            ticket = self.compose(inc, now)
            out.append(ticket)
            if dry_run:
                continue
            shadow = self.shadowed(inc.check_id, inc.site)
            if shadow:
                self.store.add_shadow_ticket(now, inc.id, shadow, ticket.to_json())
                self.store.set_incident_ticket(inc.id, ticket.key, None)
                log.warning("shadow mode, not filed (%s): %s", shadow, ticket.subject)
                continue
            ready = (prepared or {}).get(ticket.key)
            if ready is not None and ready.ticket == ticket.to_json():
                attachments = ready.attachments
            else:
                log.info("bundle of %s built in the incident transaction: not prepared", ticket.key)
                attachments = self.evidence.for_ticket(inc, ticket, now, assessed)
            self.outbox.enqueue_ticket(
                self.sinks,
                ticket,
                incident_id=inc.id,
                attachments=attachments,
                bundle=next((name for name in attachments if is_bundle(name)), None),
                now=now,
            )
            self.store.set_incident_ticket(inc.id, ticket.key, None)
        return out

    def compose(self, inc: Incident, now: datetime) -> Ticket:
        finding = Finding.from_json(inc.last_finding)
        site = self.config.site(inc.site)
        counters = tuple(
            CounterRef(c.serial, c.name, c.host)
            for c in self.config.counters
            if c.serial == inc.subject
        )
        devices = tuple(device_facts(self.config, self.store, c.serial) for c in counters)
        started_at = self.started(inc)
        ctx = ProblemContext(
            key=idempotency_key(inc.check_id, inc.subject or inc.site, started_at),
            site_code=site.code,
            site_name=site.name,
            timezone=site.timezone,
            counters=counters,
            findings=(finding,),
            started_at=started_at,
            requester=self.config.agent.requester,
            cc=tuple(self.config.agent.cc),
            role=Role(self.config.agent.role),
            now=now,
            devices=devices,
        )
        ticket = compose(ctx)
        earlier = self.earlier_ticket(inc)
        if earlier:
            ticket = ticket.with_message(
                now,
                "ffc-agent",
                f"This problem was reported before in ticket {earlier} and has come back.",
            )
        # the composer knows no secrets, but evidence text may carry one: scrub before it leaves
        return Ticket.from_json(self.redactor.data(ticket.to_json()))

    def earlier_ticket(self, inc: Incident) -> str | None:
        """The ticket of the last resolved incident of the same problem, if there was one."""
        same = self.store.incidents(subject=inc.subject, check_id=inc.check_id, site=inc.site)
        for old in reversed(same):
            if old.id != inc.id and old.state == RESOLVED and old.ticket_number:
                return old.ticket_number
        return None

    def follow_up(self, flips: list[Flip], now: datetime) -> None:
        """Tell the ticket when its problem heals (and suggest closing), or comes back; and
        queue the notice of each change with it (call inside the incident's transaction)."""
        for flip in flips:
            inc = flip.incident
            if inc.ticket_key is None:
                continue  # a ticket filed is followed up, whatever its check is called now
            status: str | None = None  # a message alone, unless the problem healed
            if flip.to_state == RESOLVED:
                why = flip.reason.removeprefix("recovered: ")
                body = (
                    f"Recovered: {why}. The agent suggests closing this ticket; the next step "
                    "is the customer's: confirm, or reply if the store still sees the problem "
                    "(a ticket left in Suggest To Close closes itself after 7 days)."
                )
                status = "Suggest To Close"
            elif flip.from_state == RECOVERING and flip.to_state == OPEN:
                body = f"The problem is back: {inc.summary}"
            elif flip.to_state == INTERMITTENT and flip.from_state is not None:
                body = f"The problem is intermittent: {flip.reason}"
            else:
                continue
            self.outbox.enqueue_message(
                self.sinks,
                inc.ticket_key,
                author="ffc-agent",
                at=now,
                body=body,
                status=status,
                incident_id=inc.id,
                now=now,
            )
            ticket = self.outbox.ticket(inc.ticket_key)
            if ticket is None:
                continue
            if inc.ticket_number:
                ticket = ticket.model_copy(update={"number": inc.ticket_number})
            # one notice per change, whichever destinations carry it
            if status is not None:
                self.notifier.notify(Event.status_changed(ticket.with_status(status, now)), now)
            else:
                message = Message(at=now, author="ffc-agent", body=body)
                self.notifier.notify(Event.new_message(ticket, message), now)

    def deliver(self, now: datetime) -> list[Ticket]:
        """Run the outbox once (tickets, follow-ups and notices); the tickets it created (or
        joined) this time. A ticket's "filed" notice is queued in the transaction that
        records its delivery, and sent by the next ``notifier.flush``."""
        self.redactor.tokens(CounterClient.tokens())
        out: list[Ticket] = []
        self.last_filed = Counter()

        def announce(d: Delivery) -> None:
            if d.item.kind != "create":
                return
            data = {**d.item.payload["ticket"], "number": d.number}
            out.append(Ticket.from_json(data))
            self.notifier.notify(Event.filed(out[-1], now), now)

        destinations: list[Sink | Channel] = [*self.sinks, *self.notifier.channels]
        for d in self.outbox.deliver(
            destinations, now, heartbeat=self.heartbeat, announce=announce
        ):
            if d.item.kind == "create" and d.outcome in ("delivered", "joined", "found"):
                self.last_filed[d.item.sink] += 1
                self.store.audit(
                    now,
                    "agent",
                    "ticket.filed",
                    d.number or d.item.key,
                    {"sink": d.item.sink, "outcome": d.outcome, "incident": d.item.incident_id},
                )
                log.warning("ticket %s %s in %s", d.number, d.outcome, d.item.sink)
        return out

    def notify_overdue(self, now: datetime) -> None:
        """Tell people once when an open ticket runs past its category's SLA."""
        for sink in self.sinks:
            if not isinstance(sink, LocalSink):
                continue  # the helpdesks track their own SLAs and tell their own people
            for ticket in sink.list():
                if is_overdue(ticket, now):
                    self.notifier.notify(Event.sla_overdue(ticket, now), now)

    def close_suggested(self, now: datetime) -> None:
        """In the local ticket store, Suggest To Close becomes Closed after 7 days."""
        for sink in self.sinks:
            if not isinstance(sink, LocalSink):
                continue
            for ticket in sink.list():
                if (
                    ticket.status == "Suggest To Close"
                    and ticket.number
                    and now - ticket.updated_at >= SUGGEST_TO_CLOSE_DAYS
                ):
                    closed = sink.set_status(ticket.number, "Closed", now)
                    self.notifier.notify(Event.status_changed(closed, now), now)
                    self.store.audit(
                        now,
                        "agent",
                        "ticket.closed",
                        ticket.number,
                        {"why": "7 days in Suggest To Close"},
                    )

    def sync(self, now: datetime) -> list[StatusChange]:
        """Read every delivered ticket's status back where the destination can be read, and
        record the changes (the destinations' own status names mapped to the portal's);
        escalate each one whose support line ran past its SLA (``escalated`` lists them)."""
        changes: list[StatusChange] = []
        self.escalated = []
        by_name = {s.name: s for s in self.sinks}
        for item in self.outbox.items(states=(DELIVERED,), kinds=("create",)):
            sink = by_name.get(item.sink)
            if sink is None or not item.number:
                continue
            if not getattr(sink, "readable", True):
                continue  # e-mail and webhooks cannot be read back: no status of theirs is news
            if self.store.ticket_status(sink.name, item.number) == "Closed":
                continue  # a closed ticket stays closed: a comeback gets a new one
            try:
                ticket = sink.get(item.number)
            except SinkError as exc:
                log.warning("cannot read ticket %s from %s: %s", item.number, sink.name, exc)
                continue
            if ticket is None:
                continue
            to = self.escalate(sink, item.key, ticket, now)
            if to is not None:
                self.escalated.append(
                    {"sink": sink.name, "number": item.number, "from": ticket.stage, "to": to}
                )
            before = self.store.ticket_status(sink.name, item.number)
            status = str(ticket.status)
            if before == status:
                continue
            with self.store.transaction():  # the change and its notice: both or neither
                self.store.set_ticket_status(sink.name, item.number, item.key, status, now)
                if before is None:
                    continue
                changes.append(StatusChange(sink.name, item.number, before, status, ticket))
                if status not in self._statuses_sent(sink.name, item.key):
                    # the agent's own change was announced when it was queued
                    self.notifier.notify(Event.status_changed(ticket, now), now)
                self.store.audit(
                    now,
                    "agent",
                    "ticket.status",
                    item.number,
                    {"sink": sink.name, "from": before, "to": status},
                )
        return changes

    def escalate(self, sink: Sink, key: str, ticket: Ticket, now: datetime) -> Stage | None:
        """Hand ``ticket`` (the outbox's ticket ``key`` in ``sink``) to the next support line if
        its line ran past its SLA, once; the line it went to, or None."""
        view = ticket_sla(ticket, now)
        to = view.escalate_to
        if to is None or not ticket.number or not hasattr(sink, "set_stage"):
            return None
        if self._escalated(sink.name, key, to):
            return None
        line = view.current
        due = line.due.isoformat() if line.due else ""
        body = (
            f"The {line.stage.label.lower()} has had this ticket since "
            f"{_when(line.since or ticket.created_at)}, and its {line.sla_days}-day SLA ran out "
            f"on {_when(line.due)} without an answer. The agent escalates the ticket to the "
            f"{to.label.lower()} ({to.description})."
        )
        with self.store.transaction():  # the hand-over, its notice and the audit: all or none
            self.outbox.enqueue_message(
                [sink], key, author="ffc-agent", body=body, at=now, stage=to.value, now=now
            )
            self.notifier.notify(Event.escalated(ticket, line.stage, to, now), now)
            self.store.audit(
                now,
                "agent",
                "ticket.escalated",
                ticket.number,
                {"sink": sink.name, "from": line.stage.value, "to": to.value, "due": due},
            )
        log.warning(
            "ticket %s in %s: %s SLA ran out, escalated to the %s",
            ticket.number,
            sink.name,
            line.stage.label.lower(),
            to.label.lower(),
        )
        return to

    def _escalated(self, sink: str, key: str, to: Stage) -> bool:
        """Whether a hand-over of ``key`` to ``to`` was ever queued for ``sink``. One the
        destination refused counts too: it is an ``agent.outbox`` finding, and ``tickets
        retry`` sends it again; a fresh one every cycle would pile up refusals."""
        return any(
            i.payload.get("stage") == to.value
            for i in self.outbox.items(sink=sink, key=key, kinds=("message", "status"))
        )

    def add_task(
        self, key: str, task: Task, now: datetime, *, incident_id: int | None = None
    ) -> list[int]:
        """Queue ``task`` for the task list of ticket ``key`` in every destination that keeps
        one (the local store, RT); a task of the same name is updated. Call inside the
        transaction of the change it records; the next ``deliver`` sends it."""
        return self.outbox.enqueue_task(
            self.sinks, key, task, at=now, incident_id=incident_id, now=now
        )

    def _statuses_sent(self, sink: str, key: str) -> set[str]:
        return {
            str(i.payload["status"])
            for i in self.outbox.items(states=(DELIVERED,), sink=sink, key=key, kinds=("status",))
        }


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M %Z}".strip() if at else "its due time"


def device_facts(config: Config, store: Store, serial: str) -> DeviceFacts:
    """A counter's identity as the device last reported it (its API answers, newest first),
    its MAC from the gateway's ARP table, and what remote access the agent has to it."""
    counter = config.counter(serial)
    reported: dict[str, str] = {}
    for obs in store.observations(serial, "api", limit=50):
        for key in ("serial", "model", "firmware"):
            value = obs.data.get(key)
            if isinstance(value, str) and value and key not in reported:
                reported[key] = value
        if len(reported) == 3:
            break
    entry = arp_entry(counter.host) if counter.host else None
    return DeviceFacts(
        serial=serial,
        model=reported.get("model"),
        firmware=reported.get("firmware"),
        reported_serial=reported.get("serial"),
        mac=entry["mac"] if entry and entry.get("complete") else None,
        remote_access=remote_access(config, store, serial),
    )


def remote_access(config: Config, store: Store, serial: str) -> str:
    """The agent's remote access to a counter, in one plain sentence for support."""
    counter = config.counter(serial)
    poe = (
        "the agent can power-cycle it (PoE)"
        if counter.poe_port and config.remediation.poe_command
        else "no remote power-cycle configured"
    )
    if counter.ssh is None:
        return f"SSH not configured: deep checks unavailable; {poe}"
    last = next(iter(store.observations(serial, "ssh", limit=1)), None)
    if last is None:
        return f"SSH configured but not tried yet; {poe}"
    if not last.ok:
        why = _words(str(last.error_code or "error"))
        return f"SSH configured but failing ({why}): deep checks unavailable; {poe}"
    return f"SSH works: deep checks available; {poe}"


def _words(code: str) -> str:
    return code.replace("_", " ")


@dataclass(frozen=True)
class Held:
    """Why a ticket waits, and until when."""

    why: str
    until: datetime


@dataclass(frozen=True)
class Waiting:
    """A ticket held back on purpose: its incident, the ticket that follows if the problem
    stays, why it waits and until when, and what the store was asked ('' if nothing)."""

    incident: Incident
    ticket: Ticket
    held: Held
    ask: str = ""

    def to_json(self) -> dict[str, Any]:
        inc = self.incident
        return {
            "check_id": inc.check_id,
            "site": inc.site or None,
            "counter": inc.subject or None,
            "subject": self.ticket.subject,
            "why": self.held.why,
            "until": self.held.until.isoformat(),
            "store_asked": self.ask or None,
        }


@dataclass(frozen=True)
class Prepared:
    """A ticket as composed before the incident transaction, and its attachments."""

    ticket: dict[str, Any]
    attachments: dict[str, bytes]


@contextmanager
def _unlogged(logger: logging.Logger) -> Iterator[None]:
    def drop(record: logging.LogRecord) -> bool:
        return False

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@dataclass(frozen=True)
class StatusChange:
    sink: str
    number: str
    before: str
    after: str
    ticket: Ticket
