"""A gateway process for the outbox fault tests: ``python -m tests.agent.outbox_driver PLAN``.

PLAN is a JSON file: the state directory, the RT destination, and the tickets to file (each
a composed ticket's JSON). The process queues every ticket of the plan with its site's own
files, and a follow-up with a session transcript, each in a transaction of its own as the
agent does; then delivers until nothing is left. A ticket queued before is the same item
again (the outbox de-duplicates), so the process can be killed anywhere and started again.
It prints one JSON line at the end: what each of its passes did.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import RtSinkConfig
from agent.delivery.outbox import DELIVERED, Outbox
from agent.delivery.sinks.rt import RtSink
from agent.store import Store
from rma.tickets import Ticket

NOTE = "A session on the counter: the transcript is attached."


def files_for(ticket: Ticket) -> dict[str, bytes]:
    """The site's own files: their names and every byte say whose they are."""
    seed = hashlib.sha256(ticket.key.encode()).digest()
    binary = (seed * 700)[: 20_000 + seed[0] * 10]  # a different size for each ticket
    return {
        f"bundle-{ticket.site}.tar.gz": binary,
        f"notes-{ticket.site}.txt": f"site {ticket.site}, ticket {ticket.key}\n".encode(),
    }


def transcript_for(ticket: Ticket) -> dict[str, bytes]:
    return {f"session-{ticket.site}.txt": f"$ ffc-agent remote {ticket.key}\nok\n".encode()}


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    state = Path(plan["state"])
    sink = RtSink(RtSinkConfig.model_validate(plan["rt"]))
    tickets = [Ticket.from_json(t) for t in plan["tickets"]]
    passes: list[list[str]] = []
    with Store.open(state) as store:
        # no give-up within a test: a kill must never turn into a failure
        outbox = Outbox(store, state, give_up_after=timedelta(days=3650))
        now = datetime.now(UTC).replace(microsecond=0)
        for ticket in tickets:  # as cycles do: queue what is new, then a delivery pass
            with store.transaction():
                outbox.enqueue_ticket(
                    [sink], ticket, incident_id=None, attachments=files_for(ticket), now=now
                )
            with store.transaction():
                outbox.enqueue_message(
                    [sink],
                    ticket.key,
                    author="support",
                    body=f"{NOTE} ({ticket.site})",
                    at=now,
                    attachments=transcript_for(ticket),
                    now=now,
                )
            passes.append([d.outcome for d in outbox.deliver([sink], now)])
        for n in range(400):
            left = [i for i in outbox.items() if i.state != DELIVERED]
            if not left:
                break
            done = outbox.deliver([sink], now + timedelta(hours=n))
            passes.append([d.outcome for d in done])
            if not done and outbox.deferred:  # another process is delivering these:
                wait_for_its_pass(outbox.lock_path)
        else:
            print(json.dumps({"passes": passes, "left": [i.state for i in left]}))
            return 1
    print(json.dumps({"passes": passes}))
    return 0


def wait_for_its_pass(lock: Path) -> None:
    """Block until the process holding the delivery lock ends its pass (or dies: the kernel
    then drops its lock)."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)  # and let go at once: the next pass takes it properly


def plan_file(path: Path, state: Path, rt: dict[str, Any], tickets: list[Ticket]) -> Path:
    path.write_text(
        json.dumps({"state": str(state), "rt": rt, "tickets": [t.to_json() for t in tickets]})
    )
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
