"""``ffc-agent tickets list`` as a person and a script meet it, in the local store: each
ticket's support line with its own SLA beside the category's, wrapped at 80 columns with
nothing cut."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli
from rma.tickets import NextAction, Stage, TicketStatus
from simulator import FakeClock
from tests.agent.test_lifecycle import NOW, local, run, write_config

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
