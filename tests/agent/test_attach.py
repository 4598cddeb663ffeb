"""Attaching files (a remote-session transcript, a bundle) to a ticket that already exists: in
the local store, Request Tracker, e-mail and a webhook; through the outbox, redacted, once."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.app import App
from agent.cli import cli
from agent.config import load_config
from agent.delivery.attach import AttachError, attach_files
from agent.delivery.sinks.local import LocalSink
from agent.store import Store
from tests.agent.sink_helpers import NOW, file_via_outbox, follow_up_via_outbox, make_ticket
from tests.agent.test_webhook_sink import Receiver, receiver
from tests.agent.test_webhook_sink import sink_for as webhook_sink_for

__all__ = ["receiver"]  # the webhook test's fixture, used here

PASSWORD = "Ctr-pl4nted-Pw-9fK2xQ"  # planted: the counter's password in the config
TRANSCRIPT = (
    '{"format": "ffc-agent-shell-transcript/1", "counter": "FC3D000101", "actor": "jo"}\n'
    f"2025-11-26T15:31:02Z < curl -u admin:{PASSWORD} http://127.0.0.1/cgi-bin/status\n"
    "2025-11-26T15:31:03Z > camera: not detected\n"
)


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""[agent]
state_dir = "{tmp_path / "state"}"

[[sites]]
code = "LDN01"
name = "London Oxford Street"
timezone = "Europe/London"
opening_hours = {{ mon = "09:00-20:00" }}

[[counters]]
serial = "FC3D000101"
name = "Main entrance"
site = "LDN01"
host = "127.0.0.1"
username = "admin"
password = "{PASSWORD}"
"""
    )
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def runner(config_path: Path) -> Iterator[App]:
    with App.open(load_config(config_path)) as app:
        yield app


def audits(store: Store) -> list[dict[str, Any]]:
    rows = store._db.execute(
        "SELECT actor, action, target, detail FROM audit WHERE action = 'ticket.attach'"
    ).fetchall()
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


# --- the local store, through the outbox


def test_a_transcript_is_attached_redacted_once_and_a_new_file_is_a_new_message(
    runner: App, tmp_path: Path
) -> None:
    [sink] = runner.sinks
    assert isinstance(sink, LocalSink)
    filed = sink.file(make_ticket())  # filed before, e.g. by another gateway: not via our outbox
    assert filed.number is not None
    transcript = tmp_path / "FC3D000101-shell.txt"
    transcript.write_text(TRANSCRIPT)

    done = attach_files(
        runner, filed.number, [transcript], actor="jo", now=NOW, message="Camera checked"
    )

    assert [(i["sink"], i["state"]) for i in done.items] == [("local", "delivered")]
    ticket = sink.get(filed.number)
    assert ticket is not None
    [attachment] = ticket.attachments
    stored = (sink.directory / filed.number / attachment.name).read_bytes()
    assert PASSWORD.encode() not in stored
    assert b"[REDACTED]" in stored and b"camera: not detected" in stored
    assert attachment.sha256 == hashlib.sha256(stored).hexdigest() == done.files[0]["sha256"]
    [message] = ticket.messages
    assert message.author == "jo"
    assert "Camera checked" in message.body and attachment.sha256 in message.body
    assert not any(runner.tickets.outbox.files.glob("*/*"))  # removed once delivered

    # The same file again, later: the outbox knows it, so no second message, no second file.
    attach_files(
        runner,
        filed.number,
        [transcript],
        actor="jo",
        now=NOW + timedelta(hours=1),
        message="Camera checked",
    )
    again = sink.get(filed.number)
    assert again is not None
    assert len(again.messages) == 1 and len(again.attachments) == 1

    # Another file of the same name is another follow-up, and never replaces the first.
    transcript.write_text(TRANSCRIPT + "2025-11-26T15:40:00Z > camera: detected\n")
    attach_files(runner, filed.number, [transcript], actor="jo", now=NOW, message="Camera checked")
    third = sink.get(filed.number)
    assert third is not None
    assert [a.name for a in third.attachments] == [
        "FC3D000101-shell.txt",
        "FC3D000101-shell-2.txt",
    ]
    assert len(third.messages) == 2
    assert (sink.directory / filed.number / "FC3D000101-shell.txt").read_bytes() == stored

    entries = audits(runner.store)
    assert len(entries) == 3
    assert entries[0]["actor"] == "jo" and entries[0]["target"] == filed.number
    assert entries[0]["detail"]["files"] == done.files
    assert entries[0]["detail"]["sinks"] == ["local"]


def test_a_ticket_no_destination_has_and_a_file_too_large_are_refused(
    runner: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with pytest.raises(AttachError, match="no ticket L-000042"):
        attach_files(runner, "L-000042", [note], actor="jo", now=NOW)
    monkeypatch.setattr("agent.delivery.attach.MAX_FILE_BYTES", 4)
    filed = runner.sinks[0].file(make_ticket())
    with pytest.raises(AttachError, match="more than the 4"):
        attach_files(runner, str(filed.number), [note], actor="jo", now=NOW)
    assert runner.tickets.outbox.items() == [] and audits(runner.store) == []


# --- the command line


def test_tickets_attach_queues_and_delivers_a_redacted_file(
    config_path: Path, tmp_path: Path
) -> None:
    filed = LocalSink(tmp_path / "state" / "tickets").file(make_ticket())
    transcript = tmp_path / "session.txt"
    transcript.write_text(TRANSCRIPT)

    result = CliRunner().invoke(
        cli,
        [
            "tickets",
            "attach",
            str(filed.number),
            str(transcript),
            "--message",
            "The session",
            "--config",
            str(config_path),
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    data = json.loads(result.output)
    assert data["number"] == filed.number
    assert [f["name"] for f in data["files"]] == ["session.txt"]
    assert [(i["sink"], i["number"], i["state"]) for i in data["items"]] == [
        ("local", filed.number, "delivered")
    ]
    ticket = LocalSink(tmp_path / "state" / "tickets").get(str(filed.number))
    assert ticket is not None
    assert [a.sha256 for a in ticket.attachments] == [data["files"][0]["sha256"]]
    assert "The session" in ticket.messages[-1].body


def test_tickets_attach_refuses_a_binary_file_and_queues_nothing(
    config_path: Path, tmp_path: Path
) -> None:
    filed = LocalSink(tmp_path / "state" / "tickets").file(make_ticket())
    blob = tmp_path / "firmware.bin"
    blob.write_bytes(b"\x7fELF\x00\x01\xff\xfe")

    result = CliRunner().invoke(
        cli,
        ["tickets", "attach", str(filed.number), str(blob), "--config", str(config_path)],
    )

    assert result.exit_code == 1
    assert "firmware.bin: a binary file" in result.output
    with Store.open(tmp_path / "state") as store:
        assert store._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        assert audits(store) == []
    ticket = LocalSink(tmp_path / "state" / "tickets").get(str(filed.number))
    assert ticket is not None and ticket.messages == [] and ticket.attachments == []


# --- the other destinations: the follow-up carries the file


@pytest.mark.integration
def test_rt_keeps_the_file_of_a_reply_byte_for_byte(rt_server: Any) -> None:
    from tests.agent.test_rt_sink import BUNDLE, make_sink

    sink = make_sink(rt_server)
    filed = sink.file(make_ticket_for_rt())
    assert filed.number is not None

    after = sink.add_message(filed.number, "jo", "The bundle", NOW, {"later.tar.gz": BUNDLE})

    assert [a.name for a in after.attachments] == ["later.tar.gz"]
    assert after.attachments[0].sha256 == hashlib.sha256(BUNDLE).hexdigest()
    assert any(m.body.strip() == "The bundle" for m in after.messages)
    parts = rt_server.api(
        "GET", f"ticket/{filed.number}/attachments", params={"fields": "Filename,TransactionId"}
    ).json()["items"]
    [part] = [p for p in parts if p["Filename"] == "later.tar.gz"]
    history = rt_server.api(
        "GET", f"ticket/{filed.number}/history", params={"fields": "Type"}
    ).json()["items"]
    replies = [t["id"] for t in history if t["Type"] == "Correspond"]
    assert replies == [part["TransactionId"]]  # sent with the reply itself
    content = rt_server.api("GET", f"attachment/{part['id']}").json()["Content"]
    assert base64.b64decode(content) == BUNDLE  # as staff download it


def make_ticket_for_rt() -> Any:
    from tests.agent.test_rt_sink import make_ticket as rt_ticket

    return rt_ticket()


@pytest.mark.integration
def test_an_email_follow_up_carries_the_file(tmp_path: Path) -> None:
    smtp = pytest.importorskip("tests.agent.test_smtp_sink")
    state = tmp_path / "state"
    with smtp.smtp_server(tmp_path / "tls") as server:
        sink = smtp.sink_for(server, state)
        ticket = make_ticket()
        filed = file_via_outbox(sink, state, ticket)
        data = TRANSCRIPT.encode()

        for _ in range(2):  # the same session attached twice is one follow-up
            follow_up_via_outbox(
                sink,
                state,
                ticket.key,
                "The session",
                NOW,
                author="jo",
                attachments={"shell.txt": data},
            )

        assert len(server.mailbox.received) == 2
        message = server.mailbox.received[1].message
        assert message["In-Reply-To"] == f"<{ticket.key}@ffc-agent>"
        [part] = list(message.iter_attachments())
        assert part.get_filename() == "shell.txt"
        assert part.get_payload(decode=True) == data
        read_back = sink.get(str(filed.number))
        assert read_back is not None
        assert [a.name for a in read_back.attachments] == ["shell.txt"]
        assert read_back.attachments[0].sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.integration
def test_a_webhook_message_event_carries_the_file(receiver: Receiver, tmp_path: Path) -> None:
    state = tmp_path / "state"
    sink = webhook_sink_for(receiver, state)
    ticket = make_ticket()
    filed = file_via_outbox(sink, state, ticket, {"shell.txt": b"first"})
    data = TRANSCRIPT.encode()

    files = {"shell.txt": data}
    follow_up_via_outbox(
        sink, state, ticket.key, "The session", NOW, author="jo", attachments=files
    )

    seen = receiver.seen[-1]
    assert seen.signature_ok and seen.headers["X-FFC-Event"] == "ticket.message"
    payload = seen.json
    assert payload["message"]["body"] == "The session"
    [sent] = payload["attachments"]
    assert sent["name"] == "shell-2.txt"  # the ticket has a shell.txt already
    assert base64.b64decode(sent["content_base64"]) == data
    assert sent["sha256"] == hashlib.sha256(data).hexdigest()
    after = sink.get(str(filed.number))
    assert after is not None
    assert [a.name for a in after.attachments] == ["shell.txt", "shell-2.txt"]
    follow_up_via_outbox(
        sink, state, ticket.key, "The session", NOW, author="jo", attachments=files
    )
    assert len(receiver.seen) == 2
