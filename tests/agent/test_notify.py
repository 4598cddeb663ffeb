"""Notifications against a real SMTP server (aiosmtpd) and a real chat webhook on 127.0.0.1.

What is checked is what the people see: the e-mail the requester and CC receive (addresses,
subject, threading headers, body), the JSON the chat server receives, and that nothing is sent
during a site's quiet hours, twice, or with a secret in it. Notices are outbox items: ``notify``
queues them, ``flush`` sends them. The clock is injected; the servers, the state database and
the state directory are real.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import ConfigError, parse_config
from agent.delivery import notify
from agent.delivery.notify import Event, Notifier, quiet_until, sla_due
from agent.delivery.outbox import CRASH_ENV, DELIVERED, GIVE_UP_AFTER, NOTICE_KINDS, Outbox
from agent.store import Store
from diagnostics.model import Finding, Status
from rma.redact import Redactor
from rma.tickets import (
    CounterRef,
    Message,
    NextAction,
    ProblemContext,
    Role,
    Ticket,
    TicketStatus,
    compose,
    idempotency_key,
)
from tests.agent.sink_helpers import NOW, START, make_ticket, wait_for
from tests.agent.test_smtp_sink import PASSWORD, USER, SmtpServer, smtp_server

ROOT = Path(__file__).resolve().parents[2]
LONDON = ZoneInfo("Europe/London")
SENDER = "agent.ldn01@store.example.com"
REQUESTER = "store-it@example.com"
CC = "area-manager@example.com"
HOOK_TOKEN = "hk7Qz9planted0WebhookT0ken"  # planted: the secret part of a chat webhook URL
COUNTER_PASSWORD = "Cntr-pl4nted-Pw-55x"  # planted: a counter password quoted in a finding


# --- a chat server: Mattermost, Rocket.Chat and Slack all take {"text": ...} like this


@dataclass
class Post:
    path: str
    content_type: str
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


@dataclass
class ChatServer:
    port: int
    posts: list[Post] = field(default_factory=list)  # every request, answered or not
    statuses: list[int] = field(default_factory=list)  # scripted answers, then 200

    def url(self, path: str = f"/hooks/{HOOK_TOKEN}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def texts(self) -> list[str]:
        return [p.json["text"] for p in self.posts]


@contextlib.contextmanager
def chat_server() -> Iterator[ChatServer]:
    state = ChatServer(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.posts.append(Post(self.path, self.headers.get("Content-Type", ""), body))
                status = state.statuses.pop(0) if state.statuses else 200
            reply = b"ok" if status == 200 else b"internal error"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads state.posts, not stderr

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- the agent's side


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def config_data(
    smtp: SmtpServer | None, chat: ChatServer | None, **notifications: Any
) -> dict[str, Any]:
    table: dict[str, Any] = {"email": smtp is not None}
    if smtp is not None:
        table["smtp"] = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "username": USER,
            "password": PASSWORD,
            "from": SENDER,
            "ca_file": str(smtp.cert.cert_file),
            "timeout_seconds": 5.0,
        }
    if chat is not None:
        table["chat_webhook_url"] = chat.url()
    table.update(notifications)
    return {
        "sites": [
            {
                "code": "LDN01",
                "name": "Oxford Street",
                "timezone": "Europe/London",
                "opening_hours": {"mon": "09:00-21:00"},
            }
        ],
        "counters": [
            {
                "serial": "FFC0002",
                "name": "Main door",
                "site": "LDN01",
                "host": "127.0.0.1",
                "password": COUNTER_PASSWORD,
            }
        ],
        "notifications": table,
    }


_open: list[Store] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def outbox_at(state: Path) -> Outbox:
    """The outbox of a state directory, as a restarted agent opens it."""
    store = Store.open(state)
    _open.append(store)
    return Outbox(store, state)


def notifier(
    tmp_path: Path,
    smtp: SmtpServer | None,
    chat: ChatServer | None,
    clock: Clock | None = None,
    *,
    site: dict[str, Any] | None = None,
    **notifications: Any,
) -> Notifier:
    data = config_data(smtp, chat, **notifications)
    data["sites"][0].update(site or {})
    config = parse_config(data)
    return Notifier(config, outbox_at(tmp_path / "state"), clock=clock or Clock(NOW))


def statuses(outcomes: list[notify.Outcome]) -> list[tuple[str, str]]:
    return [(o.channel, o.status) for o in outcomes]


def notices(n: Notifier) -> list[Any]:
    return [i for i in n.outbox.items() if i.kind in NOTICE_KINDS]


def filed_ticket(number: str = "L-000123", summary: str | None = None) -> Ticket:
    if summary is None:
        return make_ticket().filed(number)
    found = Finding(
        check_id="counter.offline",
        status=Status.FAIL,
        code="refused",
        summary=summary,
        at=NOW,
        site="LDN01",
        subject="FFC0002",
        evidence={},
    )
    ticket = compose(
        ProblemContext(
            key=idempotency_key("counter.offline", "FFC0002", START),
            site_code="LDN01",
            site_name="Oxford Street",
            timezone="Europe/London",
            counters=(CounterRef("FFC0002", "Main door"),),
            findings=(found,),
            started_at=START,
            requester=REQUESTER,
            cc=(CC,),
            role=Role.CUSTOMER,
            now=NOW,
        )
    )
    return ticket.filed(number)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path / "tls") as running:
        yield running


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with chat_server() as running:
        yield running


# --- pure parts: quiet hours, event keys, SLA, the configuration


def test_quiet_hours_that_wrap_midnight_end_the_next_morning() -> None:
    window = (time(22, 0), time(7, 0))
    evening = datetime(2025, 11, 26, 23, 30, tzinfo=LONDON)
    night = datetime(2025, 11, 27, 3, 0, tzinfo=LONDON)
    seven = datetime(2025, 11, 27, 7, 0, tzinfo=LONDON)
    assert quiet_until(window, LONDON, evening) == seven.astimezone(UTC)
    assert quiet_until(window, LONDON, night) == seven.astimezone(UTC)
    assert quiet_until(window, LONDON, seven) is None
    assert quiet_until(window, LONDON, datetime(2025, 11, 26, 21, 59, tzinfo=LONDON)) is None
    assert quiet_until(None, LONDON, evening) is None
    lunch = (time(12, 0), time(14, 0))
    noon = datetime(2025, 6, 2, 12, 0, tzinfo=LONDON)
    assert quiet_until(lunch, LONDON, noon) == datetime(2025, 6, 2, 14, 0, tzinfo=LONDON)
    assert quiet_until(lunch, LONDON, noon.replace(hour=14)) is None


def test_an_event_key_is_stable_and_tells_events_apart() -> None:
    ticket = filed_ticket()
    later = NOW + timedelta(hours=1)
    assert Event.filed(ticket).key == Event.filed(ticket, later).key  # the same event
    closed = ticket.with_status(TicketStatus.CLOSED, later)
    suggest = ticket.with_status(TicketStatus.SUGGEST_TO_CLOSE, later)
    keys = {
        Event.filed(ticket).key,
        Event.status_changed(closed).key,
        Event.status_changed(suggest).key,
        Event.new_message(ticket, Message(at=NOW, author="a", body="same")).key,
        Event.new_message(ticket, Message(at=later, author="a", body="same")).key,
    }
    assert len(keys) == 5
    assert all(k.startswith(ticket.key + ".") for k in keys)
    # the store is asked once per held problem, however the latest finding words it
    until = NOW + timedelta(minutes=30)
    covered = Event.store_action(ticket, until, "live view covered (84% of the view) ...")
    moved = Event.store_action(ticket, until, "live view moved (86% of the view) ...")
    assert covered.key == moved.key and covered.key not in keys
    assert Event.store_action(ticket, until + timedelta(minutes=5), "x").key != covered.key
    with pytest.raises(ValueError, match="kind"):
        Event("escalated", ticket, NOW)  # type: ignore[arg-type]
    assert sla_due(ticket) == ticket.created_at + timedelta(days=1)  # a Technical Issue


def test_the_configuration_keeps_the_webhook_url_secret(tmp_path: Path) -> None:
    url = f"https://chat.example.com/hooks/{HOOK_TOKEN}"
    data = config_data(None, None, chat_webhook_url=url)
    site_url = "https://chat.example.com/hooks/S1teOwnT0kenForLDN01xyz"
    (tmp_path / "hook").write_text(site_url + "\n")
    data["sites"][0].update(quiet_hours="22:00-07:00", chat_webhook_url_file=str(tmp_path / "hook"))
    config = parse_config(data)
    assert config.notifications is not None
    assert config.notifications.events == (
        "filed",
        "message",
        "status",
        "sla_overdue",
        "store_action",
    )
    assert config.sites[0].quiet_window() == (time(22, 0), time(7, 0))
    secrets = config.secret_values()
    assert {url, HOOK_TOKEN, site_url, "S1teOwnT0kenForLDN01xyz", COUNTER_PASSWORD} <= secrets
    assert "hooks" not in secrets
    assert HOOK_TOKEN not in repr(config) and HOOK_TOKEN not in config.model_dump_json()

    bad = config_data(None, None, chat_webhook_url=f"ftp://x/{HOOK_TOKEN}")
    with pytest.raises(ConfigError) as info:
        parse_config(bad)
    assert info.value.lines[0].startswith("notifications.chat_webhook_url: expected an http")
    assert HOOK_TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"site": {"quiet_hours": "22:00-22:00"}}, "sites[0].quiet_hours: start and end"),
        ({"site": {"quiet_hours": "10pm-7am"}}, "sites[0].quiet_hours: expected 'HH:MM-HH:MM'"),
        ({"notifications": {"email": True}}, "notifications.smtp: missing: e-mail needs"),
        ({"notifications": {"events": ["filed", "x"]}}, "notifications.events[1]: must be one"),
    ],
)
def test_a_bad_notifications_setting_is_one_line(change: dict[str, Any], line: str) -> None:
    data = config_data(None, None)
    data["sites"][0].update(change.get("site", {}))
    data["notifications"].update(change.get("notifications", {}))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert len(info.value.lines) == 1
    assert info.value.lines[0].startswith(line), info.value.lines


def test_without_a_notifications_table_nothing_is_sent(tmp_path: Path) -> None:
    data = config_data(None, None)
    del data["notifications"]
    quiet = Notifier(parse_config(data), outbox_at(tmp_path))
    assert not quiet.enabled and quiet.channels == []
    assert quiet.notify(Event.filed(filed_ticket())) == []
    assert quiet.flush() == []
    assert quiet.outbox.items() == []
    assert not (tmp_path / "notify").exists()


# --- integration: real servers


@pytest.mark.integration
def test_a_filed_ticket_is_e_mailed_to_the_requester_and_cc_and_posted_to_chat(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer
) -> None:
    ticket = filed_ticket()
    n = notifier(tmp_path, smtp, chat)
    queued = n.notify(Event.filed(ticket))
    assert statuses(queued) == [("email", "queued"), ("chat", "queued")]
    assert smtp.mailbox.received == [] and chat.posts == []  # notify only queues
    outcomes = n.flush()

    assert [(o.channel, o.status, o.ok) for o in outcomes] == [
        ("email", "sent", True),
        ("chat", "sent", True),
    ]
    (got,) = smtp.mailbox.received
    assert got.tls and got.authenticated
    assert got.mail_from == SENDER
    assert sorted(got.rcpt_tos) == sorted([REQUESTER, CC])
    mail = got.message
    assert mail["To"] == REQUESTER
    assert mail["Cc"] == CC
    assert mail["From"] == SENDER
    assert mail["Subject"] == f"[L-000123] {ticket.subject} — Ticket filed"
    assert mail["In-Reply-To"] == f"<{ticket.key}@ffc-agent>"
    assert mail["References"] == f"<{ticket.key}@ffc-agent>"
    assert (
        mail["Message-ID"].startswith(f"<{ticket.key}.n")
        and mail["Message-ID"] != (mail["In-Reply-To"])
    )
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "text/plain"
    body = mail.get_content()
    assert "Status:      Open" in body
    assert "Next action: Waiting on FootfallCam support" in body
    assert "SLA:         1 day, due Thu 27 Nov 2025 15:30 GMT" in body
    assert ticket.comment.what in body
    assert "http" not in body

    (post,) = chat.posts
    assert post.path == f"/hooks/{HOOK_TOKEN}"
    assert post.content_type == "application/json"
    assert set(post.json) == {"text"}  # username and icon only when configured
    text = post.json["text"]
    assert text.startswith(f"**[L-000123]** {ticket.subject} — Ticket filed")
    assert "Status: **Open**" in text
    assert "SLA: 1 day, due Thu 27 Nov 2025 15:30 GMT" in text


@pytest.mark.integration
def test_the_same_event_twice_is_sent_once_even_after_a_restart(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer
) -> None:
    ticket = filed_ticket()
    first = notifier(tmp_path, smtp, chat)
    first.notify(Event.filed(ticket))
    assert [o.status for o in first.flush()] == ["sent", "sent"]
    again = notifier(tmp_path, smtp, chat)  # a restart: a new process on the same state
    later = Event.filed(ticket, NOW + timedelta(hours=1))
    assert statuses(again.notify(later)) == [("email", "duplicate"), ("chat", "duplicate")]
    assert again.flush() == []

    assert len(smtp.mailbox.received) == 1
    assert len(chat.posts) == 1
    # one engine: the notices are outbox items; no queue or sent-log files of their own
    assert [(i.kind, i.state) for i in notices(again)] == [
        ("email", DELIVERED),
        ("chat", DELIVERED),
    ]
    assert not (tmp_path / "state" / "notify").exists()


@pytest.mark.integration
def test_a_notice_queued_with_a_change_that_rolls_back_is_gone_with_it(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer
) -> None:
    n = notifier(tmp_path, smtp, chat)
    with pytest.raises(RuntimeError), n.outbox.store.transaction():
        assert statuses(n.notify(Event.filed(filed_ticket()))) == [
            ("email", "queued"),
            ("chat", "queued"),
        ]
        raise RuntimeError("the incident change failed")
    assert notices(n) == [] and n.flush() == []
    assert smtp.mailbox.received == [] and chat.posts == []


@pytest.mark.integration
def test_every_mail_about_a_ticket_threads_under_its_key(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer
) -> None:
    ticket = filed_ticket()
    later = NOW + timedelta(hours=3)
    note = Message(at=later, author="FootfallCam support", body="Please power-cycle the unit.")
    waiting = ticket.with_status(
        TicketStatus.REVALIDATION_IN_PROGRESS, later, NextAction.WAITING_ON_CUSTOMER
    )
    overdue_at = NOW + timedelta(days=2)
    n = notifier(tmp_path, smtp, chat)
    for event in (
        Event.filed(ticket),
        Event.new_message(ticket, note),
        Event.status_changed(waiting),
        Event.sla_overdue(ticket, overdue_at),
    ):
        n.notify(event)
        assert [o.status for o in n.flush()] == ["sent", "sent"]

    mails = [r.message for r in smtp.mailbox.received]
    assert [m["Subject"].rsplit(" — ", 1)[1] for m in mails] == [
        "Ticket filed",
        "New message",
        "Status: Revalidation In Progress",
        "SLA overdue",
    ]
    assert {m["References"] for m in mails} == {f"<{ticket.key}@ffc-agent>"}
    assert len({m["Message-ID"] for m in mails}) == 4
    assert "FootfallCam support wrote on" in mails[1].get_content()
    assert "Please power-cycle the unit." in mails[1].get_content()
    assert "Next action: Waiting on customer" in mails[2].get_content()
    assert "overdue since Thu 27 Nov 2025 15:30 GMT" in mails[3].get_content()
    assert "> FootfallCam support: Please power-cycle the unit." in chat.texts[1]


@pytest.mark.integration
def test_quiet_hours_hold_everything_until_the_morning(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer
) -> None:
    clock = Clock(datetime(2025, 11, 26, 23, 30, tzinfo=LONDON))
    n = notifier(tmp_path, smtp, chat, clock, site={"quiet_hours": "22:00-07:00"})
    seven = datetime(2025, 11, 27, 7, 0, tzinfo=LONDON)
    ticket = filed_ticket()
    overdue = Event.sla_overdue(ticket, clock.now)

    held = n.notify(Event.filed(ticket)) + n.notify(overdue)
    assert [(o.status, o.due) for o in held] == [("held", seven)] * 4
    assert n.notify(Event.filed(ticket))[0].status == "held"  # still one of it in the queue
    assert len(n.pending()) == 4
    assert {i.next_attempt_at for i in notices(n)} == {seven}  # the item's "not before"
    assert n.flush(datetime(2025, 11, 27, 3, 0, tzinfo=LONDON)) == []
    assert smtp.mailbox.received == [] and chat.posts == []

    released = n.flush(seven)
    assert sorted((o.channel, o.status) for o in released) == [
        ("chat", "sent"),
        ("chat", "sent"),
        ("email", "sent"),
        ("email", "sent"),
    ]
    assert len(smtp.mailbox.received) == 2 and len(chat.posts) == 2
    assert "Ticket filed" in chat.texts[0] and "SLA overdue" in chat.texts[1]  # in order
    assert n.flush(seven + timedelta(hours=1)) == []
    assert n.pending() == []


@pytest.mark.integration
def test_a_retry_that_falls_into_the_quiet_hours_waits_for_their_end(
    tmp_path: Path, chat: ChatServer
) -> None:
    evening = datetime(2025, 11, 26, 21, 59, tzinfo=LONDON)
    n = notifier(tmp_path, None, chat, Clock(evening), site={"quiet_hours": "22:00-07:00"})
    chat.statuses[:] = [503]
    n.notify(Event.filed(filed_ticket()))
    assert statuses(n.flush()) == [("chat", "failed")]
    night = datetime(2025, 11, 27, 1, 0, tzinfo=LONDON)
    assert n.flush(night) == [] and len(chat.posts) == 1
    [item] = notices(n)
    assert item.next_attempt_at == datetime(2025, 11, 27, 7, 0, tzinfo=LONDON)
    assert statuses(n.flush(item.next_attempt_at)) == [("chat", "sent")]


@pytest.mark.integration
def test_a_failing_chat_server_is_retried_with_backoff_and_then_sent_once(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    chat.statuses[:] = [500, 503]
    n = notifier(tmp_path, smtp, chat)
    ticket = filed_ticket()

    n.notify(Event.filed(ticket))
    first = n.flush(NOW)
    assert statuses(first) == [("email", "sent"), ("chat", "failed")]
    failed = first[1]
    assert not failed.ok and not failed.permanent
    assert failed.error is not None and "HTTP 500" in failed.error
    assert HOOK_TOKEN not in failed.error

    # The next pass: the earlier post is tried first (503 again), and the new one is not
    # tried at all, so a broken server costs one request per pass.
    status = Event.status_changed(ticket.with_status(TicketStatus.SUGGEST_TO_CLOSE, NOW))
    n.notify(status)
    second = n.flush(NOW + timedelta(hours=1))
    assert statuses(second) == [("chat", "failed"), ("email", "sent"), ("chat", "failed")]
    assert second[2].error is not None and second[2].error.startswith("not tried")
    assert len(chat.posts) == 2

    retried = n.flush(NOW + timedelta(hours=3))
    assert statuses(retried) == [("chat", "sent"), ("chat", "sent")]
    assert "Ticket filed" in chat.texts[2] and "Suggest To Close" in chat.texts[3]
    assert n.notify(Event.filed(ticket))[1].status == "duplicate"
    assert n.flush(NOW + timedelta(hours=4)) == []
    assert len(chat.posts) == 4 and len(smtp.mailbox.received) == 2
    warnings = [r for r in caplog.records if r.name.startswith("agent") and r.levelno >= 30]
    assert len(warnings) == 1  # when it first failed; not again on each retry
    assert any("sent after an earlier failure" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_a_notice_still_failing_after_three_days_is_given_up(
    tmp_path: Path, chat: ChatServer
) -> None:
    n = notifier(tmp_path, None, chat)
    chat.statuses[:] = [503] * 20
    n.notify(Event.filed(filed_ticket()))
    assert statuses(n.flush(NOW)) == [("chat", "failed")]
    stale = NOW + GIVE_UP_AFTER + timedelta(minutes=1)
    [gave_up] = n.flush(stale)
    assert (gave_up.status, gave_up.permanent) == ("failed", True)
    assert gave_up.error is not None and gave_up.error.startswith("gave up after 3 days")
    assert len(chat.posts) == 1  # not tried again once stale
    assert n.flush(stale + timedelta(days=1)) == [] and n.pending() == []


@pytest.mark.integration
def test_a_revoked_webhook_is_a_permanent_failure_and_not_retried(
    tmp_path: Path, chat: ChatServer
) -> None:
    chat.statuses[:] = [404]
    n = notifier(tmp_path, None, chat)
    n.notify(Event.filed(filed_ticket()))
    (outcome,) = n.flush()
    assert (outcome.status, outcome.permanent) == ("failed", True)
    assert outcome.error is not None and "revoked" in outcome.error
    assert n.flush(NOW + timedelta(days=1)) == [] and n.pending() == []
    (again,) = n.notify(Event.filed(filed_ticket()))
    assert (again.status, again.permanent) == ("failed", True)
    assert len(chat.posts) == 1
    [finding] = n.outbox.health(NOW)  # the agent says so, as for a ticket destination
    assert finding.subject == "sink:notify:chat" and "404" in finding.summary
    assert HOOK_TOKEN not in finding.summary


@pytest.mark.integration
def test_an_unreachable_mail_server_leaves_the_mail_queued(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer
) -> None:
    data = config_data(smtp, chat)
    data["notifications"]["smtp"]["port"] = chat.port  # an HTTP server: it never says 220
    data["notifications"]["smtp"]["timeout_seconds"] = 1.0
    broken = Notifier(parse_config(data), outbox_at(tmp_path / "state"), clock=Clock(NOW))

    broken.notify(Event.filed(filed_ticket()))
    mail, post = broken.flush()
    assert (mail.status, mail.permanent, post.status) == ("failed", False, "sent")
    assert [p["channel"] for p in broken.pending()] == ["email"]
    n = notifier(tmp_path, smtp, chat)  # the right server, the same state
    assert [o.status for o in n.flush(NOW + timedelta(hours=1))] == ["sent"]
    assert len(smtp.mailbox.received) == 1 and len(chat.posts) == 1


@pytest.mark.integration
def test_a_site_posts_to_its_own_chat_group_in_its_markup(tmp_path: Path, chat: ChatServer) -> None:
    own = chat.url("/hooks/LDN01ownChannelT0ken0123")
    n = notifier(
        tmp_path,
        None,
        chat,
        site={"chat_webhook_url": own},
        chat_markup="slack",
        chat_username="ffc-agent",
        chat_icon_emoji=":vertical_traffic_light:",
        events=["filed"],
    )
    ticket = filed_ticket()
    assert n.notify(Event.status_changed(ticket)) == []  # not a wanted kind
    (outcome,) = n.notify(Event.filed(ticket))
    assert outcome.status == "queued"
    assert statuses(n.flush()) == [("chat", "sent")]
    (post,) = chat.posts
    assert post.path == "/hooks/LDN01ownChannelT0ken0123"
    assert post.json["username"] == "ffc-agent"
    assert post.json["icon_emoji"] == ":vertical_traffic_light:"
    assert post.json["text"].startswith("*[L-000123]* ")
    [item] = notices(n)
    assert item.payload["channel"] == "LDN01"  # a reference to the channel, not its URL


@pytest.mark.integration
def test_the_webhook_url_is_looked_up_when_the_notice_is_sent(
    tmp_path: Path, chat: ChatServer
) -> None:
    clock = Clock(datetime(2025, 11, 26, 23, 30, tzinfo=LONDON))
    held = notifier(tmp_path, None, chat, clock, site={"quiet_hours": "22:00-07:00"})
    [outcome] = held.notify(Event.filed(filed_ticket()))
    assert outcome.status == "held"
    # overnight the installer rotates the webhook (the old token was revoked)
    moved = notifier(
        tmp_path,
        None,
        chat,
        clock,
        site={"quiet_hours": "22:00-07:00"},
        chat_webhook_url=chat.url("/hooks/R0tatedT0kenAfterRevoke1"),
    )
    assert statuses(moved.flush(datetime(2025, 11, 27, 7, 0, tzinfo=LONDON))) == [("chat", "sent")]
    assert [p.path for p in chat.posts] == ["/hooks/R0tatedT0kenAfterRevoke1"]


@pytest.mark.integration
def test_no_secret_reaches_a_mailbox_a_chat_channel_the_state_or_the_logs(
    tmp_path: Path, smtp: SmtpServer, chat: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [HOOK_TOKEN, PASSWORD, COUNTER_PASSWORD]
    ticket = filed_ticket(
        summary=f"Counter FFC0002 refused the login with {COUNTER_PASSWORD} and then closed"
    )
    leak = Message(
        at=NOW,
        author="installer",
        body=f"I tried {PASSWORD} and posted to {chat.url()} (token {HOOK_TOKEN})",
    )
    chat.statuses[:] = [500]  # so an error is logged too
    n = notifier(tmp_path, smtp, chat)
    outcomes = n.notify(Event.filed(ticket)) + n.flush()
    outcomes += n.notify(Event.new_message(ticket, leak)) + n.flush(NOW + timedelta(hours=1))

    assert len(smtp.mailbox.received) == 2
    assert len(chat.posts) == 3  # the failed one, its retry, the message
    assert "[REDACTED]" in chat.texts[1] and "[REDACTED]" in chat.texts[2]
    shown = [r.data.decode("utf-8", "replace") for r in smtp.mailbox.received]
    shown += [r.message.get_content() for r in smtp.mailbox.received]
    shown += [p.body.decode() for p in chat.posts] + [str(o) for o in outcomes]
    n.outbox.store.close()  # the database, its WAL and all: nothing there either
    _open.remove(n.outbox.store)
    state = [p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()]
    shown += [b.decode("utf-8", "replace") for b in state]
    assert state  # the outbox is there
    for secret in secrets:
        assert not any(secret in text for text in shown), secret
        assert all(
            secret not in r.getMessage() for r in caplog.records if r.name.startswith("agent")
        ), secret
    # A library's own debug lines (urllib3 logs the request line) are scrubbed by the
    # redacting log filter, which can only do it if the token is among the secret values.
    scrub = Redactor(n.config.secret_values())
    assert all(HOOK_TOKEN not in scrub.text(r.getMessage()) for r in caplog.records)


CRASHING_FLUSH = """
import json, sys
from datetime import datetime
from pathlib import Path
from agent.config import parse_config
from agent.delivery.notify import Notifier
from agent.delivery.outbox import Outbox
from agent.store import Store

data, state, now = json.loads(sys.argv[1]), Path(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
with Store.open(state) as store:
    Notifier(parse_config(data), Outbox(store, state)).flush(now)
"""


@pytest.mark.integration
@pytest.mark.parametrize(("step", "copies"), [("before_send", 1), ("after_send", 2)])
def test_a_notice_survives_a_kill_and_its_copies_share_a_message_id(
    tmp_path: Path, smtp: SmtpServer, step: str, copies: int
) -> None:
    """SIGKILL before the send loses nothing; after it, before the delivery is recorded, the
    mail goes again (at least once) with the same Message-ID, so the copy can be dropped."""
    n = notifier(tmp_path, smtp, None)
    n.notify(Event.filed(filed_ticket()))
    data = json.dumps(config_data(smtp, None))
    killed = subprocess.run(
        [sys.executable, "-c", CRASHING_FLUSH, data, str(tmp_path / "state"), NOW.isoformat()],
        cwd=ROOT,
        env={**os.environ, CRASH_ENV: step, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(smtp.mailbox.received) == copies - 1

    assert statuses(n.flush(NOW + timedelta(minutes=5))) == [("email", "sent")]
    assert n.flush(NOW + timedelta(hours=1)) == []
    wait_for(lambda: len(smtp.mailbox.received) >= copies)
    assert len({r.message["Message-ID"] for r in smtp.mailbox.received}) == 1
    assert len(smtp.mailbox.received) == copies
