"""One cycle of the agent: probe → record → detect → assess → incidents → tickets.

The ticket side (compose, queue, deliver, follow up) lives in ``agent/delivery/ticketing.py``;
the runner takes it and its other parts from the one assembly point, ``agent/app.py``.
Every counter is probed concurrently under one deadline (``probe_budget``: at most 1.75 probe
timeouts, less when last cycle's recording and judging took more than the rest of two
timeouts), so a hung counter costs one timeout in parallel with the rest, never the whole
cycle; each counter's answer is recorded as its probe ends. Each request ends
within the probe timeout whatever the counter does (``agent/transport/http.py``); probes run
in daemon threads, so a stuck one never outlives the cycle's deadline in the cycle's books and
never holds up exit or SIGTERM. A probe running longer than the probe timeout stops counting
against ``max_parallel``, so ``max_parallel`` slow counters cannot starve the healthy ones, and
counters that timed out last cycle are probed first, on at most half the slots: their wait
overlaps the others' work instead of following it. A counter's probe crash, or a failure to
record what it answered, is an ``error`` finding about the agent for that counter
(``agent.probe``), never the end of the cycle for the others. Each check runs isolated: an
exception or an overrun becomes an ``error`` finding about the agent (check id and traceback
summary), never a ticket about a device. A ticket is raised once per incident, when it is
confirmed.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from agent.config import Config, CounterConfig
from agent.counts import SlotCache
from agent.delivery.outbox import crashpoint
from agent.delivery.sinks import Sink
from agent.incidents import Flip, Policy, apply
from agent.probes.counter_api import CounterClient
from agent.probes.device import probe_device_ssh
from agent.probes.gateway import probe_gateway
from agent.probes.mqtt import push_evidence
from agent.probes.reach import reachability
from agent.probes.schedule import run_bounded
from agent.probes.ssh import SshTarget
from agent.remediate import LadderStage, Remediator
from agent.rmas import Rmas
from agent.store import Store, StoreFull, is_disk_full
from agent.transport.http import make_session
from diagnostics.assess import Gate, Silence, assess
from diagnostics.checks import (
    Check,
    CounterEvidence,
    SiteEvidence,
    checks_for,
    fold_site_outages,
)
from diagnostics.checks.agent import ProbeFailure
from diagnostics.checks.base import Family
from diagnostics.checks.counts_imbalance import CountImbalance
from diagnostics.checks.counts_level import CountLevel
from diagnostics.checks.gateway import GATEWAY, GatewayEvidence, GatewayHealth
from diagnostics.checks.liveview import LiveView
from diagnostics.flapping import WINDOW as FLAP_WINDOW
from diagnostics.model import (
    Assessed,
    Clock,
    CountSlot,
    Decision,
    Finding,
    Observation,
    ProbeError,
    ProbeErrorCode,
    Status,
    Verdict,
)
from diagnostics.series import Hold, ModelCache, SlotColumns
from diagnostics.share import HeldSplit
from rma.tickets import Task, Ticket

if TYPE_CHECKING:
    from agent.delivery.ticketing import Ticketing, Waiting
    from agent.views import LiveViews
    from rma.redact import Redactor

log = logging.getLogger(__name__)

SLOT_MINUTES = 15
# how an API probe failed when the counter may be off the network: then the agent looks
# whether it is there at all (ping, ARP, ports) for the ticket; a counter that answers (a
# refused login, an HTTP error) plainly is
_UNREACHABLE = frozenset({"refused", "timeout", "unreachable"})
UPLOAD_WINDOW = timedelta(days=7)  # a counter buffers this long while its uplink is down
# Probe results held in memory while the state directory is full (observations and slots):
# about a day of cycles for 20 counters, some tens of MB. Older ones are dropped beyond it.
MAX_HELD_ITEMS = 100_000
# The probe phase's share of a cycle, in probe timeouts: a hung counter is cut at one timeout,
# a slow one has three quarters more for its next request, and the last quarter of the cycle's
# two timeouts is left for recording, judging and filing. Where recording and judging took
# longer than that quarter last cycle (a thousand counters: about half a timeout), the probe
# phase gives way, down to MIN_PROBE_BUDGET, so that the cycle stays within two timeouts.
PROBE_BUDGET = 1.75
MIN_PROBE_BUDGET = 1.5
# History a cycle fetches across the fleet at most, in slots: each slot a counter sends is an
# object until it is stored, and a thousand counters fetching five weeks at once held hundreds
# of MB at the peak (pages glibc then keeps). A counter behind by more than a day gets its
# share, at least a day; a gateway of a few counters still fetches its whole history at once.
BACKFILL_SLOTS = 100_000
API_HISTORY = 500  # API observations the checks see; pruning keeps at least these cycles' worth


@dataclass(frozen=True)
class Plan:
    fetch_from: datetime
    snapshot: bool = True
    ssh: bool = True
    max_slots: int | None = None  # a back-fill's share of this cycle (None: all there is)


@dataclass
class ProbeResult:
    serial: str
    observations: list[Observation] = field(default_factory=list)
    slots: list[CountSlot] = field(default_factory=list)
    snapshot: bytes | None = None


@dataclass
class CycleResult:
    started_at: datetime
    assessed: list[Assessed]
    flips: list[Flip]
    tickets: list[Ticket]  # delivered this cycle (with their numbers)
    duration_s: float
    composed: list[Ticket] = field(default_factory=list)  # queued, shadowed or dry-run
    observations: list[Observation] = field(default_factory=list)  # this cycle's probes
    # tickets held back on purpose (a reboot waited out, the store asked to clear a view)
    waiting: list[Waiting] = field(default_factory=list)

    @property
    def problems(self) -> list[Assessed]:
        return [a for a in self.assessed if a.genuine]

    @property
    def ruled_out(self) -> list[Assessed]:
        return [a for a in self.assessed if a.ruled_out]

    @property
    def errors(self) -> list[Assessed]:
        return [a for a in self.assessed if a.finding.status is Status.ERROR]


class Parts(Protocol):
    """What the runner takes from the one assembly point (``agent.app.App``), which builds it
    (``App.runner``; ``agent.app.make_runner`` for tests and one-off callers)."""

    config: Config
    store: Store
    clock: Clock
    state_dir: Path

    @property
    def sinks(self) -> list[Sink]: ...
    @property
    def views(self) -> LiveViews: ...
    @property
    def redactor(self) -> Redactor: ...
    @property
    def tickets(self) -> Ticketing: ...
    @property
    def rmas(self) -> Rmas: ...
    def close(self) -> None: ...


class Runner:
    def __init__(
        self,
        app: Parts,
        *,
        history_days: int = 28,
        checks: Sequence[Check] | None = None,
        dry_run: bool = False,
    ) -> None:
        """The runner takes its parts (config, store, clock, sinks, redactor, live views,
        ticketing) from ``app``."""
        config = app.config
        self.app = app
        self.config = app.config
        self.store = app.store
        self.clock = app.clock
        self.sinks = app.sinks
        self.history_days = history_days
        # the registry says which checks run on which evidence; each with its [checks."ID"]
        options = config.check_options()
        self.checks = list(checks) if checks is not None else checks_for("counter", options)
        self.site_checks = checks_for("site", options)
        self.gateway_checks = checks_for("gateway", options)
        self.agent_checks = checks_for("agent", options)
        self.state_dir = app.state_dir
        self.known_hosts = self.state_dir / "known_hosts"
        self.views = app.views
        self.probe_errors: list[Finding] = []  # this cycle's agent.probe errors
        self._check_pool = _new_check_pool()
        _tune_malloc()
        self.counts = SlotCache(self.store)  # the count slots, in memory between cycles
        self.models = ModelCache()  # count models, shared by the checks and reused
        self.backfill_slots = BACKFILL_SLOTS  # history fetched per cycle, fleet-wide
        self.after_probe_s = 0.0  # last cycle's recording and judging: the probe phase gives way
        # called between the stages of a cycle: the daemon pings systemd's watchdog with it
        self.heartbeat: Callable[[], object] = lambda: None
        self.dry_run = dry_run  # decide and compose as usual; queue and send nothing
        self.push: Any = None  # the daemon's MQTT listener, when [mqtt] is configured
        self._push_states: dict[str, Any] = {}
        # each counter's live view as last judged (key, reference, check id -> findings)
        self._judged_views: dict[str, tuple[tuple[Any, ...], Any, dict[str, list[Finding]]]] = {}
        # where a first fetch cut short before any slot came goes on (in memory: a restart
        # asks again from the start of the history)
        self._resume: dict[str, datetime] = {}
        # disk full: what could not be recorded yet, with when it was probed, and since when
        self._held: list[tuple[datetime, ProbeResult]] = []
        self._full_since: datetime | None = None
        self.redactor = app.redactor
        self.tickets = app.tickets
        self.rmas = app.rmas
        self.remediator = Remediator(
            config,
            self.rmas,
            clock=self.clock,
            client_for=self._ladder_client,
            redactor=self.redactor,
            known_hosts=self.known_hosts,
        )
        self.ladder = LadderStage(
            self.remediator,
            self.store,
            confirm_checks=config.agent.confirm_checks,
            post=self._post,
            post_tasks=self.post_tasks,
        )

    def close(self) -> None:
        """Let go of the check worker (each probe closes its own HTTP session)."""
        self._check_pool.shutdown(wait=False, cancel_futures=True)

    def _post(
        self,
        key: str,
        text: str,
        incident_id: int | None,
        now: datetime,
        attachments: Mapping[str, bytes] | None = None,
    ) -> object:
        """A message from the agent on the ticket ``key`` (the RMA request's full text, a
        rescue's summary with its CSV), redacted, through the outbox."""
        return self.tickets.outbox.enqueue_message(
            self.sinks,
            key,
            author="ffc-agent",
            body=self.redactor.text(text),
            at=now,
            incident_id=incident_id,
            attachments=attachments,
            now=now,
        )

    def post_tasks(
        self, key: str, tasks: list[Task], text: str, incident_id: int | None, now: datetime
    ) -> object:
        """An RMA move on the ticket ``key``: its lines in the task list of every destination
        that keeps one, and a message saying it (the destinations without a task list read
        the move there)."""
        for task in tasks:
            self.tickets.add_task(key, task, now, incident_id=incident_id)
        return self._post(key, text, incident_id, now)

    # -- probe ---------------------------------------------------------------------------------

    def _client(self, counter: CounterConfig, session: Any) -> CounterClient:
        site = self.config.site(counter.site)
        return CounterClient(
            serial=counter.serial,
            base_url=f"{counter.scheme}://{counter.host}:{counter.port}",
            username=counter.username,
            password=counter.password.get_secret_value() if counter.password else None,
            api=counter.api,
            snapshot_path=counter.snapshot_path,
            tz=site.calendar().tz,
            session=session,
            timeout_s=self.config.agent.probe_timeout_seconds,
            resolution_min=SLOT_MINUTES,
        )

    def _ladder_client(self, counter: CounterConfig) -> CounterClient:
        """A client for one step of the ladder, on a session that asks the counter to close
        the connection after each answer, so nothing of it stays open after the step."""
        session = make_session(verify=counter.verify_tls)
        session.headers["Connection"] = "close"
        return self._client(counter, session)

    def _fetch_from(self, serial: str, now: datetime) -> datetime:
        """Where to resume: the newest slot again (it may have been open), or the oldest gap
        still inside the upload window, so late uploads are collected; history on first run."""
        mark = self.store.watermark(serial)
        if mark is None:
            start = now - timedelta(days=self.history_days)
            start = start.replace(
                minute=start.minute - start.minute % SLOT_MINUTES, second=0, microsecond=0
            )
            resume = self._resume.get(serial)
            return resume if resume is not None and start < resume < now else start
        window_start = max(now - UPLOAD_WINDOW, mark - UPLOAD_WINDOW)
        # the starts as integers, not a set of datetimes: this runs for every counter, every
        # cycle, over a week of slots, so they come from the history held in memory (the
        # store only before the first cycle's, or when another process wrote slots). The
        # first slot missing after the oldest one held is the one after the end of the
        # first unbroken run.
        starts = self.counts.starts(serial, window_start, mark)
        if starts is None:
            starts = self.store.slot_columns([serial], window_start)[serial].start
        if len(starts):
            step = SLOT_MINUTES * 60
            breaks = np.flatnonzero(np.diff(starts) != step)
            last = int(starts[breaks[0]] if len(breaks) else starts[-1])
            if last + step < mark.timestamp():
                return datetime.fromtimestamp(last + step, UTC)
        return mark

    def plan(self, counter: CounterConfig, now: datetime) -> Plan:
        """What to ask a counter this cycle: counts from where the store left off, and the
        live view and SSH health when their own slower schedules say they are due."""
        agent = self.config.agent

        # cycles start with ±10 % jitter: a fifth of a cycle's slack keeps a 900 s schedule
        # on 300 s cycles at every third cycle instead of drifting to every fourth
        slack = 0.2 * agent.cycle_seconds

        def due(probe: str, every: int) -> bool:
            last = self.store.observations(counter.serial, probe, limit=1)
            return not last or (now - last[0].at).total_seconds() >= every - slack

        return Plan(
            fetch_from=self._fetch_from(counter.serial, now),
            snapshot=due("snapshot", agent.snapshot_seconds),
            ssh=counter.ssh is not None and due("ssh", agent.ssh_seconds),
        )

    def probe_counter(
        self, counter: CounterConfig, now: datetime, deadline: float, plan: Plan | None = None
    ) -> ProbeResult:
        """Every probe of one counter: the API (counts), its live view, and SSH if configured.

        The snapshot needs a working API; SSH does not, and is most useful when the API fails.
        Runs in a worker thread: everything it needs from the store is in ``plan``.
        """
        result = ProbeResult(counter.serial)
        if not counter.host:
            return result
        plan = plan or Plan(fetch_from=now - timedelta(days=self.history_days))
        # a session (and its sockets) per probe: nothing of a cycle is left open after it
        with make_session(verify=counter.verify_tls) as session:
            client = self._client(counter, session)
            # a long backfill stops early enough to leave the live view a quarter of the time
            counts_by = deadline
            if plan.snapshot:
                counts_by -= min(client.timeout_s, (deadline - time.monotonic()) / 4)
            api = self._probe_api(
                client, counter, plan.fetch_from, now, counts_by, result, most=plan.max_slots
            )
            if not api.ok and str(api.error_code) in _UNREACHABLE:
                api = replace(
                    api, data={**api.data, "reachability": self._reach(counter, deadline)}
                )
            result.observations.append(api)
            if api.ok and plan.snapshot:
                result.observations.append(self._probe_snapshot(client, now, deadline, result))
        target = SshTarget.for_counter(counter)
        if target is not None and plan.ssh:
            result.observations.append(
                probe_device_ssh(
                    target,
                    self.known_hosts,
                    counter=counter.serial,
                    timeout_s=self.config.agent.probe_timeout_seconds,
                    deadline=deadline,
                    now=now,
                )
            )
        # What a device prints is the outside world's text: a key a script dumped, a password
        # in a service's log line. Scrubbed here, before the store, the checks' evidence, the
        # command line's output or a diagnose report can carry it anywhere.
        result.observations = [self._scrubbed(o) for o in result.observations]
        return result

    def _reach(self, counter: CounterConfig, deadline: float) -> dict[str, Any]:
        """Ping, ARP entry and port states of a counter whose API did not answer: whether it
        is on the network at all (the evidence of an offline ticket); short, within the
        cycle's deadline."""
        left = deadline - time.monotonic()
        timeout = max(0.05, min(1.0, self.config.agent.probe_timeout_seconds, left / 4))
        ports = (counter.port, 22) if counter.ssh is not None else (counter.port,)
        return reachability(counter.host or "", ports, timeout)

    def _scrubbed(self, obs: Observation) -> Observation:
        return replace(obs, data=self.redactor.data(obs.data), error=self.redactor.text(obs.error))

    def _probe_api(
        self,
        client: CounterClient,
        counter: CounterConfig,
        fetch_from: datetime,
        now: datetime,
        deadline: float,
        result: ProbeResult,
        *,
        most: int | None = None,
    ) -> Observation:
        started = time.monotonic()
        try:
            reply = client.counts(fetch_from, now, deadline, max_slots=most)
        except ProbeError as exc:
            return Observation.failed(counter.serial, "api", now, exc, time.monotonic() - started)
        result.slots = [s for s in reply.slots if s.start < now]
        if reply.partial and reply.reached is not None and not result.slots:
            self._resume[counter.serial] = reply.reached  # nothing held that far back
        else:
            self._resume.pop(counter.serial, None)
        data: dict[str, Any] = {"slots_received": len(result.slots)}
        if reply.partial:
            data["partial"] = True  # the backfill goes on next cycle from the watermark
        if reply.device_time is not None:
            data["clock_offset_s"] = round((reply.device_time - now).total_seconds(), 1)
        for key in ("serial", "model", "firmware"):  # as the device reports itself
            if getattr(reply, key, None):
                data[key] = getattr(reply, key)
        return Observation(
            counter.serial, "api", now, True, data, elapsed_s=time.monotonic() - started
        )

    def _probe_snapshot(
        self, client: CounterClient, now: datetime, deadline: float, result: ProbeResult
    ) -> Observation:
        started = time.monotonic()
        try:
            result.snapshot = client.snapshot(deadline)
        except ProbeError as exc:
            return Observation.failed(
                client.serial, "snapshot", now, exc, time.monotonic() - started
            )
        return Observation(
            client.serial,
            "snapshot",
            now,
            True,
            {"bytes": len(result.snapshot)},
            elapsed_s=time.monotonic() - started,
        )

    def probe_all(
        self, now: datetime, on_result: Callable[[ProbeResult], None] | None = None
    ) -> dict[str, ProbeResult]:
        """Probe every counter with a host, under one deadline (``probe_budget``, so that the
        whole cycle, recording and judging included, fits in about twice the probe timeout).
        ``on_result`` sees each result in this thread once, as its probe ends (the timeouts
        at the deadline).

        Counters that are still being probed at the deadline are a ``timeout`` about them;
        counters never started (more slow counters than workers) are an ``agent.probe`` error,
        not a device finding: they were never asked."""
        agent = self.config.agent
        self.probe_errors = []
        timeout = agent.probe_timeout_seconds
        budget = probe_budget(timeout, self.after_probe_s, agent.cycle_seconds)
        deadline = time.monotonic() + budget
        probed = [c for c in self.config.counters if c.host]
        # the longest first (what keeps a batch short): counters that answered slowly last
        # time, then those that timed out, on at most half the slots (``run_bounded``)
        last = {c.serial: self._last_api(c.serial) for c in probed}
        slow = [s for s, o in last.items() if o is not None and o.ok and o.elapsed_s >= timeout / 2]
        hung = [
            s for s, o in last.items() if o is not None and o.error_code is ProbeErrorCode.TIMEOUT
        ]
        first = {s: i for i, s in enumerate([*slow, *hung])}
        probed.sort(key=lambda c: first.get(c.serial, len(first)))
        sites = {c.serial: c.site for c in probed}
        plans = {c.serial: self.plan(c, now) for c in probed}  # the store, read here only
        plans = _backfill_shares(plans, now, self.backfill_slots)
        jobs = [
            (c.serial, lambda c=c: self.probe_counter(c, now, deadline, plans[c.serial]))
            for c in probed
        ]

        def ended(serial: str, outcome: Any) -> None:
            if on_result is not None and isinstance(outcome, ProbeResult):
                on_result(outcome)

        done, running, unstarted = run_bounded(
            jobs,
            limit=agent.max_parallel,
            soft_s=timeout,
            deadline=deadline,
            grace=min(1.0, timeout / 4),
            long=first.keys(),
            on_done=ended,
        )
        results: dict[str, ProbeResult] = {}
        for serial, outcome in done.items():
            if isinstance(outcome, ProbeResult):
                results[serial] = outcome
                continue
            # a worker's process boundary: the crash is a bug of the agent, about this counter
            log.debug("probe of %s crashed", serial, exc_info=outcome)
            self.probe_errors.append(
                _probe_error(
                    serial,
                    sites[serial],
                    now,
                    "probe_crashed",
                    f"probing {serial} crashed: {type(outcome).__name__} (an agent bug; "
                    "the traceback is in the debug log)",
                )
            )
        for serial in running:
            failed = ProbeError(ProbeErrorCode.TIMEOUT, "no answer before the cycle deadline")
            results[serial] = ProbeResult(
                serial, [Observation.failed(serial, "api", now, failed, budget)]
            )
            ended(serial, results[serial])
        for serial in unstarted:
            self.probe_errors.append(
                _probe_error(
                    serial,
                    sites[serial],
                    now,
                    "not_probed",
                    f"{serial} was not probed this cycle: slower counters held every worker "
                    f"until the cycle's probe deadline ({budget:g} s)",
                )
            )
        return results

    def _last_api(self, serial: str) -> Observation | None:
        last = self.store.observations(serial, "api", limit=1)
        return last[0] if last else None

    # -- record --------------------------------------------------------------------------------

    def record(self, results: dict[str, ProbeResult], now: datetime) -> None:
        """Store this cycle's results, after any held back by a full disk (in probe order).

        Each counter's rows are one transaction: on a full disk (``StoreFull``) that counter's
        results and the rest are held in memory, nothing is half-written, and the next cycle
        records them with their own probe time. A snapshot that cannot be written is dropped.
        A counter whose answers cannot be stored for any other reason is an ``agent.probe``
        error about it, and the others are stored all the same.
        """
        pending = [*self._held, *((now, res) for res in results.values())]
        self._held = []
        for i, (at, res) in enumerate(pending):
            try:
                with self.store.transaction():
                    for obs in res.observations:
                        self.store.add_observation(obs)
                        for command in obs.data.get("commands", ()):
                            self.store.audit(at, "agent", "ssh.command", obs.counter, command)
                    if res.slots:
                        self.store.add_slots(res.slots, at)
            except StoreFull:
                self._hold(pending[i:])
                raise
            except Exception as exc:  # one counter's store failure must not fail the cycle
                log.debug("recording %s failed", res.serial, exc_info=True)
                self._record_failed(res, now, exc)
                continue
            if res.slots:
                self.counts.note(res.slots)  # the in-memory history, once stored
            if res.snapshot:
                try:
                    self.views.record(res.serial, at, res.snapshot)
                except OSError as exc:
                    if not is_disk_full(exc):
                        self._record_failed(res, now, exc)
                        continue
                    self._hold(pending[i + 1 :])
                    raise StoreFull(f"cannot keep a snapshot of {res.serial}: disk full") from None

    def _record_failed(self, res: ProbeResult, now: datetime, exc: BaseException) -> None:
        counter = next((c for c in self.config.counters if c.serial == res.serial), None)
        self.probe_errors.append(
            _probe_error(
                res.serial,
                counter.site if counter else None,
                now,
                "record_failed",
                f"what {res.serial} answered could not be recorded: "
                f"{type(exc).__name__}: {str(exc)[:200]}",
            )
        )

    def _hold(self, pending: list[tuple[datetime, ProbeResult]]) -> None:
        held = [(at, replace(res, snapshot=None)) for at, res in pending]
        size = 0
        for n, (_, res) in enumerate(reversed(held)):
            size += len(res.observations) + len(res.slots)
            if size > MAX_HELD_ITEMS:
                dropped = len(held) - n
                log.error("disk still full: dropped the %d oldest held probe results", dropped)
                held = held[len(held) - n :]
                break
        self._held = held

    def _disk_full(self, now: datetime, started: float, exc: BaseException) -> CycleResult:
        """The cycle that could not write its state: one gateway finding, no traceback."""
        held = sum(len(r.observations) + len(r.slots) for _, r in self._held)
        if self._full_since is None:
            self._full_since = now
            log.error(
                "cannot write the agent's state in %s (%s): the disk is full; probe results are "
                "held in memory until there is space",
                self.state_dir,
                exc,
            )
        finding = Finding(
            check_id=GatewayHealth.id,
            status=Status.FAIL,
            code="disk_full",
            summary=f"cannot write the agent's state in {self.state_dir}: the disk is full "
            f"(since {self._full_since:%Y-%m-%d %H:%M} UTC; {held} results held in memory)",
            at=now,
            site=None,
            subject=GATEWAY,
            evidence={"state_dir": str(self.state_dir), "held": held, "error": str(exc)},
            remediation=GatewayHealth.remediation,
        )
        verdict = Verdict(Decision.GENUINE, ("the agent's own writes fail: the disk is full",))
        return CycleResult(now, [Assessed(finding, verdict)], [], [], time.monotonic() - started)

    def maintain(self, now: datetime) -> None:
        """Prune the raw history, once a day at most; a full disk waits for the next cycle."""
        agent = self.config.agent
        # what the checks look back on: the flapping window twice over, the API history
        cycles = max(2 * FLAP_WINDOW, API_HISTORY)
        quiet_days = max(2, -(-cycles * agent.cycle_seconds // 86400) + 1)
        try:
            self.store.maintain(
                now,
                findings_days=agent.keep_findings_days,
                observations_days=agent.keep_observations_days,
                slots_days=agent.keep_slots_days,
                quiet_days=quiet_days,
                heartbeat=self.heartbeat,
            )
        except StoreFull:
            return

    # -- detect --------------------------------------------------------------------------------

    def destinations(self) -> list[str]:
        """Where tickets and pushes go over the network, for the gateway's uplink check."""
        out = []
        for sink in self.config.sinks:
            if sink.type in ("rt", "webhook"):
                out.append(sink.url)
            elif sink.type == "smtp":
                out.append(f"smtp://{sink.host}:{sink.port}")
        if self.config.mqtt is not None:
            out.append(f"mqtt://{self.config.mqtt.host}:{self.config.mqtt.port}")
        return out

    def history(self, now: datetime) -> dict[str, SlotColumns]:
        """Every counter's slots over the baseline window, as columns: kept in memory between
        cycles, so a cycle reads from the store only what is new (see ``agent/counts.py``)."""
        since = now - timedelta(days=self.history_days + 7)
        # on a slot boundary, so the window's start moves when a new slot is due and not in
        # between: the count models then change once a slot, not twice (one older slot more)
        since -= timedelta(seconds=since.timestamp() % (SLOT_MINUTES * 60))
        return self.counts.window([c.serial for c in self.config.counters], since)

    def held_shifts(self, site: str) -> dict[str, Hold]:
        """The site's counters whose level incident is open (or recovering), each with the
        start of the shift its last problem finding named (or the start it was already held
        since, if earlier) and the usual ratio to its peers it kept: the count model judges
        them against their level before it, not a level that has learnt the fault."""
        held: dict[str, Hold] = {}
        for incident in self.store.incidents(open_only=True, check_id=CountLevel.id, site=site):
            hold = Hold.from_evidence(incident.last_finding.get("evidence", {}))
            if hold is not None:  # a finding without a start (an old row): nothing to hold
                held[incident.subject] = hold
        return held

    def held_splits(self, site: str) -> dict[str, HeldSplit]:
        """The site's counters whose IN/OUT imbalance incident is open (or recovering), each
        with the start of its move and the usual IN share its last problem finding named: a
        move that outlasts the window is judged against it, not accepted as the new usual
        split."""
        held: dict[str, HeldSplit] = {}
        for incident in self.store.incidents(open_only=True, check_id=CountImbalance.id, site=site):
            hold = HeldSplit.from_evidence(incident.last_finding.get("evidence", {}))
            if hold is not None:
                held[incident.subject] = hold
        return held

    def evidence(
        self,
        counter: CounterConfig,
        now: datetime,
        history: dict[str, SlotColumns] | None = None,
        *,
        prepare_reference: bool = True,
        held: dict[str, Hold] | None = None,
        held_split: dict[str, HeldSplit] | None = None,
    ) -> CounterEvidence:
        site = self.config.site(counter.site)
        history = history if history is not None else self.history(now)
        observations: dict[str, Observation] = {}
        extra: dict[str, Any] = {}
        # the latest answer first: the history behind it (up to API_HISTORY rows, each parsed)
        # is read only for a counter that is failing, to measure its streak, so a healthy
        # counter's cost does not grow with the cycles kept
        api_history = self.store.observations(counter.serial, "api", limit=1)
        if api_history and not api_history[0].ok:
            api_history = self.store.observations(counter.serial, "api", limit=API_HISTORY)
        if api_history:
            observations["api"] = api_history[0]
            if not api_history[0].ok:
                streak = 0
                for obs in api_history:
                    if obs.ok:
                        break
                    streak += 1
                extra["api_failing_since"] = api_history[streak - 1].at
                extra["api_consecutive_failures"] = streak
            last_ok = self.store.last_success(counter.serial, "api")
            extra["api_last_success"] = last_ok.isoformat() if last_ok else None
        for probe in ("snapshot", "ssh"):
            latest = self.store.observations(counter.serial, probe, limit=1)
            if latest:
                observations[probe] = latest[0]
        extra["ssh_configured"] = counter.ssh is not None
        if counter.serial in self._push_states:
            extra["push"] = push_evidence(self._push_states[counter.serial], now)
        else:
            extra["push_not_judged"] = "live push is judged by the running service only"
        # the cycle leaves an unprepared reference so until it must judge (counter_checks)
        extra["liveview"] = self.views.evidence(counter, prepare=prepare_reference)
        mark = self.store.watermark(counter.serial)
        extra["last_count_slot"] = mark.isoformat() if mark else None
        if not counter.host:
            extra["not_probed"] = "no host configured: the counter cannot be probed"
        own = history.get(counter.serial, SlotColumns.empty())
        counts = {counter.serial: own}
        counts |= {
            p: history.get(p, SlotColumns.empty()) for p in self.config.peers(counter.serial)
        }
        return CounterEvidence(
            serial=counter.serial,
            name=counter.name,
            site=counter.site,
            calendar=site.calendar(),
            now=now,
            observations=observations,
            # the count checks read ``counts``; only the live-push check reads slots one by one
            slots=own.slots(counter.serial) if "push" in extra else (),
            extra=extra,
            counts=counts,
            models=self.models,
            held=self.held_shifts(counter.site) if held is None else held,
            held_split=self.held_splits(counter.site) if held_split is None else held_split,
        )

    def run_checks(
        self,
        evidence: Any,
        checks: Sequence[Check] | None = None,
    ) -> list[Finding]:
        """Run each check on ``evidence`` under its own timeout; failures become ``error``.

        The checks run in turn in one task on the check worker (one hand-over a counter, not
        one a check: at 1,000 counters nine hand-overs each cost the main thread 0.6 s of a
        cycle's waiting). Each has its own timeout from its own start; a check that overruns
        keeps its worker thread busy, perhaps for ever: that worker is abandoned with its pool
        (and does nothing more once its check returns) and the checks after it run on a fresh
        one, so one hung check costs one thread and one timeout, never the checks behind it."""
        todo = list(self.checks if checks is None else checks)
        findings: list[Finding] = []
        while todo:
            turn = _Turn(todo, evidence)
            fut = self._check_pool.submit(turn.run)
            while True:
                index, started = turn.current
                left = started + todo[index].timeout_s - time.monotonic()
                try:
                    fut.result(timeout=max(0.0, left))
                except cf.TimeoutError:
                    if turn.current != (index, started):
                        continue  # it moved on to the next check meanwhile
                    turn.abandoned = True
                    self._check_pool.shutdown(wait=False, cancel_futures=True)
                    self._check_pool = _new_check_pool()
                    findings += [f for done in turn.found[:index] for f in done]
                    check = todo[index]
                    findings.append(
                        _check_error(check, evidence, f"check overran {check.timeout_s}s")
                    )
                    todo = todo[index + 1 :]
                    break
                findings += [f for done in turn.found for f in done]
                todo = []
                break
        return findings

    def counter_checks(self, evidence: CounterEvidence) -> list[Finding]:
        """Every counter check on ``evidence`` (``run_checks``), but the live view judged only
        when it changed: the snapshots are taken on their own, slower schedule, and judging a
        ring of unchanged snapshots again every cycle was most of a cycle's CPU. While the ring
        and the reference are the same as when they were last judged, the live-view checks'
        findings of then stand, dated now; a check that failed (``error``) runs again."""
        view = evidence.extra.get("liveview")
        key = _view_key(view)
        held = self._judged_views.get(evidence.serial)
        stands = held[2] if held is not None and key is not None and held[0] == key else {}
        live = [c.id for c in self.checks if getattr(c, "family", None) is Family.LIVEVIEW]
        if (
            isinstance(view, LiveView)
            and view.reference is None
            and view.reference_key is not None
            and any(i not in stands for i in live)
        ):
            # to be judged, and its reference was left unprepared: prepare it now (only
            # here, once per new snapshot, can a reference let go by the views' memory
            # budget cost its 10 ms)
            view = self.views.evidence(self.config.counter(evidence.serial))
            evidence = replace(evidence, extra={**evidence.extra, "liveview": view})
            key = _view_key(view)
        findings: list[Finding] = []
        judged: dict[str, list[Finding]] = {}
        batch: list[Check] = []  # the checks before the next live-view one, run in one turn
        for check in [*self.checks, None]:
            if check is not None and getattr(check, "family", None) is not Family.LIVEVIEW:
                batch.append(check)
                continue
            if batch:
                findings.extend(self.run_checks(evidence, batch))
                batch = []
            if check is None:
                break
            if check.id in stands:
                findings.extend(replace(f, at=evidence.now) for f in stands[check.id])
            else:
                got = self.run_checks(evidence, [check])
                findings.extend(got)
                if all(f.status is not Status.ERROR for f in got):
                    judged[check.id] = got
        if isinstance(view, LiveView) and key is not None:
            # a reference known by its file's version is not held here: the views' memory
            # budget may let it go; one known only by its identity is held, so its id() is
            # not reused meanwhile
            kept = None if view.reference_key is not None else view.reference
            self._judged_views[evidence.serial] = (key, kept, {**stands, **judged})
        return findings

    # -- the cycle -----------------------------------------------------------------------------

    def run_cycle(self) -> CycleResult:
        started = time.monotonic()
        now = self.clock.now()
        try:
            return self._run_cycle(started, now)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            return self._disk_full(now, started, exc)

    def _run_cycle(self, started: float, now: datetime) -> CycleResult:
        # each counter's answer is recorded as its probe ends, while the others are still
        # being probed, and its slots and snapshot are let go once stored: a thousand
        # counters' history or snapshots are never all in memory at once
        full: list[StoreFull] = []

        def record(res: ProbeResult) -> None:
            if full:  # the disk filled up earlier in this phase: held, in probe order
                self._held.append((now, replace(res, snapshot=None)))
                return
            try:
                self.record({res.serial: res}, now)
            except StoreFull as exc:
                full.append(exc)
                return
            res.slots, res.snapshot = [], None

        results = self.probe_all(now, on_result=record)
        probed = time.monotonic()
        self.heartbeat()
        gateway = probe_gateway(self.state_dir, sink_urls=self.destinations(), now=now)
        record(ProbeResult(GATEWAY, [gateway]))
        if full:
            self._hold(self._held)  # within MAX_HELD_ITEMS
            raise full[0]
        cycle_id = self.store.begin_cycle(now)
        if self._full_since is not None:
            log.warning(
                "the state directory has space again (full since %s): the held probe results "
                "are recorded",
                f"{self._full_since:%Y-%m-%d %H:%M} UTC",
            )
            self._full_since = None
        findings = self.run_checks(
            GatewayEvidence(now=now, observation=gateway), checks=self.gateway_checks
        )
        history = self.history(now)
        if self.push is not None:
            self._push_states = self.push.snapshot([c.serial for c in self.config.counters])
        # site by site, its counters then the site itself: the count models of a site (shared
        # by its counters' and its own checks) are asked for together, so each is built at most
        # once a cycle even when the model cache cannot hold the whole fleet's
        members: dict[str, list[CounterConfig]] = {}
        for counter in self.config.counters:
            members.setdefault(counter.site, []).append(counter)
        judged: list[Finding] = []
        site_findings: list[Finding] = []
        for site in self.config.sites:
            self.models.group()
            held = self.held_shifts(site.code)
            split = self.held_splits(site.code)
            for counter in members.get(site.code, []):
                gathered = self.evidence(
                    counter, now, history, prepare_reference=False, held=held, held_split=split
                )
                judged.extend(self.counter_checks(gathered))
            at = members.get(site.code, [])
            evidence = SiteEvidence(
                site=site.code,
                calendar=site.calendar(),
                now=now,
                groups={c.serial: c.group for c in at},
                counts={c.serial: history.get(c.serial, SlotColumns.empty()) for c in at},
                models=self.models,
                held=held,
            )
            site_findings.extend(self.run_checks(evidence, checks=self.site_checks))
        self.views.keep_learned(judged)  # the live-view check judged, the agent saves
        self.views.end_round()
        findings += judged + site_findings
        self.models.sweep()  # keep the models this cycle used, for the next one
        findings = fold_site_outages(findings)
        outbox = self.tickets.outbox.state(now)
        findings += self.run_checks(outbox, checks=self.agent_checks)
        findings += self.probe_errors
        self.heartbeat()
        calendars = {s.code: s.calendar() for s in self.config.sites}
        assessed = assess(findings, gate=self.gate(now, calendars))
        assessed = self.ladder.run(assessed, now, dry_run=self.dry_run)  # heal before filing
        self.store.add_findings(cycle_id, assessed)
        # the bundles are built first, with no transaction open (slow: images, tar.gz) ...
        prepared = self.tickets.prepare(now, assessed, self.policy, dry_run=self.dry_run)
        with self.store.transaction():  # incident changes and their tickets: both or neither
            flips = apply(self.store, assessed, now, self.policy)
            composed = self.tickets.queue(now, assessed, dry_run=self.dry_run, prepared=prepared)
            if self.dry_run:
                waiting = self.tickets.waiting(now)
            else:
                self.tickets.follow_up(flips, now)
                waiting = self.tickets.ask_store(now)  # what only the store can fix, first
        crashpoint("after_enqueue")
        if not self.dry_run:
            self.ladder.post_requests(now)  # the RMA request's full text, once its ticket exists
        self.heartbeat()
        tickets = [] if self.dry_run else self.tickets.deliver(now)
        if not self.dry_run:
            self.tickets.close_suggested(now)
            self.tickets.sync(now)  # statuses read back where the destination can be read
            self.tickets.notify_overdue(now)
            self.tickets.notifier.flush(now)
        duration = time.monotonic() - started
        self.store.end_cycle(
            cycle_id,
            self.clock.now(),
            {
                "findings": len(assessed),
                "problems": sum(a.genuine for a in assessed),
                "ruled_out": sum(a.ruled_out for a in assessed),
                "tickets": [t.number for t in tickets],
                "duration_s": round(duration, 3),
            },
        )
        self.after_probe_s = time.monotonic() - probed  # the next probe phase gives way to it
        self.maintain(now)
        _give_back_freed_memory()
        observations = [o for r in results.values() for o in r.observations]
        return CycleResult(now, assessed, flips, tickets, duration, composed, observations, waiting)

    def gate(self, now: datetime, calendars: dict[str, Any]) -> Gate:
        """What the false-alarm gate knows this cycle beyond the findings themselves."""
        silences = tuple(
            Silence(s["id"], s["target"], s["start"], s["until"], s["reason"], s["author"])
            for s in self.store.silences(active_at=now)
        )
        return Gate(
            calendars=calendars,
            now=now,
            silences=silences,
            untuned=frozenset(c.serial for c in self.config.counters if not c.tuned),
            counters_by_site={
                site.code: tuple(c.serial for c in self.config.counters_at(site.code) if c.host)
                for site in self.config.sites
            },
        )

    @property
    def policy(self) -> Policy:
        agent = self.config.agent
        return Policy(agent.confirm_checks, agent.confirm_minutes, agent.recover_checks)


def _view_key(view: Any) -> tuple[Any, ...] | None:
    """What the live-view checks judge: the ring (names, times, a digest of the bytes), the
    reference (the file and version it was prepared from, else the prepared object itself),
    where it came from, and the notes."""
    if not isinstance(view, LiveView):
        return None
    shots = tuple(
        (s.name, s.at, hashlib.blake2b(s.data, digest_size=16).digest()) for s in view.snapshots
    )
    notes = tuple(sorted((k, str(v)) for k, v in view.notes.items()))
    reference = view.reference_key if view.reference_key is not None else id(view.reference)
    return (view.source, reference, shots, notes, view.learn_needed)


def _probe_error(serial: str, site: str | None, now: datetime, code: str, summary: str) -> Finding:
    return Finding(
        check_id=ProbeFailure.id,
        status=Status.ERROR,
        code=code,
        summary=summary,
        at=now,
        site=site,
        subject=serial,
        evidence={"error": summary},
    )


def probe_budget(timeout: float, after_s: float, cycle_seconds: float) -> float:
    """Seconds the probe phase may take: what two probe timeouts leave after recording and
    judging (``after_s``, as long as last cycle's took), between ``MIN_PROBE_BUDGET`` and
    ``PROBE_BUDGET`` timeouts, and never more than the cycle."""
    share = min(PROBE_BUDGET * timeout, max(MIN_PROBE_BUDGET * timeout, 2 * timeout - after_s))
    return min(share, cycle_seconds)


def _backfill_shares(plans: dict[str, Plan], now: datetime, budget: int) -> dict[str, Plan]:
    """Share ``budget`` slots among the counters more than a day behind: each takes at most
    its share this cycle (at least a day's; oldest first, as the back-fill always went; the
    days a counter holds nothing for cost nothing) and the rest in the next cycles, from where
    the store then stands."""
    behind = [s for s, p in plans.items() if now - p.fetch_from > timedelta(days=1)]
    if not behind:
        return plans
    day = 24 * 60 // SLOT_MINUTES
    share = max(day, budget // len(behind))
    if (
        share * SLOT_MINUTES
        >= max((now - plans[s].fetch_from) for s in behind).total_seconds() / 60
    ):
        return plans  # every one of them fits whole: a gateway of a few counters
    return {s: replace(p, max_slots=share) if s in behind else p for s, p in plans.items()}


def _tune_malloc() -> None:
    """Two settings of glibc's allocator for a process of many threads and large arrays.

    Two arenas for the probe threads, not one each: glibc gives a thread that allocates
    while another holds an arena an arena of its own, up to eight per core, and each keeps
    the free fragments its threads left. With hundreds of probe threads a cycle
    (``max_parallel``), those fragments were about a tenth of the agent's memory at 1,000
    counters (``bench/fleet.py``); the threads mostly wait on sockets, so they seldom contend
    for an arena.

    Large blocks (128 KiB and up: the count models' and the live view's arrays) always from
    ``mmap``, so they go back to the system when freed. By default glibc raises that
    threshold to the size of each large block freed, up to 32 MiB, and serves the next ones
    from the heap, where a small block left above them keeps their pages: the back-fill
    cycles at 1,000 counters peaked 5-6 MiB higher that way (147 MiB against 141-142 on one
    core, two runs each).

    A ``MALLOC_ARENA_MAX`` or ``MALLOC_MMAP_THRESHOLD_`` set by the operator wins; other C
    libraries (musl) have no ``mallopt`` and are left alone."""
    import os

    mallopt = _libc("mallopt")
    if mallopt is None:
        return
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, 2)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


_M_ARENA_MAX = -8  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def _give_back_freed_memory() -> None:
    """Return to the system the pages a cycle allocated and freed (glibc's ``malloc_trim``).

    A back-fill parses weeks of slots per counter into objects that live until they are
    stored; once freed, glibc keeps their pages for reuse, so the service would sit at its
    busiest cycle's footprint for good. Trimming after each cycle costs a few milliseconds and
    lets the resident size fall back to what the agent holds. Elsewhere (musl) a no-op."""
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)


@functools.cache
def _libc(name: str) -> Any:
    """The C library's function ``name``, or None where it has none (musl: no ``mallopt``,
    no ``malloc_trim``)."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


class _Turn:
    """Checks run in turn on the check worker, for ``Runner.run_checks`` to watch: which one
    is running and since when, and what each finished one found (an exception is its
    ``error`` finding, an agent fault, not a device fault)."""

    def __init__(self, checks: Sequence[Check], evidence: Any) -> None:
        self.checks = checks
        self.evidence = evidence
        self.current = (0, time.monotonic())  # replaced whole: read without a lock
        self.found: list[list[Finding]] = []
        self.abandoned = False  # its watcher gave up on it: run nothing more

    def run(self) -> None:
        for index, check in enumerate(self.checks):
            if self.abandoned:
                return
            self.current = (index, time.monotonic())
            try:
                got = check.run(self.evidence)
            except Exception as exc:
                log.exception("check %s failed on %s", check.id, self.evidence.serial)
                got = [_check_error(check, self.evidence, f"{type(exc).__name__}: {exc}")]
            self.found.append(got)


def _new_check_pool() -> cf.ThreadPoolExecutor:
    return cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="check")


def _check_error(check: Check, evidence: Any, message: str) -> Finding:
    return Finding(
        check_id=check.id,
        status=Status.ERROR,
        code="check_error",
        summary=f"the check {check.id} itself failed: {message}",
        at=evidence.now,
        site=evidence.site,
        subject=evidence.serial,
        evidence={"error": message},
    )
