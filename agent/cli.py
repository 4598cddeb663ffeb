"""The ``ffc-agent`` command line: parse, call, render. No logic of its own lives here.

People get rich tables on stdout and progress on stderr; scripts get ``--json``. Exit codes are
a contract: ``check`` speaks the Nagios plugin language (0 OK, 1 warning, 2 critical,
3 unknown), and any command given a bad configuration exits 78 (EX_CONFIG), which the systemd
unit treats as "do not restart".
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from agent.commands.common import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    _actor,
    _load,
    _print_json,
    config_option,
    err,
    json_option,
    out,
)
from agent.config import Config, example_config
from diagnostics.model import Assessed, Status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(package_name="ffc-agent")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """ffc-agent: device health and RMA agent for FootfallCam people counters."""
    from agent.service.logs import setup_logging

    ctx.obj = {"verbose": verbose}
    setup_logging(verbose)


# -- config ------------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Check the configuration, or print an example to start from."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE: one line per bad field, exit 78 if any."""
    cfg = _load(file)
    click.echo(
        f"{file}: OK ({len(cfg.sites)} sites, {len(cfg.counters)} counters, {len(cfg.sinks)} sinks)"
    )


@config.command("example")
def config_example() -> None:
    """Print a commented example configuration."""
    click.echo(example_config(), nl=False)


# -- check -------------------------------------------------------------------------------------

NAGIOS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def nagios_code(assessed: Iterable[Assessed]) -> int:
    items = list(assessed)
    genuine = [a for a in items if a.genuine]
    if any(a.finding.status is Status.FAIL for a in genuine):
        return 2
    if genuine:
        return 1
    if any(a.finding.status is Status.ERROR for a in items):
        return 3
    return 0


@cli.command("run")
@config_option
@click.pass_context
def run_cmd(ctx: click.Context, config_path: Path) -> None:
    """Run the service: a cycle every cycle_seconds until SIGTERM (systemd Type=notify)."""
    from agent.service.daemon import Daemon

    verbose = (ctx.obj or {}).get("verbose", 0)
    sys.exit(Daemon(config_path, verbosity=max(verbose, 1)).run())


@cli.command("status")
@config_option
@json_option
def status_cmd(config_path: Path, as_json: bool) -> None:
    """The fleet at a glance, from what the agent already knows (probes nothing)."""
    from agent.commands.status import fleet_status
    from agent.store import Store

    cfg = _load(config_path)
    now = datetime.now(UTC)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        data = fleet_status(cfg, store, _runner(cfg, store, dry_run=True).tickets.evidence, now)
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"Counters at {now:%Y-%m-%d %H:%M %Z}", title_justify="left")
    for col in ("counter", "site", "reachable", "last slot", "live view", "today", "incident"):
        table.add_column(col)
    for c in data["counters"]:
        up = {True: "[green]yes[/]", False: f"[red]no[/] {c['last_error']}", None: "?"}
        today = c["today"]
        counted = (
            f"{today['counted']:,} / {today['expected']:,} expected"
            if today and today["expected"] is not None
            else (f"{today['counted']:,}" if today else "-")
        )
        view = c["live_view"]
        incident = "; ".join(
            f"{i['check_id']} {i['state']}" + (f" ({i['ticket']})" if i["ticket"] else "")
            for i in c["incidents"]
        )
        if c.get("rma"):
            incident = "; ".join(
                x for x in (incident, f"RMA {c['rma']['id']} {c['rma']['state']}") if x
            )
        table.add_row(
            c["serial"],
            c["site"],
            up[c["reachable"]],
            (c["last_slot"] or "-")[:16],
            f"{view['status']}: {view['summary']}" if view else "-",
            counted,
            incident or "-",
        )
    out.print(table)
    gw = data["gateway"]
    out.print(f"gateway: {gw['status']} — {gw['summary']}" if gw else "gateway: not checked yet")
    pending = ", ".join(
        f"{s}: {v['depth']} waiting (oldest {v['oldest_age_s']}s)"
        for s, v in data["outbox"]["pending"].items()
    )
    out.print(f"outbox: {pending or 'empty'}; {data['outbox']['failed']} refused for good")


@cli.command("diagnose")
@click.argument("serial")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the bundle (default: <state_dir>/bundles).",
)
@config_option
@json_option
def diagnose_cmd(serial: str, output_dir: Path | None, config_path: Path, as_json: bool) -> None:
    """The full diagnostic checklist on COUNTER now, with a verdict and a bundle."""
    from agent.commands.diagnose import diagnose
    from agent.store import Store

    cfg = _load(config_path)
    if serial not in {c.serial for c in cfg.counters}:
        raise click.BadParameter(f"no counter {serial!r} in {config_path}", param_hint="SERIAL")
    with Store.open(Path(cfg.agent.state_dir)) as store:
        runner = _runner(cfg, store, dry_run=True)
        with err.status(f"diagnosing {serial}") as spinner:
            result = diagnose(
                runner,
                serial,
                actor=_actor(),
                bundle_dir=output_dir or Path(cfg.agent.state_dir) / "bundles",
                progress=lambda text: spinner.update(f"{serial}: {text}"),
            )
    if as_json:
        _print_json(result.to_json())
        return
    for step in result.steps:
        mark = "[green]✓[/]" if step["ok"] else "[red]✗[/]"
        out.print(f"{mark} {step['step']}: {step['detail']}")
    colour = {"healthy": "green", "degraded": "yellow", "faulty": "red"}.get(result.verdict, "")
    out.print(f"\n[bold {colour}]{serial}: {result.verdict}[/]  bundle: {result.bundle_path}")


@cli.command("check")
@config_option
@json_option
@click.option("--dry-run", is_flag=True, help="Decide as usual; queue and send no ticket.")
def check(config_path: Path, as_json: bool, dry_run: bool) -> None:
    """Run one cycle against the configured counters and print the findings.

    Exits 0 OK, 1 warning, 2 critical, 3 unknown, as a Nagios or Icinga plugin does.
    """
    from agent.runner import Runner
    from agent.store import Store

    cfg = _load(config_path)
    try:
        with Store.open(Path(cfg.agent.state_dir)) as store:
            runner = Runner(cfg, store, dry_run=dry_run)
            result = runner.run_cycle()
    except Exception as exc:  # process boundary: the plugin must answer UNKNOWN, not crash
        logging.getLogger(__name__).exception("cycle failed")
        click.echo(f"FFC-AGENT UNKNOWN - the cycle failed: {exc}")
        sys.exit(3)
    code = nagios_code(result.assessed)
    if as_json:  # the evidence was scrubbed at the probe; scrubbed again on the way out
        _print_json(runner.redactor.data([a.to_json() for a in result.assessed]))
    else:
        problems = sorted(result.problems, key=lambda a: a.finding.status is not Status.FAIL)
        head = (
            "; ".join(f"{a.finding.subject or a.finding.site} {a.finding.code}" for a in problems)
            or "all counters healthy"
        )
        click.echo(f"FFC-AGENT {NAGIOS[code]} - {head} | {perfdata(result, cfg)}")
        _findings_table(result.assessed)
        for t in result.composed if dry_run else ():
            click.echo(f"would file: [{t.category}] {t.subject}")
    sys.exit(code)


def perfdata(result: Any, cfg: Config) -> str:
    """Nagios performance data: counters up, problems by severity, ruled out, cycle time."""
    probed = sum(1 for c in cfg.counters if c.host)
    up = sum(
        1
        for a in result.assessed
        if a.finding.check_id == "counter.offline" and a.finding.status is Status.OK
    )
    crit = sum(1 for a in result.problems if a.finding.status is Status.FAIL)
    warn = len(result.problems) - crit
    return (
        f"counters_up={up};;{probed};0;{probed} critical={crit};;;0 warning={warn};;;0 "
        f"ruled_out={len(result.ruled_out)};;;0 cycle={result.duration_s:.2f}s;;;0"
    )


def _findings_table(assessed: list[Assessed], title: str = "Findings") -> None:
    table = Table(title=title, title_justify="left")
    for col in ("counter", "site", "check", "status", "verdict", "summary"):
        table.add_column(col)
    for a in assessed:
        f = a.finding
        verdict = str(a.verdict.decision) if a.verdict else ""
        style = {"fail": "red", "warn": "yellow", "error": "magenta"}.get(str(f.status), "")
        table.add_row(
            f.subject or "-",
            f.site or "-",
            f.check_id,
            f"[{style}]{f.status}[/]" if style else str(f.status),
            verdict,
            f.summary,
        )
    out.print(table)


# -- tickets -----------------------------------------------------------------------------------


@cli.group()
def tickets() -> None:
    """The tickets the agent has filed, and their delivery."""


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read the local tickets of this state directory instead of the configured sinks.",
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Show what would be sent; send and change nothing."
)


def _readable_sinks(config_path: Path, state_dir: Path | None) -> list[Any]:
    """The destinations tickets can be read back from (write-only ones: the outbox's record)."""
    from agent.delivery.sinks import LocalSink, make_sinks

    if state_dir is not None:
        return [LocalSink(state_dir / "tickets")]
    return make_sinks(_load(config_path))


def _ticket_row(sink: Any, t: Any, now: datetime) -> dict[str, Any]:
    from rma.sla import is_overdue, sla_due

    due = sla_due(t)
    return {
        **t.to_json(),
        "sink": sink.name,
        "sla_due": due.isoformat() if due else None,
        "sla_overdue": is_overdue(t, now),
    }


@tickets.command("list")
@config_option
@state_dir_option
@json_option
def tickets_list(config_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """List tickets, newest first, with their SLA (overdue ones marked)."""
    from agent.delivery.sinks import SinkError

    now = datetime.now(UTC)
    rows = []
    for sink in _readable_sinks(config_path, state_dir):
        try:
            rows += [_ticket_row(sink, t, now) for t in sink.list()]
        except SinkError as exc:
            click.echo(f"warning: cannot list {sink.name}: {exc}", err=True)
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    if as_json:
        _print_json(rows)
        return
    table = Table(title="Tickets", title_justify="left")
    for col in ("number", "sink", "status", "category", "SLA", "counters", "subject"):
        table.add_column(col)
    for r in rows:
        sla = f"{r['sla_days']} d" if r["sla_days"] else "-"
        if r["sla_overdue"]:
            sla = f"[red]{sla} OVERDUE[/]"
        table.add_row(
            r["number"] or "-",
            r["sink"],
            r["status"],
            r["category"],
            sla,
            ", ".join(r["counters"]) or f"site {r['site']}",
            r["subject"],
        )
    out.print(table)


@tickets.command("show")
@click.argument("number")
@config_option
@state_dir_option
@json_option
def tickets_show(number: str, config_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Show one ticket as support will read it."""
    from agent.delivery.sinks import SinkError
    from agent.delivery.sinks.local import render_markdown

    for sink in _readable_sinks(config_path, state_dir):
        try:
            ticket = sink.get(number)
        except SinkError:
            continue
        if ticket is not None:
            break
    else:
        raise click.ClickException(f"no ticket {number}")
    if as_json:
        _print_json(_ticket_row(sink, ticket, datetime.now(UTC)))
        return
    from rich.markdown import Markdown

    out.print(Markdown(render_markdown(ticket)))


def _runner(cfg: Config, store: Any, **kw: Any) -> Any:
    from agent.runner import Runner

    return Runner(cfg, store, **kw)


@tickets.command("preview")
@click.argument("incident", type=int)
@config_option
@json_option
def tickets_preview(incident: int, config_path: Path, as_json: bool) -> None:
    """Compose the ticket INCIDENT would file, with its attachments; file nothing."""
    from agent.store import Store

    cfg = _load(config_path)
    now = datetime.now(UTC)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        inc = store.incident(incident)
        if inc is None:
            raise click.ClickException(f"no incident {incident}")
        runner = _runner(cfg, store, dry_run=True)
        ticket = runner.tickets.compose(inc, now)
        attachments = runner.tickets.evidence.for_ticket(inc, ticket, now, [])
    files = [{"name": n, "size": len(d)} for n, d in attachments.items()]
    if as_json:
        _print_json({"ticket": ticket.to_json(), "attachments": files})
        return
    from rich.markdown import Markdown

    from agent.delivery.sinks.local import render_markdown

    out.print(Markdown(render_markdown(ticket)))
    for f in files:
        out.print(f"attachment: {f['name']} ({f['size']:,} bytes)")


@tickets.command("sync")
@config_option
@dry_run_option
@json_option
def tickets_sync(config_path: Path, dry_run: bool, as_json: bool) -> None:
    """Deliver what is due, read every ticket's status back, close stale local ones."""
    from agent.delivery.outbox import DELIVERED, FAILED
    from agent.store import Store

    cfg = _load(config_path)
    now = datetime.now(UTC)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        runner = _runner(cfg, store, dry_run=dry_run)
        outbox = runner.tickets.outbox
        if dry_run:
            due = [i for i in outbox.items() if i.state not in (DELIVERED, FAILED)]
            data: dict[str, Any] = {
                "would_deliver": [
                    {"id": i.id, "sink": i.sink, "kind": i.kind, "key": i.key, "state": i.state}
                    for i in due
                ]
            }
        else:
            delivered = runner.tickets.deliver(now)
            changes = runner.tickets.sync(now)
            runner.tickets.close_suggested(now)
            data = {
                "delivered": [t.number for t in delivered],
                "status_changes": [
                    {"sink": c.sink, "number": c.number, "from": c.before, "to": c.after}
                    for c in changes
                ],
                "outbox": {
                    k: {"depth": n, "oldest_age_s": age}
                    for k, (n, age) in outbox.depth(now).items()
                },
                "failed": [
                    {"sink": i.sink, "key": i.key, "error": i.last_error}
                    for i in outbox.items(states=(FAILED,))
                ],
            }
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        out.print(f"{key}: {json.dumps(value, default=str)}")


@tickets.command("attach")
@click.argument("number")
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--message", "-m", default="", help="The text that goes with the files.")
@config_option
@json_option
def tickets_attach(
    number: str, files: tuple[Path, ...], message: str, config_path: Path, as_json: bool
) -> None:
    """Attach FILE(s) to ticket NUMBER in every destination that has it, then deliver.

    Text files are scrubbed of secrets first; of binary files only .tar.gz, .gz, .jpg, .png
    and .pdf are taken, each at most 8 MiB. The attachment is audited (ticket.attach).
    """
    from agent.delivery.attach import AttachError, attach_files
    from agent.store import Store

    cfg = _load(config_path)
    now = datetime.now(UTC)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        runner = _runner(cfg, store)
        try:
            done = attach_files(runner, number, files, actor=_actor(), now=now, message=message)
        except AttachError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json(done.to_json())
        return
    for f in done.files:
        out.print(f"{f['name']}: {f['size']:,} bytes, sha256 {f['sha256']}")
    for i in done.items:
        error = f" ({i['error']})" if i["error"] else ""
        out.print(f"{i['sink']} ticket {i['number']}: {i['state']}{error}")


@tickets.command("retry")
@config_option
def tickets_retry(config_path: Path) -> None:
    """Queue again what a destination refused for good (after fixing its settings)."""
    from agent.store import Store

    cfg = _load(config_path)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        n = _runner(cfg, store).tickets.outbox.retry_failed(datetime.now(UTC))
    out.print(f"{n} item(s) queued again")


@cli.group()
def bundle() -> None:
    """Diagnostics bundles for support."""


@bundle.command("create")
@click.argument("serial")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the .tar.gz (default: its own name, here).",
)
@config_option
@json_option
def bundle_create(serial: str, output: Path | None, config_path: Path, as_json: bool) -> None:
    """Build a redacted diagnostics bundle for COUNTER from what the agent holds."""
    from agent.store import Store

    cfg = _load(config_path)
    try:
        counter = cfg.counter(serial)
    except KeyError:
        raise click.BadParameter(
            f"no counter {serial!r} in {config_path}", param_hint="SERIAL"
        ) from None
    now = datetime.now(UTC)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        runner = _runner(cfg, store, dry_run=True)
        findings = [r for r in store.latest_findings() if r["subject"] == serial]
        made = runner.tickets.evidence.bundle(
            key=f"manual-{serial}-{now:%Y%m%d%H%M%S}",
            site=counter.site,
            counters=(serial,),
            findings=findings,
            started_at=now - timedelta(days=1),
            now=now,
            subject=f"Diagnostics bundle for {serial}",
        )
        store.audit(
            now, _actor(), "bundle.create", serial, {"sha256": made.sha256, "size": made.size}
        )
    path = output or Path(made.name)
    path.write_bytes(made.data)
    if as_json:
        _print_json(
            {"path": str(path), "size": made.size, "sha256": made.sha256, "manifest": made.manifest}
        )
        return
    out.print(f"{path}: {made.size:,} bytes, sha256 {made.sha256}")


# -- analyze -------------------------------------------------------------------------------------

EX_DATAERR = 65


@cli.group()
def analyze() -> None:
    """Judge exported data (a count CSV, snapshots) without a running fleet."""


@analyze.command("counts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    default=DEFAULT_CONFIG,
    show_default=True,
    help="The sites and counters the CSV is about.",
)
@click.option("--site", help="Judge only this site.")
@click.option(
    "--now",
    "now_text",
    metavar="ISO-8601",
    help="Judge as of this time (default: the end of the last slot in the file).",
)
@json_option
def analyze_counts_cmd(
    file: Path, config_path: Path, site: str | None, now_text: str | None, as_json: bool
) -> None:
    """Judge a count CSV (timestamp,counter,in,out): real data problems or false alarms."""
    from agent.commands.analyze import analyze_counts
    from diagnostics.countcsv import CountCsvError

    cfg = _load(config_path)
    now = _aware(now_text, "--now") if now_text else None
    if site is not None and site not in {s.code for s in cfg.sites}:
        raise click.BadParameter(f"no site {site!r} in {config_path}", param_hint="--site")
    try:
        result = analyze_counts(cfg, file.read_text(encoding="utf-8-sig"), site=site, now=now)
    except CountCsvError as exc:
        click.echo(f"{file}: {exc}", err=True)
        sys.exit(EX_DATAERR)
    except UnicodeDecodeError:
        click.echo(f"{file}: not a text file", err=True)
        sys.exit(EX_DATAERR)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json(result.to_json())
        return
    as_of = result.now.isoformat() if result.now else "no data"  # None: no row was ours
    table = Table(title=f"Count problems as of {as_of}", title_justify="left")
    for col in ("counter", "kind", "when", "verdict", "expected", "observed", "why"):
        table.add_column(col)
    for p in result.findings:
        table.add_row(
            p.counter or f"site {p.site}",
            p.kind,
            _span(p.start, p.end),
            p.verdict,
            _num(p.expected),
            _num(p.observed),
            "; ".join(p.reasons),
        )
    out.print(table)
    if not result.findings:
        out.print("no count problems found")


@analyze.command("image")
@click.argument("snapshots", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--reference",
    required=True,
    type=click.Path(path_type=Path),
    help="The reference view taken when the counter was tuned.",
)
@json_option
def analyze_image_cmd(snapshots: tuple[Path, ...], reference: Path, as_json: bool) -> None:
    """Judge snapshots against the counter's reference view: clear or blocked, and how."""
    from diagnostics import liveview as lv

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            click.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
            sys.exit(2)

    try:
        ref = lv.prepare_reference(read(reference))
    except lv.ImageError as exc:
        click.echo(f"{reference}: {exc}", err=True)
        sys.exit(2)
    results: list[dict[str, Any]] = []
    for path in snapshots:
        try:
            results.append({"snapshot": str(path), **lv.analyze(read(path), ref).to_json()})
        except lv.ImageError as exc:
            click.echo(f"{path}: {exc}", err=True)
            sys.exit(2)
    if as_json:
        _print_json(results)
        return
    table = Table(title=f"Live view against {reference}", title_justify="left")
    for col in ("snapshot", "verdict", "kind", "hidden", "why"):
        table.add_column(col)
    for r in results:
        style = "red" if r["verdict"] == "blocked" else "green"
        table.add_row(
            r["snapshot"],
            f"[{style}]{r['verdict']}[/]",
            r["kind"] or "-",
            f"{r['blocked_fraction']:.0%}",
            "; ".join(r["reasons"]),
        )
    out.print(table)


def _span(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{start:%d %b %H:%M} – {end:%d %b %H:%M}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


# -- remote access ---------------------------------------------------------------------------------


@cli.command("enroll")
@click.argument("serial")
@config_option
@json_option
def enroll_cmd(serial: str, config_path: Path, as_json: bool) -> None:
    """Pin COUNTER's SSH host key, deliberately (first contact, or a replaced unit)."""
    from agent.probes.ssh import SshTarget, enroll, pinned_fingerprint
    from agent.store import Store
    from diagnostics.model import ProbeError

    cfg = _load(config_path)
    try:
        counter = cfg.counter(serial)
    except KeyError:
        raise click.BadParameter(
            f"no counter {serial!r} in {config_path}", param_hint="SERIAL"
        ) from None
    target = SshTarget.for_counter(counter)
    if target is None:
        raise click.ClickException(f"{serial} has no [counters.ssh] table: nothing to enroll")
    state_dir = Path(cfg.agent.state_dir)
    known_hosts = state_dir / "known_hosts"
    old = pinned_fingerprint(target, known_hosts)
    try:
        new = enroll(target, known_hosts, timeout=cfg.agent.probe_timeout_seconds)
    except ProbeError as exc:
        click.echo(f"enroll {serial}: {exc.message}", err=True)
        sys.exit(1)
    with Store.open(state_dir) as store:
        store.audit(
            datetime.now(UTC),
            _actor(),
            "ssh.enroll",
            serial,
            {"host": str(target), "old": old, "new": new},
        )
    if as_json:
        _print_json({"counter": serial, "host": str(target), "previous": old, "fingerprint": new})
        return
    if old and old != new:
        out.print(f"[yellow]{serial}: host key replaced[/] (was {old})")
    out.print(f"{serial} ({target}): pinned {new}")


# -- assess --------------------------------------------------------------------------------------


@cli.command("assess")
@click.option("--site", help="Only this site.")
@click.option("--counter", "serial", help="Only this counter (and its site's problems).")
@click.option("--from", "start_text", metavar="DATE", help="Start (YYYY-MM-DD or ISO-8601).")
@click.option("--to", "end_text", metavar="DATE", help="End, included (default: now).")
@click.option(
    "--counts",
    "counts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Judge this exported count CSV instead of the stored data.",
)
@config_option
@json_option
def assess_cmd(
    site: str | None,
    serial: str | None,
    start_text: str | None,
    end_text: str | None,
    counts_file: Path | None,
    config_path: Path,
    as_json: bool,
) -> None:
    """Is it a real problem or a false alarm? The assessment to make before raising a ticket."""
    from agent.commands.assess import Period, assess_period
    from agent.store import Store
    from diagnostics.countcsv import CountCsvError, parse_counts_csv

    cfg = _load(config_path)
    if site is not None and site not in {s.code for s in cfg.sites}:
        raise click.BadParameter(f"no site {site!r} in {config_path}", param_hint="--site")
    if serial is not None and serial not in {c.serial for c in cfg.counters}:
        raise click.BadParameter(f"no counter {serial!r} in {config_path}", param_hint="--counter")
    tz = cfg.site(site).calendar().tz if site else cfg.sites[0].calendar().tz
    end = _day_or_time(end_text, "--to", tz, end_of_day=True) if end_text else None
    slots = None
    if counts_file is not None:
        try:
            slots, warnings = parse_counts_csv(
                counts_file.read_text(encoding="utf-8-sig"), {c.serial for c in cfg.counters}
            )
        except CountCsvError as exc:
            click.echo(f"{counts_file}: {exc}", err=True)
            sys.exit(EX_DATAERR)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        if end is None:
            ends = [x.start + timedelta(minutes=x.minutes) for seq in slots.values() for x in seq]
            end = max(ends) if ends else datetime.now(UTC)
    end = end or datetime.now(UTC)
    start = (
        _day_or_time(start_text, "--from", tz, end_of_day=False)
        if start_text
        else end - timedelta(days=7)
    )
    if start >= end:
        raise click.BadParameter("--from must be before --to", param_hint="--from")
    period = Period(start, end)
    if slots is not None:
        found, warnings = assess_period(
            cfg, period=period, csv_slots=slots, site=site, counter=serial
        )
    else:
        with Store.open(Path(cfg.agent.state_dir)) as store:
            found, warnings = assess_period(
                cfg, period=period, store=store, site=site, counter=serial
            )
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "problems": [a.to_json() for a in found],
            }
        )
        return
    out.print(
        f"[bold]Assessment {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M}[/]: "
        f"{sum(a.real for a in found)} real, {sum(not a.real for a in found)} not"
    )
    if not found:
        out.print("no problems in this period")
    marks = {"real": "[red]●[/]", "false_alarm": "[green]○[/]", "unknown": "[dim]?[/]"}
    for a in found:
        head = "REAL" if a.real else a.verdict.replace("_", " ").upper()
        style = "red" if a.real else "yellow" if a.verdict == "pending" else "green"
        out.print(f"\n[{style}]{head}[/] {a.counter or 'site ' + a.site} {a.kind}: {a.summary}")
        for reason in a.reasons:
            out.print(f"  because {reason}")
        for p in a.checklist:
            out.print(f"  {marks[p.points_to]} {p.question} {p.answer}")


def _day_or_time(text: str, what: str, tz: Any, *, end_of_day: bool) -> datetime:
    """``2026-11-25`` (a whole local day) or an ISO-8601 time with its offset."""
    if len(text) == 10:
        try:
            day = datetime.fromisoformat(text).replace(tzinfo=tz)
        except ValueError:
            raise click.BadParameter(f"not a date: {text!r}", param_hint=what) from None
        return day + timedelta(days=1) if end_of_day else day
    return _aware(text, what)


# -- silences and shadow mode -------------------------------------------------------------------

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


def _aware(text: str, what: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 time: {text!r}", param_hint=what) from None
    if when.tzinfo is None:
        raise click.BadParameter("give the time with its UTC offset", param_hint=what)
    return when


@cli.group()
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
    from agent.store import Store

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
    now = datetime.now(UTC)
    start = _aware(start_text, "--start") if start_text else now
    with Store.open(Path(cfg.agent.state_dir)) as store:
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
    from agent.store import Store

    cfg = _load(config_path)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        items = store.silences(active_at=None if show_all else datetime.now(UTC))
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
    table = Table(title="Silences", title_justify="left")
    for col in ("id", "target", "from", "until", "reason", "by"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["target"], r["start"], r["until"], r["reason"], r["author"])
    out.print(table)


@silence.command("remove")
@click.argument("silence_id", type=int)
@config_option
def silence_remove(silence_id: int, config_path: Path) -> None:
    """End silence ID now."""
    from agent.store import Store

    cfg = _load(config_path)
    now = datetime.now(UTC)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        if not store.remove_silence(silence_id, now):
            raise click.ClickException(f"no silence {silence_id} in force")
        store.audit(now, _actor(), "silence.remove", str(silence_id))
    out.print(f"silence {silence_id} removed")


@cli.group()
def shadow() -> None:
    """Shadow mode: what the agent would have filed, and what it ruled out."""


@shadow.command("report")
@click.option("--since", "since_text", metavar="ISO-8601", help="Default: 7 days ago.")
@config_option
@json_option
def shadow_report(since_text: str | None, config_path: Path, as_json: bool) -> None:
    """List the tickets kept back by shadow mode and the findings ruled out as false alarms."""
    from agent.store import Store

    cfg = _load(config_path)
    now = datetime.now(UTC)
    since = _aware(since_text, "--since") if since_text else now - timedelta(days=7)
    with Store.open(Path(cfg.agent.state_dir)) as store:
        held = store.shadow_tickets(since)
        ruled = store.findings_between(since, now + timedelta(days=1), verdict="false_alarm")
    data: dict[str, Any] = {
        "since": since.isoformat(),
        "would_have_filed": [
            {
                "at": h["at"],
                "incident": h["incident_id"],
                "why_held": h["reason"],
                "ticket": h["ticket"],
            }
            for h in held
        ],
        "ruled_out": [
            {
                "at": r["at"],
                "check_id": r["check_id"],
                "site": r["site"],
                "counter": r["subject"],
                "summary": r["summary"],
                "reasons": json.loads(r["reasons"]),
            }
            for r in ruled
        ],
    }
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"Would have filed since {since:%Y-%m-%d %H:%M}", title_justify="left")
    for col in ("at", "category", "subject", "held because"):
        table.add_column(col)
    for h in data["would_have_filed"]:
        table.add_row(h["at"], h["ticket"]["category"], h["ticket"]["subject"], h["why_held"])
    out.print(table)
    ruled_table = Table(title="Ruled out as false alarms", title_justify="left")
    for col in ("at", "counter", "check", "why"):
        ruled_table.add_column(col)
    for r in data["ruled_out"]:
        ruled_table.add_row(
            r["at"], r["counter"] or r["site"] or "-", r["check_id"], "; ".join(r["reasons"])
        )
    out.print(ruled_table)


# -- simulate and demo ---------------------------------------------------------------------------


@cli.command("simulate")
@click.option("--counters", "count", type=click.IntRange(1, 500), default=4, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SERIAL:KIND[:PARAM]",
    help="Script a fault, e.g. FFC0002:offline or FFC0003:under_count:0.6.",
)
@click.option(
    "--port-base",
    type=click.IntRange(1024, 65000),
    default=None,
    help="First port to listen on (default: any free ports).",
)
def simulate(count: int, seed: int, faults: tuple[str, ...], port_base: int | None) -> None:
    """Run simulated counters on 127.0.0.1 and print the config to point the agent at them."""
    from simulator import run_standalone

    try:
        run_standalone(counters=count, seed=seed, faults=list(faults), port_base=port_base)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@cli.command("demo")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's state here (default: a new temporary directory).",
)
@json_option
@click.pass_context
def demo(ctx: click.Context, state_dir: Path | None, as_json: bool) -> None:
    """Run the whole job on a simulated store and show what the agent found and filed."""
    from agent.commands.demo import run_demo

    if not (ctx.find_root().obj or {}).get("verbose"):
        # the service's log lines would drown the summary: errors only (-v shows them)
        logging.getLogger().setLevel(logging.ERROR)
    chosen = state_dir or Path(tempfile.mkdtemp(prefix="ffc-agent-demo-"))
    result = run_demo(chosen, progress=lambda msg: err.print(f"[dim]{msg}[/]"))
    if as_json:
        _print_json(result.to_json())
        return
    last = result.cycles[-1]
    out.print(
        f"[bold]ffc-agent demo[/] — simulated time "
        f"{result.simulated_time.astimezone(_london()):%a %d %b %Y %H:%M %Z}, "
        f"{len(result.cycles)} cycles\n"
    )
    found = Table(title="What it found (genuine problems)", title_justify="left")
    found.add_column("counter", no_wrap=True)
    found.add_column("what", ratio=1)
    for a in last.assessed:
        if a.genuine:
            f = a.finding
            found.add_row(f.subject or f.site or "-", f"[red]{f.check_id}[/] {f.summary}")
    out.print(found)
    ruled = Table(title="What it ruled out, and why", title_justify="left")
    ruled.add_column("counter", no_wrap=True)
    ruled.add_column("why not a fault", ratio=1)
    for a in last.ruled_out:
        assert a.verdict is not None
        ruled.add_row(
            a.finding.subject or a.finding.site or "-",
            f"[green]{a.verdict.rule}[/] {a.finding.check_id}: {'; '.join(a.verdict.reasons)}",
        )
    out.print(ruled)
    filed = Table(title="Tickets filed", title_justify="left")
    filed.add_column("number", no_wrap=True)
    filed.add_column("category, SLA", no_wrap=True)
    filed.add_column("subject", ratio=1)
    for t in result.tickets:
        sla = f", {t.sla_days} d" if t.sla_days else ""
        filed.add_row(t.number or "-", f"{t.category}{sla}", t.subject)
    out.print(filed)
    healthy = sorted(
        {a.finding.subject for a in last.assessed if a.finding.subject}
        - {a.finding.subject for a in last.assessed if a.finding.problem}
    )
    out.print(f"healthy: {', '.join(healthy) or 'none'}")
    out.print(f"tickets (JSON, page and bundle each): {result.ticket_dir}")
    out.print(f"state directory: {result.state_dir}  (config: {result.config_path})")
    example = result.tickets[0].number if result.tickets else "NUMBER"
    out.print(f"see a ticket: ffc-agent tickets show {example} --state-dir {result.state_dir}")


def _london() -> ZoneInfo:
    return ZoneInfo("Europe/London")


def _register() -> None:
    from agent.commands.fix import fix
    from agent.commands.remote import remote
    from agent.commands.rma import rma

    remote.add_command(fix)
    cli.add_command(remote)
    cli.add_command(rma)


_register()


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    cli.main(args=argv, prog_name="ffc-agent")


if __name__ == "__main__":
    main()
