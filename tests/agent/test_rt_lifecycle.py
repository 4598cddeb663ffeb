"""The ticket lifecycle in a real Request Tracker 5 on 127.0.0.1: the support line and the task
list stored as structured comments and read back (also when support writes them), a request
raised by hand, the conversation read from RT's transactions, a reply sent once, and an
overdue line escalated once — beside the local store, with one e-mail per change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.cli import cli
from agent.config import RtSinkConfig
from agent.delivery.outbox import CRASH_ENV, DELIVERED, Outbox
from agent.delivery.sinks.local import LocalSink
from agent.delivery.sinks.rt import RtSink
from agent.store import Store
from rma.tickets import Stage, Task, TaskType
from simulator import FakeClock
from tests.agent.test_delivery_e2e import ROOT, rt_sinks_toml
from tests.agent.test_lifecycle import LOCAL, NOW, REQUESTER, run, write_config
from tests.agent.test_rt_sink import make_sink, make_ticket
from tests.agent.test_smtp_sink import SmtpServer, smtp_server
from tests.agent.test_tickets_cli import cells
from tests.rt import RtServer


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path / "tls") as running:
        yield running


def history(rt: RtServer, number: str, kind: str) -> list[str]:
    """The text of each transaction of ``kind`` (Correspond, Comment) on ticket ``number``."""
    items = rt.api(
        "GET", f"ticket/{number}/history", params={"fields": "Type", "per_page": "100"}
    ).json()["items"]
    ids = [t["id"] for t in items if t["Type"] == kind]
    texts = []
    for tid in ids:
        parts = rt.api(
            "GET",
            "attachments",
            params={
                "query": json.dumps([{"field": "TransactionId", "value": tid}]),
                "fields": "Content,ContentType",
            },
        ).json()["items"]
        texts += [p["Content"] for p in parts if p.get("ContentType") == "text/plain"]
    return texts


@pytest.mark.integration
def test_stage_and_tasks_are_comments_rt_reads_back(rt_server: RtServer) -> None:
    sink: RtSink = make_sink(rt_server)
    filed = sink.file(make_ticket())
    assert filed.number is not None and filed.stage is Stage.FIRST_LINE
    moved = sink.set_stage(filed.number, Stage.SECOND_LINE, NOW)
    assert moved.stage is Stage.SECOND_LINE and moved.stage_since == NOW
    task = Task(task="Remote session", hours=1.5, type=TaskType.SUPPORT_OPERATION)
    sink.add_task(filed.number, task, NOW)
    done = task.model_copy(update={"status": "done", "due": date(2026, 3, 12)})
    sink.add_task(filed.number, done, NOW)
    sink.add_task(
        filed.number, Task(task="Firmware 5.2 fixes it", type=TaskType.FIRMWARE_NOTE), NOW
    )

    # support moves it on from RT itself, writing the same line in a comment
    staff = (
        "Engineering owns this now.\n"
        'ffc-stage: {"stage": "third_line", "plan": "ship firmware 5.2", "eta": "2026-03-20"}\n'
    )
    said = rt_server.api(
        "POST",
        f"ticket/{filed.number}/comment",
        json={"Content": staff, "ContentType": "text/plain"},
    )
    assert said.status_code == 201, said.text
    rt_server.api(
        "POST",
        f"ticket/{filed.number}/comment",
        json={"Content": "ffc-task: {not json", "ContentType": "text/plain"},
    )

    back = make_sink(rt_server).get(filed.number)  # a fresh sink: nothing cached
    assert back is not None
    assert back.stage is Stage.THIRD_LINE and back.plan == "ship firmware 5.2"
    assert back.eta == date(2026, 3, 20)
    assert [(t.task, t.status, t.hours, t.due) for t in back.tasks] == [
        ("Remote session", "done", 1.5, date(2026, 3, 12)),
        ("Firmware 5.2 fixes it", "open", 0.0, None),
    ]
    comments = history(rt_server, filed.number, "Comment")
    assert any("task 'Remote session' (support operation, 1.5 h" in c for c in comments)
    # none of it is correspondence: the requester's conversation stays the conversation
    assert history(rt_server, filed.number, "Correspond") == []


@pytest.mark.integration
def test_the_lifecycle_by_hand_and_by_the_clock_in_rt_and_the_local_store(
    tmp_path: Path, rt_server: RtServer, smtp: SmtpServer
) -> None:
    sinks = LOCAL + rt_sinks_toml(tmp_path, rt_server)
    config = write_config(tmp_path, smtp, sinks=sinks)
    clock = FakeClock(NOW)
    args = ["--config", str(config), "--json"]

    raised = run(
        clock, "tickets", "new", "--category", "service", "--counter", "FFC0002",
        "--subject", "Engineer call-out: the counter hangs loose", "--what",
        "The mounting bracket broke; the counter points at the ceiling.", *args,
    )  # fmt: skip
    assert raised.exit_code == 0, raised.output
    numbers = {i["sink"]: i["number"] for i in json.loads(raised.stdout)["items"]}
    assert numbers["local"] == "L-000001" and numbers["helpdesk"].isdigit()
    rt_number = numbers["helpdesk"]
    data = rt_server.api("GET", f"ticket/{rt_number}").json()
    assert data["Subject"].startswith("Engineer call-out")
    filed_mails = [m for m in smtp.mailbox.received if "Ticket filed" in m.message["Subject"]]
    assert len(filed_mails) == 1  # one ticket in two destinations: one e-mail

    # support answers in RT; the agent's side replies by RT's number
    rt_server.api(
        "POST",
        f"ticket/{rt_number}/correspond",
        json={"Content": "Which day suits the store?", "ContentType": "text/plain"},
    )
    clock.advance(timedelta(hours=1))
    replied = run(clock, "tickets", "reply", rt_number, "-m", "Thursday morning, please.", *args)
    assert replied.exit_code == 0, replied.output
    assert sorted(i["sink"] for i in json.loads(replied.stdout)["items"]) == ["helpdesk", "local"]
    assert run(clock, "tickets", "sync", *args).exit_code == 0  # delivering again adds nothing
    assert history(rt_server, rt_number, "Correspond").count("Thursday morning, please.") == 1
    local = LocalSink(tmp_path / "state" / "tickets").get("1")
    assert local is not None and [m.body for m in local.messages] == ["Thursday morning, please."]
    reply_mails = [m for m in smtp.mailbox.received if "New message" in m.message["Subject"]]
    assert len(reply_mails) == 1 and reply_mails[0].message["To"] == REQUESTER

    shown = run(clock, "tickets", "show", rt_number, *args)
    assert shown.exit_code == 0, shown.output
    ticket = json.loads(shown.stdout)
    assert ticket["sink"] == "helpdesk"
    assert [m["body"].strip() for m in ticket["messages"]] == [
        "Which day suits the store?",
        "Thursday morning, please.",
    ]

    task = run(
        clock, "tickets", "task", rt_number, "Engineer visit booked", "--type", "support operation",
        "--hours", "2", "--due", "2026-03-12", *args,
    )  # fmt: skip
    assert task.exit_code == 0, task.output
    shown = json.loads(run(clock, "tickets", "show", rt_number, *args).stdout)
    assert [(t["task"], t["hours"], t["due"]) for t in shown["tasks"]] == [
        ("Engineer visit booked", 2.0, "2026-03-12")
    ]

    # a Service Request's first line has a day: past it, the ticket goes to the second line
    clock.set(NOW + timedelta(days=1, hours=1))
    synced = json.loads(run(clock, "tickets", "sync", *args).stdout)
    assert sorted((e["sink"], e["to"]) for e in synced["escalated"]) == [
        ("helpdesk", "second_line"),
        ("local", "second_line"),
    ]
    clock.advance(timedelta(hours=2))
    assert json.loads(run(clock, "tickets", "sync", *args).stdout)["escalated"] == []
    escalations = [
        c for c in history(rt_server, rt_number, "Correspond") if "escalates the ticket" in c
    ]
    assert len(escalations) == 1
    shown = json.loads(run(clock, "tickets", "show", rt_number, *args).stdout)
    assert shown["stage"] == "second_line"
    assert shown["stage_since"] == (NOW + timedelta(days=1, hours=1)).isoformat()
    assert [line["state"] for line in shown["sla"]["lines"]] == ["done", "current", "ahead"]
    assert shown["sla"]["category"]["overdue"]  # the 1-day category SLA ran out as well
    escalated_mails = [m for m in smtp.mailbox.received if "escalated" in m.message["Subject"]]
    assert len(escalated_mails) == 1  # one hand-over in two destinations: one e-mail
    assert "second line" in escalated_mails[0].message.get_body().get_content()

    # tickets list reads RT as it reads the local store: both on the second line, its 3 days
    # counted from the hand-over, while the Service Request's 1-day category SLA ran out
    listed = json.loads(run(clock, "tickets", "list", *args).stdout)
    rows = {(r["sink"], r["number"]): r for r in listed}  # RT holds other tests' tickets too
    rows = {key: rows[key] for key in (("helpdesk", rt_number), ("local", "L-000001"))}
    line_due = NOW + timedelta(days=4, hours=1)  # the hand-over at 11 March 11:00, plus 3 days
    for r in rows.values():
        assert (r["stage"], r["line_due"], r["line_overdue"]) == (
            "second_line",
            line_due.isoformat(),
            False,
        )
        assert r["sla_overdue"] and r["sla"]["running"]
    human = CliRunner(env={"COLUMNS": "80"}).invoke(
        cli, ["tickets", "list", "--config", str(config)], obj={"clock": clock}
    )
    assert human.exit_code == 0, human.output
    assert max(len(line) for line in human.output.splitlines()) <= 80, human.output
    shown_rows = {row[0]: row for row in cells(human.output)[1:]}
    for number in (f"{rt_number} helpdesk", "L-000001 local"):
        assert shown_rows[number][2:4] == [
            "Service Request 1 d · overdue 3 h",
            "Second line · due 14 Mar 11:00 UTC",
        ], human.output


# --- the comment lines, whatever support writes


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
_LINE = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda kind, data: f"ffc-{kind}: {json.dumps(data)}",
        st.sampled_from(["stage", "task"]),
        st.dictionaries(
            st.sampled_from(["stage", "since", "plan", "eta", "task", "hours", "type", "due"]),
            st.one_of(
                _VALUES,
                st.sampled_from(["second_line", "third_line", "2026-03-20", "internal note"]),
            ),
        ),
    ),
)


@settings(max_examples=200, deadline=None)
@example([['ffc-stage: {"stage": "second_line", "plan": 5}', 'ffc-task: {"task": "x"}']])
@example([['ffc-stage: {"stage": "third_line", "since": "2026-03-11T09:00:00"}']])
@given(st.lists(st.lists(_LINE, max_size=4), max_size=4))
def test_any_comment_text_reads_back_as_a_valid_ticket_or_is_ignored(
    comments: list[list[str]],
) -> None:
    """No comment support writes can break reading a ticket: a line that does not parse is
    ignored, and what parses leaves a ticket that still validates."""
    config = RtSinkConfig.model_validate({"type": "rt", "url": "http://127.0.0.1:9", "token": "t"})
    sink = RtSink(config)
    ticket = make_ticket().filed("7")
    history = [
        {"id": i, "Type": "Comment", "Created": NOW.isoformat()} for i in range(len(comments))
    ]
    texts = {str(i): "\n".join(lines) for i, lines in enumerate(comments)}
    read = sink._structured_lines("7", ticket, history, texts)
    assert type(read).model_validate(read.model_dump()) == read
    assert read.key == ticket.key and read.messages == ticket.messages
    assert isinstance(read.plan, str)
    assert read.stage_since is None or read.stage_since.tzinfo is not None


@pytest.mark.integration
def test_a_reply_whose_sender_is_killed_after_sending_is_not_sent_twice(
    tmp_path: Path, rt_server: RtServer
) -> None:
    """``tickets reply`` killed (SIGKILL) after RT took the reply, before the outbox recorded
    it: the next delivery finds the reply on the ticket and does not send it again."""
    config = write_config(tmp_path, sinks=rt_sinks_toml(tmp_path, rt_server))
    clock = FakeClock(datetime.now(UTC))
    raised = run(
        clock, "tickets", "new", "--category", "service", "--subject", "Relocate the counter",
        "--what", "The entrance moves in April.", "--config", str(config), "--json",
    )  # fmt: skip
    assert raised.exit_code == 0, raised.output
    [item] = json.loads(raised.stdout)["items"]
    number = item["number"]

    text = f"Killed after sending {uuid.uuid4().hex[:8]}."
    killed = subprocess.run(
        [sys.executable, "-m", "agent", "tickets", "reply", number, "-m", text,
         "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, CRASH_ENV: "after_send"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert history(rt_server, number, "Correspond").count(text) == 1  # it got there

    clock.set(datetime.now(UTC))  # the killed process queued the reply on the system clock
    synced = run(clock, "tickets", "sync", "--config", str(config), "--json")
    assert synced.exit_code == 0, synced.output
    assert history(rt_server, number, "Correspond").count(text) == 1  # and only once
    with Store.open(tmp_path / "state") as store:
        replies = [
            i for i in Outbox(store, tmp_path / "state").items() if i.payload.get("body") == text
        ]
    assert [(i.sink, i.state) for i in replies] == [("helpdesk", DELIVERED)]


@pytest.mark.integration
def test_a_bare_number_naming_two_different_tickets_is_refused(
    tmp_path: Path, rt_server: RtServer
) -> None:
    """``1`` is ``L-000001`` in the local store and RT's ticket 1, two different tickets: no
    command picks one. Each says so in one line with the full number of each (exit 2), and
    that full number then names its ticket alone."""
    rt_server.create_ticket("General", "Any ticket: RT numbers from 1")  # so RT has a ticket 1
    config = write_config(tmp_path, sinks=LOCAL + rt_sinks_toml(tmp_path, rt_server))
    LocalSink(tmp_path / "state" / "tickets").file(make_ticket())
    clock = FakeClock(NOW)
    text = f"meant for one ticket only {uuid.uuid4()}"
    note = tmp_path / "note.txt"
    note.write_text(text)
    for args in (
        ["show", "1"],
        ["reply", "1", "-m", text],
        ["task", "1", "Call"],
        ["attach", "1", str(note)],
    ):
        result = run(clock, "tickets", *args, "--config", str(config))
        assert result.exit_code == 2, (args, result.output)
        [line] = result.output.splitlines()
        assert line == (
            "Error: '1' names different tickets: type the full number of the one you mean: "
            "L-000001 (local), RT-1 (helpdesk)"
        ), args
    as_json = run(clock, "tickets", "show", "1", "--config", str(config), "--json")
    assert as_json.exit_code == 2
    assert "RT-1 (helpdesk)" in json.loads(as_json.stdout)["error"]
    local = LocalSink(tmp_path / "state" / "tickets").get("L-000001")
    assert local is not None and local.messages == [] and local.tasks == []
    assert not any(text in c for c in history(rt_server, "1", "Correspond"))

    # the full numbers it offers name one ticket each
    shown = run(clock, "tickets", "show", "RT-1", "--config", str(config), "--json")
    assert shown.exit_code == 0, shown.output
    assert (json.loads(shown.stdout)["sink"], json.loads(shown.stdout)["number"]) == (
        "helpdesk",
        "1",
    )
    replied = run(
        clock, "tickets", "reply", "L-000001", "-m", text, "--config", str(config), "--json"
    )
    assert replied.exit_code == 0, replied.output
    assert [(i["sink"], i["number"]) for i in json.loads(replied.stdout)["items"]] == [
        ("local", "L-000001")
    ]
    local = LocalSink(tmp_path / "state" / "tickets").get("L-000001")
    assert local is not None and [m.body for m in local.messages] == [text]
    assert not any(text in c for c in history(rt_server, "1", "Correspond"))


@pytest.mark.integration
def test_a_number_in_rts_own_form_names_the_ticket_rt_holds_first(
    tmp_path: Path, rt_server: RtServer
) -> None:
    """One ticket that is RT's ``N`` and the local ``L-00000N``: ``N`` is RT's own form, so
    ``show N`` shows RT's ticket, and a reply by it reaches both; ``L-00000N`` shows the
    local one. (Run alone on a fresh RT, the lifecycle test meets this with N = 1.)"""
    config = write_config(tmp_path, sinks=LOCAL + rt_sinks_toml(tmp_path, rt_server))
    # RT numbers every ticket in turn: fill the local store up to RT's newest ticket, so the
    # next ticket filed in both has the same digits in each
    newest = int(rt_server.create_ticket("General", "RT's newest ticket before the test"))
    store = LocalSink(tmp_path / "state" / "tickets")
    for _ in range(newest):
        store.file(make_ticket())
    clock = FakeClock(NOW)
    raised = run(
        clock, "tickets", "new", "--category", "service", "--counter", "FFC0002",
        "--subject", "Engineer call-out", "--what", "The bracket broke.",
        "--config", str(config), "--json",
    )  # fmt: skip
    assert raised.exit_code == 0, raised.output
    numbers = {i["sink"]: i["number"] for i in json.loads(raised.stdout)["items"]}
    n = newest + 1
    assert numbers == {"local": f"L-{n:06d}", "helpdesk": str(n)}

    for typed, sink, number in (
        (str(n), "helpdesk", str(n)),
        (f"RT-{n}", "helpdesk", str(n)),
        (f"L-{n:06d}", "local", f"L-{n:06d}"),
        (f"{n:06d}", "local", f"L-{n:06d}"),  # bare in both: the same ticket, in file order
    ):
        shown = run(clock, "tickets", "show", typed, "--config", str(config), "--json")
        assert shown.exit_code == 0, (typed, shown.output)
        assert (json.loads(shown.stdout)["sink"], json.loads(shown.stdout)["number"]) == (
            sink,
            number,
        ), typed
    replied = run(
        clock, "tickets", "reply", str(n), "-m", "Thursday, please.", "--config", str(config),
        "--json",
    )  # fmt: skip
    assert replied.exit_code == 0, replied.output
    assert [(i["sink"], i["number"]) for i in json.loads(replied.stdout)["items"]] == [
        ("helpdesk", str(n)),
        ("local", f"L-{n:06d}"),
    ]
    assert history(rt_server, str(n), "Correspond").count("Thursday, please.") == 1
