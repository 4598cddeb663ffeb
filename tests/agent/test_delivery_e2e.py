"""Ticket delivery end to end: a simulated counter goes offline, the agent files into a real
Request Tracker (or a real SMTP server) through the durable outbox, and the helpdesk ends up
with exactly one ticket whatever goes wrong on the way.

What goes wrong here is real: the agent process is killed with SIGKILL at each step of a
delivery, RT is stopped and started, a proxy in front of RT answers 500, 429 or 403 or loses
RT's answer after RT has done the work, the mail server refuses with 550 or 451, a person has
already raised the ticket by hand, the recovery note is killed or lost after sending, and the
bundle is bigger than the helpdesk takes. After each, the tickets and their messages are counted
on the helpdesk's side (a person's search in RT, not the agent's own view of it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.app import make_runner
from agent.config import Config, load_config
from agent.delivery.outbox import (
    CRASH_ENV,
    DELIVERED,
    FAILED,
    PENDING,
    SENDING,
    UNKNOWN,
    Item,
    Outbox,
    bundle_follows,
)
from agent.delivery.sinks import LocalSink
from agent.runner import Runner
from agent.store import Incident, Store
from simulator import FakeClock, Fleet, SimCounter, SimSite
from tests.agent.outbox_driver import numbered_files
from tests.agent.test_outbox_faults import rt_bundle_notes, rt_files, rt_parts
from tests.rt import KEY_FIELD, FaultyProxy, RtServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WEEK = {d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
NOW = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # a Wednesday afternoon: London is open
QUEUES = {
    "Technical Issue": "Technical Issue",
    "Data Accuracy Issue": "Data Accuracy Issue",
    "Service Request": "Service Request",
}
LOCAL_SINK = '[[sinks]]\ntype = "local"\n'
_runs = itertools.count(1)


def fresh_serial(prefix: str) -> str:
    """A serial no other test of this RT session uses, so each count stands on its own."""
    return f"{prefix}{next(_runs):02d}{uuid.uuid4().hex[:8].upper()}"


# --- the world: one counter, offline, and a config that files into a helpdesk ------------------


@dataclass
class World:
    serial: str
    clock: FakeClock
    fleet: Fleet
    path: Path  # the agent's config file
    state: Path

    def config(self) -> Config:
        return load_config(self.path)


@contextlib.contextmanager
def offline_counter(
    tmp_path: Path, serial: str, sinks_toml: str, *, now: datetime = NOW
) -> Iterator[World]:
    """A fleet of one counter that went offline an hour ago, and a config for it whose
    ``[[sinks]]`` are ``sinks_toml``; tickets are filed on the first failing cycle."""
    clock = FakeClock(now)
    fleet = Fleet(
        [SimSite("LDN01", "London", "Europe/London", WEEK)],
        [SimCounter(serial, "Side door", "LDN01", base_rate=150.0)],
        seed=7,
        clock=clock,
    )
    with fleet:
        fleet.start()
        fleet.set_fault(serial, "offline", since=now - timedelta(hours=1))
        state = tmp_path / "state"
        text = fleet.agent_config_toml(state, probe_timeout_seconds=2, agent={"confirm_checks": 1})
        assert LOCAL_SINK in text
        path = tmp_path / "agent.toml"
        path.write_text(text.replace(LOCAL_SINK, sinks_toml))
        yield World(serial, clock, fleet, path, state)


def rt_sinks_toml(
    tmp_path: Path, rt: RtServer, *, url: str | None = None, timeout: int = 30
) -> str:
    """The RT destination as an installer writes it: the token in a file of its own."""
    token_file = tmp_path / "rt.token"
    token_file.write_text(rt.agent_token + "\n")
    token_file.chmod(0o600)
    lines = [
        "[[sinks]]",
        'type = "rt"',
        'name = "helpdesk"',
        f'url = "{url or rt.url}"',
        f'token_file = "{token_file}"',
        'queue = "General"',
        f'key_field = "{KEY_FIELD}"',
        f"timeout_seconds = {timeout}",
        "[sinks.queues]",
        *(f'"{category}" = "{queue}"' for category, queue in QUEUES.items()),
        "",
    ]
    return "\n".join(lines)


def rt_tickets(rt: RtServer, serial: str) -> list[dict[str, Any]]:
    """The tickets a person at the helpdesk finds for the counter, less rejected duplicates."""
    return [t for t in rt.search(f"Subject LIKE '{serial}'") if t["Status"] != "rejected"]


def agent(world: World, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """``python -m agent ARGS --config F`` as a real process, as cron or systemd runs it."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "--config", str(world.path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def outbox_items(world: World) -> list[Item]:
    with Store.open(world.state) as store:
        return Outbox(store, world.state).items()


def incidents(world: World) -> list[Incident]:
    with Store.open(world.state) as store:
        return [i for i in store.incidents() if i.subject == world.serial]


def creates(items: list[Item]) -> list[Item]:
    return [i for i in items if i.kind == "create"]


# --- exactly once across SIGKILL, against the real RT --------------------------------------------


@pytest.mark.parametrize("step", ["after_enqueue", "before_send", "after_send"])
def test_killed_at_each_step_of_delivery_files_exactly_one_ticket(
    rt_server: RtServer, tmp_path: Path, step: str
) -> None:
    serial = fresh_serial("K")
    now = datetime.now(UTC).replace(microsecond=0)  # the agent's process runs on the real clock
    with offline_counter(tmp_path, serial, rt_sinks_toml(tmp_path, rt_server), now=now) as world:
        killed = agent(world, "check", crash_at=step)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        [item] = creates(outbox_items(world))
        assert item.state == (PENDING if step == "after_enqueue" else SENDING)
        # what RT holds at the moment of death: nothing yet, or the ticket it accepted
        assert len(rt_tickets(rt_server, serial)) == (1 if step == "after_send" else 0)

        synced = agent(world, "tickets", "sync", "--json")
        assert synced.returncode == 0, synced.stderr
        [filed] = rt_tickets(rt_server, serial)
        assert json.loads(synced.stdout)["delivered"] == [filed["id"]]
        [item] = creates(outbox_items(world))
        assert (item.state, item.number) == (DELIVERED, filed["id"])
        [incident] = incidents(world)
        assert (incident.ticket_key, incident.ticket_number) == (item.key, filed["id"])

        again = agent(world, "check", "--json")
        assert again.returncode == 2, again.stderr  # the counter is still offline: critical
        assert [t["id"] for t in rt_tickets(rt_server, serial)] == [filed["id"]]
        assert len(creates(outbox_items(world))) == 1


# --- the helpdesk down, busy, broken or refusing -------------------------------------------------


@contextlib.contextmanager
def runner_for(world: World) -> Iterator[Runner]:
    """The agent in this process, on the world's fake clock (so time can be moved on)."""
    with Store.open(world.state) as store:
        yield make_runner(world.config(), store, clock=world.clock)


def the_create(runner: Runner) -> Item:
    [item] = creates(runner.tickets.outbox.items())
    return item


def the_bundle(runner: Runner) -> Item:
    """The ticket's bundle, queued to follow it as its first message."""
    [item] = [i for i in runner.tickets.outbox.items() if i.payload.get("numbered")]
    return item


def test_rt_down_then_up_keeps_the_ticket_and_files_it_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    serial = fresh_serial("D")
    with (
        offline_counter(tmp_path, serial, rt_sinks_toml(tmp_path, rt_server)) as world,
        runner_for(world) as runner,
    ):
        rt_server.stop()
        try:
            result = runner.run_cycle()
            assert result.tickets == []
            item = the_create(runner)
            assert item.state == PENDING and "refused" in item.last_error
            assert item.next_attempt_at > NOW
            # the bundle waits to follow the ticket, once RT has numbered it
            bundle = the_bundle(runner)
            assert bundle.state == PENDING and runner.tickets.outbox.attachments(bundle.id)
        finally:
            rt_server.start()
        # not due yet: nothing is sent before the backoff is over
        assert runner.tickets.deliver(NOW + timedelta(seconds=1)) == []
        [ticket] = runner.tickets.deliver(item.next_attempt_at)
        [filed] = rt_tickets(rt_server, serial)
        assert ticket.number == filed["id"]
        assert the_create(runner).state == DELIVERED and the_bundle(runner).state == DELIVERED
        assert runner.tickets.deliver(NOW + timedelta(hours=2)) == []
        assert len(rt_tickets(rt_server, serial)) == 1
        # support downloads one bundle from the ticket, and its report names the ticket
        parts = rt_parts(rt_server, filed["id"])
        on_rt = rt_files(parts)
        [name] = [n for n in on_rt if n.startswith("ffc-bundle-")]
        files = numbered_files(on_rt[name], filed["id"])
        assert serial.encode() in files["findings.json"]
        assert rt_bundle_notes(parts) == 1
        # and the ticket as filed said that it follows
        said = json.loads(on_rt["ffc-ticket.json"])["messages"][-1]["body"]
        assert said == bundle_follows(name)


class RetryAfterProxy(FaultyProxy):
    """``FaultyProxy`` whose injected 429 asks for ``retry_after`` seconds (it says 1 s)."""

    def __init__(self, rt: RtServer, retry_after: int) -> None:
        super().__init__(rt.host, rt.port)
        base = self.server.RequestHandlerClass

        class Handler(base):  # type: ignore[misc,valid-type]
            def send_header(self, keyword: str, value: str) -> None:
                if keyword == "Retry-After":
                    value = str(retry_after)
                super().send_header(keyword, value)

        self.server.RequestHandlerClass = Handler


@contextlib.contextmanager
def behind_proxy(
    rt: RtServer, tmp_path: Path, prefix: str, *, retry_after: int = 7200, timeout: int = 30
) -> Iterator[tuple[World, RetryAfterProxy, Runner]]:
    serial = fresh_serial(prefix)
    with RetryAfterProxy(rt, retry_after) as proxy:
        sinks = rt_sinks_toml(tmp_path, rt, url=proxy.url, timeout=timeout)
        with offline_counter(tmp_path, serial, sinks) as world, runner_for(world) as runner:
            yield world, proxy, runner


def test_a_500_on_the_create_is_searched_then_filed_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    with behind_proxy(rt_server, tmp_path, "F") as (world, proxy, runner):
        proxy.fail(500, times=1, method="POST")  # answered by the proxy: RT never saw it
        assert runner.run_cycle().tickets == []
        item = the_create(runner)
        assert item.state == UNKNOWN and "HTTP 500" in item.last_error
        assert rt_tickets(rt_server, world.serial) == []

        [ticket] = runner.tickets.deliver(item.next_attempt_at)
        [filed] = rt_tickets(rt_server, world.serial)
        assert ticket.number == filed["id"]
        assert (the_create(runner).state, the_create(runner).number) == (DELIVERED, filed["id"])


@pytest.mark.parametrize("lost", ["drop", "hold"])
def test_an_answer_lost_after_rt_filed_is_found_not_filed_again(
    rt_server: RtServer, tmp_path: Path, lost: str
) -> None:
    # RT creates the ticket; its answer never comes (the connection closes) or comes too late
    with behind_proxy(rt_server, tmp_path, "L", timeout=3) as (world, proxy, runner):
        proxy.hold("POST", then=lost)
        assert runner.run_cycle().tickets == []
        assert proxy.held.wait(60)  # RT did answer: the ticket exists
        proxy.release()
        item = the_create(runner)
        assert item.state == UNKNOWN
        [filed] = rt_tickets(rt_server, world.serial)
        posts = proxy.seen.get("POST", 0)

        [ticket] = runner.tickets.deliver(item.next_attempt_at)
        assert ticket.number == filed["id"]
        # searched and found: not filed again; only its bundle follows, as a reply
        assert proxy.seen.get("POST", 0) == posts + 1
        assert rt_bundle_notes(rt_parts(rt_server, filed["id"])) == 1
        assert [t["id"] for t in rt_tickets(rt_server, world.serial)] == [filed["id"]]
        assert (the_create(runner).state, the_create(runner).number) == (DELIVERED, filed["id"])


def test_a_429_waits_as_long_as_rt_asks(rt_server: RtServer, tmp_path: Path) -> None:
    with behind_proxy(rt_server, tmp_path, "R", retry_after=7200) as (world, proxy, runner):
        proxy.fail(429, times=1, method="POST")
        assert runner.run_cycle().tickets == []
        item = the_create(runner)
        assert item.state == PENDING and "429" in item.last_error
        assert item.next_attempt_at >= NOW + timedelta(seconds=7200)

        posts = proxy.seen.get("POST", 0)
        assert runner.tickets.deliver(NOW + timedelta(seconds=7199)) == []
        assert proxy.seen.get("POST", 0) == posts and rt_tickets(rt_server, world.serial) == []
        [ticket] = runner.tickets.deliver(item.next_attempt_at)
        [filed] = rt_tickets(rt_server, world.serial)
        assert ticket.number == filed["id"]


def test_a_403_fails_for_good_raises_an_agent_finding_and_does_not_loop(
    rt_server: RtServer, tmp_path: Path
) -> None:
    with behind_proxy(rt_server, tmp_path, "P") as (world, proxy, runner):
        proxy.fail(403, times=1, method="POST")
        runner.run_cycle()
        item = the_create(runner)
        assert item.state == FAILED and "403" in item.last_error

        seen = dict(proxy.seen)
        for minutes in (15, 30, 120):
            world.clock.set(NOW + timedelta(minutes=minutes))
            result = runner.run_cycle()
            [health] = [a for a in result.assessed if a.finding.check_id == "agent.outbox"]
            assert health.finding.status.value == "fail"
            assert health.finding.subject == "sink:helpdesk"
            assert item.key in health.finding.evidence["keys"]
            assert result.tickets == []
        assert proxy.seen == seen  # not one more request: a refusal for good is not retried
        after = the_create(runner)
        assert (after.state, after.attempts) == (FAILED, item.attempts)
        # no second ticket was queued; its bundle, which waited for it, failed with it
        assert [(i.kind, i.state) for i in runner.tickets.outbox.items()] == [
            ("create", FAILED),
            ("message", FAILED),
        ]
        assert rt_tickets(rt_server, world.serial) == []


def smtp_sinks_toml(server: Any) -> str:
    from tests.agent.test_smtp_sink import HELPDESK, PASSWORD, SENDER, USER

    return "\n".join(
        [
            "[[sinks]]",
            'type = "smtp"',
            'name = "helpdesk-mail"',
            'host = "127.0.0.1"',
            f"port = {server.port}",
            'security = "starttls"',
            f'username = "{USER}"',
            f'password = "{PASSWORD}"',
            f'from = "{SENDER}"',
            f'to = ["{HELPDESK}"]',
            f'ca_file = "{server.cert.cert_file}"',
            "timeout_seconds = 10",
            "",
        ]
    )


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Any]:
    from tests.agent.test_smtp_sink import smtp_server

    with smtp_server(tmp_path / "smtp-tls") as running:
        yield running


def test_a_mail_server_refusing_with_550_fails_the_item_for_good(smtp: Any, tmp_path: Path) -> None:
    smtp.mailbox.data_reply = "550 5.7.1 Message rejected by policy"
    with (
        offline_counter(tmp_path, fresh_serial("M"), smtp_sinks_toml(smtp)) as world,
        runner_for(world) as runner,
    ):
        runner.run_cycle()
        item = the_create(runner)
        assert item.state == FAILED and "550" in item.last_error
        smtp.mailbox.data_reply = None  # the server would take it now; a refusal is final
        world.clock.set(NOW + timedelta(hours=2))
        result = runner.run_cycle()
        assert any(a.finding.check_id == "agent.outbox" for a in result.assessed)
        assert result.tickets == [] and smtp.mailbox.received == []
        assert the_create(runner).state == FAILED


def test_a_mail_server_answering_451_is_retried_into_one_message(smtp: Any, tmp_path: Path) -> None:
    smtp.mailbox.data_reply = "451 4.3.0 Local error in processing, try later"
    with (
        offline_counter(tmp_path, fresh_serial("M"), smtp_sinks_toml(smtp)) as world,
        runner_for(world) as runner,
    ):
        assert runner.run_cycle().tickets == []
        item = the_create(runner)
        assert item.state == PENDING and "451" in item.last_error
        assert smtp.mailbox.received == []

        smtp.mailbox.data_reply = None
        [ticket] = runner.tickets.deliver(item.next_attempt_at)
        assert the_create(runner).state == DELIVERED
        assert runner.tickets.deliver(NOW + timedelta(hours=3)) == []
        world.clock.set(NOW + timedelta(minutes=15))
        assert runner.run_cycle().tickets == []  # still offline: the same incident, no new mail
        [mail] = smtp.mailbox.received
        assert mail.message["X-FFC-Key"] == ticket.key == item.key
        assert world.serial in mail.message["Subject"]


def notifications_toml(server: Any) -> str:
    """E-mail to the ticket's requester and CC through the same mail server."""
    from tests.agent.test_smtp_sink import PASSWORD, SENDER, USER

    return "\n".join(
        [
            "[notifications]",
            "email = true",
            "[notifications.smtp]",
            'host = "127.0.0.1"',
            f"port = {server.port}",
            f'username = "{USER}"',
            f'password = "{PASSWORD}"',
            f'from = "{SENDER}"',
            f'ca_file = "{server.cert.cert_file}"',
            "timeout_seconds = 10",
            "",
        ]
    )


def test_two_destinations_send_the_people_one_mail_per_change_and_no_false_status(
    smtp: Any, tmp_path: Path
) -> None:
    """Issue 14: filed in the local store and by e-mail, the ticket's recovery is one change:
    the requester gets one "Suggest To Close" notice, not one per destination, and the e-mail
    destination (whose status can only be what the agent sent) never yields a "Status: Open"."""
    toml = LOCAL_SINK + smtp_sinks_toml(smtp) + notifications_toml(smtp)
    with (
        offline_counter(tmp_path, fresh_serial("P"), toml) as world,
        runner_for(world) as runner,
    ):
        filed = runner.run_cycle().tickets
        assert sorted(t.number[:2] for t in filed if t.number) == ["L-", "M-"]
        world.fleet.clear_fault(world.serial)
        for minutes in (15, 30, 45, 60):
            world.clock.set(NOW + timedelta(minutes=minutes))
            runner.run_cycle()
        assert [i.state for i in incidents(world)] == ["resolved"]
        items = runner.tickets.outbox.items()
        assert {(i.sink, i.kind) for i in items if i.kind == "status"} == {
            ("local", "status"),
            ("helpdesk-mail", "status"),
        }
        assert all(i.state == DELIVERED for i in items)
    requester = "store-it@example.com"
    people = [r.message for r in smtp.mailbox.received if requester in r.rcpt_tos]
    assert [m["Subject"].rsplit(" — ", 1)[1] for m in people] == [
        "Ticket filed",
        "Status: Suggest To Close",
    ]
    helpdesk = [r for r in smtp.mailbox.received if requester not in r.rcpt_tos]
    assert len(helpdesk) == 2  # the ticket and its recovery note


# --- a ticket a person raised by hand --------------------------------------------------------


def correspondence(rt: RtServer, number: str) -> list[str]:
    """The replies on an RT ticket, read as a person's script would: history, then bodies."""
    history = rt.api("GET", f"ticket/{number}/history", params={"fields": "Type"}).json()
    bodies = []
    for txn in history["items"]:
        if txn["Type"] != "Correspond":
            continue
        parts = rt.api(
            "GET",
            f"transaction/{txn['id']}/attachments",
            params={"fields": "ContentType,Content,Filename"},
        ).json()["items"]
        bodies += [
            str(p.get("Content") or "")
            for p in parts
            if p.get("ContentType") == "text/plain" and not p.get("Filename")
        ]
    return bodies


def test_a_ticket_raised_by_hand_gets_the_agents_evidence_instead_of_a_twin(
    rt_server: RtServer, tmp_path: Path
) -> None:
    serial = fresh_serial("H")
    by_hand = rt_server.create_ticket(
        "Technical Issue",
        f"Side door counter {serial} is not counting",
        "The store manager says the side door counter shows nothing since this morning.",
    )
    with (
        offline_counter(tmp_path, serial, rt_sinks_toml(tmp_path, rt_server)) as world,
        runner_for(world) as runner,
    ):
        [joined] = runner.run_cycle().tickets
        assert joined.number == by_hand
        assert [t["id"] for t in rt_tickets(rt_server, serial)] == [by_hand]
        [reply, bundle] = correspondence(rt_server, by_hand)
        assert "rather than open a second ticket" in reply
        assert serial in reply and joined.subject in reply
        assert "[ffc-bundle:" in bundle  # the bundle, numbered with the ticket it joined
        parts = rt_parts(rt_server, by_hand)
        [name] = [n for n in rt_files(parts) if n.startswith("ffc-bundle-")]
        numbered_files(rt_files(parts)[name], by_hand)
        item = the_create(runner)
        assert (item.state, item.number) == (DELIVERED, by_hand)
        [incident] = incidents(world)
        assert incident.ticket_number == by_hand

        world.clock.set(NOW + timedelta(minutes=15))
        assert runner.run_cycle().tickets == []
        assert [t["id"] for t in rt_tickets(rt_server, serial)] == [by_hand]
        assert len(correspondence(rt_server, by_hand)) == 2


def test_killed_after_joining_a_ticket_raised_by_hand_adds_the_evidence_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    serial = fresh_serial("J")
    by_hand = rt_server.create_ticket(
        "Technical Issue", f"Counter {serial} offline?", "Nothing on the dashboard since noon."
    )
    now = datetime.now(UTC).replace(microsecond=0)
    with offline_counter(tmp_path, serial, rt_sinks_toml(tmp_path, rt_server), now=now) as world:
        killed = agent(world, "check", crash_at="after_send")
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert len(correspondence(rt_server, by_hand)) == 1  # RT took the evidence, then death

        synced = agent(world, "tickets", "sync", "--json")
        assert synced.returncode == 0, synced.stderr
        assert json.loads(synced.stdout)["delivered"] == [by_hand]
        evidence, bundle = correspondence(rt_server, by_hand)  # each once
        assert "rather than open a second ticket" in evidence and "[ffc-bundle:" in bundle
        assert [t["id"] for t in rt_tickets(rt_server, serial)] == [by_hand]
        [item] = creates(outbox_items(world))
        assert (item.state, item.number) == (DELIVERED, by_hand)


def test_joining_a_ticket_raised_by_hand_whose_answer_was_lost_adds_the_evidence_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    with behind_proxy(rt_server, tmp_path, "G", timeout=5) as (world, proxy, runner):
        by_hand = rt_server.create_ticket("Technical Issue", f"{world.serial} not counting")
        proxy.drop("POST")  # the evidence reaches RT, the answer never comes back
        assert runner.run_cycle().tickets == []
        assert proxy.held.is_set()
        item = the_create(runner)
        assert item.state in (PENDING, UNKNOWN) and item.attempts == 1
        assert len(correspondence(rt_server, by_hand)) == 1

        [joined] = runner.tickets.deliver(item.next_attempt_at)
        assert joined.number == by_hand
        evidence, bundle = correspondence(rt_server, by_hand)  # each once
        assert "rather than open a second ticket" in evidence and "[ffc-bundle:" in bundle
        assert (the_create(runner).state, the_create(runner).number) == (DELIVERED, by_hand)
        assert [t["id"] for t in rt_tickets(rt_server, world.serial)] == [by_hand]


# --- a bundle bigger than the helpdesk takes -------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "left_out"),
    [
        (40_000, {"log-excerpt.txt": "truncated"}),  # the most recent log lines fit
        (16_000, {"log-excerpt.txt": "dropped", "snapshot.jpg": "dropped"}),
    ],
)
def test_an_oversized_bundle_is_cut_to_the_cap_and_says_what_it_left_out(
    tmp_path: Path, cap: int, left_out: dict[str, str]
) -> None:
    # a long log that does not compress away: what a chatty week on a gateway looks like
    lines = [
        f"2026-11-25 13:{i // 60 % 60:02d}:{i % 60:02d} INFO agent.runner: probe {i} "
        f"took {uuid.uuid4().hex} {uuid.uuid4().hex}"
        for i in range(6000)
    ]
    # a fixed serial: the simulated snapshot (and so its JPEG size) follows from it, and the
    # caps below are chosen for that size; the local sink needs no serial unique to the session
    serial = "BUNDLE0001"
    with offline_counter(tmp_path, serial, LOCAL_SINK) as world:
        world.fleet.clear_fault(serial)  # first a healthy cycle: the live view is on record
        with runner_for(world) as runner:
            runner.tickets.evidence.max_bytes = cap
            runner.tickets.evidence.log_excerpt = lambda: "\n".join(lines)
            assert runner.run_cycle().tickets == []
            assert runner.views.latest(serial) is not None
            world.clock.set(NOW + timedelta(minutes=15))
            world.fleet.set_fault(serial, "offline")
            [ticket] = runner.run_cycle().tickets
    assert ticket.number is not None
    sink = LocalSink(world.state / "tickets")
    filed = sink.get(ticket.number)
    assert filed is not None
    [attachment] = filed.attachments
    bundle = (sink.directory / ticket.number / attachment.name).read_bytes()
    assert len(bundle) <= cap and attachment.size == len(bundle)

    files = numbered_files(bundle, ticket.number)  # numbered once the store numbered it
    manifest = json.loads(files["manifest.json"])
    assert manifest["size_cap"] == cap and manifest["fits"] is True
    dropped = {d["file"]: d for d in manifest["dropped"]}
    assert {name: d["action"] for name, d in dropped.items()} == left_out
    assert all(d["reason"].startswith(f"size cap of {cap} bytes") for d in dropped.values())
    assert dropped["log-excerpt.txt"]["original_bytes"] == len("\n".join(lines).encode())
    # what the manifest lists is what the archive holds, and nothing it dropped
    assert {f["name"] for f in manifest["files"]} | {"manifest.json"} == set(files)
    for name, action in left_out.items():
        if action == "dropped":
            assert name not in files
        else:
            assert len(files[name]) == dropped[name]["kept_bytes"] > 0
    if left_out["log-excerpt.txt"] == "truncated":
        assert files["log-excerpt.txt"].endswith(lines[-1].encode())  # the newest lines stay
        assert "snapshot.jpg" in files
    assert {"findings.json", "report.html", "counts.csv"} <= set(files)
    assert serial.encode() in files["findings.json"]


# --- follow-ups: the recovery note and its status change, once ----------------------------------


def transactions(rt: RtServer, number: str, kind: str) -> int:
    """How many transactions of ``kind`` (Correspond, Comment ...) RT's history of a ticket has."""
    history = rt.api("GET", f"ticket/{number}/history", params={"fields": "Type"}).json()
    return [t["Type"] for t in history["items"]].count(kind)


def test_killed_after_sending_the_recovery_note_sends_it_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    serial = fresh_serial("N")
    now = datetime.now(UTC).replace(microsecond=0)
    with offline_counter(tmp_path, serial, rt_sinks_toml(tmp_path, rt_server), now=now) as world:
        assert agent(world, "check").returncode == 2
        [filed] = rt_tickets(rt_server, serial)
        world.fleet.clear_fault(serial)
        assert agent(world, "check").returncode in (0, 1, 2)
        assert [i.state for i in incidents(world)] == ["recovering"]  # healthy once
        killed = agent(world, "check", crash_at="after_send")  # twice: resolved, and told
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert transactions(rt_server, filed["id"], "Correspond") == 2  # the bundle, the note

        synced = agent(world, "tickets", "sync", "--json")
        assert synced.returncode == 0, synced.stderr
        assert transactions(rt_server, filed["id"], "Correspond") == 2
        assert transactions(rt_server, filed["id"], "Comment") == 1  # the status marker
        assert all(i.state == DELIVERED for i in outbox_items(world))
        assert [t["id"] for t in rt_tickets(rt_server, serial)] == [filed["id"]]


def test_a_recovery_note_whose_answer_was_lost_is_not_sent_twice(
    rt_server: RtServer, tmp_path: Path
) -> None:
    with behind_proxy(rt_server, tmp_path, "Q", timeout=5) as (world, proxy, runner):
        [ticket] = runner.run_cycle().tickets
        assert ticket.number is not None
        world.clock.set(NOW + timedelta(minutes=15))
        world.fleet.clear_fault(world.serial)
        runner.run_cycle()  # healthy once: recovering
        world.clock.set(NOW + timedelta(minutes=30))
        proxy.drop("POST")  # RT takes the reply, the answer never comes back
        result = runner.run_cycle()
        assert [f.to_state for f in result.flips if f.incident.subject == world.serial] == [
            "resolved"
        ]
        assert proxy.held.is_set()
        [note] = [i for i in runner.tickets.outbox.items() if i.kind == "status"]
        assert note.state == PENDING and note.attempts == 1
        assert transactions(rt_server, ticket.number, "Correspond") == 2  # the bundle, the note

        runner.tickets.deliver(note.next_attempt_at)
        [note] = [i for i in runner.tickets.outbox.items() if i.kind == "status"]
        assert note.state == DELIVERED
        assert transactions(rt_server, ticket.number, "Correspond") == 2
        assert transactions(rt_server, ticket.number, "Comment") == 1  # the status marker
        reread = runner.tickets.sinks[0].get(ticket.number)
        assert reread is not None and reread.status == "Suggest To Close"
