"""The outbox: retries with backoff, unknown outcomes searched first, permanent failures,
joining a ticket raised by hand, follow-ups after their ticket — with a real local store."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from agent.delivery.outbox import DELIVERED, FAILED, PENDING, UNKNOWN, Outbox, Record
from agent.delivery.sinks.base import OutcomeUnknown, SinkError
from agent.delivery.sinks.local import LocalSink
from agent.store import Store
from diagnostics.model import Finding, Status
from rma.tickets import CounterRef, ProblemContext, Role, compose, idempotency_key

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


class Scripted(LocalSink):
    """A real local ticket store whose next calls can be made to fail, as a helpdesk does."""

    def __init__(self, directory):
        super().__init__(directory)
        self.fail_next: list[Exception] = []
        self.lose_reply = False
        self.files = 0

    def file(self, ticket, attachments=None):
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.files += 1
        filed = super().file(ticket, attachments)
        if self.lose_reply:  # the ticket is made, but the answer never arrives
            self.lose_reply = False
            raise OutcomeUnknown("read timed out after sending")
        return filed


def ticket(serial="C1", started=NOW - timedelta(hours=1)):
    f = Finding(
        "counter.offline",
        Status.FAIL,
        "refused",
        "refused",
        NOW,
        "S1",
        serial,
        {"failing_since": started.isoformat()},
    )
    return compose(
        ProblemContext(
            key=idempotency_key("counter.offline", serial, started),
            site_code="S1",
            site_name="Store",
            timezone="Europe/London",
            counters=(CounterRef(serial, "Door"),),
            findings=(f,),
            started_at=started,
            requester="it@example.com",
            cc=(),
            role=Role.CUSTOMER,
            now=NOW,
        )
    )


@pytest.fixture
def world(tmp_path):
    with Store.open(tmp_path) as store:
        sink = Scripted(tmp_path / "tickets")
        yield store, sink, Outbox(store, tmp_path)


def test_delivers_once_with_its_attachments(world):
    _store, sink, outbox = world
    t = ticket()
    outbox.enqueue_ticket([sink], t, incident_id=None, attachments={"a.txt": b"hi"}, now=NOW)
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "delivered" and d.number == "L-000001"
    assert (sink.directory / d.number / "a.txt").read_bytes() == b"hi"
    assert outbox.deliver([sink], NOW + timedelta(hours=1)) == []
    assert [i.state for i in outbox.items()] == [DELIVERED]


def test_transient_errors_back_off_then_deliver(world):
    _store, sink, outbox = world
    outbox.enqueue_ticket([sink], ticket(), incident_id=None, now=NOW)
    sink.fail_next = [SinkError("HTTP 503"), SinkError("HTTP 429")]
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "retry"
    [item] = outbox.items()
    assert item.state == PENDING and item.next_attempt_at > NOW and item.attempts == 1
    assert outbox.deliver([sink], NOW) == []  # not due yet
    [d] = outbox.deliver([sink], item.next_attempt_at)
    assert d.outcome == "retry"
    later = outbox.items()[0]
    assert later.next_attempt_at - item.next_attempt_at > timedelta(0)  # backing off
    [d] = outbox.deliver([sink], NOW + timedelta(days=1))
    assert d.outcome == "delivered" and sink.files == 1


def test_retry_after_is_honoured(world):
    _store, sink, outbox = world
    outbox.enqueue_ticket([sink], ticket(), incident_id=None, now=NOW)
    busy = SinkError("429")
    busy.retry_after = 3600
    sink.fail_next = [busy]
    outbox.deliver([sink], NOW)
    assert outbox.items()[0].next_attempt_at >= NOW + timedelta(hours=1)


def test_an_unknown_outcome_is_searched_never_sent_blindly(world):
    _store, sink, outbox = world
    outbox.enqueue_ticket([sink], ticket(), incident_id=None, now=NOW)
    sink.lose_reply = True
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "unknown" and outbox.items()[0].state == UNKNOWN
    [d] = outbox.deliver([sink], NOW + timedelta(days=1))
    assert d.outcome == "found" and d.number == "L-000001"
    assert sink.files == 1 and len(sink.list()) == 1


def test_a_permanent_refusal_fails_and_raises_an_agent_finding(world):
    _store, sink, outbox = world
    outbox.enqueue_ticket([sink], ticket(), incident_id=None, now=NOW)
    sink.fail_next = [SinkError("HTTP 403 forbidden", permanent=True)]
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "failed" and outbox.items()[0].state == FAILED
    assert outbox.deliver([sink], NOW + timedelta(days=1)) == []  # not looping
    [f] = outbox.health(NOW)
    assert f.check_id == "agent.outbox" and f.status is Status.FAIL and "403" in f.summary
    assert outbox.retry_failed(NOW) == 1
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "delivered" and outbox.health(NOW) == []


def test_a_ticket_raised_by_hand_is_joined_not_duplicated(world):
    _store, sink, outbox = world
    by_hand = ticket(started=NOW - timedelta(days=2))  # same counter and category, other key
    manual = sink.file(by_hand)
    t = ticket()
    outbox.enqueue_ticket([sink], t, incident_id=None, now=NOW)
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "joined" and d.number == manual.number
    assert len(sink.list()) == 1
    joined = sink.get(manual.number)
    assert "adds its evidence here" in joined.messages[-1].body


def test_follow_ups_wait_for_their_ticket_and_are_sent_once(world):
    _store, sink, outbox = world
    t = ticket()
    outbox.enqueue_ticket([sink], t, incident_id=None, now=NOW)
    for _ in range(2):  # the same follow-up twice is one follow-up
        outbox.enqueue_message(
            [sink],
            t.key,
            author="ffc-agent",
            body="Recovered.",
            at=NOW,
            status="Suggest To Close",
            now=NOW,
        )
    sink.fail_next = [SinkError("down")]
    outcomes = [d.outcome for d in outbox.deliver([sink], NOW)]
    assert outcomes == ["retry", "skipped"]  # the follow-up waits for its ticket
    outcomes = [d.outcome for d in outbox.deliver([sink], NOW + timedelta(days=1))]
    assert outcomes == ["delivered", "delivered"]
    [filed] = sink.list()
    assert filed.status == "Suggest To Close" and filed.messages[-1].body == "Recovered."


def test_depth_and_age_per_destination(world):
    _store, sink, outbox = world
    outbox.enqueue_ticket([sink], ticket("C1"), incident_id=None, now=NOW)
    outbox.enqueue_ticket([sink], ticket("C2"), incident_id=None, now=NOW + timedelta(minutes=5))
    assert outbox.depth(NOW + timedelta(minutes=10)) == {"local": (2, 600.0)}


def test_follow_ups_of_a_refused_ticket_fail_with_it(world):
    _store, sink, outbox = world
    t = ticket()
    outbox.enqueue_ticket([sink], t, incident_id=None, now=NOW)
    outbox.enqueue_message([sink], t.key, author="ffc-agent", body="Recovered.", at=NOW, now=NOW)
    sink.fail_next = [SinkError("HTTP 403", permanent=True)]
    outcomes = [d.outcome for d in outbox.deliver([sink], NOW)]
    assert outcomes == ["failed", "failed"]
    assert outbox.depth(NOW) == {}  # nothing left waiting for ever


def test_a_schema_3_outbox_is_migrated_with_its_items(tmp_path):
    import sqlite3

    from agent.store import DB_NAME, MIGRATIONS

    db = sqlite3.connect(tmp_path / DB_NAME)
    for script in MIGRATIONS[:3]:
        db.executescript(script)
    db.execute(
        "INSERT INTO outbox (sink, kind, key, digest, payload, state, next_attempt_at, "
        "created_at) VALUES ('local', 'create', 'ffc-1', 'd', '{}', 'pending', ?, ?)",
        (NOW.isoformat(), NOW.isoformat()),
    )
    t = ticket()
    db.execute(
        "INSERT INTO outbox (sink, kind, key, digest, payload, state, next_attempt_at, "
        "created_at, number) VALUES ('helpdesk', 'create', ?, 'd', ?, 'delivered', ?, ?, 'M-1')",
        (t.key, json.dumps({"ticket": t.to_json()}), NOW.isoformat(), NOW.isoformat()),
    )
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    with Store.open(tmp_path) as store:
        assert store.schema_version == len(MIGRATIONS) >= 4
        pending, delivered = Outbox(store, tmp_path).items()
        assert (pending.key, pending.state) == ("ffc-1", PENDING)
        row = store._db.execute("SELECT result FROM outbox WHERE id = ?", (pending.id,)).fetchone()
        assert row[0] is None  # nothing delivered yet: nothing on record
    # what was e-mailed before the upgrade is still on record, so its follow-ups can go
    [filed] = Record(tmp_path, "helpdesk").tickets().values()
    assert (filed.key, filed.number, filed.subject) == (t.key, "M-1", t.subject)
    assert delivered.state == DELIVERED


def test_a_delivered_item_keeps_the_destinations_answer_and_announces_in_its_transaction(world):
    store, sink, outbox = world
    t = ticket()
    outbox.enqueue_ticket([sink], t, incident_id=None, now=NOW)
    seen = []

    def announce(d):
        assert store._db.in_transaction  # kept exactly when the delivery is
        seen.append((d.item.kind, d.number))

    outbox.deliver([sink], NOW, announce=announce)
    assert seen == [("create", "L-000001")]
    row = store._db.execute("SELECT result FROM outbox").fetchone()
    assert '"number": "L-000001"' in row[0]
    assert outbox.ticket(t.key).number == "L-000001"


class Recording:
    """A notification channel that records what it is asked to send (a stand-in for the
    e-mail and chat channels, whose servers test_notify runs for real)."""

    def __init__(self, name, during_send=None):
        self.name = name
        self.sent = []
        self.during_send = during_send

    def destination(self, payload):
        return self.name

    def hold_until(self, payload, now):
        return None

    def send(self, payload, now):
        if self.during_send is not None:
            self.during_send()
        self.sent.append(payload["text"])


def test_two_processes_never_both_send_an_item_they_both_found_pending(tmp_path):
    with Store.open(tmp_path) as mine, Store.open(tmp_path) as theirs:
        outbox, other = Outbox(mine, tmp_path), Outbox(theirs, tmp_path)
        fast = Recording("fast")
        # while this pass sends its first item, another process delivers the second
        slow = Recording("slow", during_send=lambda: other.deliver([fast], NOW))
        for channel, text in ((slow, "one"), (fast, "two")):
            outbox.enqueue_notice(
                channel.name, "chat", "ffc-1", f"e-{text}", {"text": text}, not_before=NOW, now=NOW
            )
        done = outbox.deliver([slow, fast], NOW)
        assert [d.outcome for d in done] == ["delivered", "skipped"]
        assert done[1].error == "another process took it first"
        assert (slow.sent, fast.sent) == (["one"], ["two"])
        assert [i.state for i in outbox.items()] == [DELIVERED, DELIVERED]
