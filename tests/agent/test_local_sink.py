"""The embedded ticket store: files on disk, idempotent by key, safe under concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.delivery.sinks.base import Sink, SinkError
from agent.delivery.sinks.local import LocalSink
from diagnostics.model import Finding, Status
from rma.tickets import (
    Category,
    CounterRef,
    ProblemContext,
    Role,
    Ticket,
    TicketStatus,
    compose,
    idempotency_key,
)

NOW = datetime(2025, 11, 26, 15, 30, tzinfo=UTC)
START = datetime(2025, 11, 26, 9, 15, tzinfo=UTC)


def make_ticket(serial: str = "FFC0002", check_id: str = "counter.offline") -> Ticket:
    found = Finding(
        check_id=check_id,
        status=Status.FAIL,
        code="refused",
        summary=f"Counter {serial} does not answer",
        at=NOW,
        site="LDN01",
        subject=serial,
        evidence={"consecutive_failures": 3},
    )
    return compose(
        ProblemContext(
            key=idempotency_key(check_id, serial, START),
            site_code="LDN01",
            site_name="Oxford Street",
            timezone="Europe/London",
            counters=(CounterRef(serial, "Main door"),),
            findings=(found,),
            started_at=START,
            requester="store-it@example.com",
            cc=(),
            role=Role.CUSTOMER,
            now=NOW,
        )
    )


def test_local_sink_keeps_the_sink_contract(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    assert isinstance(sink, Sink)
    assert sink.name == "local"


def test_file_get_list_and_files_on_disk(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    filed = sink.file(make_ticket())

    assert filed.number == "L-000001"
    assert sink.get("L-000001") == filed
    assert sink.list() == [filed]
    data = json.loads((tmp_path / "L-000001.json").read_text())
    assert data == filed.to_json()
    page = (tmp_path / "L-000001.md").read_text()
    assert page.startswith(f"# {filed.subject}\n")
    for text in (
        "Technical Issue",
        "SLA 1 day",
        "Open",
        "LDN01",
        "FFC0002",
        "What is the problem?",
    ):
        assert text in page
    assert filed.comment.how in page
    second = sink.file(make_ticket("FFC0003"))
    assert second.number == "L-000002"
    assert [t.number for t in sink.list()] == ["L-000001", "L-000002"]
    assert not list(tmp_path.glob(".tmp-*"))  # no temporary files left behind


def test_get_unknown_or_malformed_number_is_none(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    assert sink.get("L-000009") is None
    assert sink.get("../etc/passwd") is None


def test_filing_twice_with_the_same_key_returns_the_existing_ticket(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    first = sink.file(make_ticket())
    again = sink.file(make_ticket(), attachments={"late.txt": b"ignored"})

    assert again == first
    assert len(sink.list()) == 1
    assert sink.find_by_key(first.key) == first
    assert sink.find_by_key("ffc-0000000000000000") is None
    # a second store on the same directory (another agent) sees it too
    assert LocalSink(tmp_path).file(make_ticket()).number == "L-000001"


def test_find_open_finds_an_open_ticket_and_ignores_a_closed_one(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    closed = make_ticket("FFC0002").with_status(TicketStatus.CLOSED, NOW)
    sink.file(closed)
    assert sink.find_open("LDN01", ["FFC0002"], Category.TECHNICAL_ISSUE) is None

    by_hand = make_ticket("FFC0002", check_id="counter.hand")  # another key, same problem
    opened = sink.file(by_hand)
    assert sink.find_open("LDN01", ["FFC0002"], "Technical Issue") == opened
    assert sink.find_open("LDN01", ["FFC0002"], Category.DATA_ACCURACY_ISSUE) is None
    assert sink.find_open("LDN01", ["FFC0009"], Category.TECHNICAL_ISSUE) is None
    assert sink.find_open("MAN02", ["FFC0002"], Category.TECHNICAL_ISSUE) is None
    assert sink.find_open("LDN01", [], Category.TECHNICAL_ISSUE) is None  # site-level only

    sink.set_status(opened.number or "", TicketStatus.CLOSED, NOW + timedelta(days=1))
    assert sink.find_open("LDN01", ["FFC0002"], Category.TECHNICAL_ISSUE) is None


def test_add_message_persists(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    number = sink.file(make_ticket()).number or ""
    later = NOW + timedelta(hours=2)
    updated = sink.add_message(number, "ffc-agent", "The counter answers again.", later)

    assert updated.messages[-1].body == "The counter answers again."
    reread = LocalSink(tmp_path).get(number)
    assert reread is not None
    assert [(m.author, m.body, m.at) for m in reread.messages] == [
        ("ffc-agent", "The counter answers again.", later)
    ]
    assert reread.updated_at == later
    assert "The counter answers again." in (tmp_path / f"{number}.md").read_text()


def test_add_message_to_unknown_ticket_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError) as info:
        LocalSink(tmp_path).add_message("L-000042", "a", "b", NOW)
    assert info.value.permanent


def test_attachment_is_stored_beside_the_ticket_with_its_sha256(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    bundle = bytes(range(256)) * 40
    filed = sink.file(make_ticket(), attachments={"diagnostics.zip": bundle, "note.txt": b"hi"})

    by_name = {a.name: a for a in filed.attachments}
    assert by_name["diagnostics.zip"].sha256 == hashlib.sha256(bundle).hexdigest()
    assert by_name["diagnostics.zip"].size == len(bundle)
    assert by_name["diagnostics.zip"].content_type == "application/zip"
    assert by_name["note.txt"].content_type == "text/plain"
    stored = tmp_path / "L-000001" / "diagnostics.zip"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == by_name["diagnostics.zip"].sha256
    assert sink.get("L-000001") == filed
    assert "diagnostics.zip" in (tmp_path / "L-000001.md").read_text()


@pytest.mark.parametrize("name", ["../escape.txt", "a/b.txt", ".hidden", ""])
def test_unsafe_attachment_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SinkError) as info:
        LocalSink(tmp_path).file(make_ticket(), attachments={name: b"x"})
    assert info.value.permanent
    assert not list(tmp_path.glob("L-*"))


def test_leftovers_of_a_crash_are_not_tickets_and_do_not_block_numbers(tmp_path: Path) -> None:
    (tmp_path / ".tmp-abc").write_text("{half a tick")
    (tmp_path / "L-000001").mkdir()
    (tmp_path / "L-000001" / "stale.bin").write_bytes(b"old")
    (tmp_path / "L-000005.json").write_text("{not json")  # hand-edited and broken

    sink = LocalSink(tmp_path)
    assert sink.list() == []
    filed = sink.file(make_ticket(), attachments={"new.txt": b"new"})
    assert filed.number == "L-000006"


def test_threads_never_share_a_number(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    numbers: list[str | None] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        filed = LocalSink(tmp_path).file(make_ticket(f"FFC{i:04d}"))
        with lock:
            numbers.append(filed.number)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(numbers) == 20
    assert len(set(numbers)) == 20
    assert len(sink.list()) == 20


def _file_from_process(directory: str, first: int) -> None:
    sink = LocalSink(Path(directory))
    for i in range(first, first + 8):
        sink.file(make_ticket(f"FFC{i:04d}"))
    # every process also races to file the very same incident
    sink.file(make_ticket("SHARED"))


def test_processes_never_share_a_number_or_file_twice(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_file_from_process, args=(str(tmp_path), n)) for n in (0, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]

    tickets = LocalSink(tmp_path).list()
    numbers = [t.number for t in tickets]
    assert len(tickets) == 17  # 8 + 8 distinct, and the shared incident once
    assert len(set(numbers)) == 17
    assert sum(t.counters == ["SHARED"] for t in tickets) == 1
