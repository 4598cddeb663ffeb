"""``ffc-agent tickets new`` and ``tickets list`` as a person and a script meet them, in the
local store: on a terminal a missing field of the portal's form is asked for (the categories
offered are those the role allows; the only site and counter are the defaults), without one it
is a one-line usage error that never waits on stdin; the list shows each ticket's support line
with its own SLA beside the category's, wrapped at 80 columns with nothing cut."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import cli
from rma.tickets import NextAction, Stage, TicketStatus
from simulator import FakeClock
from tests.agent.test_delivery_e2e import ROOT
from tests.agent.test_lifecycle import NOW, items, local, run, write_config

PARIS = """
[[sites]]
code = "PAR01"
name = "Rue de Rivoli"
timezone = "Europe/Paris"
opening_hours = { mon = "09:00-20:00" }

[[counters]]
serial = "FFC0003"
name = "Entrée"
site = "PAR01"
host = "127.0.0.1"
password = "Par1s-pw-Qz8"
"""


def with_paris(config: Path) -> Path:
    config.write_text(config.read_text().replace("\n[[sinks]]", PARIS + "\n[[sinks]]", 1))
    return config


def on_a_terminal(clock: FakeClock, answers: str, *args: str) -> Any:
    """``tickets new`` with a person at the keyboard typing ``answers``."""
    return CliRunner().invoke(
        cli, ["tickets", "new", *args], input=answers, obj={"clock": clock, "interactive": True}
    )


# --- tickets new: asked on a terminal, an error in a script


def test_on_a_terminal_the_missing_fields_are_asked_as_the_portal_form_asks(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)  # role customer; one site, one counter
    answers = "\n".join(
        [
            "7",  # no such number: asked again
            "4",  # Configuration Request
            "",  # the counters: the only one, by default
            "   ",  # a blank subject: asked again
            "Count the side entrance too",
            "A second entrance opened on Monday.",
        ]
    )
    result = on_a_terminal(FakeClock(NOW), answers + "\n", "--config", str(config))

    assert result.exit_code == 0, result.output
    offered = [ln.split(") ", 1)[1].split(":")[0] for ln in result.output.splitlines()[1:6]]
    assert offered == [
        *("Data Accuracy Issue", "Technical Issue", "Training Request"),
        *("Configuration Request", "Service Request"),
    ]  # only what a customer may choose: no Device Bug, no Business Request
    assert "Device Bug" not in result.output and "Business Request" not in result.output
    assert "Error: 7 is not in the range 1<=x<=5." in result.output
    assert "Counters (numbers, comma-separated) [1]:" in result.output
    assert result.output.count("Subject, one line:") == 2
    assert "local ticket L-000001: delivered" in result.output
    ticket = local(tmp_path).get("L-000001")
    assert ticket is not None
    assert ticket.category.value == "Configuration Request" and ticket.sla_days == 3
    assert ticket.site == "LDN01" and ticket.counters == ["FFC0002"]
    assert ticket.issue_level == "counter"
    assert ticket.subject == "Count the side entrance too"
    assert ticket.comment.what == "A second entrance opened on Monday."
    assert ticket.comment.which_device == "Main door (FFC0002)"


def test_a_footfallcam_agent_is_offered_its_categories_and_picks_site_and_counter(
    tmp_path: Path,
) -> None:
    config = with_paris(write_config(tmp_path, role="footfallcam"))
    answers = "\n".join(
        [
            "6",  # Device Bug: FootfallCam staff may choose it
            "2",  # PAR01
            "0,1",  # none and a counter: asked again
            "1",  # FFC0003
            "Counts between 23:59 and 00:01 are lost.",
        ]
    )
    result = on_a_terminal(
        FakeClock(NOW),
        answers + "\n",
        *("--subject", "Firmware 5.1 drops counts at midnight", "--config", str(config)),
    )

    assert result.exit_code == 0, result.output
    assert "Category (those the role 'footfallcam' may choose):" in result.output
    assert "  6) Device Bug: a confirmed device bug, SLA 3 days" in result.output
    assert "  8) Accuracy Audit Obstacle:" in result.output
    assert "Business Request" not in result.output  # by e-mail, whoever asks
    assert (
        "  1) LDN01 Oxford Street" in result.output and "  2) PAR01 Rue de Rivoli" in result.output
    )
    assert "Error: 0 (the whole site) goes alone" in result.output
    assert "Subject, one line:" not in result.output  # given: not asked
    ticket = local(tmp_path).get("L-000001")
    assert ticket is not None and ticket.category.value == "Device Bug"
    assert ticket.site == "PAR01" and ticket.counters == ["FFC0003"]
    assert ticket.subject == "Firmware 5.1 drops counts at midnight"


def test_the_whole_site_is_one_answer_and_given_options_are_not_asked_again(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    result = on_a_terminal(
        FakeClock(NOW),
        "0\n",  # the counters: none, a site-level request
        *("--category", "training", "--subject", "Training for the new manager"),
        *("--what", "An hour on the daily reports.", "--config", str(config), "--json"),
    )
    assert result.exit_code == 0, result.output
    # --json asks nothing: the counters stay as given (none), the answer is never read
    assert "Counters" not in result.output
    assert json.loads(result.stdout)["items"][0]["number"] == "L-000001"
    result = on_a_terminal(
        FakeClock(NOW + timedelta(minutes=1)),
        "0\n",
        *("--category", "training", "--subject", "Training for the area manager"),
        *("--what", "An hour on the weekly reports.", "--config", str(config)),
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("Counters (numbers, comma-separated) [1]:") == 1
    assert "Category" not in result.output and "Subject" not in result.output
    ticket = local(tmp_path).get("L-000002")
    assert ticket is not None and ticket.counters == [] and ticket.issue_level == "site"


@pytest.mark.parametrize(
    ("obj", "extra"),
    [
        ({}, []),  # CliRunner's stdin is not a terminal, as a script's or the service's
        ({"interactive": True}, ["--json"]),
        ({"interactive": True}, ["--no-input"]),
    ],
)
def test_without_a_person_to_ask_a_missing_field_is_one_usage_error(
    tmp_path: Path, obj: dict[str, Any], extra: list[str]
) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["tickets", "new", "--subject", "Move the counter", "--config", str(config), *extra],
        input="4\n\nThe entrance moves.\n",  # there to be read, and never read
        obj={"clock": FakeClock(NOW), **obj},
    )
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert errors == [
        "Error: missing --category, --what (questions are asked only on a terminal, "
        "without --json or --no-input)"
    ]
    assert "Category" not in result.output and "Traceback" not in result.output
    assert local(tmp_path).list() == []
    assert not (tmp_path / "state" / "ffc-agent.db").exists() or items(tmp_path) == []


def test_the_real_process_on_a_terminal_asks(tmp_path: Path) -> None:
    """Nothing forced: the process's stdin is a terminal (a pseudo-terminal, the answers typed
    into it ahead), so it asks, on stderr, and files what the person answered."""
    config = write_config(tmp_path)
    master, slave = pty.openpty()
    try:
        os.write(master, b"3\n0\nTraining for the new manager\nAn hour on the reports.\n")
        done = subprocess.run(
            [sys.executable, "-m", "agent", "tickets", "new", "--config", str(config)],
            cwd=ROOT,
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == 0, done.stderr
    assert "Category (1-5): " in done.stderr and "Subject, one line: " in done.stderr
    assert done.stdout.strip() == "local ticket L-000001: delivered"
    ticket = local(tmp_path).get("L-000001")
    assert ticket is not None and ticket.category.value == "Training Request"
    assert ticket.counters == [] and ticket.subject == "Training for the new manager"
    assert ticket.comment.what == "An hour on the reports."


def test_a_script_whose_stdin_stays_open_gets_the_error_not_a_question(tmp_path: Path) -> None:
    """The real process, its stdin a pipe nobody writes to or closes: a question would wait
    for ever (and the timeout would fail the test); the usage error comes instead."""
    config = write_config(tmp_path)
    read_end, write_end = os.pipe()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "tickets", "new", "--subject", "Move the counter",
             "--category", "service", "--config", str(config)],
            cwd=ROOT,
            stdin=read_end,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    finally:
        os.close(read_end)
        os.close(write_end)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: missing --what (")
    assert done.stdout == "" and local(tmp_path).list() == []


# --- tickets list: the support line and its SLA


def cells(output: str) -> list[list[str]]:
    """The header and the rows of a rich table as printed (rows ruled apart), each cell's
    wrapped lines joined by a space: a word folded (cut) across two lines would not read back
    whole."""
    rows: list[list[list[str]]] = []
    fresh = True
    for line in output.splitlines():
        if line.startswith(("┡", "├", "└")):
            fresh = True
        if not line.startswith(("│", "┃")):
            continue
        parts = [p.strip() for p in line[1:-1].split(line[0])]
        if fresh:
            rows.append([[] for _ in parts])
            fresh = False
        for cell, part in zip(rows[-1], parts, strict=True):
            if part:
                cell.append(part)
    return [[" ".join(cell) for cell in row] for row in rows]


def test_tickets_list_shows_each_tickets_support_line_and_its_sla_at_80_columns(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    clock = FakeClock(NOW)  # Tuesday 10 March 2026, 10:00 UTC
    args = ["--config", str(config)]

    def new(category: str, subject: str, *extra: str) -> None:
        made = run(clock, "tickets", "new", "--category", category, "--subject", subject,
                   "--what", "As the subject says.", *extra, *args)  # fmt: skip
        assert made.exit_code == 0, made.output

    new("training", "Training for the new store manager")  # L-000001
    new("configuration", "Count the side entrance too", "--counter", "FFC0002")  # L-000002
    new("service", "Engineer call-out: the bracket broke", "--counter", "FFC0002")  # L-000003
    # support asks the store a question on the training request: its clocks stop
    local(tmp_path).set_status("L-000001", TicketStatus.OPEN, NOW, NextAction.WAITING_ON_CUSTOMER)
    clock.set(NOW + timedelta(hours=25))  # the first line's day is over: the others escalate
    synced = run(clock, "tickets", "sync", *args, "--json")
    assert synced.exit_code == 0, synced.output
    assert sorted(e["number"] for e in json.loads(synced.stdout)["escalated"]) == [
        "L-000002",
        "L-000003",
    ]
    # the third line takes the call-out, with a plan and an ETA
    eta = date(2026, 3, 16)
    local(tmp_path).set_stage(
        "L-000003", Stage.THIRD_LINE, clock.now(), plan="new bracket", eta=eta
    )
    clock.set(datetime(2026, 3, 14, 16, 0, tzinfo=UTC))  # Saturday: 3 days and 5 hours later
    new("technical", "The Analytic Manager shows no data for today")  # L-000004

    listed = run(clock, "tickets", "list", *args, "--json")
    assert listed.exit_code == 0, listed.output
    rows = {r["number"]: r for r in json.loads(listed.stdout)}
    assert [r["number"] for r in json.loads(listed.stdout)] == [
        *("L-000004", "L-000003", "L-000002", "L-000001")
    ]
    second = NOW + timedelta(hours=25)
    expected = {  # number: (stage, line due, line overdue, category overdue)
        "L-000001": ("first_line", NOW + timedelta(days=1), False, False),
        "L-000002": ("second_line", second + timedelta(days=3), True, True),
        "L-000003": ("third_line", datetime(2026, 3, 17, tzinfo=UTC), False, True),
        "L-000004": ("first_line", clock.now() + timedelta(days=1), False, False),
    }
    for number, (stage, due, late, category_late) in expected.items():
        r = rows[number]
        assert (r["stage"], r["line_due"], r["line_overdue"]) == (stage, due.isoformat(), late)
        assert r["sla_overdue"] is category_late
        assert r["sla"]["stage"] == stage and r["sla"]["running"] is (number != "L-000001")

    human = CliRunner(env={"COLUMNS": "80"}).invoke(
        cli, ["tickets", "list", *args], obj={"clock": clock}
    )
    assert human.exit_code == 0, human.output
    assert max(len(line) for line in human.output.splitlines()) <= 80, human.output
    assert "…" not in human.output
    header, *table = cells(human.output)
    assert header == ["ticket", "status", "category, SLA", "support line", "subject, counters"]
    assert table == [
        [
            "L-000004 local",
            "Open",
            "Technical Issue 1 d · due 15 Mar 16:00 UTC",
            "First line · due 15 Mar 16:00 UTC",
            "The Analytic Manager shows no data for today site LDN01",
        ],
        [
            "L-000003 local",
            "Open",
            "Service Request 1 d · overdue 3 d",
            "Third line · ETA 16 Mar",
            "Engineer call-out: the bracket broke FFC0002",
        ],
        [
            "L-000002 local",
            "Open",
            "Configuration Request 3 d · overdue 30 h",
            "Second line · overdue 5 h",
            "Count the side entrance too FFC0002",
        ],
        [
            "L-000001 local",
            "Open",
            "Training Request 1 d · paused",
            "First line · paused",
            "Training for the new store manager site LDN01",
        ],
    ], human.output
    # tickets show says so too: both clocks of the training request wait on the store
    shown = CliRunner(env={"COLUMNS": "80"}).invoke(
        cli, ["tickets", "show", "1", *args], obj={"clock": clock}
    )
    assert shown.exit_code == 0, shown.output
    sla = {row[0]: row[-1] for row in cells(shown.output) if len(row) == 5}
    assert sla["category: Training Request"] == "paused (not with support)", shown.output
    assert sla["First line"] == "holds the ticket, paused"
    assert sla["Second line"] == "not reached"
