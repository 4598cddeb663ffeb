"""Tickets in Request Tracker 5, over its REST 2 API with an auth token.

A retail chain's helpdesk is often RT: support staff work the agent's tickets in the queues they
already watch, and every gateway of the chain files into the same RT. So filing must be exactly
once even when two gateways watch the same counters or a gateway dies mid-request, and a ticket
a person raised by hand for the same counter must be joined, not duplicated.

What goes to RT, in one ``POST /REST/2.0/ticket``: the queue of the ticket's category
(``queues``, else ``queue``), the subject, the requester and CC, the portal page of the ticket as
the body (``render_markdown``), the diagnostics bundle and any other attachments, and
``ffc-ticket.json`` — the ticket's JSON, from which ``get`` rebuilds it. The idempotency key is
in the custom field ``key_field`` when one is configured (checked to apply to the queue before
the first create: RT silently drops unknown custom fields), else in the subject as
``[ffc-key:<key>]``. The number is RT's ticket id, as people say it: ``"123"``.

Exactly once: ``file`` searches for the key before creating. A create whose answer never came
(a read timeout, a connection dropped after sending, a 5xx) raises ``OutcomeUnknown``, so the
outbox asks ``find_by_key`` before trying again. RT cannot refuse a second ticket with the same
key, so two can still appear: two gateways filing at the same moment, or a retry that searched
while RT was still working on the lost create. Therefore the key is searched once more after
every create, and whoever sees two tickets for a key (that check, or any ``find_by_key``) keeps
the oldest and rejects the newer with a comment pointing at it; ``find_by_key`` always answers
the oldest. Count a key's tickets without the rejected ones.

Statuses (DESIGN.md §2) both ways. RT's default lifecycle has fewer states than the portal, so
``set_status`` also writes an internal comment ``[ffc-status:<status>; next:<next action>]``;
``get`` uses the newest such marker only if no status change happened in RT after it (a person
working the ticket in RT always wins):

    portal -> RT                          RT -> portal (without a valid marker)
    Open                      -> open     new, open      -> Open, waiting on FootfallCam
    Revalidation In Progress  -> open     stalled        -> Open, waiting on customer
    Difficult To Tune         -> open     resolved,
    Suggest To Close          -> stalled    rejected,
    Closed                    -> resolved   deleted      -> Closed
                                          other (custom lifecycles) -> Open

The support line (``stage``, with the third line's plan and ETA) and the task list have no
place in RT's own fields, and custom fields would have to exist in every queue of every RT. So
they are internal comments, like the status: ``set_stage`` and ``add_task`` write a sentence for
the people reading RT and one line the agent reads back, ``ffc-stage: {json}`` (stage, since,
plan, eta) or ``ffc-task: {json}`` (the ``Task`` fields), a JSON object on one line. ``get``
applies them oldest first: the newest stage line stands, and a task line replaces the task of
the same name. Support staff can move a ticket or add a task by writing such a line in a
comment; one that does not parse is ignored (logged), never an error.

``set_status`` changes RT's status only when the target is in another group (a "new" ticket
stays "new" for Open); "stalled" rather than "resolved" for Suggest To Close because the portal
keeps such a ticket open for 7 days, and a stalled ticket is not closed.

A ticket raised by hand (no key) is joined by ``find_open`` when it is active in the category's
queue and its subject names one of the counter serials as a whole word (a site-level problem:
the site code). Subjects only: RT without full-text indexing cannot search bodies. Such a
ticket reads back with key ``rt-<id>``, its first message as the "what" answer, and the site and
counters it was matched on (``get`` alone does not know them: site "" and no counters).

Errors: connection failures, timeouts, 408, 429 and 5xx are transient (``RtError.retry_after``
carries RT's ``Retry-After``); 401, 403, other 4xx, redirects and certificates that do not
verify are permanent. Every call has a (connect, read) timeout and a size cap, a POST is never
retried by the HTTP layer, and the token is sent only in the ``Authorization`` header: it never
appears in errors, logs or reprs. Error texts never include ``str()`` of a library exception.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict

from agent.delivery.sinks.base import (
    OutcomeUnknown,
    SinkError,
    content_type,
    same_problem,
    unanswered,
)
from agent.delivery.sinks.local import render_markdown
from agent.transport.http import Session, make_session, request
from diagnostics.model import SYSTEM_CLOCK, Clock, ProbeError, ProbeErrorCode
from rma.tickets import (
    Attachment,
    Category,
    Comment,
    Message,
    NextAction,
    Stage,
    Task,
    Ticket,
    TicketStatus,
)

if TYPE_CHECKING:
    from agent.config import RtSinkConfig

log = logging.getLogger(__name__)

TICKET_JSON = "ffc-ticket.json"
MAX_REPLY_BYTES = 8 * 1024 * 1024
MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024
MAX_RETRY_AFTER_S = 24 * 3600
CONNECT_TIMEOUT_S = 10.0
MAX_MESSAGES = 100  # the newest correspondence a ``get`` reads back
MAX_LISTED = 500  # tickets ``list`` returns; each one costs a few requests
SUBJECT_MAX = 200  # RT's Subject column

_OPEN, _STALLED, _CLOSED = "open", "stalled", "closed"
_CLOSED_RT = {"resolved", "rejected", "deleted"}
_TO_RT: dict[TicketStatus, str] = {
    TicketStatus.OPEN: "open",
    TicketStatus.REVALIDATION_IN_PROGRESS: "open",
    TicketStatus.DIFFICULT_TO_TUNE: "open",
    TicketStatus.SUGGEST_TO_CLOSE: "stalled",
    TicketStatus.CLOSED: "resolved",
}
_MARKER_RE = re.compile(r"\[ffc-status:\s*([^;\]]+?)\s*(?:;\s*next:\s*([^\]]+?)\s*)?\]")
_LINE_RE = re.compile(r"^ffc-(stage|task): (\{.*\})\s*$", re.MULTILINE)
_TRANSIENT = {408, 425, 429}
_HERE = "this-ticket"  # the number placeholder while rendering a page RT will number


class _StageLine(BaseModel):
    """An ``ffc-stage:`` line's JSON (module docstring); ``since`` defaults to the comment's."""

    model_config = ConfigDict(extra="ignore")

    stage: Stage
    since: datetime | None = None
    plan: str | None = None
    eta: date | None = None


class RtError(SinkError):
    """RT refused or failed a call. ``status`` and ``retry_after`` as in ``SinkError``."""


def _group(rt_status: str) -> str:
    if rt_status in _CLOSED_RT:
        return _CLOSED
    return _STALLED if rt_status == "stalled" else _OPEN


def portal_status(rt_status: str) -> tuple[TicketStatus, NextAction]:
    """The portal status and next action of an RT status, when no marker says more."""
    group = _group(rt_status)
    if group == _CLOSED:
        return TicketStatus.CLOSED, NextAction.WAITING_ON_FOOTFALLCAM
    if group == _STALLED:
        return TicketStatus.OPEN, NextAction.WAITING_ON_CUSTOMER
    return TicketStatus.OPEN, NextAction.WAITING_ON_FOOTFALLCAM


def rt_status(status: TicketStatus | str) -> str:
    """The RT status ``set_status`` writes for a portal status."""
    return _TO_RT[TicketStatus(status)]


class RtSink:
    """Request Tracker 5 over REST 2; see the module docstring for the contract."""

    def __init__(
        self, config: RtSinkConfig, session: Session | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if config.token is None or not config.token.get_secret_value():
            raise SinkError(f"{config.label}: no RT token configured", permanent=True)
        self.config = config
        self.name = config.label
        self._clock = clock
        self._token = config.token  # a SecretStr: its repr never shows the value
        self._api = config.url.rstrip("/") + "/REST/2.0/"
        parts = urlsplit(config.url)
        self._origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        verify: bool | str = config.verify_tls
        if config.verify_tls and config.ca_file is not None:
            verify = str(config.ca_file)
        self._session = session if session is not None else make_session(verify=verify)
        self._timeout = (
            min(float(config.timeout_seconds), CONNECT_TIMEOUT_S),
            float(config.timeout_seconds),
        )
        self._queues_checked: set[str] = set()
        self._queue_names: dict[str, str] = {}  # RT queue id -> name
        # ffc-ticket.json never changes once filed (and a hand-raised ticket never gets one):
        # remembering it saves two of the five calls a ``get`` makes, and lets ``find_open``
        # sort the agent's own open tickets without reading each one in full.
        self._records: dict[str, Ticket | None] = {}

    def full_number(self, number: str) -> str:
        """Ticket ``number`` as typed so that only RT reads it (``RT-1``): the bare ``1`` is
        also the local store's ``L-000001`` (``agent.delivery.numbers``)."""
        return f"RT-{number}"

    def __repr__(self) -> str:
        return f"RtSink({self.name!r}, {self._origin!r})"

    # --- the Sink contract

    def file(self, ticket: Ticket, attachments: Mapping[str, bytes] | None = None) -> Ticket:
        files = {_safe_name(name): bytes(data) for name, data in (attachments or {}).items()}
        queue = self.queue_for(ticket.category)
        self._check_queue(queue)
        existing = self.find_by_key(ticket.key)
        if existing is not None:
            return existing

        stored = [_describe(name, data) for name, data in files.items()]
        kept = [a for a in ticket.attachments if a.name not in files]
        record = ticket.model_copy(update={"number": None, "attachments": [*kept, *stored]})
        record_json = json.dumps(record.to_json(), ensure_ascii=True, indent=1).encode()
        uploads = [
            {
                "FileName": a.name,
                "FileType": a.content_type,
                "FileContent": base64.b64encode(files[a.name]).decode("ascii"),
            }
            for a in stored
        ]
        uploads.append(
            {
                "FileName": TICKET_JSON,
                "FileType": "application/json",
                "FileContent": base64.b64encode(record_json).decode("ascii"),
            }
        )
        payload: dict[str, Any] = {
            "Queue": queue,
            "Subject": self._subject(ticket),
            "Content": _page(record),
            "ContentType": "text/plain",
            "Attachments": uploads,
        }
        if ticket.requester:
            payload["Requestor"] = ticket.requester
        if ticket.cc:
            payload["Cc"] = list(ticket.cc)
        if self.config.key_field:
            payload["CustomFields"] = {self.config.key_field: ticket.key}

        reply = self._call("POST", "ticket", body=payload, what="create ticket", create=True)
        number = _created_id(reply)
        if number is None:
            raise OutcomeUnknown(
                f"{self.name}: RT accepted the ticket but its answer names no ticket id; "
                f"search for {ticket.key} before filing again"
            )
        log.info("filed RT ticket %s in queue %s: %s", number, queue, ticket.subject)
        try:
            items = self._with_key(ticket.key)
        except SinkError as exc:
            # Filed; a racing twin, if there is one, is rejected by the next search by key.
            log.warning("%s: could not check ticket %s for a twin: %s", self.name, number, exc)
            items = []
        if items:
            self._reject_duplicates(ticket.key, items)
            oldest = str(items[0]["id"])
            if oldest != number:  # another gateway was first: its ticket is the one
                winner = self.get(oldest)
                if winner is not None:
                    return winner
        return record.model_copy(update={"number": number})

    def find_by_key(self, key: str) -> Ticket | None:
        """The oldest ticket with ``key``; newer duplicates, if any, are rejected on sight."""
        items = self._with_key(key)
        if not items:
            return None
        self._reject_duplicates(key, items)
        return self.get(str(items[0]["id"]))

    def find_open(
        self, site: str, counters: Iterable[str], category: Category | str
    ) -> Ticket | None:
        counters = builtins.list(counters)
        queue = self.queue_for(category)
        words = counters or [site]
        mention = " OR ".join(f"Subject LIKE {_sql(w)}" for w in words if w)
        query = f"Queue = {_sql(queue)} AND Status = '__Active__'"
        query += f" AND ({self._has_key_sql()}" + (f" OR {mention})" if mention else ")")
        items = self._search(query, fields="Subject,CustomFields", order="DESC")
        for item in items:
            number = str(item.get("id", ""))
            subject = str(item.get("Subject") or "")
            if self._key_of(item) is not None:
                # site, counters and category never change after filing: the stored record
                # (cached) answers, and only the match is read in full
                record = self._stored(number)
                if record is not None and same_problem(record, site, counters, category):
                    ticket = self.get(number)
                    if ticket is not None and ticket.is_open:
                        return ticket
                continue
            named = [w for w in words if w and _names(subject, w)]
            if named:
                ticket = self.get(
                    number, site=site, counters=named if counters else (), category=category
                )
                if ticket is not None and ticket.is_open:
                    return ticket
        return None

    def add_message(
        self,
        number: str,
        author: str,
        body: str,
        at: datetime,
        attachments: Mapping[str, bytes] | None = None,
    ) -> Ticket:
        """Correspondence on the ticket: the conversation the requester and CC see, with
        ``attachments`` in the same request (RT keeps them on that transaction, under their
        own names). RT records the token's user as its author and its own time;
        ``author``/``at`` are the portal's and are not sent."""
        files = {_safe_name(name): bytes(data) for name, data in (attachments or {}).items()}
        tid = self._ticket_id(number)
        payload: dict[str, Any] = {"Content": body, "ContentType": "text/plain"}
        if files:
            payload["Attachments"] = [
                {
                    "FileName": name,
                    "FileType": _describe(name, data).content_type,
                    "FileContent": base64.b64encode(data).decode("ascii"),
                }
                for name, data in files.items()
            ]
        self._call("POST", f"ticket/{tid}/correspond", body=payload, what=f"reply on ticket {tid}")
        ticket = self._must_get(tid)
        if not files:
            return ticket
        # ``get`` lists the files filed with the ticket; these came later, with the reply
        return ticket.model_copy(
            update={
                "attachments": [*ticket.attachments, *(_describe(n, d) for n, d in files.items())]
            }
        )

    def get(
        self,
        number: str,
        *,
        site: str = "",
        counters: Iterable[str] = (),
        category: Category | str | None = None,
    ) -> Ticket | None:
        """The ticket as RT has it now, or None if RT has no such ticket.

        ``site``, ``counters`` and ``category`` describe a ticket raised by hand, which carries
        none of them; an ffc-agent ticket has its own."""
        tid = _parse_number(number)
        if tid is None:
            return None
        data = self._get_json(f"ticket/{tid}", what=f"read ticket {tid}", missing_ok=True)
        if data is None:
            return None
        history = self._history(tid)
        texts = self._texts(history)
        record = self._stored(tid)
        if record is None:
            record = self._hand_ticket(tid, data, history, texts, site, counters, category)
        return self._current(tid, record, data, history, texts)

    def list(self, *, active_only: bool = False) -> builtins.list[Ticket]:
        """Every ffc-agent ticket in RT, oldest first (at most MAX_LISTED); a rejected
        duplicate of a key is left out, as ``find_by_key`` would never answer it. Whichever
        gateway filed it: all of a chain's gateways file into the same RT. ``active_only``:
        only those RT still has in play (new, open, stalled)."""
        query = self._has_key_sql()
        if active_only:
            query = f"Status = '__Active__' AND {query}"
        items = self._search(query, fields="Subject,CustomFields", order="ASC")
        tickets = []
        keys: set[str] = set()
        for item in items[:MAX_LISTED]:
            key = self._key_of(item)
            if key is None or key in keys:
                continue
            keys.add(key)
            ticket = self.get(str(item["id"]))
            if ticket is not None:
                tickets.append(ticket)
        return tickets

    # --- beyond the contract: follow-up moves tickets along

    def set_status(
        self,
        number: str,
        status: TicketStatus | str,
        at: datetime,
        next_action: NextAction | str | None = None,
    ) -> Ticket:
        target = TicketStatus(status)
        wanted = rt_status(target)
        action = NextAction(next_action) if next_action is not None else portal_status(wanted)[1]
        tid = self._ticket_id(number)
        data = self._get_json(f"ticket/{tid}", what=f"read ticket {tid}", missing_ok=True)
        if data is None:
            raise RtError(f"{self.name}: RT has no ticket {tid}", permanent=True, status=404)
        current = str(data.get("Status") or "")
        if _group(current) != _group(wanted):
            said = self._call(
                "PUT", f"ticket/{tid}", body={"Status": wanted}, what=f"update ticket {tid}"
            )
            after = self._get_json(f"ticket/{tid}", what=f"read ticket {tid}")
            if after is None or _group(str(after.get("Status") or "")) != _group(wanted):
                raise RtError(
                    f"{self.name}: RT did not move ticket {tid} from {current!r} to "
                    f"{wanted!r}: {_said(said)}",
                    permanent=True,
                )
        marker = (
            f"ffc-agent: support-portal status {target.value!r}, next action "
            f"{action.value!r} (at {at.isoformat()}).\n"
            f"[ffc-status:{target.value}; next:{action.value}]"
        )
        self._call(
            "POST",
            f"ticket/{tid}/comment",
            body={"Content": marker, "ContentType": "text/plain"},
            what=f"comment on ticket {tid}",
        )
        return self._must_get(tid)

    def set_stage(
        self,
        number: str,
        stage: Stage | str,
        at: datetime,
        *,
        plan: str | None = None,
        eta: date | None = None,
    ) -> Ticket:
        """Hand the ticket to support line ``stage``: an internal comment (module docstring)."""
        stage = Stage(stage)
        line = {"stage": stage.value, "since": at.isoformat(), "plan": plan, "eta": eta}
        said = (
            f"ffc-agent: the ticket is with support's {stage.label.lower()} ({stage.description})"
        )
        if plan:
            said += f"; plan: {plan}"
        if eta:
            said += f"; ETA {eta.isoformat()}"
        return self._structured(number, said + ".", "stage", line)

    def add_task(self, number: str, task: Task, at: datetime) -> Ticket:
        """Add ``task`` (or news of it) to the task list: an internal comment."""
        due = f", due {task.due.isoformat()}" if task.due else ""
        said = (
            f"ffc-agent: task {task.task!r} ({task.type.value}, {task.hours:g} h{due}): "
            f"{task.status}."
        )
        return self._structured(number, said, "task", task.model_dump(mode="json"))

    def _structured(self, number: str, said: str, kind: str, data: Mapping[str, Any]) -> Ticket:
        tid = self._ticket_id(number)
        line = json.dumps(data, ensure_ascii=True, default=str, separators=(",", ":"))
        self._call(
            "POST",
            f"ticket/{tid}/comment",
            body={"Content": f"{said}\nffc-{kind}: {line}", "ContentType": "text/plain"},
            what=f"comment on ticket {tid}",
        )
        return self._must_get(tid)

    def queue_for(self, category: Category | str) -> str:
        return self.config.queues.get(Category(category).value, self.config.queue)

    # --- reading RT back into portal tickets

    def _stored(self, tid: str) -> Ticket | None:
        """The ticket JSON filed with the create (None for a ticket raised by hand), once."""
        if tid not in self._records:
            if len(self._records) >= MAX_LISTED:
                self._records.clear()
            self._records[tid] = self._record(tid)
        return self._records[tid]

    def _record(self, tid: str) -> Ticket | None:
        parts = self._pages(
            f"ticket/{tid}/attachments",
            {"fields": "Filename", "orderby": "id", "order": "ASC"},
            what=f"list the attachments of ticket {tid}",
        )
        # the first one: ours, attached by the create; a later upload of the name is not
        found = next((p for p in parts if p.get("Filename") == TICKET_JSON), None)
        if found is None:
            return None
        raw = self._attachment_bytes(str(found["id"]))
        try:
            return Ticket.from_json(json.loads(raw))
        except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError both
            log.warning(
                "%s: ticket %s has an unreadable %s (%s); reading it as raised by hand",
                self.name,
                tid,
                TICKET_JSON,
                type(exc).__name__,
            )
            return None

    def _hand_ticket(
        self,
        tid: str,
        data: Mapping[str, Any],
        history: builtins.list[dict[str, Any]],
        texts: Mapping[str, str],
        site: str,
        counters: Iterable[str],
        category: Category | str | None,
    ) -> Ticket:
        queue = self._queue_name(data.get("Queue"))
        created = _when(data.get("Created")) or self._clock.now()
        first = next((t for t in history if t.get("Type") == "Create"), None)
        what = (texts.get(str(first["id"]), "") if first else "").strip()
        unknown = "Not stated: this ticket was raised by hand in Request Tracker."
        counters = builtins.list(counters)
        requestors = [str(r.get("id")) for r in data.get("Requestor") or [] if r.get("id")]
        chosen = Category(category) if category else self._category_of(queue)
        return Ticket(
            key=f"rt-{tid}",
            issue_level="counter" if counters else "site",
            counter_unassigned=not counters,
            site=site,
            counters=counters,
            subject=str(data.get("Subject") or "").strip() or f"RT ticket {tid}",
            category=chosen,
            sla_days=chosen.sla_days,
            occurred_on=created.date(),
            comment=Comment(
                what=what or str(data.get("Subject") or "") or unknown,
                where=unknown,
                when=f"Raised in Request Tracker on {created:%Y-%m-%d %H:%M} UTC.",
                which_device=", ".join(counters) or unknown,
                how=unknown,
            ),
            cc=[str(c.get("id")) for c in data.get("Cc") or [] if c.get("id")],
            requester=requestors[0] if requestors else "",
            created_at=created,
            updated_at=created,
        )

    def _current(
        self,
        tid: str,
        record: Ticket,
        data: Mapping[str, Any],
        history: builtins.list[dict[str, Any]],
        texts: Mapping[str, str],
    ) -> Ticket:
        """``record`` with what RT knows now: number, status, conversation, last update."""
        rt = str(data.get("Status") or "")
        status, action = portal_status(rt)
        last_change = max((int(t["id"]) for t in history if t.get("Type") == "Status"), default=0)
        for txn in reversed(history):
            if txn.get("Type") != "Comment":
                continue
            marker = _MARKER_RE.search(texts.get(str(txn["id"]), ""))
            if marker is None:
                continue
            if int(txn["id"]) > last_change:
                try:
                    marked = TicketStatus(marker.group(1))
                    marked_action = NextAction(marker.group(2)) if marker.group(2) else action
                except ValueError:
                    break
                if _group(rt_status(marked)) == _group(rt):
                    status, action = marked, marked_action
            break  # only the newest marker counts
        messages = [
            Message(
                at=_when(txn.get("Created")) or record.created_at,
                author=str((txn.get("Creator") or {}).get("id") or "RT"),
                body=texts.get(str(txn["id"]), ""),
            )
            for txn in history
            if txn.get("Type") == "Correspond"
        ]
        updated = _when(data.get("LastUpdated")) or record.updated_at
        current = Ticket.model_validate(
            {
                **record.model_dump(),
                "number": tid,
                "status": status,
                "next_action": action,
                "messages": [*record.model_dump()["messages"], *messages],
                "updated_at": max(updated, record.created_at),
            }
        )
        return self._structured_lines(tid, current, history, texts)

    def _structured_lines(
        self,
        tid: str,
        ticket: Ticket,
        history: builtins.list[dict[str, Any]],
        texts: Mapping[str, str],
    ) -> Ticket:
        """``ticket`` with the stage and task lines of its comments applied, oldest first."""
        for txn in history:
            if txn.get("Type") != "Comment":
                continue
            for kind, raw in _LINE_RE.findall(texts.get(str(txn["id"]), "")):
                at = _when(txn.get("Created")) or ticket.updated_at
                try:
                    data = json.loads(raw)
                    if kind == "task":
                        ticket = ticket.with_task(Task.model_validate(data), ticket.updated_at)
                        continue
                    line = _StageLine.model_validate(data)
                    since = line.since or at
                    if since.tzinfo is None:  # written by a person: RT speaks UTC
                        since = since.replace(tzinfo=UTC)
                    ticket = ticket.with_stage(
                        line.stage, since, plan=line.plan, eta=line.eta
                    ).model_copy(update={"updated_at": ticket.updated_at})
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning(
                        "%s: ticket %s: ignoring an unreadable ffc-%s line (%s)",
                        self.name,
                        tid,
                        kind,
                        type(exc).__name__,
                    )
        return ticket

    def _history(self, tid: str) -> builtins.list[dict[str, Any]]:
        return self._pages(
            f"ticket/{tid}/history",
            {"fields": "Type,Field,NewValue,Created,Creator"},
            what=f"read the history of ticket {tid}",
        )

    def _texts(self, history: builtins.list[dict[str, Any]]) -> dict[str, str]:
        """The plain-text body of each create, reply and comment, by transaction id."""
        wanted = [
            int(t["id"]) for t in history if t.get("Type") in ("Create", "Correspond", "Comment")
        ][-MAX_MESSAGES:]
        if not wanted:
            return {}
        query = [{"field": "TransactionId", "value": i} for i in wanted]
        query.append({"field": "ContentType", "value": "text/plain", "entry_aggregator": "AND"})
        items = self._pages(
            "attachments",
            {"query": json.dumps(query), "fields": "TransactionId,Filename,Content"},
            what="read messages",
        )
        texts: dict[str, str] = {}
        for item in items:
            if item.get("Filename"):
                continue  # a text file attached to the message, not its body
            texts.setdefault(str(item.get("TransactionId")), str(item.get("Content") or ""))
        return texts

    def _queue_name(self, queue: Any) -> str:
        qid = str((queue or {}).get("id") or "") if isinstance(queue, dict) else str(queue)
        if qid and qid not in self._queue_names:
            data = self._get_json(f"queue/{qid}", what=f"read queue {qid}", missing_ok=True)
            self._queue_names[qid] = str((data or {}).get("Name") or qid)
        return self._queue_names.get(qid, qid)

    def _category_of(self, queue: str) -> Category:
        for category, name in self.config.queues.items():
            if name == queue:
                return Category(category)
        try:
            return Category(queue)
        except ValueError:
            return Category.TECHNICAL_ISSUE  # the customer's catch-all category

    # --- keys and searches

    def _subject(self, ticket: Ticket) -> str:
        if self.config.key_field:
            return ticket.subject[:SUBJECT_MAX]
        tag = f" [ffc-key:{ticket.key}]"
        return ticket.subject[: SUBJECT_MAX - len(tag)] + tag

    def _has_key_sql(self) -> str:
        tagged = "Subject LIKE '[ffc-key:'"
        if self.config.key_field:
            return f"('{_cf(self.config.key_field)}' IS NOT NULL OR {tagged})"
        return tagged

    def _key_of(self, item: Mapping[str, Any]) -> str | None:
        if self.config.key_field:
            for cf in item.get("CustomFields") or []:
                if cf.get("name") == self.config.key_field and cf.get("values"):
                    return str(cf["values"][0])
        tag = re.search(r"\[ffc-key:([^\]\s]+)\]", str(item.get("Subject") or ""))
        return tag.group(1) if tag else None

    def _with_key(self, key: str) -> builtins.list[dict[str, Any]]:
        """The tickets carrying ``key``, oldest first, with their RT status."""
        # The subject tag is searched even with a custom field: tickets filed before the field
        # was configured keep their tag, and a key must never be missed.
        query = f"Subject LIKE {_sql(f'[ffc-key:{key}]')}"
        if self.config.key_field:
            query = f"'{_cf(self.config.key_field)}' = {_sql(key)} OR {query}"
        items = self._search(query, fields="Subject,Status,CustomFields", order="ASC")
        # LIKE is a case-insensitive substring match: keep only the exact key
        return [i for i in items if self._key_of(i) == key]

    def _reject_duplicates(self, key: str, items: builtins.list[dict[str, Any]]) -> None:
        """Keep the oldest ticket of a key and reject the newer ones still in play.

        Two gateways filing at the same moment, or a gateway killed mid-create whose answer
        was lost while it filed again, can leave two tickets for one key; whoever sees them
        first rejects the newer, with a comment pointing at the one that stays."""
        first = str(items[0]["id"])
        for item in items[1:]:
            number = str(item["id"])
            if item.get("Status") in _CLOSED_RT:
                continue
            log.warning(
                "%s: ticket %s duplicates %s (key %s, filed twice at once); rejecting it",
                self.name,
                number,
                first,
                key,
            )
            try:
                self._call(
                    "POST",
                    f"ticket/{number}/comment",
                    body={
                        "Content": f"Duplicate of ticket #{first}: the same problem was filed "
                        "twice at once by ffc-agent.",
                        "ContentType": "text/plain",
                        "Status": "rejected",
                    },
                    what=f"reject duplicate ticket {number}",
                )
            except SinkError as exc:
                # The next search by this key tries again; the oldest ticket is the answer anyway.
                log.warning("%s: could not reject duplicate %s: %s", self.name, number, exc)

    def _search(self, query: str, *, fields: str, order: str) -> builtins.list[dict[str, Any]]:
        return self._pages(
            "tickets",
            {"query": query, "fields": fields, "orderby": "id", "order": order},
            what="search tickets",
            limit=MAX_LISTED,
        )

    def _check_queue(self, queue: str) -> None:
        """The queue exists, the token sees it, and the key custom field applies to it."""
        if queue in self._queues_checked:
            return
        data = self._get_json(
            f"queue/{quote(queue, safe='')}", what=f"read queue {queue!r}", missing_ok=True
        )
        if data is None:
            raise RtError(
                f"{self.name}: RT has no queue {queue!r}, or the token may not see it",
                permanent=True,
                status=404,
            )
        field = self.config.key_field
        if field:
            names = {str(cf.get("name")) for cf in data.get("TicketCustomFields") or []}
            if field not in names:
                raise RtError(
                    f"{self.name}: the custom field {field!r} does not apply to queue "
                    f"{queue!r} (or the token may not see it); RT would drop the key",
                    permanent=True,
                )
        self._queue_names[str(data.get("id"))] = queue
        self._queues_checked.add(queue)

    # --- HTTP

    def _ticket_id(self, number: str) -> str:
        tid = _parse_number(number)
        if tid is None:
            raise RtError(f"{self.name}: {number!r} is not an RT ticket number", permanent=True)
        return tid

    def _must_get(self, tid: str) -> Ticket:
        ticket = self.get(tid)
        if ticket is None:
            raise RtError(f"{self.name}: RT has no ticket {tid}", permanent=True, status=404)
        return ticket

    def _attachment_bytes(self, attachment_id: str) -> bytes:
        data = self._get_json(
            f"attachment/{attachment_id}",
            what=f"read attachment {attachment_id}",
            max_bytes=MAX_ATTACHMENT_BYTES * 4 // 3 + MAX_REPLY_BYTES,
        )
        try:
            return base64.b64decode(str((data or {}).get("Content") or ""), validate=False)
        except ValueError as exc:
            raise RtError(
                f"{self.name}: attachment {attachment_id} is not base64 ({type(exc).__name__})",
                permanent=True,
            ) from None

    def _pages(
        self, path: str, params: Mapping[str, str], *, what: str, limit: int = 10_000
    ) -> builtins.list[dict[str, Any]]:
        items: builtins.list[dict[str, Any]] = []
        page = 1
        while len(items) < limit:
            data = self._get_json(
                path, params={**params, "per_page": "100", "page": str(page)}, what=what
            )
            batch = (data or {}).get("items") or []
            items += batch
            if not batch or not (data or {}).get("next_page"):
                break
            page += 1
        return items

    def _get_json(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        what: str,
        missing_ok: bool = False,
        max_bytes: int = MAX_REPLY_BYTES,
    ) -> dict[str, Any] | None:
        try:
            reply = self._call("GET", path, params=params, what=what, max_bytes=max_bytes)
        except RtError as exc:
            if missing_ok and exc.status == 404:
                return None
            raise
        data = _json(reply)
        if not isinstance(data, dict):
            raise RtError(f"{self.name}: {what}: RT's answer is not a JSON object")
        return data

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        what: str,
        create: bool = False,
        max_bytes: int = MAX_REPLY_BYTES,
    ) -> bytes:
        """One request, never retried here; the answer's body (at most ``max_bytes``)."""
        where = f"{self.name} ({self._origin}): {what}"
        headers = {
            "Authorization": f"token {self._token.get_secret_value()}",
            "Accept": "application/json",
        }
        try:
            answer = request(
                self._session,
                method,
                self._api + path,
                params=params,
                json=body,
                headers=headers,
                timeout=self._timeout,
                max_bytes=max_bytes,
                truncate=True,
            )
        except ProbeError as exc:
            raise self._failed(exc, where, create) from None
        if answer.truncated:
            raise RtError(f"{where}: RT's answer is larger than {max_bytes} bytes", permanent=True)
        status, reply = answer.status, answer.body
        retry_after = answer.headers.get("Retry-After")

        if 200 <= status < 300:
            return reply
        said = _said(reply)
        said = f": {said}" if said else ""
        if status >= 500 or status in _TRANSIENT:
            seconds = _retry_after(retry_after)
            wait = f" (Retry-After {seconds:g} s)" if seconds is not None else ""
            if create and status >= 500:
                raise OutcomeUnknown(
                    f"{where}: HTTP {status}{wait}{said}; RT may have created the ticket before "
                    "failing: search its key before filing again"
                )
            raise RtError(f"{where}: HTTP {status}{wait}{said}", status=status, retry_after=seconds)
        if 300 <= status < 400:
            raise RtError(
                f"{where}: HTTP {status}, a redirect, which is not followed: set url to RT's "
                "final address",
                permanent=True,
                status=status,
            )
        if status == 401:
            said = f": RT refused the token (expired, revoked or mistyped){said}"
        elif status == 403:
            said = f": the token's user lacks the rights for this{said}"
        raise RtError(f"{where}: HTTP {status}{said}", permanent=True, status=status)

    def _failed(self, exc: ProbeError, where: str, create: bool) -> SinkError:
        """What a request that got no HTTP answer means for RT's caller (see the docstring)."""
        early = unanswered(exc, where, error=RtError)
        if early is not None:
            return early
        timed_out = exc.code is ProbeErrorCode.TIMEOUT
        if create:
            lost = (
                f"no answer within {self._timeout[1]:g} s after the request was sent"
                if timed_out
                else "the connection dropped after the request was sent"
            )
            return OutcomeUnknown(
                f"{where}: {lost}; the ticket may exist: search its key before filing again"
            )
        if timed_out:
            return RtError(f"{where}: no answer within {self._timeout[1]:g} s")
        return RtError(f"{where}: the connection dropped ({exc.detail})")


# --- helpers


def _json(reply: bytes) -> Any:
    try:
        return json.loads(reply)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _said(reply: bytes) -> str:
    """RT's own words from an answer: ``{"message": ...}`` or a list of messages, shortened."""
    data = _json(reply)
    if isinstance(data, dict) and "message" in data:
        text = str(data["message"])
    elif isinstance(data, list):
        text = "; ".join(str(x) for x in data)
    else:
        text = reply[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def _created_id(reply: bytes) -> str | None:
    data = _json(reply)
    if isinstance(data, dict):
        return _parse_number(str(data.get("id") or ""))
    return None


def _parse_number(number: str) -> str | None:
    """``"123"``, ``"#123"`` or ``"RT-123"`` (as people write it) -> ``"123"``."""
    match = re.fullmatch(r"(?:RT-?|#)?\s*(\d{1,12})", str(number).strip(), re.IGNORECASE)
    return str(int(match.group(1))) if match else None


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isascii() and value.strip().isdigit():
        return float(min(int(value.strip()), MAX_RETRY_AFTER_S))
    return None


def _when(value: Any) -> datetime | None:
    if not value or str(value).startswith("1970-01-01"):  # RT's "not set"
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _sql(value: str) -> str:
    """A TicketSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cf(name: str) -> str:
    # Custom field names sit inside '...' and {...} in TicketSQL: keep them plain.
    if not re.fullmatch(r"[\w .:-]+", name):
        raise SinkError(f"unusable RT custom field name {name!r}", permanent=True)
    return f"CF.{{{name}}}"


def _names(subject: str, word: str) -> bool:
    """Does ``subject`` name ``word`` (a serial, a site code) as a whole word?"""
    pattern = rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])"
    return re.search(pattern, subject, re.IGNORECASE) is not None


def _safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/"))
    if not base or base.startswith(".") or "\0" in base or base != name or name == TICKET_JSON:
        raise SinkError(f"unsafe attachment name {name!r}: use a plain file name", permanent=True)
    return base


def _describe(name: str, data: bytes) -> Attachment:
    return Attachment(
        name=name,
        content_type=content_type(name),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _page(ticket: Ticket) -> str:
    """The portal page as the ticket's body: without the number row (RT shows its own) and
    with attachments by name (they sit on this RT ticket, not in a folder)."""
    page = render_markdown(ticket.model_copy(update={"number": _HERE}))
    page = page.replace(f"| Ticket | {_HERE} |\n", "")
    return re.sub(rf"\[([^\]]+)\]\({_HERE}/[^)]*\)", r"\1", page)


__all__ = ["OutcomeUnknown", "RtError", "RtSink", "portal_status", "rt_status"]
