"""The sent-log of write-only destinations: replay, torn lines, attachment descriptions."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from agent.delivery.sinks.base import SinkError
from agent.delivery.sinks.sentlog import SentLog, content_type, describe, number_for
from tests.agent.sink_helpers import NOW, make_ticket


def test_replay_applies_messages_and_statuses_and_skips_a_torn_line(tmp_path: Path) -> None:
    sent = SentLog(tmp_path, "helpdesk")
    ticket = make_ticket().filed("M-1")
    later = (NOW + timedelta(hours=1)).isoformat()
    with sent.locked():
        sent.append(
            {
                "event": "filed",
                "key": ticket.key,
                "number": "M-1",
                "ref": "<a@x>",
                "sent_at": NOW.isoformat(),
                "ticket": ticket.to_json(),
            }
        )
        sent.append(
            {
                "event": "message",
                "key": ticket.key,
                "number": "M-1",
                "ref": "<b@x>",
                "sent_at": later,
                "at": later,
                "author": "ffc-agent",
                "body": "back up",
            }
        )
        sent.append(
            {
                "event": "status",
                "key": ticket.key,
                "number": "M-9",
                "ref": "<c@x>",
                "sent_at": later,
                "at": later,
                "status": "Closed",
                "next_action": None,
            }
        )
    with sent.path.open("a") as fh:
        fh.write('{"v": 1, "event": "status", "number": "M-1", "ref"')  # a crash mid-write

    entry = sent.entries()["M-1"]
    assert [m.body for m in entry.ticket.messages] == ["back up"]
    assert entry.ticket.status.value == "Open"  # the status line was for an unknown number
    assert entry.refs == {"<a@x>", "<b@x>"}
    assert sent.find_by_key(ticket.key) is not None
    assert sent.find_by_key("ffc-unknown") is None
    assert [t.number for t in sent.tickets()] == ["M-1"]


def test_an_absent_log_is_empty(tmp_path: Path) -> None:
    assert SentLog(tmp_path / "not-yet", "hook").tickets() == []


def test_numbers_are_stable_and_content_types_fit_mail_clients() -> None:
    assert number_for("M-", "ffc-1") == "M-" + hashlib.sha256(b"ffc-1").hexdigest()[:12]
    assert number_for("M-", "ffc-1") == number_for("M-", "ffc-1")
    assert content_type("bundle.tar.gz") == "application/gzip"
    assert content_type("view.jpg") == "image/jpeg"
    assert content_type("noext") == "application/octet-stream"


@pytest.mark.parametrize("name", ["../escape.txt", "a/b.txt", ".hidden", ""])
def test_unsafe_attachment_names_are_permanent_errors(name: str) -> None:
    with pytest.raises(SinkError) as info:
        describe({name: b"x"})
    assert info.value.permanent
