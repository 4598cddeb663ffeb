"""The Request Tracker sink against a real RT 5 on 127.0.0.1: filing exactly once, joining a
ticket raised by hand, statuses both ways, and how every failure of the helpdesk is classified."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.config import RtSinkConfig
from agent.delivery.sinks.base import OutcomeUnknown, Sink, SinkError
from agent.delivery.sinks.rt import RtError, RtSink, portal_status, rt_status
from diagnostics.model import Finding, Status
from rma.tickets import (
    Category,
    CounterRef,
    NextAction,
    ProblemContext,
    Role,
    Ticket,
    TicketStatus,
    compose,
    idempotency_key,
)
from tests.rt import KEY_FIELD, FaultyProxy, RtServer

NOW = datetime(2025, 11, 26, 15, 30, tzinfo=UTC)
_serials = itertools.count(1)

BUNDLE = bytes(range(256)) * 40 + b"\x00end"  # binary, with every byte value


def make_ticket(serial: str | None = None, check_id: str = "counter.offline") -> Ticket:
    """A composed Technical Issue about one counter; a fresh serial, so a fresh key."""
    serial = serial or f"FFC9{next(_serials):03d}{datetime.now(UTC):%H%M%S%f}"
    start = datetime.now(UTC).replace(microsecond=0)
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
            key=idempotency_key(check_id, serial, start),
            site_code="LDN01",
            site_name="Oxford Street",
            timezone="Europe/London",
            counters=(CounterRef(serial, "Main door"),),
            findings=(found,),
            started_at=start,
            requester="store-it@example.com",
            cc=("area-manager@example.com",),
            role=Role.CUSTOMER,
            now=NOW,
        )
    )


def make_sink(
    rt: RtServer, *, url: str | None = None, token: str | None = None, **extra: Any
) -> RtSink:
    config = RtSinkConfig.model_validate(
        {
            "type": "rt",
            "url": url or rt.url,
            "token": token or rt.agent_token,
            "queues": {"Technical Issue": "Technical Issue"},
            "timeout_seconds": 30,
            **extra,
        }
    )
    return RtSink(config)


def tickets_with_key(rt: RtServer, key: str) -> list[dict[str, Any]]:
    """What a person searching RT for the key finds (the count that must stay 1)."""
    return [
        t
        for t in rt.search(f"Subject LIKE '[ffc-key:{key}]' OR 'CF.{{{KEY_FIELD}}}' = '{key}'")
        if t["Status"] != "rejected"
    ]


pytestmark = pytest.mark.integration


@pytest.fixture
def sink(rt_server: RtServer) -> RtSink:
    return make_sink(rt_server)


# --- filing


def test_rt_sink_keeps_the_sink_contract(sink: RtSink) -> None:
    assert isinstance(sink, Sink)
    assert sink.name == "rt"


def test_file_creates_one_ticket_in_the_category_queue_with_its_bundle(
    rt_server: RtServer, sink: RtSink
) -> None:
    ticket = make_ticket()
    filed = sink.file(ticket, {"bundle.zip": BUNDLE})

    assert filed.number is not None and filed.number.isdigit()
    assert filed.status is TicketStatus.OPEN
    assert [a.name for a in filed.attachments] == ["bundle.zip"]
    assert filed.attachments[0].sha256 == hashlib.sha256(BUNDLE).hexdigest()

    seen = rt_server.api("GET", f"ticket/{filed.number}").json()
    assert seen["Subject"] == f"{ticket.subject} [ffc-key:{ticket.key}]"
    assert seen["Status"] == "new"
    assert [r["id"] for r in seen["Requestor"]] == ["store-it@example.com"]
    assert [c["id"] for c in seen["Cc"]] == ["area-manager@example.com"]
    queue = rt_server.api("GET", f"queue/{seen['Queue']['id']}").json()
    assert queue["Name"] == "Technical Issue"

    # The bundle came in the same request and comes back byte for byte, as staff download it.
    parts = rt_server.api(
        "GET", f"ticket/{filed.number}/attachments", params={"fields": "Filename,TransactionId"}
    ).json()["items"]
    bundle = next(p for p in parts if p["Filename"] == "bundle.zip")
    history = rt_server.api(
        "GET", f"ticket/{filed.number}/history", params={"fields": "Type"}
    ).json()["items"]
    create = [t["id"] for t in history if t["Type"] == "Create"]
    assert create == [bundle["TransactionId"]]  # attached by the create itself

    content = rt_server.api("GET", f"attachment/{bundle['id']}").json()["Content"]
    assert base64.b64decode(content) == BUNDLE

    # The body is the portal page: the five answers, and the key
    body = rt_server.api(
        "GET", f"ticket/{filed.number}/attachments", params={"fields": "Content,ContentType"}
    ).json()["items"]
    text = next(p["Content"] for p in body if p["ContentType"] == "text/plain")
    assert ticket.comment.what in text and "What is the problem?" in text and ticket.key in text


def test_get_reads_the_filed_ticket_back(sink: RtSink) -> None:
    ticket = make_ticket()
    filed = sink.file(ticket, {"bundle.zip": BUNDLE})
    got = sink.get(filed.number)  # type: ignore[arg-type]

    assert got is not None
    assert got.key == ticket.key and got.number == filed.number
    assert got.site == "LDN01" and got.counters == ticket.counters
    assert got.comment == ticket.comment and got.category is Category.TECHNICAL_ISSUE
    assert got.attachments == filed.attachments
    assert got.status is TicketStatus.OPEN and got.messages == []
    assert sink.get("999999") is None and sink.get("not-a-number") is None
    assert sink.get(f"RT-{filed.number}") == got  # as people write it


def test_filing_twice_makes_one_ticket(rt_server: RtServer, sink: RtSink) -> None:
    ticket = make_ticket()
    first = sink.file(ticket, {"bundle.zip": BUNDLE})
    again = make_sink(rt_server).file(ticket, {"bundle.zip": BUNDLE})  # a second gateway

    assert again.number == first.number
    assert [t["id"] for t in tickets_with_key(rt_server, ticket.key)] == [first.number]
    found = sink.find_by_key(ticket.key)
    assert found is not None and found.number == first.number
    assert sink.find_by_key("ffc-0000000000000000") is None


def test_key_in_a_custom_field(rt_server: RtServer) -> None:
    sink = make_sink(rt_server, key_field=KEY_FIELD)
    ticket = make_ticket()
    filed = sink.file(ticket)

    seen = rt_server.api("GET", f"ticket/{filed.number}").json()
    assert seen["Subject"] == ticket.subject  # no tag needed
    values = {cf["name"]: cf["values"] for cf in seen["CustomFields"]}
    assert values[KEY_FIELD] == [ticket.key]
    assert sink.file(ticket).number == filed.number
    assert len(tickets_with_key(rt_server, ticket.key)) == 1
    assert [t.number for t in sink.list() if t.key == ticket.key] == [filed.number]


def test_a_key_field_rt_does_not_have_is_refused_before_anything_is_filed(
    rt_server: RtServer,
) -> None:
    sink = make_sink(rt_server, key_field="No Such Field")
    ticket = make_ticket()
    with pytest.raises(SinkError) as caught:
        sink.file(ticket)
    assert caught.value.permanent
    assert "No Such Field" in str(caught.value)
    assert rt_server.search(f"Subject LIKE '{ticket.counters[0]}'") == []


def test_an_unknown_queue_is_permanent(rt_server: RtServer) -> None:
    sink = make_sink(rt_server, queues={"Technical Issue": "No Such Queue"})
    with pytest.raises(SinkError) as caught:
        sink.file(make_ticket())
    assert caught.value.permanent and "No Such Queue" in str(caught.value)


def test_unsafe_attachment_names_are_refused(sink: RtSink) -> None:
    for name in ("../etc/passwd", ".hidden", "ffc-ticket.json"):
        with pytest.raises(SinkError) as caught:
            sink.file(make_ticket(), {name: b"x"})
        assert caught.value.permanent


# --- joining and following up


def test_find_open_joins_a_ticket_raised_by_hand(rt_server: RtServer, sink: RtSink) -> None:
    serial = f"FFC7{next(_serials):03d}{datetime.now(UTC):%H%M%S%f}"
    by_hand = rt_server.create_ticket(
        "Technical Issue",
        f"Door counter {serial} shows no visitors since Monday",
        "The store manager says the counter at the main door stopped counting.",
        Requestor="manager@example.com",
    )
    # noise: the serial inside a longer one, another queue, a resolved ticket
    rt_server.create_ticket("Technical Issue", f"Counter {serial}9 broken")
    rt_server.create_ticket("General", f"Counter {serial} broken")
    done = rt_server.create_ticket("Technical Issue", f"Counter {serial} old problem")
    rt_server.api("PUT", f"ticket/{done}", json={"Status": "resolved"})

    found = sink.find_open("LDN01", [serial], Category.TECHNICAL_ISSUE)

    assert found is not None
    assert found.number == by_hand
    assert found.key == f"rt-{by_hand}"
    assert found.counters == [serial] and found.site == "LDN01"
    assert found.requester == "manager@example.com"
    assert "stopped counting" in found.comment.what
    assert sink.find_open("LDN01", ["FFC-NOT-THERE"], Category.TECHNICAL_ISSUE) is None
    # the joined ticket then takes the agent's messages like its own
    after = sink.add_message(by_hand, "ffc-agent", "The agent sees this counter offline.", NOW)
    assert after.messages[-1].body == "The agent sees this counter offline."


def test_find_open_finds_the_agents_own_ticket_until_it_closes(sink: RtSink) -> None:
    ticket = make_ticket()
    filed = sink.file(ticket)
    serial = ticket.counters[0]

    found = sink.find_open("LDN01", [serial], ticket.category)
    assert found is not None and found.number == filed.number
    assert sink.find_open("LDN02", [serial], ticket.category) is None  # another site
    assert sink.find_open("LDN01", [serial], Category.DATA_ACCURACY_ISSUE) is None

    sink.set_status(filed.number, TicketStatus.CLOSED, NOW)  # type: ignore[arg-type]
    assert sink.find_open("LDN01", [serial], ticket.category) is None


def test_add_message_is_correspondence_on_the_ticket(rt_server: RtServer, sink: RtSink) -> None:
    filed = sink.file(make_ticket())
    assert filed.number is not None
    updated = sink.add_message(filed.number, "ffc-agent", "Counter recovered at 10:42 — ✓", NOW)

    assert [m.body for m in updated.messages] == ["Counter recovered at 10:42 — ✓"]
    assert updated.messages[0].author == "ffc-agent"
    history = rt_server.api(
        "GET", f"ticket/{filed.number}/history", params={"fields": "Type"}
    ).json()["items"]
    assert [t["Type"] for t in history].count("Correspond") == 1
    with pytest.raises(SinkError) as caught:
        sink.add_message("999999", "ffc-agent", "hello", NOW)
    assert caught.value.permanent


# --- statuses both ways


@pytest.mark.parametrize(
    ("rt", "status", "action"),
    [
        ("open", TicketStatus.OPEN, NextAction.WAITING_ON_FOOTFALLCAM),
        ("stalled", TicketStatus.OPEN, NextAction.WAITING_ON_CUSTOMER),
        ("resolved", TicketStatus.CLOSED, NextAction.WAITING_ON_FOOTFALLCAM),
        ("rejected", TicketStatus.CLOSED, NextAction.WAITING_ON_FOOTFALLCAM),
    ],
)
def test_a_status_set_in_rt_shows_as_the_portal_status(
    rt_server: RtServer, sink: RtSink, rt: str, status: TicketStatus, action: NextAction
) -> None:
    filed = sink.file(make_ticket())
    reply = rt_server.api("PUT", f"ticket/{filed.number}", json={"Status": rt})
    assert reply.status_code == 200, reply.text

    got = sink.get(filed.number)  # type: ignore[arg-type]
    assert got is not None
    assert (got.status, got.next_action) == (status, action)
    assert portal_status(rt) == (status, action)


@pytest.mark.parametrize("status", list(TicketStatus))
def test_a_portal_status_set_by_the_agent_reaches_rt_and_reads_back(
    rt_server: RtServer, sink: RtSink, status: TicketStatus
) -> None:
    filed = sink.file(make_ticket())
    assert filed.number is not None
    moved = sink.set_status(filed.number, status, NOW, NextAction.WAITING_ON_CUSTOMER)

    assert moved.status is status and moved.next_action is NextAction.WAITING_ON_CUSTOMER
    seen = rt_server.api("GET", f"ticket/{filed.number}").json()["Status"]
    expected = {"open": {"new", "open"}}.get(rt_status(status), {rt_status(status)})
    assert seen in expected
    got = sink.get(filed.number)
    assert got is not None and got.status is status


def test_a_person_changing_the_status_in_rt_overrides_the_agents_marker(
    rt_server: RtServer, sink: RtSink
) -> None:
    filed = sink.file(make_ticket())
    assert filed.number is not None
    sink.set_status(filed.number, TicketStatus.DIFFICULT_TO_TUNE, NOW)
    rt_server.api("PUT", f"ticket/{filed.number}", json={"Status": "stalled"})
    got = sink.get(filed.number)
    assert got is not None
    assert (got.status, got.next_action) == (TicketStatus.OPEN, NextAction.WAITING_ON_CUSTOMER)

    sink.set_status(filed.number, TicketStatus.SUGGEST_TO_CLOSE, NOW)
    rt_server.api("PUT", f"ticket/{filed.number}", json={"Status": "open"})  # reopened by hand
    got = sink.get(filed.number)
    assert got is not None and got.status is TicketStatus.OPEN


# --- failures


def test_a_token_without_the_right_to_create_is_permanent(rt_server: RtServer) -> None:
    sink = make_sink(rt_server, token=rt_server.readonly_token)
    ticket = make_ticket()
    with pytest.raises(RtError) as caught:
        sink.file(ticket)
    assert caught.value.permanent and caught.value.status == 403
    assert "rights" in str(caught.value)
    assert tickets_with_key(rt_server, ticket.key) == []


def test_a_bad_token_is_permanent(rt_server: RtServer) -> None:
    bad = rt_server.agent_token[:-6] + "000000"
    sink = make_sink(rt_server, token=bad)
    with pytest.raises(RtError) as caught:
        sink.get("1")
    assert caught.value.permanent and caught.value.status == 401
    assert bad not in str(caught.value)


def test_rt_down_is_transient_and_up_again_works(rt_server: RtServer) -> None:
    sink = make_sink(rt_server)
    ticket = make_ticket()
    rt_server.stop()
    try:
        with pytest.raises(SinkError) as caught:
            sink.file(ticket)
        assert not caught.value.permanent
        assert not isinstance(caught.value, OutcomeUnknown)  # refused: nothing was sent
        assert "refused" in str(caught.value)
    finally:
        rt_server.start()
    filed = sink.file(ticket)
    assert filed.number is not None
    assert len(tickets_with_key(rt_server, ticket.key)) == 1


@pytest.fixture
def proxy(rt_server: RtServer) -> Any:
    with FaultyProxy(rt_server.host, rt_server.port) as p:
        yield p


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_busy_or_broken_rt_is_transient(
    rt_server: RtServer, proxy: FaultyProxy, status: int
) -> None:
    sink = make_sink(rt_server, url=proxy.url)
    ticket = make_ticket()
    proxy.fail(status, times=1)
    with pytest.raises(RtError) as caught:
        sink.find_by_key(ticket.key)
    assert not caught.value.permanent and caught.value.status == status
    if status == 429:
        assert caught.value.retry_after == 1.0
    assert sink.find_by_key(ticket.key) is None  # the next call goes through


@pytest.mark.parametrize("status", [500, 429])
def test_a_create_refused_as_busy_is_retried_into_one_ticket(
    rt_server: RtServer, proxy: FaultyProxy, status: int
) -> None:
    sink = make_sink(rt_server, url=proxy.url)
    ticket = make_ticket()
    proxy.fail(status, times=1, method="POST")
    with pytest.raises(SinkError) as caught:
        sink.file(ticket, {"bundle.zip": BUNDLE})
    assert not caught.value.permanent
    # a 5xx after the create was sent might hide a created ticket; a 429 is plainly "not now"
    assert isinstance(caught.value, OutcomeUnknown) == (status >= 500)

    assert sink.find_by_key(ticket.key) is None  # the proxy never let it reach RT
    filed = sink.file(ticket, {"bundle.zip": BUNDLE})
    assert [t["id"] for t in tickets_with_key(rt_server, ticket.key)] == [filed.number]


@pytest.mark.parametrize("lost", ["hold", "drop"])
def test_an_answer_lost_after_sending_is_outcome_unknown_and_not_filed_twice(
    rt_server: RtServer, proxy: FaultyProxy, lost: str
) -> None:
    sink = make_sink(rt_server, url=proxy.url, timeout_seconds=2)
    ticket = make_ticket()
    # RT creates the ticket; its answer comes too late (read timeout) or never (connection closed)
    proxy.hold("POST", then=lost)
    with pytest.raises(OutcomeUnknown) as caught:
        sink.file(ticket, {"bundle.zip": BUNDLE})
    assert not caught.value.permanent
    assert proxy.held.wait(60)  # RT did answer: the ticket exists
    proxy.release()

    # what the outbox does next: search before filing again
    found = sink.find_by_key(ticket.key)
    assert found is not None
    assert sink.file(ticket, {"bundle.zip": BUNDLE}).number == found.number
    assert [t["id"] for t in tickets_with_key(rt_server, ticket.key)] == [found.number]


_FILE_ONE = """
import json, sys
from agent.config import RtSinkConfig
from agent.delivery.sinks.rt import RtSink
from rma.tickets import Ticket
given = json.load(sys.stdin)
sink = RtSink(RtSinkConfig.model_validate(given["config"]))
sink.file(Ticket.model_validate(given["ticket"]), {"bundle.zip": b"bundle"})
"""


def test_a_gateway_killed_after_sending_the_create_files_once_on_restart(
    rt_server: RtServer, proxy: FaultyProxy
) -> None:
    ticket = make_ticket()
    config = {
        "type": "rt",
        "url": proxy.url,
        "token": rt_server.agent_token,
        "queues": {"Technical Issue": "Technical Issue"},
    }
    proxy.hold("POST")
    proc = subprocess.Popen(
        [sys.executable, "-c", _FILE_ONE],
        stdin=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"config": config, "ticket": ticket.to_json()}).encode())
    proc.stdin.close()
    assert proxy.held.wait(60)  # RT has created the ticket; its answer is on its way back
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    proxy.release()

    filed = make_sink(rt_server).file(ticket, {"bundle.zip": b"bundle"})  # after restart

    assert [t["id"] for t in tickets_with_key(rt_server, ticket.key)] == [filed.number]


def test_two_gateways_racing_keep_the_older_ticket(rt_server: RtServer, proxy: FaultyProxy) -> None:
    sink = make_sink(rt_server, url=proxy.url)
    ticket = make_ticket()
    twin: list[str] = []

    def other_gateway_files_first(method: str, path: str) -> None:
        if method == "POST" and path.rstrip("/").endswith("/REST/2.0/ticket") and not twin:
            twin.append(make_sink(rt_server).file(ticket).number or "")

    proxy.before_forward = other_gateway_files_first
    filed = sink.file(ticket)

    assert twin and filed.number == twin[0]
    everything = rt_server.search(f"Subject LIKE '[ffc-key:{ticket.key}]'")
    assert len(everything) == 2  # ours was created, then rejected as a duplicate
    assert {t["id"]: t["Status"] for t in everything}[twin[0]] == "new"
    assert sorted(t["Status"] for t in everything) == ["new", "rejected"]
    found = sink.find_by_key(ticket.key)
    assert found is not None and found.number == twin[0]


def test_a_duplicate_left_behind_is_rejected_when_the_key_is_next_searched(
    rt_server: RtServer, sink: RtSink
) -> None:
    # e.g. a gateway killed after sending its create, whose retry searched before RT was done
    ticket = make_ticket()
    filed = sink.file(ticket)
    twin = rt_server.create_ticket("Technical Issue", f"{ticket.subject} [ffc-key:{ticket.key}]")

    found = sink.find_by_key(ticket.key)

    assert found is not None and found.number == filed.number
    assert rt_server.api("GET", f"ticket/{twin}").json()["Status"] == "rejected"
    assert [t["id"] for t in tickets_with_key(rt_server, ticket.key)] == [filed.number]


def test_the_token_never_shows_in_errors_logs_or_reprs(
    rt_server: RtServer, proxy: FaultyProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = rt_server.agent_token
    secret = token.rsplit("-", 1)[1]
    sink = make_sink(rt_server, url=proxy.url)
    texts = [repr(sink), str(sink.__dict__), repr(sink.config)]

    filed = sink.file(make_ticket(), {"bundle.zip": BUNDLE})
    assert filed.number is not None
    for status in (500, 429, 403, 401):
        proxy.fail(status)
        with pytest.raises(SinkError) as caught:
            sink.get(filed.number)
        texts += [str(caught.value), repr(caught.value)]
    proxy.fail(500, method="POST")
    with pytest.raises(OutcomeUnknown) as unknown:
        sink.file(make_ticket())
    texts.append(str(unknown.value))
    bad = make_sink(rt_server, url="http://127.0.0.1:1", token=token)
    with pytest.raises(SinkError) as down:
        bad.get("1")
    texts.append(str(down.value))

    texts += [r.getMessage() for r in caplog.records]
    assert len(texts) > 10
    assert not [t for t in texts if secret in t]
