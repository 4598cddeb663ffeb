"""Fault injection on the outbox against the real Request Tracker: gateway processes filing
tickets for many sites, each with its own files and a follow-up with a transcript, are killed
with SIGKILL at random moments (and at each step of a delivery), restarted, and run two at a
time on one state directory. Afterwards every ticket is in RT exactly once, with exactly its
own attachments, byte for byte, and its follow-up exactly once.

``test_random_kills_while_filing`` kills 20 times; the ``slow`` run (``pytest -m slow``) kills
50 times. The kills land where they land: the seed is printed, so a failure can be replayed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.delivery.outbox import CRASH_ENV, DELIVERED, Outbox
from agent.store import Store
from diagnostics.model import Finding, Status
from rma.bundle import numbered
from rma.tickets import CounterRef, ProblemContext, Role, Ticket, compose, idempotency_key
from tests.agent.outbox_driver import (
    NOTE,
    bundle_for,
    files_for,
    numbered_files,
    plan_file,
    transcript_for,
)
from tests.agent.test_rt_sink import tickets_with_key
from tests.rt import RtServer

pytestmark = pytest.mark.integration

BUNDLE_STEPS = ("before_bundle", "after_bundle")  # numbered, then sent: the ticket's first reply
BUNDLED = b"[ffc-bundle:"

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("after_staging", "after_insert", "before_send", "after_send", *BUNDLE_STEPS)
_made = iter(range(1, 10**6))


def site_ticket(site: str) -> Ticket:
    """A composed ticket about one counter of ``site``; a fresh serial, so a fresh key."""
    serial = f"FK{next(_made):04d}{datetime.now(UTC):%H%M%S%f}"
    start = datetime.now(UTC).replace(microsecond=0)
    found = Finding(
        check_id="counter.offline",
        status=Status.FAIL,
        code="refused",
        summary=f"Counter {serial} does not answer",
        at=start,
        site=site,
        subject=serial,
    )
    return compose(
        ProblemContext(
            key=idempotency_key("counter.offline", serial, start),
            site_code=site,
            site_name=f"Store {site}",
            timezone="Europe/London",
            counters=(CounterRef(serial, "Main door"),),
            findings=(found,),
            started_at=start,
            requester="store-it@example.com",
            cc=(),
            role=Role.CUSTOMER,
            now=start,
        )
    )


@dataclass
class Gateway:
    """One state directory and the plan its processes file; starts them as the agent runs."""

    tmp: Path
    rt: RtServer

    def __post_init__(self) -> None:
        self.state = self.tmp / "state"
        self.tickets: list[Ticket] = []

    def plan(self, sites: int) -> Path:
        start = len(self.tickets)
        self.tickets += [site_ticket(f"S{start + i:03d}") for i in range(sites)]
        rt = {
            "type": "rt",
            "url": self.rt.url,
            "token": self.rt.agent_token,
            "queues": {"Technical Issue": "Technical Issue"},
            "timeout_seconds": 30,
        }
        return plan_file(self.tmp / "plan.json", self.state, rt, self.tickets)

    def start(self, crash_at: str | None = None) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        env["PYTHONPATH"] = str(ROOT)
        if crash_at:
            env[CRASH_ENV] = crash_at
        return subprocess.Popen(
            [sys.executable, "-m", "tests.agent.outbox_driver", str(self.tmp / "plan.json")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self) -> dict[str, Any]:
        proc = self.start()
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err + out
        return dict(json.loads(out.splitlines()[-1]))


def kill_rounds(gw: Gateway, kills: int, seed: int) -> list[str]:
    """Start the gateway again and again, with a site more every other time, and SIGKILL it:
    at a random moment, or at a random step of a delivery. Returns how each kill was made."""
    rng = random.Random(seed)
    made: list[str] = []
    missed = False
    for round_ in range(kills * 3):
        if len(made) == kills:
            break
        # a site more every other round, and after a round that finished before its kill
        # (nothing was left to do): there is always something to be killed in the middle of
        gw.plan(sites=1 if round_ % 2 == 0 or missed else 0)
        if rng.random() < 0.5:
            step = rng.choice(STEPS)
            proc = gw.start(crash_at=step)
            proc.communicate(timeout=240)
            how = f"at {step}"
        else:
            proc = gw.start()
            delay = rng.uniform(0.3, 3.0)  # the process's start-up is about half a second
            try:
                proc.wait(delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            how = f"after {delay:.2f} s"
        missed = proc.returncode != -signal.SIGKILL
        if not missed:
            made.append(how)
    assert len(made) == kills, made
    return made


def rt_parts(rt: RtServer, number: str) -> list[dict[str, Any]]:
    """The attachments of RT ticket ``number`` that are files or replies, with their bytes,
    as staff download them."""
    history = rt.api(
        "GET", f"ticket/{number}/history", params={"fields": "Type", "per_page": "100"}
    ).json()["items"]
    replies = {_id(t) for t in history if t["Type"] in ("Correspond", "Comment")}
    listed = rt.api(
        "GET",
        f"ticket/{number}/attachments",
        params={"fields": "Filename,ContentType,TransactionId", "per_page": "100"},
    ).json()["items"]
    parts = []
    for part in listed:
        reply = part["ContentType"] == "text/plain" and _id(part["TransactionId"]) in replies
        if part.get("Filename") or reply:
            whole = rt.api("GET", f"attachment/{part['id']}").json()
            whole["bytes"] = base64.b64decode(whole.get("Content") or "")
            whole["reply"] = reply
            parts.append(whole)
    return parts


def _id(ref: Any) -> str:
    """An object's id as RT's REST 2 gives it: a reference, or the id alone."""
    return str(ref["id"] if isinstance(ref, dict) else ref)


def rt_files(parts: list[dict[str, Any]]) -> dict[str, bytes]:
    """The files by name: each name once."""
    named = [p for p in parts if p.get("Filename")]
    out = {p["Filename"]: p["bytes"] for p in named}
    assert len(out) == len(named), [p["Filename"] for p in named]
    return out


def rt_notes(parts: list[dict[str, Any]]) -> list[str]:
    """The follow-up notes: one per reply transaction (RT also records the e-mail it sent the
    requester about it, and a message's text may be in two parts of one transaction)."""
    notes = {
        _id(p["TransactionId"]): p["bytes"].decode().strip()
        for p in parts
        if p["reply"] and p["bytes"].startswith(NOTE.encode())
    }
    return list(notes.values())


def rt_bundle_notes(parts: list[dict[str, Any]]) -> int:
    """How many replies carry a diagnostics bundle (their text says so, with a marker)."""
    return len({_id(p["TransactionId"]) for p in parts if p["reply"] and BUNDLED in p["bytes"]})


def assert_each_ticket_once_with_its_own_files(gw: Gateway) -> None:
    for ticket in gw.tickets:
        [found] = tickets_with_key(gw.rt, ticket.key)
        number = str(found["id"])
        parts = rt_parts(gw.rt, number)
        files = rt_files(parts)
        # the RT sink's own copy of the ticket: this ticket's, too
        assert json.loads(files.pop("ffc-ticket.json"))["key"] == ticket.key
        # its bundle, numbered with the number RT gave it: the bytes the staged bundle and
        # that number make, on whichever try it went
        name, staged = bundle_for(ticket)
        expected = {
            **files_for(ticket),
            **transcript_for(ticket),
            name: numbered(staged, number).data,
        }
        assert files == expected, ticket.site
        numbered_files(files[name], number)
        assert rt_notes(parts) == [f"{NOTE} ({ticket.site})"]  # the follow-up, once
        assert rt_bundle_notes(parts) == 1  # and the bundle, once
    with Store.open(gw.state) as store:
        items = Outbox(store, gw.state).items()
        assert {i.state for i in items} == {DELIVERED}
        assert len(items) == 3 * len(gw.tickets)  # the ticket, its bundle, its follow-up
        # what kills left on disk (files staged for a row never committed, a delivered
        # item's folder not yet removed) is named by no undelivered item: once old, swept
        old = time.time() - 3600
        for folder in (gw.state / "outbox").iterdir():
            os.utime(folder, (old, old))
        Outbox(store, gw.state).sweep()
    assert [p.name for p in (gw.state / "outbox").iterdir()] == [".lock"]


def run_kills(rt: RtServer, tmp: Path, kills: int) -> None:
    seed = int(os.environ.get("FFC_FAULT_SEED") or random.SystemRandom().randrange(10**6))
    print(f"FFC_FAULT_SEED={seed}")
    gw = Gateway(tmp, rt)
    started = time.monotonic()
    made = kill_rounds(gw, kills, seed)
    killing = time.monotonic() - started
    summary = gw.finish()
    print(f"{kills} kills ({', '.join(made)}) in {killing:.1f} s; then {summary}")
    assert_each_ticket_once_with_its_own_files(gw)


def test_random_kills_while_filing(rt_server: RtServer, tmp_path: Path) -> None:
    run_kills(rt_server, tmp_path, 20)


@pytest.mark.slow
def test_fifty_random_kills_while_filing(rt_server: RtServer, tmp_path: Path) -> None:
    run_kills(rt_server, tmp_path, 50)


@pytest.mark.parametrize("step", BUNDLE_STEPS)
def test_killed_while_attaching_the_bundle_attaches_it_once(
    rt_server: RtServer, tmp_path: Path, step: str
) -> None:
    gw = Gateway(tmp_path, rt_server)
    gw.plan(sites=1)
    killed = gw.start(crash_at=step)
    killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL
    # the ticket is filed; its bundle is not on it yet, or it is, with nothing recorded
    [ticket] = gw.tickets
    [found] = tickets_with_key(rt_server, ticket.key)
    parts = rt_parts(rt_server, str(found["id"]))
    assert rt_bundle_notes(parts) == (1 if step == "after_bundle" else 0)
    with Store.open(gw.state) as store:
        [bundle] = [i for i in Outbox(store, gw.state).items() if i.payload.get("numbered")]
        assert bundle.state == "sending"
    gw.finish()
    assert_each_ticket_once_with_its_own_files(gw)


def test_two_processes_delivering_at_once_file_each_ticket_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    gw = Gateway(tmp_path, rt_server)
    gw.plan(sites=4)
    both = [gw.start(), gw.start()]
    outs = [p.communicate(timeout=240) for p in both]
    assert [p.returncode for p in both] == [0, 0], outs
    passes = [json.loads(out.splitlines()[-1])["passes"] for out, _ in outs]
    # each found the other at work at some point, or came after it: never both sending
    delivered = [sum(o in ("delivered", "found") for p in ps for o in p) for ps in passes]
    assert sum(delivered) == 12, passes
    assert_each_ticket_once_with_its_own_files(gw)
