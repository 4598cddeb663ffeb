"""One cycle of the agent: probe → record → detect → assess → incidents → tickets.

The ticket side (compose, queue, deliver, follow up) lives in ``agent/ticketing.py``.
Every counter is probed concurrently under one deadline, so a hung counter costs one timeout in
parallel with the rest, never the whole cycle. Each check runs isolated: an exception or an
overrun becomes an ``error`` finding about the agent (check id and traceback summary), never a
ticket about a device. A ticket is raised once per incident, when it is confirmed.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import Config, CounterConfig
from agent.delivery.bundling import Evidence
from agent.delivery.outbox import crashpoint
from agent.delivery.sinks import Sink, make_sinks
from agent.delivery.ticketing import Ticketing
from agent.incidents import Flip, Policy, apply
from agent.probes.counter_api import CounterClient
from agent.probes.device import probe_device_ssh
from agent.probes.gateway import probe_gateway
from agent.probes.mqtt import push_evidence
from agent.probes.ssh import SshTarget
from agent.remediate import LadderStage, Remediator
from agent.rmas import Rmas
from agent.store import Store
from agent.transport.http import make_session
from agent.views import LiveViews
from diagnostics.assess import Gate, Silence, assess
from diagnostics.checks import (
    COUNTER_CHECKS,
    GATEWAY_CHECKS,
    SITE_CHECKS,
    Check,
    CounterEvidence,
    SiteEvidence,
    fold_site_outages,
)
from diagnostics.checks.gateway import GatewayEvidence
from diagnostics.model import (
    Assessed,
    CountSlot,
    Finding,
    Observation,
    ProbeError,
    ProbeErrorCode,
    Status,
)
from rma.redact import Redactor
from rma.tickets import Ticket

log = logging.getLogger(__name__)

SLOT_MINUTES = 15
UPLOAD_WINDOW = timedelta(days=7)  # a counter buffers this long while its uplink is down


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class Plan:
    fetch_from: datetime
    snapshot: bool = True
    ssh: bool = True


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

    @property
    def problems(self) -> list[Assessed]:
        return [a for a in self.assessed if a.genuine]

    @property
    def ruled_out(self) -> list[Assessed]:
        return [a for a in self.assessed if a.ruled_out]

    @property
    def errors(self) -> list[Assessed]:
        return [a for a in self.assessed if a.finding.status is Status.ERROR]


class Runner:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Any = None,
        sinks: Sequence[Sink] | None = None,
        history_days: int = 28,
        checks: Sequence[Check] | None = None,
        dry_run: bool = False,
        log_excerpt: Any = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.sinks = list(sinks) if sinks is not None else make_sinks(config)
        self.history_days = history_days
        self.checks = list(checks) if checks is not None else [c() for c in COUNTER_CHECKS]
        self.site_checks = [c() for c in SITE_CHECKS]
        self.gateway_checks = [c() for c in GATEWAY_CHECKS]
        self.state_dir = Path(config.agent.state_dir)
        self.known_hosts = self.state_dir / "known_hosts"
        self.views = LiveViews(self.state_dir)
        self._sessions: dict[str, Any] = {}
        self._check_pool = _new_check_pool()
        # called between the stages of a cycle: the daemon pings systemd's watchdog with it
        self.heartbeat: Callable[[], object] = lambda: None
        self.dry_run = dry_run  # decide and compose as usual; queue and send nothing
        self.push: Any = None  # the daemon's MQTT listener, when [mqtt] is configured
        self._push_states: dict[str, Any] = {}
        self.redactor = Redactor(
            config.secret_values(),
            hosts=[c.host for c in config.counters if c.host],
        )
        self.tickets = Ticketing(
            config,
            store,
            self.sinks,
            Evidence(config, store, self.views, self.redactor, log_excerpt or (lambda: "")),
            self.redactor,
        )

        self.rmas = Rmas(store)
        self.remediator = Remediator(
            config,
            self.rmas,
            clock=self.clock,
            client_for=self._client,
            redactor=self.redactor,
            known_hosts=self.known_hosts,
        )
        self.ladder = LadderStage(
            self.remediator, store, confirm_checks=config.agent.confirm_checks, post=self._post
        )

    def _post(self, key: str, text: str, incident_id: int | None, now: datetime) -> object:
        """A message from the agent on the ticket ``key`` (the RMA request's full text)."""
        return self.tickets.outbox.enqueue_message(
            self.sinks,
            key,
            author="ffc-agent",
            body=self.redactor.text(text),
            at=now,
            incident_id=incident_id,
            now=now,
        )

    # -- probe ---------------------------------------------------------------------------------

    def _client(self, counter: CounterConfig) -> CounterClient:
        site = self.config.site(counter.site)
        verify = counter.verify_tls
        session = self._sessions.setdefault(counter.serial, make_session(verify=verify))
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

    def _fetch_from(self, serial: str, now: datetime) -> datetime:
        """Where to resume: the newest slot again (it may have been open), or the oldest gap
        still inside the upload window, so late uploads are collected; history on first run."""
        mark = self.store.watermark(serial)
        if mark is None:
            start = now - timedelta(days=self.history_days)
            return start.replace(
                minute=start.minute - start.minute % SLOT_MINUTES, second=0, microsecond=0
            )
        window_start = max(now - UPLOAD_WINDOW, mark - UPLOAD_WINDOW)
        have = self.store.slot_starts(serial, window_start)
        if have:
            t = min(have)
            step = timedelta(minutes=SLOT_MINUTES)
            while t < mark:
                if t not in have:
                    return t
                t += step
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
        client = self._client(counter)
        api = self._probe_api(client, counter, plan.fetch_from, now, deadline, result)
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
    ) -> Observation:
        started = time.monotonic()
        try:
            reply = client.counts(fetch_from, now, deadline)
        except ProbeError as exc:
            return Observation.failed(counter.serial, "api", now, exc, time.monotonic() - started)
        result.slots = [s for s in reply.slots if s.start < now]
        data: dict[str, Any] = {"slots_received": len(result.slots)}
        if reply.device_time is not None:
            data["clock_offset_s"] = round((reply.device_time - now).total_seconds(), 1)
        for key in ("model", "firmware"):
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

    def probe_all(self, now: datetime) -> dict[str, ProbeResult]:
        agent = self.config.agent
        budget = max(3 * agent.probe_timeout_seconds, 30.0)
        deadline = time.monotonic() + min(budget, agent.cycle_seconds)
        probed = [c for c in self.config.counters if c.host]
        results: dict[str, ProbeResult] = {}
        pool = cf.ThreadPoolExecutor(max_workers=agent.max_parallel, thread_name_prefix="probe")
        try:
            plans = {c.serial: self.plan(c, now) for c in probed}  # the store, read here only
            futures = {
                pool.submit(self.probe_counter, c, now, deadline, plans[c.serial]): c
                for c in probed
            }
            done, pending = cf.wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 1)
            for fut in done:
                counter = futures[fut]
                try:
                    results[counter.serial] = fut.result()
                except Exception:  # process boundary of a worker: never lose the cycle
                    log.exception("probe of %s crashed", counter.serial)
                    results[counter.serial] = ProbeResult(
                        counter.serial,
                        [
                            Observation.failed(
                                counter.serial,
                                "api",
                                now,
                                ProbeError(ProbeErrorCode.BAD_RESPONSE, "the probe crashed"),
                            )
                        ],
                    )
            for fut in pending:
                counter = futures[fut]
                results[counter.serial] = ProbeResult(
                    counter.serial,
                    [
                        Observation.failed(
                            counter.serial,
                            "api",
                            now,
                            ProbeError(
                                ProbeErrorCode.TIMEOUT, "no answer before the cycle deadline"
                            ),
                        )
                    ],
                )
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    # -- record --------------------------------------------------------------------------------

    def record(self, results: dict[str, ProbeResult], now: datetime) -> None:
        for res in results.values():
            for obs in res.observations:
                self.store.add_observation(obs)
                for command in obs.data.get("commands", ()):
                    self.store.audit(now, "agent", "ssh.command", obs.counter, command)
            if res.slots:
                self.store.add_slots(res.slots, now)
            if res.snapshot:
                self.views.record(res.serial, now, res.snapshot)

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

    def history(self, now: datetime) -> dict[str, tuple[CountSlot, ...]]:
        """Every counter's slots over the baseline window, read once per cycle."""
        since = now - timedelta(days=self.history_days + 7)
        return {c.serial: tuple(self.store.slots(c.serial, since)) for c in self.config.counters}

    def evidence(
        self,
        counter: CounterConfig,
        now: datetime,
        history: dict[str, tuple[CountSlot, ...]] | None = None,
    ) -> CounterEvidence:
        site = self.config.site(counter.site)
        history = history if history is not None else self.history(now)
        observations: dict[str, Observation] = {}
        extra: dict[str, Any] = {}
        api_history = self.store.observations(counter.serial, "api", limit=500)
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
        extra["liveview"] = self.views.evidence(counter)
        mark = self.store.watermark(counter.serial)
        extra["last_count_slot"] = mark.isoformat() if mark else None
        if not counter.host:
            extra["not_probed"] = "no host configured: the counter cannot be probed"
        peers = {p: history.get(p, ()) for p in self.config.peers(counter.serial)}
        return CounterEvidence(
            serial=counter.serial,
            name=counter.name,
            site=counter.site,
            calendar=site.calendar(),
            now=now,
            observations=observations,
            slots=history.get(counter.serial, ()),
            peers=peers,
            extra=extra,
        )

    def run_checks(
        self,
        evidence: Any,
        checks: Sequence[Check] | None = None,
    ) -> list[Finding]:
        """Run each check on ``evidence`` under its own timeout; failures become ``error``.

        A check that overruns keeps its worker thread busy, perhaps for ever: that worker is
        abandoned with its pool and the next check gets a fresh one, so one hung check costs
        one thread and one timeout, never the checks queued behind it."""
        findings: list[Finding] = []
        for check in self.checks if checks is None else checks:
            fut = self._check_pool.submit(check.run, evidence)
            try:
                findings.extend(fut.result(timeout=check.timeout_s))
            except cf.TimeoutError:
                self._check_pool.shutdown(wait=False, cancel_futures=True)
                self._check_pool = _new_check_pool()
                findings.append(_check_error(check, evidence, f"check overran {check.timeout_s}s"))
            except Exception as exc:  # a broken check is an agent fault, not a device fault
                log.exception("check %s failed on %s", check.id, evidence.serial)
                findings.append(_check_error(check, evidence, f"{type(exc).__name__}: {exc}"))
        return findings

    # -- the cycle -----------------------------------------------------------------------------

    def run_cycle(self) -> CycleResult:
        started = time.monotonic()
        now = self.clock.now()
        cycle_id = self.store.begin_cycle(now)
        results = self.probe_all(now)
        self.record(results, now)
        self.heartbeat()
        gateway = probe_gateway(self.state_dir, sink_urls=self.destinations(), now=now)
        self.store.add_observation(gateway)
        findings = self.run_checks(
            GatewayEvidence(now=now, observation=gateway), checks=self.gateway_checks
        )
        history = self.history(now)
        if self.push is not None:
            self._push_states = self.push.snapshot([c.serial for c in self.config.counters])
        for counter in self.config.counters:
            findings.extend(self.run_checks(self.evidence(counter, now, history)))
        for site in self.config.sites:
            members = self.config.counters_at(site.code)
            evidence = SiteEvidence(
                site=site.code,
                calendar=site.calendar(),
                now=now,
                counters={c.serial: history.get(c.serial, ()) for c in members},
                groups={c.serial: c.group for c in members},
            )
            findings.extend(self.run_checks(evidence, checks=self.site_checks))
        findings = fold_site_outages(findings) + self.tickets.outbox.health(now)
        self.heartbeat()
        calendars = {s.code: s.calendar() for s in self.config.sites}
        assessed = assess(findings, gate=self.gate(now, calendars))
        assessed = self.ladder.run(assessed, now, dry_run=self.dry_run)  # heal before filing
        self.store.add_findings(cycle_id, assessed)
        with self.store.transaction():  # incident changes and their tickets: both or neither
            flips = apply(self.store, assessed, now, self.policy)
            composed = self.tickets.queue(now, assessed, dry_run=self.dry_run)
            if not self.dry_run:
                self.tickets.follow_up(flips, now)
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
        observations = [o for r in results.values() for o in r.observations]
        return CycleResult(now, assessed, flips, tickets, duration, composed, observations)

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
