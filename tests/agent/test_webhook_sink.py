"""The webhook destination against a real HTTPS receiver on 127.0.0.1.

The receiver is the standard library's threading HTTP server behind TLS with a certificate made
for the test; it checks every signature with the same ``verify_signature`` a chain's receiver
would use, records what arrived, and answers as each test scripts it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.config import WebhookSinkConfig
from agent.delivery.outbox import DELIVERED, FAILED, RESEND_UNANSWERED, UNKNOWN, Outbox
from agent.delivery.sinks.base import OutcomeUnknown, Sink, SinkError
from agent.delivery.sinks.webhook import (
    WebhookError,
    WebhookSink,
    _retry_after,
    sign,
    verify_signature,
)
from agent.store import Store
from tests.agent.sink_helpers import (
    NOW,
    Cert,
    file_via_outbox,
    follow_up_via_outbox,
    make_cert,
    make_ticket,
)

SECRET = "pl4nted-Hmac-S3cret-Wk8"  # planted: must never leave the gateway
PATH_TOKEN = "t0ken-in-the-path-91x"  # webhook URLs often carry one: never shown in errors
integration = pytest.mark.integration


# --- the signature scheme (pure)


def test_a_signature_verifies_and_a_tampered_body_does_not() -> None:
    body = b'{"event":"ticket.created"}'
    ts = "1764171000"
    header = sign(SECRET.encode(), ts, body)
    assert header.startswith("sha256=")
    assert verify_signature(SECRET.encode(), ts, body, header, now=1764171000.0)
    assert not verify_signature(SECRET.encode(), ts, body + b" ", header, now=1764171000.0)
    assert not verify_signature(b"another secret", ts, body, header, now=1764171000.0)
    assert not verify_signature(SECRET.encode(), "1764171001", body, header, now=1764171000.0)
    assert not verify_signature(SECRET.encode(), ts, body, "sha256=00", now=1764171000.0)
    assert not verify_signature(SECRET.encode(), ts, body, "sha256=ü", now=1764171000.0)


def test_a_signature_outside_the_replay_window_is_refused() -> None:
    body, ts = b"{}", "1764171000"
    header = sign(SECRET.encode(), ts, body)
    assert verify_signature(SECRET.encode(), ts, body, header, now=1764171000 + 300)
    assert not verify_signature(SECRET.encode(), ts, body, header, now=1764171000 + 301)
    assert not verify_signature(SECRET.encode(), ts, body, header, now=1764171000 - 301)
    assert verify_signature(
        SECRET.encode(), ts, body, header, now=1764171000 + 900, tolerance_s=1000
    )
    assert not verify_signature(SECRET.encode(), "-5", body, header, now=1764171000)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("120", NOW) == 120.0
    assert _retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90.0
    assert _retry_after(format_datetime(NOW - timedelta(seconds=90), usegmt=True), NOW) == 0.0
    assert _retry_after("99999999", NOW) == 24 * 3600
    assert _retry_after("soon", NOW) is None
    assert _retry_after(None, NOW) is None


# --- the receiver


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 201
    body: bytes = b'{"number": "HD-1001"}'
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    late: float = 0.0  # seconds before it answers: a receiver slower than our timeout


@dataclass
class Receiver:
    url: str
    cert: Cert
    seen: list[Seen] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)  # then the default Answer()
    release: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)  # the fixture's teardown

    def next_answer(self) -> Answer:
        return self.answers.pop(0) if self.answers else Answer()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = verify_signature(
            SECRET.encode(),
            self.headers.get("X-FFC-Timestamp", ""),
            body,
            self.headers.get("X-FFC-Signature", ""),
            now=time.time(),
        )
        receiver.seen.append(Seen(self.path, dict(self.headers.items()), body, ok))
        answer = receiver.next_answer()
        if answer.hang:
            receiver.release.wait(30)
            self.close_connection = True
            return
        if answer.late:  # answers after the client gave up, unless the test is over
            receiver.stopping.wait(answer.late)
        self.send_response(answer.status)
        for name, value in {"Content-Type": "application/json", **answer.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    receiver: Receiver


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    cert = make_cert(tmp_path / "tls")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = cert.server_context().wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    server.receiver = Receiver(f"https://127.0.0.1:{port}/hooks/{PATH_TOKEN}", cert)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.receiver.release.set()
        server.receiver.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def settings(url: str, cert: Cert | None, **override: Any) -> WebhookSinkConfig:
    data: dict[str, Any] = {
        "type": "webhook",
        "name": "chain-intake",
        "url": url,
        "secret": SECRET,
        "ca_file": str(cert.cert_file) if cert else None,
        "timeout_seconds": 5.0,
        **override,
    }
    return WebhookSinkConfig.model_validate({k: v for k, v in data.items() if v is not None})


def sink_for(receiver: Receiver, state: Path, **override: Any) -> WebhookSink:
    return WebhookSink(settings(receiver.url, receiver.cert, **override), state_dir=state)


def assert_no_secret(
    exc: BaseException | None, caplog: pytest.LogCaptureFixture, receiver: Receiver | None
) -> None:
    shown = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert SECRET not in shown
    # The URL's own token: not in our errors or our log lines. (urllib3 logs request lines at
    # DEBUG; that is the logging setup's business, not a sink's.)
    ours = "".join(r.getMessage() for r in caplog.records if r.name.startswith("agent"))
    if exc is not None:
        ours += "".join(traceback.format_exception(exc)) + repr(exc.args)
    assert SECRET not in ours
    assert PATH_TOKEN not in ours
    for seen in receiver.seen if receiver else []:
        assert SECRET.encode() not in seen.body
        assert SECRET not in json.dumps(seen.headers)


# --- filing


@integration
def test_the_webhook_sink_keeps_the_sink_contract(receiver: Receiver, tmp_path: Path) -> None:
    sink = sink_for(receiver, tmp_path / "state")
    assert isinstance(sink, Sink)
    assert sink.name == "chain-intake"
    assert SECRET not in repr(sink)
    assert PATH_TOKEN not in repr(sink)


@integration
def test_a_ticket_is_one_signed_post_with_its_attachments(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ticket = make_ticket()
    bundle = bytes(range(256)) * 1000
    filed = sink_for(receiver, tmp_path / "state").file(
        ticket, {"diagnostics.tar.gz": bundle, "note.txt": b"hello"}
    )

    assert filed.number == "HD-1001"  # the receiver's own number
    [seen] = receiver.seen
    assert seen.signature_ok
    assert seen.path == f"/hooks/{PATH_TOKEN}"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Idempotency-Key"] == ticket.key
    assert seen.headers["X-FFC-Event"] == "ticket.created"
    assert seen.headers["User-Agent"].startswith("ffc-agent/")
    payload = seen.json
    assert payload["event"] == "ticket.created"
    assert payload["ticket"] == ticket.to_json()
    attached = {a["name"]: a for a in payload["attachments"]}
    gz = attached["diagnostics.tar.gz"]
    assert base64.b64decode(gz["content_base64"]) == bundle
    assert gz["sha256"] == hashlib.sha256(bundle).hexdigest()
    assert (gz["size"], gz["content_type"]) == (len(bundle), "application/gzip")
    assert attached["note.txt"]["content_type"] == "text/plain"
    assert {a.name: a.sha256 for a in filed.attachments} == {
        name: a["sha256"] for name, a in attached.items()
    }
    assert_no_secret(None, caplog, receiver)


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"id": 7}', b'{"number": "../../etc"}', b"[1, 2]"]
)
@integration
def test_without_a_usable_number_the_sink_numbers_the_ticket(
    receiver: Receiver, tmp_path: Path, body: bytes
) -> None:
    receiver.answers.append(Answer(200, body))
    ticket = make_ticket()
    filed = sink_for(receiver, tmp_path / "state").file(ticket)
    assert filed.number == "W-" + hashlib.sha256(ticket.key.encode()).hexdigest()[:12]


@integration
def test_a_numeric_number_is_taken_as_text(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers.append(Answer(201, b'{"number": 4711}'))
    assert sink_for(receiver, tmp_path / "state").file(make_ticket()).number == "4711"


@integration
def test_a_number_the_receiver_gives_twice_does_not_hide_a_ticket(
    receiver: Receiver, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    sink = sink_for(receiver, state)
    first = file_via_outbox(sink, state, make_ticket("FFC0002"))
    second = file_via_outbox(sink, state, make_ticket("FFC0003"))  # HD-1001 again
    assert first.number == "HD-1001"
    assert second.number is not None and second.number.startswith("W-")
    found = sink.find_by_key(second.item.key)
    assert found is not None and found.number == second.number
    assert len(sink.list()) == 2


@integration
def test_filing_is_idempotent_by_key_and_answered_from_the_outbox(
    receiver: Receiver, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ticket = make_ticket()
    assert file_via_outbox(sink_for(receiver, state), state, ticket).number == "HD-1001"
    first = sink_for(receiver, state).find_by_key(ticket.key)
    again = sink_for(receiver, state).file(ticket, {"late.txt": b"ignored"})

    assert first is not None and again == first
    assert len(receiver.seen) == 1
    other = sink_for(receiver, state)
    assert other.get("HD-1001") == first
    assert other.get("HD-9999") is None
    assert other.list() == [first]
    assert other.find_open("LDN01", ["FFC0002"], "Technical Issue") == first
    # one engine, one record: the sink keeps no log of its own
    assert [p.name for p in state.iterdir() if p.is_file() and "db" not in p.name] == []


@integration
def test_messages_and_status_changes_are_signed_events(receiver: Receiver, tmp_path: Path) -> None:
    state = tmp_path / "state"
    sink = sink_for(receiver, state)
    ticket = make_ticket()
    file_via_outbox(sink, state, ticket)
    later = NOW + timedelta(hours=3)

    updated = sink.add_message("HD-1001", "ffc-agent", "The counter answers again.", later)
    assert updated.messages[-1].body == "The counter answers again."
    closed = sink.set_status("HD-1001", "Suggest To Close", later, "Waiting on customer")
    assert (closed.status.value, closed.next_action.value) == (
        "Suggest To Close",
        "Waiting on customer",
    )

    _, message, status = receiver.seen
    assert all(s.signature_ok for s in receiver.seen)
    assert message.headers["X-FFC-Event"] == "ticket.message"
    assert message.json == {
        "event": "ticket.message",
        "key": ticket.key,
        "number": "HD-1001",
        "message": {
            "at": later.isoformat(),
            "author": "ffc-agent",
            "body": "The counter answers again.",
        },
    }
    assert status.json["event"] == "ticket.status"
    assert (status.json["status"], status.json["next_action"]) == (
        "Suggest To Close",
        "Waiting on customer",
    )
    keys = [s.headers["Idempotency-Key"] for s in receiver.seen]
    assert len(set(keys)) == 3
    assert all(k.startswith(ticket.key) for k in keys)

    # through the outbox, a recovery note and its status change are recorded, once
    body = "Recovered. Suggest closing."
    done = follow_up_via_outbox(sink, state, ticket.key, body, later, status="Suggest To Close")
    assert [d.outcome for d in done] == ["delivered"]
    assert (
        follow_up_via_outbox(sink, state, ticket.key, body, later, status="Suggest To Close") == []
    )
    assert len(receiver.seen) == 5
    reread = sink_for(receiver, state).get("HD-1001")
    assert reread is not None
    assert [m.body for m in reread.messages] == [body]
    assert reread.status.value == "Suggest To Close"
    assert sink.find_open("LDN01", ["FFC0002"], "Technical Issue") == reread


@integration
def test_a_follow_up_to_an_unknown_ticket_is_permanent(receiver: Receiver, tmp_path: Path) -> None:
    with pytest.raises(SinkError) as info:
        sink_for(receiver, tmp_path / "state").add_message("HD-404", "a", "b", NOW)
    assert info.value.permanent
    assert receiver.seen == []


# --- refusals, and how each is classified


@pytest.mark.parametrize(
    ("answer", "permanent", "retry_after"),
    [
        (Answer(500, b'{"error": "database down"}'), False, None),
        (Answer(502, b""), False, None),
        (Answer(503, b"", {"Retry-After": "120"}), False, 120.0),
        (Answer(429, b"slow down", {"Retry-After": "30"}), False, 30.0),
        (Answer(409, b"in progress"), False, None),
        (Answer(400, b'{"error": "ticket.site is required"}'), True, None),
        (Answer(401, b"bad signature"), True, None),
        (Answer(404, b""), True, None),
        (Answer(302, b"", {"Location": "https://127.0.0.1:1/elsewhere"}), True, None),
    ],
    ids=lambda v: str(v.status) if isinstance(v, Answer) else None,
)
@integration
def test_an_answer_is_classified_by_its_status(
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    answer: Answer,
    permanent: bool,
    retry_after: float | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answers.append(answer)
    sink = sink_for(receiver, tmp_path / "state")
    with pytest.raises(WebhookError) as info:
        sink.file(make_ticket())
    assert info.value.permanent is permanent
    assert not isinstance(info.value, OutcomeUnknown)
    assert info.value.status == answer.status
    assert info.value.retry_after == retry_after
    assert f"HTTP {answer.status}" in str(info.value)
    assert sink.find_by_key(make_ticket().key) is None  # nothing recorded as filed
    assert_no_secret(info.value, caplog, receiver)


@integration
def test_the_error_shows_what_the_receiver_said(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers.append(Answer(400, b'{"error": "ticket.site is required"}'))
    with pytest.raises(WebhookError) as info:
        sink_for(receiver, tmp_path / "state").file(make_ticket())
    assert "ticket.site is required" in str(info.value)


@integration
def test_no_answer_is_outcome_unknown_and_the_retry_reuses_the_idempotency_key(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "state"
    ticket = make_ticket()
    receiver.answers.append(Answer(hang=True))
    with pytest.raises(OutcomeUnknown) as info:
        sink_for(receiver, state, timeout_seconds=0.5).file(ticket)
    assert not info.value.permanent
    assert sink_for(receiver, state).find_by_key(ticket.key) is None
    assert_no_secret(info.value, caplog, receiver)

    receiver.release.set()
    done = file_via_outbox(sink_for(receiver, state), state, ticket)
    assert (done.outcome, done.number) == ("delivered", "HD-1001")
    assert [s.headers["Idempotency-Key"] for s in receiver.seen] == [ticket.key, ticket.key]
    assert all(s.signature_ok for s in receiver.seen)  # each attempt signed afresh
    found = sink_for(receiver, state).find_by_key(ticket.key)
    assert found is not None and found.number == "HD-1001"


@integration
def test_an_untrusted_certificate_is_permanent(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = WebhookSink(settings(receiver.url, None), state_dir=tmp_path / "state")
    with pytest.raises(WebhookError) as info:
        sink.file(make_ticket())
    assert info.value.permanent
    assert "certificate" in str(info.value)
    assert receiver.seen == []
    assert_no_secret(info.value, caplog, receiver)


@integration
def test_a_refused_connection_is_transient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}/hooks/{PATH_TOKEN}"
        sink = WebhookSink(settings(url, None), state_dir=tmp_path / "state")
        with pytest.raises(SinkError) as info:
            sink.file(make_ticket())
    assert not info.value.permanent
    assert not isinstance(info.value, OutcomeUnknown)
    assert "refused" in str(info.value)
    assert_no_secret(info.value, caplog, None)


def test_a_webhook_needs_its_secret_at_load_time() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookSinkConfig.model_validate({"type": "webhook", "url": "https://x.example/h"})


# --- a receiver that answers late: one POST, at most two with one key, never one per pass


@integration
def test_a_receiver_that_answers_late_gets_the_ticket_once_more_at_most(
    receiver: Receiver, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ticket = make_ticket()
    # it takes 2 s to answer, every time; the sink waits 1 s (4 s when it sends again)
    receiver.answers.extend(Answer(late=2.0) for _ in range(5))
    sink = sink_for(receiver, state, timeout_seconds=1.0)
    with Store.open(state) as store:
        outbox = Outbox(store, state)
        outbox.enqueue_ticket([sink], ticket, incident_id=None, now=NOW)
        [first] = outbox.deliver([sink], NOW)
        assert first.outcome == "unknown"
        [item] = outbox.items()
        assert (item.state, item.next_attempt_at) == (UNKNOWN, NOW + RESEND_UNANSWERED)
        # passes before the re-send is due send nothing: the receiver has the first copy
        for minutes in (1, 5, 14):
            assert outbox.deliver([sink], NOW + timedelta(minutes=minutes)) == []
        assert len(receiver.seen) == 1
        [again] = outbox.deliver([sink], NOW + RESEND_UNANSWERED)
        assert (again.outcome, again.number) == ("delivered", "HD-1001")
        assert outbox.deliver([sink], NOW + timedelta(hours=5)) == []
        [item] = outbox.items()
        assert item.state == DELIVERED
    assert [s.headers["Idempotency-Key"] for s in receiver.seen] == [ticket.key, ticket.key]
    assert [s.json["ticket"]["key"] for s in receiver.seen] == [ticket.key, ticket.key]


@integration
def test_a_receiver_that_never_answers_in_time_is_posted_twice_then_reported(
    receiver: Receiver, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ticket = make_ticket()
    receiver.answers.extend(Answer(hang=True) for _ in range(5))
    sink = sink_for(receiver, state, timeout_seconds=0.3)
    with Store.open(state) as store:
        outbox = Outbox(store, state)
        outbox.enqueue_ticket([sink], ticket, incident_id=None, now=NOW)
        assert [d.outcome for d in outbox.deliver([sink], NOW)] == ["unknown"]
        [done] = outbox.deliver([sink], NOW + RESEND_UNANSWERED)
        assert done.outcome == "failed" and "may have arrived" in done.error
        for hours in (1, 24, 100):
            assert outbox.deliver([sink], NOW + timedelta(hours=hours)) == []
        [item] = outbox.items()
        assert item.state == FAILED
        [finding] = outbox.health(NOW + timedelta(hours=100))
        assert finding.subject == "sink:chain-intake" and "may have arrived" in finding.summary
    assert len(receiver.seen) == 2
    assert {s.headers["Idempotency-Key"] for s in receiver.seen} == {ticket.key}
