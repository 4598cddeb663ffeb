"""The outbox: retries with backoff, unknown outcomes searched first, permanent failures,
joining a ticket raised by hand, follow-ups after their ticket — with a real local store."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.delivery.outbox import (
    DELIVERED,
    FAILED,
    PENDING,
    UNKNOWN,
    Outbox,
    Record,
    bundle_attached,
    bundle_follows,
    bundle_marker,
)
from agent.delivery.sinks.base import OutcomeUnknown, SinkError
from agent.delivery.sinks.local import LocalSink
from agent.store import Store
from diagnostics.model import Finding, Status
from rma.bundle import numbered
from rma.tickets import CounterRef, ProblemContext, Role, Ticket, compose, idempotency_key
from tests.agent.outbox_driver import bundle_for, numbered_files

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


def test_items_are_asked_for_by_ticket_destination_kind_and_state(world):
    _store, sink, outbox = world
    first, second = ticket("C1"), ticket("C2")
    for t in (first, second):
        outbox.enqueue_ticket([sink], t, incident_id=None, now=NOW)
        outbox.enqueue_message([sink], t.key, author="a", body="b", at=NOW, now=NOW)
    outbox.deliver([sink], NOW)
    assert len(outbox.items()) == 4
    mine = outbox.items(key=first.key)
    assert [i.kind for i in mine] == ["create", "message"] and {i.key for i in mine} == {first.key}
    assert [i.key for i in outbox.items(kinds=("create",))] == [first.key, second.key]
    assert outbox.items(sink="elsewhere") == []
    both = outbox.items(states=(DELIVERED,), sink=sink.name, key=second.key, kinds=("message",))
    assert [(i.key, i.kind) for i in both] == [(second.key, "message")]


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


def test_a_second_process_delivers_nothing_while_one_is_delivering(tmp_path):
    with Store.open(tmp_path) as mine, Store.open(tmp_path) as theirs:
        outbox, other = Outbox(mine, tmp_path), Outbox(theirs, tmp_path)
        fast = Recording("fast")
        beside: list = []
        # while this pass sends its first item, another process tries a pass of its own
        slow = Recording("slow", during_send=lambda: beside.append(other.deliver([fast], NOW)))
        for channel, text in ((slow, "one"), (fast, "two")):
            outbox.enqueue_notice(
                channel.name, "chat", "ffc-1", f"e-{text}", {"text": text}, not_before=NOW, now=NOW
            )
        done = outbox.deliver([slow, fast], NOW)
        assert beside == [[]]  # the lock was held: it sent nothing, judged nothing crashed
        assert [d.outcome for d in done] == ["delivered", "delivered"]
        assert (slow.sent, fast.sent) == (["one"], ["two"])
        assert [i.state for i in outbox.items()] == [DELIVERED, DELIVERED]
        # once the pass is over, the lock is free for the other process
        outbox.enqueue_notice(
            "fast", "chat", "ffc-1", "e-three", {"text": "3"}, not_before=NOW, now=NOW
        )
        assert [d.outcome for d in other.deliver([fast], NOW)] == ["delivered"]


def test_an_item_is_claimed_by_compare_and_set(tmp_path):
    with Store.open(tmp_path) as mine, Store.open(tmp_path) as theirs:
        outbox, other = Outbox(mine, tmp_path), Outbox(theirs, tmp_path)
        outbox.enqueue_notice("c", "chat", "ffc-1", "e", {"text": "x"}, not_before=NOW, now=NOW)
        [seen_by_me] = outbox.items()
        [seen_by_them] = other.items()
        assert outbox._claim(seen_by_me) is True
        assert other._claim(seen_by_them) is False  # it changed since they read it


# --- an item's files are its own ---------------------------------------------------------------


def staged(tmp_path):
    """The attachment folders on disk (the lock file aside)."""
    folder = tmp_path / "outbox"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def test_a_rolled_back_item_leaves_its_files_to_nobody(world, tmp_path):
    store, sink, outbox = world
    with pytest.raises(RuntimeError), store.transaction():
        [gone] = outbox.enqueue_ticket(
            [sink], ticket("C1"), incident_id=None, attachments={"bundle.txt": b"site A"}, now=NOW
        )
        raise RuntimeError("the incident change failed after the enqueue")
    assert outbox.items() == []
    [orphan] = staged(tmp_path)  # staged before the insert, named by no row
    # the next item may get the same id (SQLite hands out a rolled-back id again): it is
    # still only its own files that go
    [item_id] = outbox.enqueue_ticket(
        [sink], ticket("C2"), incident_id=None, attachments={"other.txt": b"site B"}, now=NOW
    )
    assert item_id == gone
    assert outbox.attachments(item_id) == {"other.txt": b"site B"}
    [d] = outbox.deliver([sink], NOW)
    assert sorted(p.name for p in (sink.directory / d.number).iterdir() if p.suffix == ".txt") == [
        "other.txt"
    ]
    assert staged(tmp_path) == [orphan]  # its own folder went with the delivery


def test_only_the_files_the_row_names_are_sent_and_each_is_checked(world, tmp_path):
    _store, sink, outbox = world
    [item_id] = outbox.enqueue_ticket(
        [sink], ticket(), incident_id=None, attachments={"a.txt": b"mine"}, now=NOW
    )
    [folder] = staged(tmp_path)
    (tmp_path / "outbox" / folder / "stray.txt").write_bytes(b"someone else's")
    assert outbox.attachments(item_id) == {"a.txt": b"mine"}
    (tmp_path / "outbox" / folder / "a.txt").write_bytes(b"changed")
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "failed" and "a.txt" in d.error and "changed" in d.error
    assert sink.files == 0  # nothing but the item's own bytes is ever sent


def test_folders_no_item_names_are_swept_once_old(world, tmp_path):
    import os
    import time

    store, sink, outbox = world
    with pytest.raises(RuntimeError), store.transaction():
        outbox.enqueue_ticket(
            [sink], ticket("C1"), incident_id=None, attachments={"x": b"1"}, now=NOW
        )
        raise RuntimeError
    [orphan] = staged(tmp_path)
    outbox.enqueue_ticket([sink], ticket("C2"), incident_id=None, attachments={"y": b"2"}, now=NOW)
    [waiting] = set(staged(tmp_path)) - {orphan}
    assert outbox.sweep() == []  # young: it may be another process's, not committed yet
    old = time.time() - 3600
    for name in (orphan, waiting):
        os.utime(tmp_path / "outbox" / name, (old, old))
    assert outbox.sweep() == [orphan]
    assert staged(tmp_path) == [waiting]  # an undelivered item's files are never swept
    [d] = outbox.deliver([sink], NOW)
    assert d.outcome == "delivered" and staged(tmp_path) == []


def test_ids_are_never_reused_and_an_older_outbox_keeps_its_files(tmp_path):
    import sqlite3

    from agent.store import DB_NAME, MIGRATIONS

    db = sqlite3.connect(tmp_path / DB_NAME)
    for script in MIGRATIONS[:5]:
        db.executescript(script)
    t, times = ticket(), (NOW.isoformat(), NOW.isoformat())
    for item_id, state in ((7, "pending"), (9, "delivered")):
        db.execute(
            "INSERT INTO outbox (id, sink, kind, key, digest, payload, state, next_attempt_at, "
            "created_at) VALUES (?, 'local', 'create', ?, ?, ?, ?, ?, ?)",
            (item_id, t.key, str(item_id), json.dumps({"ticket": t.to_json()}), state, *times),
        )
    db.execute("PRAGMA user_version = 5")
    db.commit()
    db.close()
    legacy = tmp_path / "outbox" / "7"
    legacy.mkdir(parents=True)
    (legacy / "bundle.tar.gz").write_bytes(b"queued by the older agent")
    with Store.open(tmp_path) as store:
        assert store.schema_version == len(MIGRATIONS) >= 6
        outbox = Outbox(store, tmp_path)
        assert [(i.id, i.state) for i in outbox.items()] == [(7, PENDING), (9, DELIVERED)]
        assert outbox.attachments(7) == {"bundle.tar.gz": b"queued by the older agent"}
        assert outbox.attachments(9) == {}
        # the highest id is deleted (nothing does this today): its id is still not given out
        with store.transaction() as db:
            db.execute("DELETE FROM outbox WHERE id = 9")
        [new] = outbox.enqueue_ticket(
            [Scripted(tmp_path / "t")], ticket("C9"), incident_id=None, now=NOW
        )
        assert new == 10


# --- transient failures give up ------------------------------------------------------------------


def test_transient_failures_give_up_after_the_configured_time(world, tmp_path):
    store, sink, _ = world
    outbox = Outbox(store, tmp_path, give_up_after=timedelta(hours=6))
    outbox.enqueue_ticket([sink], ticket(), incident_id=None, now=NOW)
    sink.fail_next = [SinkError("HTTP 503") for _ in range(20)]
    at = NOW
    outcomes = []
    while at < NOW + timedelta(hours=12):
        for d in outbox.deliver([sink], at):
            outcomes.append(d.outcome)
            failed_at = at
        at += timedelta(minutes=10)  # the fake clock: a pass every ten minutes
    assert outcomes[-1] == "failed" and set(outcomes[:-1]) == {"retry"} and len(outcomes) > 3
    assert timedelta(hours=6) <= failed_at - NOW <= timedelta(hours=7, minutes=10)
    [item] = outbox.items()
    assert item.state == FAILED and "6 hours" in item.last_error and "503" in item.last_error
    [f] = outbox.health(at)
    assert f.check_id == "agent.outbox" and "given up" in f.summary
    # ``tickets retry`` starts the clock again: the next 503 is a retry, not a failure
    assert outbox.retry_failed(at) == 1
    [d] = outbox.deliver([sink], at)
    assert d.outcome == "retry"
    sink.fail_next = []
    [d] = outbox.deliver([sink], at + timedelta(hours=2))
    assert d.outcome == "delivered" and outbox.health(at + timedelta(hours=2)) == []


def test_the_give_up_time_is_a_setting():
    from agent.config import AgentConfig

    assert AgentConfig().delivery_give_up_hours == 72
    assert AgentConfig.model_validate({"delivery_give_up_hours": 0.5}).delivery_give_up_hours == 0.5
    with pytest.raises(ValueError):
        AgentConfig.model_validate({"delivery_give_up_hours": 0})


# --- the bundle follows its ticket, with the number the destination gave it ------------------


def filed_with_bundle(
    outbox: Outbox, sink: LocalSink, t: Ticket, extra: dict[str, bytes] | None = None
) -> tuple[str, bytes]:
    name, data = bundle_for(t)
    files = {name: data, **(extra or {})}
    outbox.enqueue_ticket([sink], t, incident_id=None, attachments=files, bundle=name, now=NOW)
    return name, data


def test_the_bundle_follows_its_ticket_numbered(world: Any) -> None:
    _store, sink, outbox = world
    t = ticket()
    name, staged = filed_with_bundle(outbox, sink, t, {"estimate.csv": b"slot,in\n"})
    create, follow = outbox.items()
    # the ticket goes with its other files, and says its bundle follows; the bundle waits
    assert outbox.attachments(create.id) == {"estimate.csv": b"slot,in\n"}
    assert outbox.attachments(follow.id) == {name: staged}
    assert create.payload["ticket"]["messages"][-1]["body"] == bundle_follows(name)
    done = outbox.deliver([sink], NOW)
    assert [(d.item.kind, d.outcome, d.number) for d in done] == [
        ("create", "delivered", "L-000001"),
        ("message", "delivered", "L-000001"),
    ]
    filed = sink.get("L-000001")
    assert filed is not None
    assert [a.name for a in filed.attachments] == ["estimate.csv", name]
    on_disk = (sink.directory / "L-000001" / name).read_bytes()
    assert on_disk == numbered(staged, "L-000001").data != staged
    numbered_files(on_disk, "L-000001")
    assert [m.body for m in filed.messages] == [bundle_follows(name), bundle_attached(name, t.key)]


def test_a_bundle_tried_again_after_it_got_there_is_not_attached_twice(world: Any) -> None:
    _store, sink, outbox = world
    t = ticket()
    name, _ = filed_with_bundle(outbox, sink, t)
    outbox.deliver([sink], NOW)
    _create, follow = outbox.items()
    # as a kill between the send and its record leaves it: sending, its outcome unknown
    outbox._mark(follow.id, "sending")
    [again] = outbox.deliver([sink], NOW + timedelta(minutes=1))
    assert (again.item.id, again.outcome) == (follow.id, "delivered")
    filed = sink.get("L-000001")
    assert filed is not None and [a.name for a in filed.attachments] == [name]
    assert sorted((sink.directory / "L-000001").iterdir()) == [sink.directory / "L-000001" / name]
    # queued again (a cycle that re-queues the ticket): the same items, nothing new is sent
    filed_with_bundle(outbox, sink, t)
    assert len(outbox.items()) == 2 and outbox.deliver([sink], NOW + timedelta(hours=1)) == []


def test_a_ticket_another_gateway_filed_with_its_bundle_gets_no_second_one(
    tmp_path: Path,
) -> None:
    t = ticket()
    tickets = tmp_path / "tickets"
    for n, gateway in enumerate(("a", "b")):  # two gateways watching one counter, one store
        with Store.open(tmp_path / gateway) as store:
            sink, outbox = LocalSink(tickets), Outbox(store, tmp_path / gateway)
            # each built its own bundle, a minute apart: another name, other bytes
            later = t.model_copy(update={"created_at": t.created_at + timedelta(minutes=n)})
            name, _ = bundle_for(later)
            files = {name: bundle_for(later)[1]}
            outbox.enqueue_ticket(
                [sink], t, incident_id=None, attachments=files, bundle=name, now=NOW
            )
            assert [d.outcome for d in outbox.deliver([sink], NOW)] == ["delivered"] * 2
    [filed] = LocalSink(tickets).list()
    [bundle] = filed.attachments  # the first gateway's; the second found it there
    assert bundle.name == bundle_for(t)[0]
    assert sum(bundle_marker(t.key) in m.body for m in filed.messages) == 1
