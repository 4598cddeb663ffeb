"""``ffc-agent remote shell|tunnel COUNTER``: the remote-access tools of second-line support.

A support engineer in a remote-access session on the gateway opens a recorded shell on a
counter, or a tunnel to its web interface to see its live view and settings (DESIGN.md §1).
Thin like ``agent/cli.py``: parse, call ``agent.remote``, render. Both need the counter's
``[counters.ssh]`` table and its host key pinned by ``ffc-agent enroll``; a refusal says which
of the two is missing. Every session is in the audit log (``remote.shell``,
``remote.tunnel.open``/``remote.tunnel.close``) with who ran it and, for the shell, the
transcript's path and sha256 under ``<state_dir>/sessions/``.

``agent/cli.py`` registers the group lazily (``remote`` → ``agent.commands.remote:remote``);
the options and helpers both share live in ``agent/commands/common.py``.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from agent.commands.common import (
    _actor,
    _counter,
    _load,
    clock,
    config_option,
    err,
    fail,
    json_option,
    out,
)
from diagnostics.model import ProbeError, ProbeErrorCode

if TYPE_CHECKING:  # paramiko is imported when a session starts, not for --help
    from agent.config import Config, CounterConfig
    from agent.probes.ssh import SshTarget

EX_INTERRUPTED = 130  # as a shell reports a session ended by Ctrl-C
SESSION_TIMEOUT_S = 10.0  # connecting by hand: at least this, however short the probe timeout


@click.group()
def remote() -> None:
    """Remote-access sessions with a counter over SSH: recorded and audited."""


def _ssh_target(
    cfg: Config, serial: str, config_path: Path, *, as_json: bool = False
) -> tuple[CounterConfig, SshTarget]:
    from agent.probes.ssh import SshTarget

    counter = _counter(cfg, serial, config_path)
    target = SshTarget.for_counter(counter)
    if target is None:
        fail(
            f"{serial} has no [counters.ssh] table in {config_path}: "
            "remote access is not configured for it",
            as_json=as_json,
        )
    return counter, target


def _refused(what: str, serial: str, exc: ProbeError, *, as_json: bool = False) -> NoReturn:
    from agent.probes.ssh import HostKeyError

    hint = ""
    if isinstance(exc, HostKeyError):
        if exc.code is ProbeErrorCode.HOST_KEY_UNKNOWN:
            hint = (
                f"its host key is not pinned yet: compare {exc.offered} with the device, "
                f"then run: ffc-agent enroll {serial}"
            )
        else:
            hint = (
                "the counter's host key changed (a replaced unit, or someone in between): "
                f"verify {exc.offered} on site, then run: ffc-agent enroll {serial}"
            )
    fail(f"remote {what} {serial}: {exc.message}", as_json=as_json, hint=hint)


def _timeout(cfg: Config) -> float:
    return max(cfg.agent.probe_timeout_seconds, SESSION_TIMEOUT_S)


@remote.command("shell")
@click.argument("counter")
@click.option(
    "--ticket",
    "ticket_number",
    metavar="NUMBER",
    help="Attach the session's transcript to this ticket when the session ends.",
)
@config_option
def shell_cmd(counter: str, ticket_number: str | None, config_path: Path) -> None:
    """Open a shell on COUNTER; the whole session is recorded in a transcript and audited.

    With a terminal you get the device's own prompt, line editing and Ctrl-C (type ~. at the
    start of a line to leave a stuck session); with a pipe on stdin each line is one command.
    With --ticket, the transcript goes onto that ticket afterwards (as `tickets attach`).
    Exits with the device shell's exit status.
    """
    from agent.app import App
    from agent.remote import run_shell, transcript_path_for
    from rma.redact import Redactor

    cfg = _load(config_path)
    _, target = _ssh_target(cfg, counter, config_path)
    state_dir = Path(cfg.agent.state_dir)
    if ticket_number is not None:
        _ticket_exists(cfg, ticket_number)  # before the session: not after an hour's work
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer  # click.get_binary_stream: gone in 9
    try:
        stdin.fileno()
    except (OSError, ValueError):
        raise click.UsageError("remote shell needs a terminal or a pipe on stdin") from None
    path = transcript_path_for(state_dir, counter, clock().now())
    err.print(f"[dim]{counter} ({target}): this session is recorded in {path}[/]")
    with App.open(cfg, clock()) as app:
        store = app.store
        try:
            result = run_shell(
                target,
                state_dir / "known_hosts",
                stdin=stdin,
                stdout=stdout,
                transcript_path=path,
                actor=_actor(),
                store=store,
                counter=counter,
                timeout_s=_timeout(cfg),
                redactor=Redactor(cfg.secret_values()),
            )
        except ProbeError as exc:
            _refused("shell", counter, exc)
        except OSError as exc:
            click.echo(f"remote shell {counter}: cannot write {path}: {exc.strerror}", err=True)
            sys.exit(1)
    err.print(
        f"[dim]{counter}: session closed ({result.ended_by}); transcript {result.transcript} "
        f"sha256 {result.transcript_sha256}[/]"
    )
    if ticket_number is not None and not _attach_transcript(cfg, ticket_number, path):
        sys.exit(1)
    if result.ended_by == "interrupt":
        sys.exit(EX_INTERRUPTED)
    if result.ended_by not in ("device", "escape"):
        sys.exit(1)
    sys.exit(result.exit_status or 0)


def _ticket_exists(cfg: Config, number: str) -> None:
    from agent.delivery.numbers import EX_AMBIGUOUS, AmbiguousNumber, find_tickets
    from agent.delivery.sinks import make_sinks

    try:
        found = find_tickets(make_sinks(cfg, clock()), number)
    except AmbiguousNumber as exc:
        fail(str(exc), as_json=False, code=EX_AMBIGUOUS)
    if not found:
        raise click.ClickException(f"no ticket {number} in any configured destination")


def _attach_transcript(cfg: Config, number: str, transcript: Path) -> bool:
    """Put the transcript on ticket ``number``; False (and why, on stderr) if it could not."""
    from agent.app import App
    from agent.delivery.attach import AttachError, attach_files
    from agent.delivery.numbers import AmbiguousNumber

    with App.open(cfg, clock()) as app:
        try:
            done = attach_files(
                app,
                number,
                [transcript],
                actor=_actor(),
                now=app.clock.now(),
                message=f"Transcript of a remote shell session ({transcript.name}).",
            )
        except (AttachError, AmbiguousNumber) as exc:
            click.echo(f"transcript not attached to ticket {number}: {exc}", err=True)
            return False
    for item in done.items:
        error = f" ({item['error']})" if item["error"] else ""
        err.print(
            f"[dim]transcript for {item['sink']} ticket {item['number']}: {item['state']}{error}[/]"
        )
    return True


@remote.command("tunnel")
@click.argument("counter")
@click.option(
    "--local-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on this gateway's loopback (127.0.0.1); 0 picks a free one.",
)
@click.option(
    "--remote-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="The counter's web port (default: its configured port, 80 unless set).",
)
@config_option
@json_option
def tunnel_cmd(
    counter: str, local_port: int, remote_port: int | None, config_path: Path, as_json: bool
) -> None:
    """Forward a port on 127.0.0.1 to COUNTER's web interface, until Ctrl-C.

    Open the printed address in a browser on the gateway (or forward it on with your own SSH
    session to the gateway) to see the live view and settings. With --json, one JSON object
    per line: when ready, then when closed.
    """
    from agent.app import App
    from agent.remote import run_tunnel

    cfg = _load(config_path)
    device, target = _ssh_target(cfg, counter, config_path, as_json=as_json)
    state_dir = Path(cfg.agent.state_dir)
    port_on_device = remote_port or device.port

    def ready(port: int) -> None:
        url = f"{device.scheme}://127.0.0.1:{port}/"
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "event": "ready",
                        "counter": counter,
                        "local_port": port,
                        "url": url,
                        "remote": f"127.0.0.1:{port_on_device}",
                    }
                )
            )
            sys.stdout.flush()
            return
        out.print(f"{counter}: web interface at {url}")
        out.print(f"live view: {url}{device.snapshot_path.lstrip('/')}")
        err.print("[dim]Ctrl-C to close the tunnel[/]")

    with App.open(cfg, clock()) as app:
        store = app.store
        try:
            result = run_tunnel(
                target,
                state_dir / "known_hosts",
                local_port=local_port,
                remote_port=port_on_device,
                actor=_actor(),
                store=store,
                counter=counter,
                stop_event=threading.Event(),
                on_ready=ready,
                timeout_s=_timeout(cfg),
            )
        except ProbeError as exc:
            _refused("tunnel", counter, exc, as_json=as_json)
        except OSError as exc:
            fail(
                f"remote tunnel {counter}: cannot listen on 127.0.0.1:{local_port}: "
                f"{exc.strerror or exc}",
                as_json=as_json,
            )
    if as_json:
        click.echo(json.dumps({"event": "closed", **result.to_json()}))
        return
    err.print(
        f"{counter}: tunnel closed ({result.ended_by}): {result.connections} connections, "
        f"{result.bytes_from_device} bytes from the device, {result.bytes_to_device} to it"
    )
    if result.ended_by.startswith("error") or result.ended_by == "connection lost":
        sys.exit(1)


def _with_fix() -> None:
    """``remote fix`` lives with the ladder's other commands; it is a remote action all the
    same, so it hangs off this group."""
    from agent.commands.fix import fix

    remote.add_command(fix)


_with_fix()
