"""What write-only destinations share: the outbox's record they read back from, attachment
descriptions, stable numbers. The record is read from a real state database."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from agent.delivery.outbox import Outbox, Record
from agent.delivery.sinks.base import SinkError
from agent.delivery.sinks.local import LocalSink
from agent.delivery.sinks.writeonly import content_type, describe, number_for
from agent.store import Store
from tests.agent.sink_helpers import NOW, make_ticket


def test_the_record_is_what_was_delivered_as_the_destination_answered(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path / "tickets")
    ticket = make_ticket()
    later = NOW + timedelta(hours=1)
    with Store.open(tmp_path) as store:
        outbox = Outbox(store, tmp_path)
        outbox.enqueue_ticket([sink], ticket, incident_id=None, now=NOW)
        outbox.enqueue_message(
            [sink], ticket.key, author="ffc-agent", body="back up", at=later, now=NOW
        )
        outbox.enqueue_ticket([sink], make_ticket("FFC0003"), incident_id=None, now=later)
        assert [d.outcome for d in outbox.deliver([sink], NOW)] == ["delivered", "delivered"]
        record = Record(tmp_path, sink.name)
        [first] = record.tickets().values()  # the second ticket is not due yet: not in it
        assert [m.body for m in first.messages] == ["back up"]  # the latest answer stands
        assert first.number == "L-000001" and first.key == ticket.key
        outbox.deliver([sink], later)
        assert list(record.tickets()) == ["L-000001", "L-000002"]  # in the order filed
        assert Record(tmp_path, "another").tickets() == {}


def test_an_absent_state_database_is_an_empty_record(tmp_path: Path) -> None:
    assert Record(tmp_path / "not-yet", "hook").tickets() == {}
    assert not (tmp_path / "not-yet").exists()  # reading creates nothing


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
