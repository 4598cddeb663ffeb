"""The e-mail destination against a real SMTP server (aiosmtpd) on 127.0.0.1.

The server speaks STARTTLS with a certificate made for the test and checks the login, so what is
tested is what a helpdesk's mail server sees: the MIME structure, the headers a helpdesk threads
and de-duplicates on, the attachment bytes, and how each refusal is classified.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import json
import logging
import os
import socket
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from agent.config import SmtpSinkConfig
from agent.delivery.outbox import Outbox, bundle_follows
from agent.delivery.sinks.base import OutcomeUnknown, Sink, SinkError
from agent.delivery.sinks.local import LocalSink
from agent.delivery.sinks.smtp import SmtpSink
from agent.store import Store
from tests.agent.outbox_driver import bundle_for, numbered_files
from tests.agent.sink_helpers import (
    NOW,
    Cert,
    file_via_outbox,
    follow_up_via_outbox,
    make_cert,
    make_ticket,
    wait_for,
)

if os.environ.get("CI") != "true":  # in CI a missing server must fail, not skip
    pytest.importorskip("aiosmtpd", reason="pip install aiosmtpd (the [test] extra)")

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

pytestmark = pytest.mark.integration

USER = "ffc-agent"
PASSWORD = "pl4nted-Smtp-S3cret-7Qz"  # planted: must never show in errors or logs
HELPDESK = "support@helpdesk.example.com"
SENDER = "agent.ldn01@store.example.com"
CC = "area-manager@example.com"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    authenticated: bool

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Mailbox:
    """The server's handler: keeps what it accepts; scripted to refuse or to hang."""

    received: list[Received] = field(default_factory=list)
    data_reply: str | None = None  # e.g. "550 5.1.1 mailbox unavailable"
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.hang.is_set():
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        if self.data_reply:
            return self.data_reply
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                tls,
                bool(session.authenticated),
            )
        )
        return "250 2.0.0 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=True) if ok else AuthResult(success=False, handled=False)


class LoopbackController(Controller):
    """aiosmtpd's Controller on a port the kernel picks (port 0)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox
    cert: Cert


@contextlib.contextmanager
def smtp_server(directory: Path, mode: str = "starttls") -> Iterator[SmtpServer]:
    """``starttls``: STARTTLS required before AUTH; ``ssl``: TLS from the first byte;
    ``plain``: no TLS offered at all (and so no AUTH)."""
    cert = make_cert(directory)
    mailbox = Mailbox()
    kwargs: dict[str, Any] = {"authenticator": authenticator}
    if mode == "starttls":
        kwargs.update(tls_context=cert.server_context(), require_starttls=True)
    elif mode == "ssl":
        kwargs.update(ssl_context=cert.server_context(), auth_require_tls=False)
    controller = LoopbackController(mailbox, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    try:
        yield SmtpServer(controller.port, mailbox, cert)
    finally:
        mailbox.release.set()
        controller.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path / "tls") as running:
        yield running


def settings(port: int, cert: Cert | None, **override: Any) -> SmtpSinkConfig:
    data: dict[str, Any] = {
        "type": "smtp",
        "name": "helpdesk",
        "host": "127.0.0.1",
        "port": port,
        "username": USER,
        "password": PASSWORD,
        "from": SENDER,
        "to": [HELPDESK],
        "ca_file": str(cert.cert_file) if cert else None,
        "timeout_seconds": 5.0,
        **override,
    }
    return SmtpSinkConfig.model_validate({k: v for k, v in data.items() if v is not None})


def sink_for(server: SmtpServer, state: Path, **override: Any) -> SmtpSink:
    return SmtpSink(settings(server.port, server.cert, **override), state_dir=state)


def assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture, state: Path) -> None:
    shown = "".join(traceback.format_exception(exc)) + repr(exc.args)
    assert PASSWORD not in shown
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
    for path in state.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes()


# --- filing


def test_the_smtp_sink_keeps_the_sink_contract(server: SmtpServer, tmp_path: Path) -> None:
    sink = sink_for(server, tmp_path / "state")
    assert isinstance(sink, Sink)
    assert sink.name == "helpdesk"
    assert PASSWORD not in repr(sink)


def test_a_ticket_is_one_mime_message_with_its_attachments(
    server: SmtpServer, tmp_path: Path
) -> None:
    ticket = make_ticket()
    bundle = os.urandom(300_000)
    findings = json.dumps({"findings": ["counter.offline"]}).encode()
    filed = sink_for(server, tmp_path / "state").file(
        ticket, {"diagnostics.tar.gz": bundle, "findings.json": findings}
    )

    assert filed.number == "M-" + hashlib.sha256(ticket.key.encode()).hexdigest()[:12]
    assert [r.tls and r.authenticated for r in server.mailbox.received] == [True]
    got = server.mailbox.received[0]
    assert got.mail_from == SENDER
    assert sorted(got.rcpt_tos) == sorted([HELPDESK, CC])

    message = got.message
    assert message["From"] == SENDER
    assert message["To"] == HELPDESK
    assert message["Cc"] == CC
    assert message["Reply-To"] == "store-it@example.com"
    assert message["Subject"] == f"{ticket.subject} [ffc-key:{ticket.key}]"
    assert message["Message-ID"] == f"<{ticket.key}@ffc-agent>"
    assert message["X-FFC-Key"] == ticket.key
    assert message["Date"]

    assert message.get_content_type() == "multipart/mixed"
    body, *rest = message.iter_parts()
    assert body.get_content_type() == "text/plain"
    text = body.get_content().replace("\r\n", "\n")
    assert text.startswith(f"# {ticket.subject}\n")
    assert filed.number in text
    assert ticket.comment.what in text
    attached = {p.get_filename(): p for p in message.iter_attachments()}
    assert len(rest) == 2
    assert attached["diagnostics.tar.gz"].get_content_type() == "application/gzip"
    assert attached["diagnostics.tar.gz"].get_payload(decode=True) == bundle
    assert attached["findings.json"].get_content_type() == "application/json"
    assert attached["findings.json"].get_payload(decode=True) == findings

    by_name = {a.name: a for a in filed.attachments}
    assert by_name["diagnostics.tar.gz"].sha256 == hashlib.sha256(bundle).hexdigest()
    assert by_name["diagnostics.tar.gz"].size == len(bundle)


def test_the_mail_carries_the_bundle_as_built_and_the_local_store_gets_it_numbered(
    server: SmtpServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ticket = make_ticket()
    name, built = bundle_for(ticket)
    mail, local = sink_for(server, state), LocalSink(tmp_path / "tickets")
    with Store.open(state) as store:
        outbox = Outbox(store, state)
        outbox.enqueue_ticket(
            [mail, local], ticket, incident_id=None, attachments={name: built}, bundle=name, now=NOW
        )
        done = outbox.deliver([mail, local], NOW)
    assert [(d.item.sink, d.item.kind, d.outcome) for d in done] == [
        ("helpdesk", "create", "delivered"),
        ("local", "create", "delivered"),
        ("local", "message", "delivered"),
    ]
    # an e-mail cannot be read back: the bundle goes with the ticket's one mail, as built
    [got] = server.mailbox.received
    attached = {
        p.get_filename(): p.get_payload(decode=True) for p in got.message.iter_attachments()
    }
    assert attached == {name: built}
    body = next(got.message.iter_parts()).get_content().replace("\r\n", "\n")
    assert bundle_follows(name) not in body
    # the local store numbered the ticket, and its bundle followed with that number
    [filed] = local.list()
    assert filed.number is not None
    numbered_files((local.directory / filed.number / name).read_bytes(), filed.number)


def test_filing_is_idempotent_by_key_and_answered_from_the_outbox(
    server: SmtpServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ticket = make_ticket()
    done = file_via_outbox(sink_for(server, state), state, ticket, {"a.txt": b"a"})
    assert done.outcome == "delivered"
    first = sink_for(server, state).find_by_key(ticket.key)  # a restart: a new sink
    assert first is not None and first.number == done.number
    assert [a.name for a in first.attachments] == ["a.txt"]
    again = sink_for(server, state).file(ticket, {"late.txt": b"ignored"})

    assert again == first
    assert len(server.mailbox.received) == 1
    other = sink_for(server, state)
    assert other.find_by_key("ffc-0000000000000000") is None
    assert other.get(first.number or "") == first
    assert other.get("M-000000000000") is None
    assert other.list() == [first]
    assert other.find_open("LDN01", ["FFC0002"], "Technical Issue") == first
    assert other.find_open("LDN01", ["FFC0009"], "Technical Issue") is None
    # one engine, one record: the sink keeps no log of its own
    assert sorted(p.name for p in state.iterdir() if p.is_file() and "db" not in p.name) == []


def test_a_follow_up_threads_under_the_ticket(server: SmtpServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    sink = sink_for(server, state)
    ticket = make_ticket()
    filed = file_via_outbox(sink, state, ticket)
    number = filed.number or ""
    later = NOW + timedelta(hours=2)

    [sent] = follow_up_via_outbox(sink, state, ticket.key, "The counter answers again.", later)
    assert sent.outcome == "delivered"
    first, second = (r.message for r in server.mailbox.received)
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    assert second["Message-ID"] != first["Message-ID"]
    assert second["Message-ID"].endswith("@ffc-agent>")
    assert second["Subject"] == f"Re: {ticket.subject} [ffc-key:{ticket.key}]"
    assert "The counter answers again." in second.get_content()

    # the same follow-up queued again (say, after a crash) is the same item: nothing more
    assert follow_up_via_outbox(sink, state, ticket.key, "The counter answers again.", later) == []
    assert len(server.mailbox.received) == 2
    reread = sink_for(server, state).get(number)
    assert reread is not None
    assert [(m.body, m.at) for m in reread.messages] == [("The counter answers again.", later)]


def test_a_follow_up_to_an_unknown_ticket_is_permanent(server: SmtpServer, tmp_path: Path) -> None:
    with pytest.raises(SinkError) as info:
        sink_for(server, tmp_path / "state").add_message("M-123456789abc", "a", "b", NOW)
    assert info.value.permanent
    assert server.mailbox.received == []


def test_implicit_tls_on_the_ssl_port(tmp_path: Path) -> None:
    with smtp_server(tmp_path / "tls", mode="ssl") as server:
        sink_for(server, tmp_path / "state", security="ssl").file(make_ticket())
        assert [(r.tls, r.authenticated) for r in server.mailbox.received] == [(True, True)]


# --- refusals, and how each is classified


def test_server_down_is_transient(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        sink = SmtpSink(settings(port, None), state_dir=tmp_path / "state")
        with pytest.raises(SinkError) as info:
            sink.file(make_ticket())
    assert not info.value.permanent
    assert not isinstance(info.value, OutcomeUnknown)
    assert "refused" in str(info.value)
    assert sink.list() == []
    assert_no_secret(info.value, caplog, tmp_path / "state")


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [
        ("550 5.1.1 Mailbox unavailable", True),
        ("554 5.7.1 Message rejected as spam", True),
        ("552 5.3.4 Message too big", True),
        ("451 4.3.0 Local error in processing, try later", False),
        ("452 4.3.1 Insufficient system storage", False),
    ],
)
def test_a_refused_message_is_classified_by_its_reply_code(
    server: SmtpServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reply: str,
    permanent: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.mailbox.data_reply = reply
    sink = sink_for(server, tmp_path / "state")
    with pytest.raises(SinkError) as info:
        sink.file(make_ticket())
    assert info.value.permanent is permanent
    assert not isinstance(info.value, OutcomeUnknown)  # the server did answer
    assert reply.split()[0] in str(info.value)
    assert sink.find_by_key(make_ticket().key) is None  # nothing recorded as sent
    assert_no_secret(info.value, caplog, tmp_path / "state")


def test_a_wrong_password_is_permanent_and_never_shown(
    server: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-" + PASSWORD
    sink = sink_for(server, tmp_path / "state", password=wrong)
    with pytest.raises(SinkError) as info:
        sink.file(make_ticket())
    assert info.value.permanent
    assert "535" in str(info.value)
    assert server.mailbox.received == []
    shown = "".join(traceback.format_exception(info.value)) + caplog.text
    assert wrong not in shown
    assert_no_secret(info.value, caplog, tmp_path / "state")


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("550 5.1.1 No such user", True), ("450 4.2.1 Greylisted, try again", False)],
)
def test_a_refused_helpdesk_address_sends_nothing(
    server: SmtpServer, tmp_path: Path, reply: str, permanent: bool
) -> None:
    server.mailbox.rcpt_replies[HELPDESK] = reply
    with pytest.raises(SinkError) as info:
        sink_for(server, tmp_path / "state").file(make_ticket())
    assert info.value.permanent is permanent
    assert HELPDESK in str(info.value)
    assert server.mailbox.received == []


def test_a_refused_cc_still_reaches_the_helpdesk(
    server: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.mailbox.rcpt_replies[CC] = "550 5.7.1 Relaying denied"
    filed = sink_for(server, tmp_path / "state").file(make_ticket())
    assert filed.number is not None
    assert [r.rcpt_tos for r in server.mailbox.received] == [[HELPDESK]]
    assert any(CC in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_no_answer_after_data_is_outcome_unknown_and_the_retry_reuses_the_message_id(
    server: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "state"
    ticket = make_ticket()
    server.mailbox.hang.set()
    with pytest.raises(OutcomeUnknown) as info:
        sink_for(server, state, timeout_seconds=0.5).file(ticket)
    assert not info.value.permanent
    assert_no_secret(info.value, caplog, state)
    lost = file_via_outbox(sink_for(server, state, timeout_seconds=0.5), state, ticket)
    assert lost.outcome == "unknown"
    assert sink_for(server, state).find_by_key(ticket.key) is None  # so the outbox retries

    server.mailbox.hang.clear()
    server.mailbox.release.set()
    with Store.open(state) as store:
        [done] = Outbox(store, state).deliver([sink_for(server, state)], NOW + timedelta(days=1))
    assert done.outcome == "delivered"
    wait_for(lambda: len(server.mailbox.received) >= 1)
    ids = {r.message["Message-ID"] for r in server.mailbox.received}
    assert ids == {f"<{ticket.key}@ffc-agent>"}  # a helpdesk can drop any second copy
    found = sink_for(server, state).find_by_key(ticket.key)
    assert found is not None and found.number == done.number


def test_a_server_without_starttls_gets_no_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with smtp_server(tmp_path / "tls", mode="plain") as server:
        with pytest.raises(SinkError) as info:
            sink_for(server, tmp_path / "state").file(make_ticket())
        assert info.value.permanent
        assert "STARTTLS" in str(info.value)
        assert server.mailbox.received == []
    assert_no_secret(info.value, caplog, tmp_path / "state")


def test_an_untrusted_certificate_is_permanent(server: SmtpServer, tmp_path: Path) -> None:
    sink = SmtpSink(settings(server.port, None), state_dir=tmp_path / "state")  # no ca_file
    with pytest.raises(SinkError) as info:
        sink.file(make_ticket())
    assert info.value.permanent
    assert "certificate" in str(info.value)
    assert server.mailbox.received == []


def test_a_password_is_never_sent_without_tls(server: SmtpServer, tmp_path: Path) -> None:
    with pytest.raises(SinkError) as info:
        sink_for(server, tmp_path / "state", security="none").file(make_ticket())
    assert info.value.permanent
    assert "in clear" in str(info.value)
    assert server.mailbox.received == []
