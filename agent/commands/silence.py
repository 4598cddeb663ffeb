"""``ffc-agent silence add|list|remove``: hold a counter's or site's findings for a while.

A silence starts now; a maintenance window starts later. Held findings say which silence held
them and why; every change is audited (``silence.add``, ``silence.remove``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import click

from agent.commands.common import (
    _actor,
    _aware,
    _load,
    _print_json,
    clock,
    config_option,
    json_option,
    out,
    table,
)

_DURATION = re.compile(r"(\d+)([dhms])")


def parse_duration(text: str) -> timedelta:
    """``2h``, ``90m``, ``1h30m``, ``3d`` → a timedelta; ValueError otherwise."""
    text = text.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration like 2h, 45m or 1h30m: {text!r}")
    unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    total = sum((timedelta(**{unit[u]: int(n)}) for n, u in parts), timedelta())
    if total <= timedelta(0):
        raise ValueError("a duration must be longer than zero")
    return total


@click.group()
def silence() -> None:
    """Silences and maintenance windows: hold a counter's or site's findings for a while."""


@silence.command("add")
@click.argument("target")
@click.option("--for", "duration", required=True, metavar="DURATION", help="e.g. 2h, 45m, 1d.")
@click.option(
    "--start",
    "start_text",
    metavar="ISO-8601",
    help="Start later: a maintenance window (default: now).",
)
@click.option("--reason", required=True, help="Why: it shows on every held finding.")
@config_option
@json_option
def silence_add(
    target: str,
    duration: str,
    start_text: str | None,
    reason: str,
    config_path: Path,
    as_json: bool,
) -> None:
    """Silence TARGET (a counter serial, a site code, or '*' for everything)."""
    from agent.app import App

    cfg = _load(config_path)
    known = {c.serial for c in cfg.counters} | {s.code for s in cfg.sites} | {"*"}
    if target not in known:
        raise click.BadParameter(
            f"{target!r} is no counter or site of {config_path}", param_hint="TARGET"
        )
    try:
        length = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from None
    now = clock().now()
    start = _aware(start_text, "--start") if start_text else now
    with App.open(cfg, clock()) as app:
        store = app.store
        silence_id = store.add_silence(
            target=target, start=start, until=start + length, reason=reason, author=_actor(), at=now
        )
        store.audit(
            now,
            _actor(),
            "silence.add",
            target,
            {"id": silence_id, "until": (start + length).isoformat(), "reason": reason},
        )
    data = {
        "id": silence_id,
        "target": target,
        "start": start.isoformat(),
        "until": (start + length).isoformat(),
        "reason": reason,
        "author": _actor(),
    }
    if as_json:
        _print_json(data)
        return
    out.print(
        f"silence {silence_id}: {target} held from {start:%Y-%m-%d %H:%M %Z} until "
        f"{start + length:%Y-%m-%d %H:%M %Z} ({reason})"
    )


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include silences that are over.")
@config_option
@json_option
def silence_list(show_all: bool, config_path: Path, as_json: bool) -> None:
    """The silences in force (and coming)."""
    from agent.app import App

    cfg = _load(config_path)
    with App.open(cfg, clock()) as app:
        store = app.store
        items = store.silences(active_at=None if show_all else clock().now())
    rows = [
        {
            "id": s["id"],
            "target": s["target"],
            "start": s["start"].isoformat(),
            "until": s["until"].isoformat(),
            "reason": s["reason"],
            "author": s["author"],
        }
        for s in items
    ]
    if as_json:
        _print_json(rows)
        return
    shown = table("Silences", ("id", "target", "from", "until", "reason", "by"), whole=("id",))
    for s in items:  # to the minute, in the silence's own offset: seconds are noise here
        shown.add_row(
            str(s["id"]),
            s["target"],
            f"{s['start']:%Y-%m-%d %H:%M %Z}",
            f"{s['until']:%Y-%m-%d %H:%M %Z}",
            s["reason"],
            s["author"],
        )
    out.print(shown)


@silence.command("remove")
@click.argument("silence_id", metavar="ID", type=int)
@config_option
def silence_remove(silence_id: int, config_path: Path) -> None:
    """End silence ID now."""
    from agent.app import App

    cfg = _load(config_path)
    now = clock().now()
    with App.open(cfg, clock()) as app:
        store = app.store
        if not store.remove_silence(silence_id, now):
            raise click.ClickException(f"no silence {silence_id} in force")
        store.audit(now, _actor(), "silence.remove", str(silence_id))
    out.print(f"silence {silence_id} removed")
