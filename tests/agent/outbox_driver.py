"""A gateway process for the outbox fault tests: ``python -m tests.agent.outbox_driver PLAN``.

PLAN is a JSON file: the state directory, the RT destination, and the tickets to file (each
a composed ticket's JSON). The process queues every ticket of the plan with its site's own
files and its diagnostics bundle (which RT gets numbered, as the ticket's first reply), and a
follow-up with a session transcript, each in a transaction of its own as the agent does;
then delivers until nothing is left. A ticket queued before is the same item again (the
outbox de-duplicates), so the process can be killed anywhere and started again.
It prints one JSON line at the end: what each of its passes did.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import RtSinkConfig
from agent.delivery.outbox import DELIVERED, Outbox
from agent.delivery.sinks.rt import RtSink
from agent.store import Store
from rma.bundle import BundleInput, build_bundle
from rma.redact import Redactor
from rma.tickets import Ticket

NOTE = "A session on the counter: the transcript is attached."


def files_for(ticket: Ticket) -> dict[str, bytes]:
    """The site's own files beside its bundle: their names and every byte say whose they are."""
    seed = hashlib.sha256(ticket.key.encode()).digest()
    binary = (seed * 700)[: 20_000 + seed[0] * 10]  # a different size for each ticket
    return {
        f"data-{ticket.site}.bin": binary,
        f"notes-{ticket.site}.txt": f"site {ticket.site}, ticket {ticket.key}\n".encode(),
    }


def bundle_for(ticket: Ticket) -> tuple[str, bytes]:
    """The ticket's diagnostics bundle as the agent builds it before filing (no number yet):
    a real one, the same bytes from every process that builds it; its log says whose it is."""
    seed = hashlib.sha256(ticket.key.encode()).hexdigest()
    log = "".join(f"{ticket.key} {ticket.site} line {i} {seed[i % 40 :]}\n" for i in range(300))
    bundle = build_bundle(
        BundleInput(
            agent_version="fault-test",
            created_at=ticket.created_at,
            key=ticket.key,
            site=ticket.site,
            counters=tuple(ticket.counters),
            subject=ticket.subject,
            category=str(ticket.category),
            started_at=ticket.created_at,
            log_excerpt=log,
        ),
        Redactor(),
    )
    return bundle.name, bundle.data


def numbered_files(data: bytes, number: str) -> dict[str, bytes]:
    """The files of a diagnostics bundle as support opens it, once it is checked to name
    ticket ``number`` in its manifest and its report's header (and to list the report's
    bytes as they are)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            files[member.name.split("/", 1)[1]] = handle.read()
    manifest = json.loads(files["manifest.json"])
    assert manifest["incident"]["ticket"] == number
    page = files["report.html"].decode()
    assert f"<dt>Ticket</dt><dd>{number}</dd>" in page and f"Ticket {number} · " in page
    assert "not filed yet" not in page
    [listed] = [f for f in manifest["files"] if f["name"] == "report.html"]
    assert listed["sha256"] == hashlib.sha256(files["report.html"]).hexdigest()
    return files


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
            name, bundle = bundle_for(ticket)
            with store.transaction():
                outbox.enqueue_ticket(
                    [sink],
                    ticket,
                    incident_id=None,
                    attachments={**files_for(ticket), name: bundle},
                    bundle=name,
                    now=now,
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
