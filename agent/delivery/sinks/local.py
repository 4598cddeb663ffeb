"""The embedded ticket store: tickets as files in a directory, the default when no helpdesk is set.

A site without Request Tracker or a helpdesk address still gets its tickets written down, in a
form a person can open in any editor and forward to FootfallCam by hand: each ticket is
``<number>.json`` (the ticket's JSON form, the source of truth) beside ``<number>.md`` (the same
ticket as the portal would show it), with attachments in ``<number>/``.

Failure behaviour: numbers (``L-000001`` …) are taken under an exclusive ``flock`` on
``.lock``, so two agents or processes sharing the directory never take the same one, and every
file is written to a temporary name and renamed into place, so a crash leaves either the whole
ticket or none of it. The JSON file is written last and is the commit point: attachments or a
page without it are leftovers of a crash and are overwritten. A message can bring files too
(a remote-session transcript): they join the ticket's folder under a name it does not have
yet. Filing is idempotent by key, checked under the same lock. I/O errors become
``SinkError`` (transient); an unknown ticket number or an unsafe attachment name is permanent.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path

from pydantic import ValidationError

from agent.delivery.sinks.base import SinkError, content_type, free_name, same_problem
from diagnostics.model import plural
from rma.tickets import (
    Attachment,
    Category,
    Comment,
    NextAction,
    Stage,
    Task,
    Ticket,
    TicketStatus,
)

log = logging.getLogger(__name__)

PREFIX = "L-"
_NUMBER_RE = re.compile(r"^L-(\d{6,})$")


class LocalSink:
    """Tickets in ``directory``; see the module docstring for the layout and guarantees."""

    name = "local"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_path = self.directory / ".lock"

    def __repr__(self) -> str:
        return f"LocalSink({str(self.directory)!r})"

    # --- the Sink contract

    def file(self, ticket: Ticket, attachments: Mapping[str, bytes] | None = None) -> Ticket:
        files = {_safe_name(name): data for name, data in (attachments or {}).items()}
        try:
            with self._locked():
                existing = self.find_by_key(ticket.key)
                if existing is not None:
                    return existing
                number = self._next_number()
                filed = ticket.filed(number, self._store_attachments(number, files))
                self._write(filed)
        except OSError as exc:
            raise SinkError(f"cannot write ticket to {self.directory}: {exc}") from exc
        log.info("filed ticket %s: %s", filed.number, filed.subject)
        return filed

    def find_by_key(self, key: str) -> Ticket | None:
        return next((t for t in self._tickets() if t.key == key), None)

    def find_open(
        self, site: str, counters: Iterable[str], category: Category | str
    ) -> Ticket | None:
        counters = builtins.list(counters)
        # the newest, since that is where the conversation on the problem carries on
        found = (
            t for t in self._tickets(newest_first=True) if same_problem(t, site, counters, category)
        )
        return next(found, None)

    def add_message(
        self,
        number: str,
        author: str,
        body: str,
        at: datetime,
        attachments: Mapping[str, bytes] | None = None,
    ) -> Ticket:
        files = {_safe_name(name): data for name, data in (attachments or {}).items()}

        def change(ticket: Ticket) -> Ticket:
            # the files first, the JSON (the commit point) last: a crash between leaves files
            # no ticket names, never a ticket naming a missing file
            added = self._add_attachments(ticket, files)
            ticket = ticket.with_message(at, author, body)
            if added:
                ticket = ticket.model_copy(update={"attachments": [*ticket.attachments, *added]})
            return ticket

        return self._update(number, change)

    def get(self, number: str) -> Ticket | None:
        """Ticket ``number``: ``L-000001``, or the bare ``1`` people say."""
        number = number.strip()
        if number.isdigit():
            number = f"{PREFIX}{int(number):06d}"
        if not _NUMBER_RE.match(number):
            return None
        return self._read(self.directory / f"{number}.json")

    def list(self) -> builtins.list[Ticket]:
        """Every ticket, oldest number first; an unreadable file is logged and skipped."""
        return builtins.list(self._tickets())

    def _tickets(self, *, newest_first: bool = False) -> Iterator[Ticket]:
        """The tickets one at a time: a search stops at the one it wants and never holds
        them all (every new ticket searches for a twin, and the directory keeps every ticket
        it was ever given)."""
        paths = sorted(self.directory.glob(f"{PREFIX}*.json"), key=_number_of)
        for path in reversed(paths) if newest_first else paths:
            try:
                ticket = self._read(path)
            except SinkError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            if ticket is not None:
                yield ticket

    # --- beyond the contract: the follow-up and the demo move tickets along

    def set_status(
        self,
        number: str,
        status: TicketStatus | str,
        at: datetime,
        next_action: NextAction | str | None = None,
    ) -> Ticket:
        action = NextAction(next_action) if next_action is not None else None
        return self._update(number, lambda t: t.with_status(status, at, action))

    def set_stage(
        self,
        number: str,
        stage: Stage | str,
        at: datetime,
        *,
        plan: str | None = None,
        eta: date | None = None,
    ) -> Ticket:
        """Hand the ticket to support line ``stage`` (its line SLA starts at ``at``)."""
        return self._update(number, lambda t: t.with_stage(stage, at, plan=plan, eta=eta))

    def add_task(self, number: str, task: Task, at: datetime) -> Ticket:
        """Add ``task`` to the task list, or update the task of the same name."""
        return self._update(number, lambda t: t.with_task(task, at))

    # --- inside

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock belongs to this open file description, so threads of one process exclude
        # each other as well as other processes; closing the descriptor releases it.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _next_number(self) -> str:
        taken = [_number_of(p) for p in self.directory.glob(f"{PREFIX}*.json")]
        return f"{PREFIX}{max(taken, default=0) + 1:06d}"

    def _store_attachments(
        self, number: str, files: Mapping[str, bytes]
    ) -> builtins.list[Attachment]:
        folder = self.directory / number
        if folder.exists():  # left by a crash before its ticket's JSON was written
            shutil.rmtree(folder)
        if not files:
            return []
        folder.mkdir(mode=0o700)
        stored = []
        for name, data in files.items():
            _atomic_write(folder / name, data)
            stored.append(_describe(name, data))
        return stored

    def _add_attachments(
        self, ticket: Ticket, files: Mapping[str, bytes]
    ) -> builtins.list[Attachment]:
        """Store ``files`` beside the filed ``ticket``; a name it already has gets a suffix."""
        if not files or ticket.number is None:
            return []
        folder = self.directory / ticket.number
        folder.mkdir(exist_ok=True, mode=0o700)
        taken = {a.name for a in ticket.attachments}
        stored = []
        for name, data in files.items():
            # a file in the folder that the ticket does not name is a crash's leftover
            name = free_name(name, taken)
            taken.add(name)
            _atomic_write(folder / name, data)
            stored.append(_describe(name, data))
        return stored

    def _write(self, ticket: Ticket) -> None:
        if ticket.number is None:
            raise ValueError("only a filed ticket (with a number) can be written")
        _atomic_write(self.directory / f"{ticket.number}.md", render_markdown(ticket).encode())
        data = ticket.model_dump_json(indent=2).encode() + b"\n"
        _atomic_write(self.directory / f"{ticket.number}.json", data)

    def _read(self, path: Path) -> Ticket | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SinkError(f"cannot read {path}: {exc}") from exc
        try:
            return Ticket.model_validate_json(text)
        except ValidationError as exc:
            raise SinkError(f"{path} is not a valid ticket: {exc}", permanent=True) from exc

    def _update(self, number: str, change: Callable[[Ticket], Ticket]) -> Ticket:
        try:
            with self._locked():
                ticket = self.get(number)
                if ticket is None:
                    raise SinkError(f"no ticket {number!r} in {self.directory}", permanent=True)
                ticket = change(ticket)
                self._write(ticket)
        except OSError as exc:
            raise SinkError(f"cannot update ticket {number}: {exc}") from exc
        return ticket


def _number_of(path: Path) -> int:
    match = _NUMBER_RE.match(path.stem)
    return int(match.group(1)) if match else 0


def _safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/"))
    if not base or base.startswith(".") or "\0" in base or base != name:
        raise SinkError(f"unsafe attachment name {name!r}: use a plain file name", permanent=True)
    return base


def _describe(name: str, data: bytes) -> Attachment:
    return Attachment(
        name=name,
        content_type=content_type(name),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # a ticket names the store and may quote people: the agent's only
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- the page a person reads


def render_markdown(ticket: Ticket) -> str:
    """The ticket as the support portal shows it, as Markdown."""
    t = ticket
    sla = f"SLA {plural(t.sla_days, 'day')}" if t.sla_days else "no SLA"
    stage_sla = f"{t.stage.sla_days}-day SLA" if t.stage.sla_days else "no fixed SLA"
    counters = ", ".join(t.counters) if t.counters else "unassigned (site-level problem)"
    rows = [
        ("Ticket", t.number or "not filed yet"),
        ("Status", t.status.value),
        ("Next action", t.next_action.value),
        ("Stage", f"{t.stage.label}, {stage_sla} ({t.stage.description})"),
        ("Stage since", _when(t.stage_since or t.created_at)),
        ("Category", f"{t.category.value}, {sla}"),
        ("Issue level", t.issue_level.capitalize()),
        ("Counter unassigned", "Yes" if t.counter_unassigned else "No"),
        ("Site", t.site),
        ("Counter(s)", counters),
        ("Occurred on", t.occurred_on.isoformat()),
        ("Requester", t.requester or "—"),
        ("CC", ", ".join(t.cc) or "—"),
        ("Created", _when(t.created_at)),
        ("Updated", _when(t.updated_at)),
        ("Idempotency key", f"`{t.key}`"),
    ]
    if t.plan or t.eta:
        rows[5:5] = [("Plan", t.plan or "—"), ("ETA", t.eta.isoformat() if t.eta else "—")]
    out = [f"# {t.subject}", "", "| Field | Value |", "|---|---|"]
    out += [f"| {name} | {_cell(value)} |" for name, value in rows]
    for field, question in Comment.QUESTIONS:
        out += ["", f"## {question}", "", getattr(t.comment, field)]

    out += ["", "## Attachments", ""]
    if t.attachments:
        out += [
            f"- [{a.name}]({t.number}/{a.name}) — {a.content_type}, {_size(a.size)}, "
            f"sha256 `{a.sha256}`"
            for a in t.attachments
        ]
    else:
        out.append("None.")

    out += ["", "## Tasks", ""]
    if t.tasks:
        out += ["| Task | Hours | Type | Due | Status |", "|---|---|---|---|---|"]
        out += [
            f"| {_cell(k.task)} | {k.hours:g} | {k.type.value} | "
            f"{k.due.isoformat() if k.due else '—'} | {_cell(k.status)} |"
            for k in t.tasks
        ]
    else:
        out.append("None.")

    out += ["", "## Conversation", ""]
    if t.messages:
        for m in t.messages:
            out += [f"### {_when(m.at)} — {m.author}", "", m.body, ""]
    else:
        out.append("No messages yet.")
    return "\n".join(out).rstrip() + "\n"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _when(dt: datetime) -> str:
    return f"{dt:%Y-%m-%d %H:%M} {dt.tzname() or ''}".strip()


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
