"""`ffc-agent demo`: the whole job on a simulated store, with no config and no network.

Six simulated counters on 127.0.0.1 — one healthy, one offline, one hung, one whose counting
stopped, one whose live view is covered, and one at a second store closed for a refit — are
watched by the real agent: the real config loader, probes, store, checks, gate and local ticket
store, in a temporary state directory, with the waits of a real install (``agent.config``'s
defaults: an offline counter is ticketed once it has been down longer than a reboot, 10
minutes; a covered view is first the store's to clear, for an hour). Time is simulated (only
the clock is): four cycles five minutes apart, in which the offline counters' tickets wait out
a reboot and the store is asked to clear the covered view, then one more cycle once the store's
grace has run out, when the tickets of the problems that stayed are filed. The last cycle is
at the most recent 15:30 in London, so the stores are open whatever the hour at which it is run.
"""

from __future__ import annotations

import logging
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from agent.app import App
from agent.commands.common import _print_json, err, json_option, out, table
from diagnostics.model import SYSTEM_CLOCK, Assessed, Decision, plural

if TYPE_CHECKING:  # the simulator and the runner load when the demo runs, not for --help
    from agent.config import Config
    from agent.delivery.ticketing import Waiting
    from agent.runner import CycleResult
    from rma.tickets import Ticket
    from simulator import FakeClock, Fleet

log = logging.getLogger(__name__)

LONDON = ZoneInfo("Europe/London")
CYCLES = 4  # the live view is confirmed over 3 snapshots, then the incident over 2 checks
CYCLE_STEP = timedelta(minutes=5)
# the waits of a real install, which the simulator's own config leaves at 0
WAITS = ("offline_ticket_minutes", "blocked_view_grace_minutes")


def real_waits() -> dict[str, int]:
    """``agent.config``'s defaults of the ticket waits (a reboot, the store's grace)."""
    from agent.config import AgentConfig

    return {k: int(AgentConfig.model_fields[k].default) for k in WAITS}


def schedule() -> list[timedelta]:
    """When each cycle runs, from the first: ``CYCLES`` of them ``CYCLE_STEP`` apart, then one
    more the store's grace later (past it: the view has been blocked since the first)."""
    quick = [CYCLE_STEP * i for i in range(CYCLES)]
    grace = timedelta(minutes=real_waits()["blocked_view_grace_minutes"])
    return [*quick, quick[-1] + grace]


def demo_time(real_now: datetime) -> datetime:
    """The first cycle's time: the last one is the most recent 15:30 London time at or
    before ``real_now``."""
    local = real_now.astimezone(LONDON)
    at = local.replace(hour=15, minute=30, second=0, microsecond=0)
    if at > local:
        at -= timedelta(days=1)
    return at.astimezone(UTC) - schedule()[-1]


WEEK = {
    "mon": "09:00-20:00",
    "tue": "09:00-20:00",
    "wed": "09:00-20:00",
    "thu": "09:00-20:00",
    "fri": "09:00-20:00",
    "sat": "09:00-19:00",
    "sun": "10:00-18:00",
}


def build_fleet(clock: FakeClock, seed: int = 7) -> Fleet:
    from simulator import Fleet, SimCounter, SimSite

    today = clock.now().astimezone(LONDON).date()
    refit_from, refit_to = today - timedelta(days=2), today + timedelta(days=5)
    refit = tuple(refit_from + timedelta(days=i) for i in range((refit_to - refit_from).days + 1))
    sites = [
        SimSite(
            code="LDN01", name="London Oxford Street", timezone="Europe/London", opening_hours=WEEK
        ),
        SimSite(
            code="MCR02",
            name="Manchester Arndale",
            timezone="Europe/London",
            opening_hours=WEEK,
            closed_dates=refit,
            closure_reason="store refit",
        ),
    ]
    counters = [
        SimCounter(
            serial="FFC1001", name="Main entrance", site="LDN01", base_rate=220.0, group="street"
        ),
        SimCounter(
            serial="FFC1002", name="Side entrance", site="LDN01", base_rate=90.0, group="street"
        ),
        SimCounter(serial="FFC1003", name="Mall entrance", site="LDN01", base_rate=140.0),
        SimCounter(serial="FFC1004", name="Car park lift", site="LDN01", base_rate=110.0),
        SimCounter(serial="FFC1005", name="Back entrance", site="LDN01", base_rate=60.0),
        SimCounter(serial="FFC2001", name="Main door", site="MCR02", base_rate=150.0),
    ]
    return Fleet(sites=sites, counters=counters, seed=seed, clock=clock)


def apply_faults(fleet: Fleet, clock: FakeClock) -> None:
    now = clock.now()
    fleet.set_fault("FFC1002", "offline", since=now - timedelta(hours=2))
    fleet.set_fault("FFC1003", "hung")
    fleet.set_fault("FFC1004", "zeros", since=now - timedelta(hours=4))
    fleet.set_fault("FFC1005", "covered", since=now - timedelta(hours=1))


@dataclass
class DemoResult:
    simulated_time: datetime
    state_dir: Path
    config_path: Path
    cycles: list[CycleResult]
    tickets: list[Ticket]
    ticket_dir: Path
    counters: tuple[str, ...] = ()  # the simulated store's serials

    def to_json(self) -> dict[str, Any]:
        last = self.cycles[-1]
        return {
            "simulated_time": self.simulated_time.isoformat(),
            "state_dir": str(self.state_dir),
            "findings": [a.to_json() for a in last.assessed if _found(a)],
            "ruled_out": [a.to_json() for a in last.ruled_out],
            # the story over the simulated clock: what waited, and why, and what was filed
            "cycles": [
                {
                    "at": c.started_at.isoformat(),
                    "held": [w.to_json() for w in c.waiting],
                    "filed": [t.number for t in c.tickets],
                }
                for c in self.cycles
            ],
            "tickets": [t.to_json() for t in self.tickets],
            "ticket_files": [
                {"number": n, "page": str(page), "attachments": [str(p) for p in files]}
                for n, page, files in self.ticket_files()
            ],
        }

    def held(self) -> list[tuple[datetime, Waiting, Ticket | None]]:
        """Each ticket that waited, once: when it was first held, why and until when (the
        hold as last seen), and the ticket filed when the wait ran out (None: still held)."""
        first: dict[str, tuple[datetime, Waiting]] = {}
        for c in self.cycles:
            for w in c.waiting:
                at = first[w.ticket.key][0] if w.ticket.key in first else c.started_at
                first[w.ticket.key] = (at, w)
        filed = {t.key: t for t in self.tickets}
        return [(at, w, filed.get(key)) for key, (at, w) in first.items()]

    def ticket_files(self) -> list[tuple[str, Path, list[Path]]]:
        """Each filed ticket's page and attachments (its bundle) as the local ticket store
        keeps them: ``<number>.md`` beside a ``<number>/`` folder (agent/delivery/sinks/
        local.py). Only files that are there are named."""
        found = []
        for t in self.tickets:
            if not t.number:
                continue
            page = self.ticket_dir / f"{t.number}.md"
            files = [self.ticket_dir / t.number / a.name for a in t.attachments]
            found.append((t.number, page, [f for f in files if f.is_file()]))
        return [(n, page, files) for n, page, files in found if page.is_file()]


def _found(a: Assessed) -> bool:
    """A problem the agent holds to be real, or waits to decide on (not one it ruled out)."""
    return a.finding.problem and a.verdict is not None and a.verdict.decision in _FOUND


_FOUND = frozenset({Decision.GENUINE, Decision.PENDING})


def run_demo(
    state_dir: Path,
    *,
    real_now: datetime | None = None,
    progress: Callable[[str], object] | None = None,
) -> DemoResult:
    """Start the simulated store, run the agent for a few cycles, stop everything."""
    from agent.config import load_config
    from simulator import FakeClock

    say = progress or (lambda _msg: None)
    start = demo_time(real_now or SYSTEM_CLOCK.now())
    clock = FakeClock(start)
    state_dir.mkdir(parents=True, exist_ok=True)
    fleet = build_fleet(clock)
    with fleet:
        fleet.start()
        apply_faults(fleet, clock)
        config_path = state_dir / "ffc-agent.toml"
        fleet.write_references(state_dir / "references")
        text = fleet.agent_config_toml(
            state_dir,
            state_dir / "references",
            probe_timeout_seconds=2,
            # the demo's cycles are 5 minutes apart: look at the live view every time
            agent={"snapshot_seconds": 300, "ssh_seconds": 300, **real_waits()},
        )
        config_path.write_text(text, encoding="utf-8")
        config: Config = load_config(config_path)
        say(
            f"simulated store: {len(config.counters)} counters on 127.0.0.1, "
            f"time {clock.now().astimezone(LONDON):%a %d %b %Y %H:%M %Z}"
        )
        cycles: list[CycleResult] = []
        times = schedule()
        with App.open(config, clock) as app:
            runner = app.runner
            # The demo is about its simulated store alone: the machine it runs on (its disk,
            # clock sync, uplink) is not part of the story, and its state would read as a
            # problem of the store.
            runner.gateway_checks = []
            for i, offset in enumerate(times):
                if i:
                    clock.set(start + offset)
                    fleet.refresh()
                cycle = runner.run_cycle()
                cycles.append(cycle)
                say(
                    f"cycle {i + 1}/{len(times)} at {clock.now().astimezone(LONDON):%H:%M}: "
                    f"{plural(len(cycle.tickets), 'ticket')} filed, "
                    f"{plural(len(cycle.waiting), 'ticket')} held back"
                )
            tickets = [t for c in cycles for t in c.tickets]
    # as filed, with the attachments the local store keeps beside each ticket
    from agent.delivery.sinks import LocalSink

    ticket_dir = Path(config.agent.state_dir) / "tickets"
    stored = LocalSink(ticket_dir)
    tickets = [(stored.get(t.number) if t.number else None) or t for t in tickets]
    return DemoResult(
        clock.now(),
        state_dir,
        config_path,
        cycles,
        tickets,
        ticket_dir,
        tuple(c.serial for c in config.counters),
    )


# -- the command ----------------------------------------------------------------------------------


@click.command("demo")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's state here (default: a new temporary directory).",
)
@json_option
@click.pass_context
def demo(ctx: click.Context, state_dir: Path | None, as_json: bool) -> None:
    """Run the whole job on a simulated store and show what the agent found and filed."""
    if not (ctx.find_root().obj or {}).get("verbose"):
        # the service's log lines would drown the summary: errors only (-v shows them)
        logging.getLogger().setLevel(logging.ERROR)
    if state_dir is not None:
        _show(run_demo(state_dir, progress=_progress), as_json, kept=True)
        return
    # without --state-dir nothing is left behind: the state lives as long as the command, also
    # when it is stopped (Ctrl-C raises KeyboardInterrupt; SIGTERM would end the process
    # without unwinding, so it exits through the same `with` blocks: fleet, store, directory)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="ffc-agent-demo-") as scratch:
        _show(run_demo(Path(scratch), progress=_progress), as_json, kept=False)


def _hhmm(at: datetime) -> str:
    return f"{at.astimezone(LONDON):%H:%M}"


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _progress(msg: str) -> None:
    err.print(f"[dim]{msg}[/]")


def _show(result: DemoResult, as_json: bool, *, kept: bool) -> None:
    if as_json:
        data = result.to_json()
        if not kept:  # removed on exit
            data["state_dir"] = None
            data["ticket_files"] = None
        _print_json(data)
        return
    last = result.cycles[-1]
    first = result.cycles[0].started_at
    out.print(
        f"[bold]ffc-agent demo[/] — simulated time "
        f"{first.astimezone(LONDON):%a %d %b %Y %H:%M} to "
        f"{result.simulated_time.astimezone(LONDON):%H:%M %Z}, {len(result.cycles)} cycles\n"
    )
    found = table(
        "What it found (genuine problems)", ("counter", "check", "what"), whole=("counter",)
    )
    for a in last.assessed:
        if a.genuine:
            f = a.finding
            found.add_row(f.subject or f.site or "-", f"[red]{f.check_id}[/]", f.summary)
    out.print(found)
    ruled = table(
        "What it ruled out, and why",
        ("counter", "check", "rule", "why not a fault"),
        whole=("counter",),
    )
    for a in last.ruled_out:
        assert a.verdict is not None
        ruled.add_row(
            a.finding.subject or a.finding.site or "-",
            a.finding.check_id,
            f"[green]{a.verdict.rule}[/]",
            "; ".join(a.verdict.reasons),
        )
    out.print(ruled)
    held = result.held()
    waited = table(
        "Tickets it held back, and why (filed if the problem stays)",
        ("counter", "held at", "until", "why", "then"),
        whole=("counter", "held at", "until"),
    )
    for at, w, ticket in held:
        inc = w.incident
        then = f"filed {ticket.number} at {_hhmm(ticket.created_at)}" if ticket else "still held"
        waited.add_row(inc.subject or inc.site, _hhmm(at), _hhmm(w.held.until), w.held.why, then)
    out.print(waited)
    from rich.markup import escape

    for at, w, _ticket in held:
        if w.ask:
            out.print(f"[bold]Asked the store[/] at {_hhmm(at)}: {escape(w.ask)}\n")
    filed = table(
        "Tickets filed", ("number", "at", "category, SLA", "subject"), whole=("number", "at")
    )
    for t in result.tickets:
        sla = f", {t.sla_days} d" if t.sla_days else ""
        filed.add_row(t.number or "-", _hhmm(t.created_at), f"{t.category}{sla}", t.subject)
    out.print(filed)
    healthy = sorted(
        set(result.counters) - {a.finding.subject for a in last.assessed if a.finding.problem}
    )
    out.print(f"healthy: {', '.join(healthy) or 'none'}")
    if not kept:
        out.print("the demo's state was removed; keep it with --state-dir DIR")
        return
    for number, page, files in result.ticket_files():
        out.print(f"{number}: page {page}", markup=False)
        for path in files:
            kind = "bundle" if path.name.endswith(".tar.gz") else "file"
            out.print(f"  {kind} {path}", markup=False)
    out.print(f"state directory: {result.state_dir}  (config: {result.config_path})")
    example = result.tickets[0].number if result.tickets else "NUMBER"
    out.print(f"see a ticket: ffc-agent tickets show {example} --state-dir {result.state_dir}")
