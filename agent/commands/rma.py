"""``ffc-agent rma list|show|start|advance|rescue|verify-replacement``: the RMA road by hand.

Second-line support drives an RMA from a remote-access session: see which units are on the
road and where, start one for a counter, record FootfallCam's answers (approved, shipped…),
rescue a unit's data before it ships, and verify its replacement. Thin like ``agent/cli.py``:
parse, call ``agent.rma_flow``, render. Every command prints ``--json`` on request; a move the
workflow does not allow exits 1 with its one-line reason. Everything is audited with the
person's login name as the actor.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from agent.commands.common import (
    _actor,
    _load,
    clock,
    config_option,
    json_option,
    out,
    table,
)
from agent.rmas import Rma, RmaError
from rma.workflow import DESCRIPTIONS, IllegalTransition, State


@contextmanager
def _flow(config_path: Path) -> Iterator[Any]:
    from agent.app import App
    from agent.rma_flow import RmaFlow

    cfg = _load(config_path)
    with App.open(cfg, clock()) as app:
        try:
            yield RmaFlow(app.runner, config_path)
        except (RmaError, IllegalTransition) as exc:
            click.echo(f"ffc-agent rma: {exc}", err=True)
            sys.exit(1)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _detail(flow: Any, rma: Rma) -> dict[str, Any]:
    return {
        **rma.to_json(),
        "meaning": DESCRIPTIONS[rma.state],
        "ticket": (key := flow.ticket_key(rma)),
        "ticket_number": next(
            (i.ticket_number for i in flow.store.incidents() if key and i.ticket_key == key), None
        ),
        "moves": [m.to_json() for m in flow.rmas.moves(rma.id)],
        "repairs": [
            {
                "at": a.at.isoformat(),
                "step": a.step.value,
                "outcome": a.outcome.value,
                "actor": a.actor,
                "detail": a.detail,
            }
            for a in flow.rmas.attempts(rma.counter)
        ],
    }


def _when(iso: str) -> str:
    """A moment for people: day, month, hour and minute in UTC (the JSON keeps it whole)."""
    return f"{datetime.fromisoformat(iso).astimezone(UTC):%d %b %Y %H:%M} UTC"


@click.group("rma")
def rma() -> None:
    """The RMA road: from a suspect counter to a verified replacement."""


@rma.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only RMAs still on the road.")
@config_option
@json_option
def rma_list(open_only: bool, config_path: Path, as_json: bool) -> None:
    """Every RMA, newest last."""
    with _flow(config_path) as flow:
        rmas = flow.rmas.all(open_only=open_only)
        if as_json:
            _echo_json([r.to_json() for r in rmas])
            return
        if not rmas:
            out.print("no RMAs" + (" on the road" if open_only else ""))
            return
        shown = table(
            "RMAs",
            ("id", "counter", "site", "state", "since (UTC)", "reason"),
            whole=("id", "counter", "site", "state"),
        )
        for r in rmas:
            since = f"{r.updated_at.astimezone(UTC):%d %b %H:%M}"
            shown.add_row(str(r.id), r.counter, r.site, r.state.value, since, r.reason)
        out.print(shown)


@rma.command("show")
@click.argument("rma_id", type=int)
@config_option
@json_option
def rma_show(rma_id: int, config_path: Path, as_json: bool) -> None:
    """One RMA: its state, every move with who and why, the repairs tried."""
    with _flow(config_path) as flow:
        data = _detail(flow, flow.rmas.get(rma_id))
        if as_json:
            _echo_json(data)
            return
        out.print(
            f"RMA {data['id']} — {data['counter']} at {data['site']}: [bold]{data['state']}[/]"
        )
        out.print(f"  {data['meaning']}; reason: {data['reason']}")
        ticket = data["ticket_number"] or (data["ticket"] and "queued, not numbered yet")
        out.print(f"  ticket: {ticket or 'none yet'}")
        for m in data["moves"]:
            out.print(
                f"  {_when(m['at'])}  {m['from'] or '-'} → {m['to']}  by {m['actor']}: "
                f"{m['reason']}"
            )
        for r in data["repairs"]:
            out.print(f"  repair {_when(r['at'])}  {r['step']}: {r['outcome']} ({r['actor']})")


@rma.command("start")
@click.argument("counter")
@click.option("--reason", default="started by hand", show_default=True)
@click.option(
    "--led",
    type=click.Choice(["blue", "flashing-blue", "yellow", "red", "none"]),
    help="The LED colour a person on site reports (red is a hardware signature).",
)
@config_option
@json_option
def rma_start(counter: str, reason: str, led: str | None, config_path: Path, as_json: bool) -> None:
    """Open an RMA (candidate) for COUNTER; its open RMA if it has one."""
    with _flow(config_path) as flow:
        reports = {"led": led} if led else None
        found, created = flow.start(counter, actor=_actor(), reason=reason, reports=reports)
        if as_json:
            _echo_json({**found.to_json(), "created": created})
            return
        if created:
            out.print(f"RMA {found.id} opened for {found.counter}: {found.state.value}")
        else:
            out.print(f"{found.counter} already has RMA {found.id}: {found.state.value}")


@rma.command("advance", epilog=f"STATE is one of: {', '.join(s.value for s in State)}.")
@click.argument("rma_id", type=int)
@click.argument("state", metavar="STATE", type=click.Choice([s.value for s in State]))
@click.option("--note", required=True, help="Why: FootfallCam's answer, the courier's number…")
@config_option
@json_option
def rma_advance(rma_id: int, state: str, note: str, config_path: Path, as_json: bool) -> None:
    """Move RMA_ID to STATE; refused with the reason when the road does not allow it."""
    with _flow(config_path) as flow:
        moved = flow.advance(rma_id, state, actor=_actor(), note=note)
        if as_json:
            _echo_json(moved.to_json())
            return
        out.print(f"RMA {moved.id} is now {moved.state.value}: {DESCRIPTIONS[moved.state]}")


@rma.command("rescue")
@click.argument("rma_id", type=int)
@click.option(
    "--accept-loss",
    is_flag=True,
    help="The unit cannot be reached and never will: what the agent holds is the rescue.",
)
@config_option
@json_option
def rma_rescue(rma_id: int, accept_loss: bool, config_path: Path, as_json: bool) -> None:
    """Pull every count slot the unit still holds, check the ledger, attach the CSV. Exits 1
    when the unit could not be reached (nothing is posted; run it again when it answers, or
    add --accept-loss for a unit that never will)."""
    with _flow(config_path) as flow:
        result = flow.rescue(rma_id, actor=_actor(), accept_loss=accept_loss)
        if as_json:
            _echo_json(result)
        else:
            if not result["reached"]:
                out.print(f"could not reach the unit: {'; '.join(result['notes'])}")
            out.print(result["summary"])
            out.print(f"CSV: {result['csv']}")
            if not result["reached"] and not accept_loss:
                out.print(
                    f"not rescued: run `ffc-agent rma rescue {rma_id}` again when the unit "
                    f"answers, or add --accept-loss if it never will"
                )
        if not result["reached"] and not accept_loss:
            sys.exit(1)


@rma.command("verify-replacement")
@click.argument("rma_id", type=int)
@click.option("--serial", "new_serial", required=True, help="The replacement unit's serial.")
@config_option
@json_option
def rma_verify(rma_id: int, new_serial: str, config_path: Path, as_json: bool) -> None:
    """Check the replacement end to end; exits 1 until it is verified (run it again later)."""
    with _flow(config_path) as flow:
        result = flow.verify_replacement(rma_id, new_serial, actor=_actor())
        if as_json:
            _echo_json(result.to_json())
        else:
            for c in result.checks:
                mark = "[green]ok[/]" if c["ok"] else "[red]no[/]"
                out.print(f"{mark}  {c['check']}: {c['detail']}")
            if result.verified:
                out.print(f"RMA {rma_id}: replacement {new_serial} verified")
        if not result.verified:
            sys.exit(1)
