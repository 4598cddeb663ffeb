"""The ticket lifecycle by hand and by the clock, in the local store: raising a request
(``tickets new``), the conversation (``tickets reply``, ``tickets show``), the task list
(``tickets task``), and the escalation of a ticket whose support line ran past its SLA — once,
with one e-mail to the requester and CC (a real SMTP server on 127.0.0.1), under a fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.app import App
from agent.cli import cli
from agent.config import load_config
from agent.delivery.outbox import DELIVERED, NOTICE_KINDS, Outbox
from agent.delivery.sinks.local import LocalSink
from agent.store import Store
from rma.tickets import Stage, Task, TaskType
from simulator import FakeClock
from tests.agent.sink_helpers import make_ticket
from tests.agent.test_smtp_sink import PASSWORD, USER, SmtpServer, smtp_server

NOW = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)  # a Tuesday morning
COUNTER_PASSWORD = "Ctr-pl4nted-Pw-7hQ1"
REQUESTER = "store-it@example.com"
CC = "area-manager@example.com"


LOCAL = '[[sinks]]\ntype = "local"\n'


def write_config(
    tmp_path: Path, smtp: SmtpServer | None = None, role: str = "customer", sinks: str = LOCAL
) -> Path:
    notifications = ""
    if smtp is not None:
        notifications = f"""
[notifications]
email = true
events = ["filed", "message", "status", "sla_overdue"]
[notifications.smtp]
host = "127.0.0.1"
port = {smtp.port}
username = "{USER}"
password = "{PASSWORD}"
from = "agent@store.example.com"
ca_file = "{smtp.cert.cert_file}"
timeout_seconds = 5.0
"""
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""[agent]
state_dir = "{tmp_path / "state"}"
role = "{role}"
requester = "{REQUESTER}"
cc = ["{CC}"]

[[sites]]
code = "LDN01"
name = "Oxford Street"
timezone = "Europe/London"
opening_hours = {{ mon = "09:00-20:00" }}

[[counters]]
serial = "FFC0002"
name = "Main door"
site = "LDN01"
host = "127.0.0.1"
password = "{COUNTER_PASSWORD}"

{sinks}
{notifications}"""
    )
    return path


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path / "tls") as running:
        yield running


def run(clock: FakeClock, *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), obj={"clock": clock})


def local(tmp_path: Path) -> LocalSink:
    return LocalSink(tmp_path / "state" / "tickets")


def items(tmp_path: Path) -> list[Any]:
    with Store.open(tmp_path / "state") as store:
        return Outbox(store, tmp_path / "state").items()


def new_training(clock: FakeClock, config: Path, *extra: str) -> Any:
    return run(
        clock,
        "tickets",
        "new",
        "--category",
        "training",
        "--subject",
        "Training for the new store manager",
        "--what",
        "Our new manager needs an hour on the Analytic Manager's daily reports.",
        "--config",
        str(config),
        "--json",
        *extra,
    )


# --- raising a ticket by hand


def test_tickets_new_files_a_training_request_in_the_portal_form_once(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = write_config(tmp_path, smtp)
    clock = FakeClock(NOW)
    note = tmp_path / "agenda.txt"
    note.write_text(f"agenda; counter login admin:{COUNTER_PASSWORD}\n")

    result = new_training(clock, config, "--cc", "trainer@example.com", "--attach", str(note))

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    [item] = data["items"]
    assert (item["sink"], item["state"], item["number"]) == ("local", "delivered", "L-000001")
    ticket = local(tmp_path).get("1")  # the bare number people say
    assert ticket is not None and ticket.number == "L-000001"
    assert ticket.category.value == "Training Request" and ticket.sla_days == 1
    assert ticket.issue_level == "site" and ticket.counter_unassigned and ticket.counters == []
    assert ticket.subject == "Training for the new store manager"
    assert ticket.comment.where == "Oxford Street (LDN01)"
    assert ticket.occurred_on.isoformat() == "2026-03-10"
    assert ticket.requester == REQUESTER and ticket.cc == [CC, "trainer@example.com"]
    assert ticket.stage is Stage.FIRST_LINE
    [attached] = ticket.attachments
    stored = (local(tmp_path).directory / "L-000001" / attached.name).read_bytes()
    assert COUNTER_PASSWORD.encode() not in stored and b"[REDACTED]" in stored
    # one e-mail about the new ticket, to the requester with the CC list copied
    [mail] = smtp.mailbox.received
    assert mail.message["To"] == REQUESTER
    assert "Ticket filed" in mail.message["Subject"] and "L-000001" in mail.message["Subject"]
    assert set(mail.rcpt_tos) == {REQUESTER, CC, "trainer@example.com"}
    with Store.open(tmp_path / "state") as store:
        [audit] = store._db.execute(
            "SELECT action, target FROM audit WHERE action = 'ticket.raise'"
        ).fetchall()
    assert audit["target"] == ticket.key


def test_a_request_by_hand_is_a_new_ticket_beside_an_open_one_of_its_kind(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    clock = FakeClock(NOW)
    assert new_training(clock, config).exit_code == 0
    clock.advance(timedelta(minutes=5))
    second = new_training(clock, config)
    assert second.exit_code == 0, second.output
    assert [t.number for t in local(tmp_path).list()] == ["L-000001", "L-000002"]
    assert local(tmp_path).get("1").messages == []  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--category", "Device Bug"], "not allowed for role 'customer'"),
        (["--category", "business"], "by e-mail, not the portal"),
        (["--category", "holiday"], "no category 'holiday'"),
        (["--category", "service", "--counter", "FFC9999"], "no counter FFC9999 at site LDN01"),
        (["--category", "service", "--site", "PAR01"], "no site 'PAR01'"),
        (["--category", "service", "--date", "2026-03-11"], "is in the future"),
    ],
)
def test_a_request_the_form_or_the_role_refuses_is_one_line_and_queues_nothing(
    tmp_path: Path, args: list[str], said: str
) -> None:
    config = write_config(tmp_path)
    result = run(
        FakeClock(NOW),
        "tickets",
        "new",
        "--subject",
        "Move the counter",
        "--what",
        "The entrance moves two metres left.",
        "--config",
        str(config),
        *args,
    )
    assert result.exit_code == 1
    assert said in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert local(tmp_path).list() == []
    assert not (tmp_path / "state" / "ffc-agent.db").exists() or items(tmp_path) == []


def test_footfallcam_staff_may_raise_a_device_bug_about_one_counter(tmp_path: Path) -> None:
    config = write_config(tmp_path, role="footfallcam")
    result = run(
        FakeClock(NOW),
        "tickets",
        "new",
        "--category",
        "Device Bug",
        "--counter",
        "FFC0002",
        "--subject",
        "Firmware 5.1 drops counts at midnight",
        "--what",
        "Counts between 23:59 and 00:01 are lost.",
        "--config",
        str(config),
        "--json",
    )
    assert result.exit_code == 0, result.output
    ticket = local(tmp_path).get("L-000001")
    assert ticket is not None and ticket.counters == ["FFC0002"]
    assert ticket.issue_level == "counter" and ticket.comment.which_device == "Main door (FFC0002)"


# --- the conversation and the task list


def test_reply_is_on_the_ticket_once_and_show_lists_the_conversation(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = write_config(tmp_path, smtp)
    clock = FakeClock(NOW)
    assert new_training(clock, config).exit_code == 0
    clock.advance(timedelta(hours=2))

    result = run(
        clock,
        "tickets",
        "reply",
        "1",
        "-m",
        f"Thursday 10:00 suits us. (token={COUNTER_PASSWORD})",
        "--config",
        str(config),
        "--json",
    )

    assert result.exit_code == 0, result.output
    assert [(i["sink"], i["state"]) for i in json.loads(result.stdout)["items"]] == [
        ("local", "delivered")
    ]
    shown = run(clock, "tickets", "show", "1", "--config", str(config), "--json")
    assert shown.exit_code == 0, shown.output
    [message] = json.loads(shown.stdout)["messages"]
    assert message["body"].startswith("Thursday 10:00 suits us.")
    assert COUNTER_PASSWORD not in shown.output
    # running the delivery again sends nothing more: the reply went once
    assert run(clock, "tickets", "sync", "--config", str(config)).exit_code == 0
    assert len(local(tmp_path).get("1").messages) == 1  # type: ignore[union-attr]
    subjects = [m.message["Subject"] for m in smtp.mailbox.received]
    assert sum("New message" in s for s in subjects) == 1
    human = run(clock, "tickets", "show", "1", "--config", str(config))
    assert "Thursday 10:00 suits us." in human.output
    no_ticket = run(clock, "tickets", "reply", "7", "-m", "hello", "--config", str(config))
    assert no_ticket.exit_code == 1 and "no ticket 7" in no_ticket.output


def test_tasks_are_added_updated_by_name_and_shown(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    clock = FakeClock(NOW)
    assert new_training(clock, config).exit_code == 0
    args = ["--config", str(config), "--json"]
    first = run(
        clock,
        "tickets",
        "task",
        "1",
        "Book the trainer",
        "--type",
        "customer request",
        "--hours",
        "0.5",
        "--due",
        "2026-03-12",
        *args,
    )
    assert first.exit_code == 0, first.output
    done = run(
        clock, "tickets", "task", "L-000001", "Book the trainer", "--type", "customer request",
        "--hours", "1", "--status", "done", *args,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    note = run(clock, "tickets", "task", "1", "Hand-out sent", "--type", "internal note", *args)
    assert note.exit_code == 0, note.output

    shown = json.loads(run(clock, "tickets", "show", "1", *args).stdout)
    assert [(t["task"], t["type"], t["hours"], t["due"], t["status"]) for t in shown["tasks"]] == [
        ("Book the trainer", "customer request", 1.0, None, "done"),
        ("Hand-out sent", "internal note", 0.0, None, "open"),
    ]
    page = (local(tmp_path).directory / "L-000001.md").read_text()
    assert "| Book the trainer | 1 | customer request | — | done |" in page


def test_add_task_through_the_outbox_is_delivered_once_after_the_ticket(tmp_path: Path) -> None:
    """The function the RMA road reuses: queue a task by the ticket's key, deliver later."""
    config = load_config(write_config(tmp_path))
    with App.open(config, FakeClock(NOW)) as app:
        ticket = make_ticket()
        with app.store.transaction():
            app.outbox.enqueue_ticket(app.sinks, ticket, incident_id=None, now=NOW)
            task = Task(task="Back up the counter's data", type=TaskType.CUSTOMER_REQUEST)
            ids = app.tickets.add_task(ticket.key, task, NOW)
            assert app.tickets.add_task(ticket.key, task, NOW) == ids  # the same task: one item
        app.tickets.deliver(NOW)
        app.tickets.deliver(NOW + timedelta(minutes=1))
        [filed] = app.sinks[0].list()
        assert filed.tasks == [task]
        assert {i.kind: i.state for i in app.outbox.items()} == {
            "create": DELIVERED,
            "task": DELIVERED,
        }


# --- the support lines' SLAs, and the escalation when one runs out


def test_an_overdue_line_escalates_to_the_next_once_with_one_mail(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = write_config(tmp_path, smtp)
    clock = FakeClock(NOW)
    assert (
        run(
            clock, "tickets", "new", "--category", "configuration", "--counter", "FFC0002",
            "--subject", "Count the side entrance too", "--what", "A second entrance opened.",
            "--config", str(config),
        ).exit_code
        == 0
    )  # fmt: skip
    mails = len(smtp.mailbox.received)

    def sync() -> dict[str, Any]:
        result = run(clock, "tickets", "sync", "--config", str(config), "--json")
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    clock.advance(timedelta(hours=23))  # the first line's day is not over
    assert sync()["escalated"] == []
    shown = json.loads(run(clock, "tickets", "show", "1", "--config", str(config), "--json").stdout)
    assert shown["sla"]["lines"][0]["state"] == "current"
    assert shown["sla"]["category"]["sla_days"] == 3 and not shown["sla"]["category"]["overdue"]

    clock.advance(timedelta(hours=2))  # 25 hours: the first line ran out
    assert [(e["from"], e["to"]) for e in sync()["escalated"]] == [("first_line", "second_line")]
    for _ in range(2):  # and again: nothing more
        clock.advance(timedelta(hours=1))
        assert sync()["escalated"] == []

    ticket = local(tmp_path).get("1")
    assert ticket is not None and ticket.stage is Stage.SECOND_LINE
    assert ticket.stage_since == NOW + timedelta(hours=25)
    [message] = ticket.messages
    assert "escalates the ticket to the second line" in message.body
    escalation_mails = [
        m for m in smtp.mailbox.received[mails:] if "escalated" in m.message["Subject"]
    ]
    assert len(escalation_mails) == 1
    assert escalation_mails[0].message["To"] == REQUESTER

    shown = json.loads(run(clock, "tickets", "show", "1", "--config", str(config), "--json").stdout)
    lines = shown["sla"]["lines"]
    assert [line["state"] for line in lines] == ["done", "current", "ahead"]
    assert lines[1]["due"] == (NOW + timedelta(hours=25, days=3)).isoformat()
    assert shown["sla"]["category"]["due"] == (NOW + timedelta(days=3)).isoformat()

    clock.set(NOW + timedelta(hours=25, days=3, minutes=1))  # the second line ran out too
    assert [(e["from"], e["to"]) for e in sync()["escalated"]] == [("second_line", "third_line")]
    clock.advance(timedelta(days=30))  # the third line has no ETA yet: nothing to chase
    assert sync()["escalated"] == []
    ticket = local(tmp_path).get("1")
    assert ticket is not None and ticket.stage is Stage.THIRD_LINE and len(ticket.messages) == 2
    human = run(clock, "tickets", "show", "1", "--config", str(config))
    assert "a plan and an ETA" in human.output and "passed on" in human.output
    notices = [i for i in items(tmp_path) if i.kind in NOTICE_KINDS]
    assert sum("escalated to the" in json.dumps(i.payload) for i in notices) == 2


def test_no_escalation_while_the_ticket_waits_on_the_customer(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    clock = FakeClock(NOW)
    assert new_training(clock, config).exit_code == 0
    local(tmp_path).set_status("L-000001", "Open", NOW, "Waiting on customer")
    clock.advance(timedelta(days=5))
    result = run(clock, "tickets", "sync", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["escalated"] == []
    assert local(tmp_path).get("1").stage is Stage.FIRST_LINE  # type: ignore[union-attr]


def test_an_escalation_not_delivered_yet_is_not_queued_again(tmp_path: Path) -> None:
    """The helpdesk is down between two syncs: the ticket still reads as first line, and the
    hand-over already queued is the only one."""
    config = load_config(write_config(tmp_path))
    clock = FakeClock(NOW)
    with App.open(config, clock) as app:
        ticket = make_ticket()
        with app.store.transaction():
            app.outbox.enqueue_ticket(app.sinks, ticket, incident_id=None, now=NOW)
        app.tickets.deliver(NOW)
        later = ticket.created_at + timedelta(days=1, minutes=5)
        app.tickets.sync(later)
        assert [e["to"] for e in app.tickets.escalated] == ["second_line"]
        app.tickets.sync(later + timedelta(hours=1))  # nothing delivered in between
        assert app.tickets.escalated == []
        handovers = [i for i in app.outbox.items() if i.payload.get("stage")]
        assert [(i.kind, i.state, i.payload["stage"]) for i in handovers] == [
            ("message", "pending", "second_line")
        ]
        app.tickets.deliver(later + timedelta(hours=1))
        [filed] = app.sinks[0].list()
        assert filed.stage is Stage.SECOND_LINE and len(filed.messages) == 1
        audit = app.store._db.execute(
            "SELECT COUNT(*) FROM audit WHERE action = 'ticket.escalated'"
        ).fetchone()[0]
        assert audit == 1


@pytest.mark.integration
def test_the_cycle_escalates_an_incidents_ticket_once_its_first_line_runs_out(
    tmp_path: Path,
) -> None:
    """The service, not only `tickets sync`: a simulated counter stays offline, its Technical
    Issue waits past the first line's day, and the cycles hand it to the second line once."""
    from tests.agent.test_delivery_e2e import (
        LOCAL_SINK,
        fresh_serial,
        offline_counter,
        runner_for,
    )
    from tests.agent.test_delivery_e2e import NOW as E2E_NOW

    with (
        offline_counter(tmp_path, fresh_serial("E"), LOCAL_SINK) as world,
        runner_for(world) as runner,
    ):
        [filed] = runner.run_cycle().tickets
        assert filed.number and filed.stage is Stage.FIRST_LINE
        for hours in (20, 25, 25.25, 26):
            world.clock.set(E2E_NOW + timedelta(hours=hours))
            runner.run_cycle()
        ticket = LocalSink(world.state / "tickets").get(filed.number)
        assert ticket is not None and ticket.stage is Stage.SECOND_LINE
        assert ticket.stage_since == E2E_NOW + timedelta(hours=25)
        handovers = [m for m in ticket.messages if "escalates the ticket" in m.body]
        assert len(handovers) == 1


def test_a_problem_back_after_another_healed_in_the_same_cycle_gets_no_status(
    tmp_path: Path,
) -> None:
    # the follow-up of a healed incident set "Suggest To Close"; the next flip of the same
    # cycle, a problem back on another ticket, carried it over (or, first in the loop,
    # crashed the cycle: its status was never set)
    from dataclasses import replace

    from agent.incidents import OPEN, RECOVERING, RESOLVED, Flip
    from agent.store import Incident

    clock = FakeClock(NOW)

    def incident(n: int, key: str) -> Incident:
        made = app.store.create_incident(
            check_id="counter.offline", site="LDN01", subject=f"C{n}", state=OPEN,
            code="timeout", summary=f"C{n} is offline", at=NOW, finding={}, reason="test",
        )  # fmt: skip
        return replace(made, ticket_key=key)

    with App.open(load_config(write_config(tmp_path)), clock) as app:
        keys = []
        for serial in ("C1", "C2"):
            t = make_ticket(serial=serial)
            app.outbox.enqueue_ticket(app.sinks, t, incident_id=None, now=NOW)
            keys.append(t.key)
        two = incident(2, keys[1])
        back = Flip(two, RECOVERING, OPEN, "failing again")
        again = Flip(replace(two, summary="C2 is offline again"), RECOVERING, OPEN, "again")
        healed = Flip(incident(1, keys[0]), RECOVERING, RESOLVED, "recovered: answers")
        for flips in ([back], [healed, again]):
            with app.store.transaction():
                app.tickets.follow_up(flips, NOW)
        sent = [(i.key, i.kind, i.payload["status"]) for i in app.outbox.items()[2:]]
    assert sent == [
        (keys[1], "message", None),
        (keys[0], "status", "Suggest To Close"),
        (keys[1], "message", None),
    ]
