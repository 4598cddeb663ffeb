"""Runs the remediation ladder's steps on a real counter, within its budget, every one audited.

``rma/ladder.py`` says which rung comes next; this module climbs it: renew the API token, restart
the counting service over SSH, reboot over SSH, or run the operator's PoE command (a switch
script, no shell, under a timeout, its whole process group killed when it overruns). After each
step it checks again — the API answers counts, and over SSH the counting service runs and the
camera is there — and stops at the first step that heals. A dry run (``--dry-run`` or
``[remediation] dry_run``) decides and records what it would do and touches nothing.

Every attempt, by the agent or by a person (``ffc-agent remote fix``), goes into the ``repairs``
table and the audit log with its actor and result; what a step printed is redacted first.
Failure behaviour: a step that cannot run (SSH refused, the PoE command failing or hanging)
is recorded as ``failed`` and the ladder moves on; nothing here raises for device trouble.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import Config, CounterConfig
from agent.delivery.outbox import crashpoint
from agent.incidents import RESOLVED
from agent.probes.counter_api import CounterClient
from agent.probes.device import COUNTING_SERVICE, probe_device_ssh
from agent.probes.ssh import SshSession, SshTarget
from agent.rmas import PostTasks, Rma, Rmas
from agent.store import Incident, Store
from diagnostics.checks import HARDWARE_FAULT
from diagnostics.model import (
    Assessed,
    Clock,
    Decision,
    Finding,
    ProbeError,
    ProbeErrorCode,
    Status,
    Verdict,
)
from rma.gate import (
    Evidence,
    GateVerdict,
    is_hardware,
    judge,
    parse_port_status,
    unreachable_in,
)
from rma.ladder import (
    TITLES,
    Attempt,
    Budget,
    Capabilities,
    Outcome,
    Plan,
    Step,
    fixable,
    heals,
    next_step,
    repeat_offender,
)
from rma.redact import Redactor
from rma.request import RequestFacts, compose_request
from rma.workflow import State

log = logging.getLogger(__name__)

RESTART_COMMAND = f"sudo systemctl restart {COUNTING_SERVICE}"
REBOOT_COMMAND = "sudo reboot"
_RUNNING = ("active", "reloading", "activating")
_DETAIL_MAX = 2000
_RECHECK_EVERY_S = 5.0
_BOOTS = frozenset({Step.REBOOT, Step.POE_CYCLE})  # the counter needs time to come back


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a step did: ran or not, and a line for the audit log (already redacted)."""

    ran: bool
    detail: str


class Remediator:
    """The ladder's hands for one agent: built from the config, used by the runner and CLI."""

    def __init__(
        self,
        config: Config,
        rmas: Rmas,
        *,
        clock: Clock,
        client_for: Callable[[CounterConfig], CounterClient],
        redactor: Redactor,
        known_hosts: Path,
    ) -> None:
        self.config = config
        self.rmas = rmas
        self.clock = clock
        self.client_for = client_for
        self.redactor = redactor
        self.known_hosts = known_hosts
        self.settings = config.remediation

    # -- decisions ----------------------------------------------------------------------------

    def budget(self) -> Budget:
        s = self.settings
        return Budget(
            per_day={
                Step.RENEW_TOKEN: s.renew_token_per_day,
                Step.RESTART_SERVICE: s.restart_service_per_day,
                Step.REBOOT: s.reboots_per_day,
                Step.POE_CYCLE: s.poe_cycles_per_day,
            },
            repeat_heals=s.repeat_heals,
            repeat_window_days=s.repeat_window_days,
        )

    def caps(self, counter: CounterConfig) -> Capabilities:
        return Capabilities(
            ssh=SshTarget.for_counter(counter) is not None, poe=bool(self.settings.poe_command)
        )

    def plan(self, counter: CounterConfig, code: str, since: datetime) -> Plan:
        now = self.clock.now()
        history = self.rmas.attempts(counter.serial, min(since, now - timedelta(days=1)))
        return next_step(
            code,
            caps=self.caps(counter),
            history=history,
            since=since,
            budget=self.budget(),
            now=now,
        )

    def repeat_offender(self, serial: str) -> bool:
        return repeat_offender(self.rmas.attempts(serial), self.budget(), self.clock.now())

    # -- actions ------------------------------------------------------------------------------

    def walk(
        self,
        counter: CounterConfig,
        code: str,
        since: datetime,
        *,
        actor: str = "agent",
        incident_id: int | None = None,
        dry_run: bool | None = None,
        defer: bool = False,
    ) -> tuple[list[Attempt], Plan]:
        """Climb the ladder for a fault until a step heals it or no rung is left.

        Returns the attempts made now and the ladder's last word (why it stopped). A dry run
        records the first rung it would take and stops: the rest depends on that rung's result.
        With ``defer`` (the cycle) a reboot or power cycle is not waited for: it is recorded
        ``pending`` and the walk stops; ``settle_pending`` in the next cycles says how it went.
        """
        dry = self.settings.dry_run if dry_run is None else dry_run
        made: list[Attempt] = []
        while True:
            plan = self.plan(counter, code, since)
            if plan.step is None:
                return made, plan
            attempt = self.run_step(
                counter,
                plan.step,
                actor=actor,
                code=code,
                incident_id=incident_id,
                dry_run=dry,
                defer=defer,
            )
            made.append(attempt)
            crashpoint(f"remediate.{attempt.step.value}.recorded")
            if attempt.outcome is Outcome.PENDING:
                return made, self.plan(counter, code, since)  # the ladder's word: waiting
            if dry or attempt.outcome is Outcome.HEALED:
                return made, plan

    def run_step(
        self,
        counter: CounterConfig,
        step: Step,
        *,
        actor: str,
        code: str = "",
        incident_id: int | None = None,
        dry_run: bool = False,
        defer: bool = False,
    ) -> Attempt:
        """Run one rung now (no budget check: the caller decided), check again, record it.

        After a reboot or power cycle the counter needs time to boot: a person at the terminal
        waits up to ``recheck_seconds`` here; with ``defer`` (the cycle) the attempt is recorded
        ``pending`` "awaiting recheck until T" and the next cycles check (``settle_pending``).
        """
        at = self.clock.now()
        if dry_run:
            what = self._describe(counter, step)
            attempt = Attempt(counter.serial, step, at, Outcome.DRY_RUN, actor, f"would {what}")
            self.rmas.record_attempt(attempt, incident_id=incident_id)
            return attempt
        log.info("%s on %s (asked by %s)", TITLES[step], counter.serial, actor)
        result = self._act(counter, step)
        if not result.ran:
            outcome, detail = Outcome.FAILED, result.detail
        elif defer and step in _BOOTS and self.settings.recheck_seconds > 0:
            until = self.recheck_until(at).isoformat(timespec="seconds")
            outcome, detail = Outcome.PENDING, f"{result.detail}; awaiting recheck until {until}"
        else:
            healed, why = self.recheck(counter, code, patient=step in _BOOTS)
            outcome = Outcome.HEALED if healed else Outcome.NOT_HEALED
            detail = f"{result.detail}; check after: {why}".strip("; ")
        attempt = Attempt(
            counter.serial, step, at, outcome, actor, self.redactor.text(detail)[:_DETAIL_MAX]
        )
        self.rmas.record_attempt(attempt, incident_id=incident_id)
        if outcome is Outcome.HEALED:
            log.info("%s healed %s", TITLES[step], counter.serial)
        return attempt

    def _describe(self, counter: CounterConfig, step: Step) -> str:
        if step is Step.POE_CYCLE:
            try:
                return "run " + " ".join(self._poe_argv(counter))
            except (KeyError, IndexError, ValueError):
                return "run the PoE command (it has a placeholder it cannot fill)"
        if step is Step.RESTART_SERVICE:
            return f"run '{RESTART_COMMAND}' over SSH"
        if step is Step.REBOOT:
            return f"run '{REBOOT_COMMAND}' over SSH"
        return "fetch a new API access token"

    def _act(self, counter: CounterConfig, step: Step) -> StepResult:
        if step is Step.RENEW_TOKEN:
            return self._renew_token(counter)
        if step is Step.POE_CYCLE:
            return self._poe(counter)
        command = RESTART_COMMAND if step is Step.RESTART_SERVICE else REBOOT_COMMAND
        return self._ssh(counter, command, reboot=step is Step.REBOOT)

    def _renew_token(self, counter: CounterConfig) -> StepResult:
        deadline = time.monotonic() + self.config.agent.probe_timeout_seconds * 2
        try:
            self.client_for(counter).token(deadline, fresh=True)
        except ProbeError as exc:
            return StepResult(False, f"no new token: {exc}")
        return StepResult(True, "new API token fetched")

    def _ssh(self, counter: CounterConfig, command: str, *, reboot: bool) -> StepResult:
        target = SshTarget.for_counter(counter)
        if target is None:
            return StepResult(False, "SSH is not configured for this counter")
        timeout = self.config.agent.probe_timeout_seconds * 4
        try:
            with SshSession(target, self.known_hosts, timeout_s=timeout) as session:
                result = session.run(command, timeout)
        except ProbeError as exc:
            # A reboot may cut the session before it answers: the command was sent.
            if reboot and exc.code in (ProbeErrorCode.TIMEOUT, ProbeErrorCode.BAD_RESPONSE):
                return StepResult(True, f"'{command}' sent; the session ended ({exc.code})")
            return StepResult(False, f"'{command}' failed: {exc}")
        said = (result.stdout + result.stderr).strip().splitlines()
        tail = f": {said[-1]}" if said else ""
        if result.exit_status != 0:
            return StepResult(False, f"'{command}' exited {result.exit_status}{tail}")
        return StepResult(True, f"'{command}' ran{tail}")

    def _poe_argv(
        self, counter: CounterConfig, command: tuple[str, ...] | None = None
    ) -> list[str]:
        values = {"serial": counter.serial, "host": counter.host or "", "poe_port": ""}
        values["poe_port"] = counter.poe_port or ""
        template = self.settings.poe_command if command is None else command
        return [arg.format_map(values) for arg in template]

    def _poe(self, counter: CounterConfig) -> StepResult:
        try:
            argv = self._poe_argv(counter)
        except (KeyError, IndexError, ValueError) as exc:
            return StepResult(False, f"poe_command has a placeholder it cannot fill: {exc}")
        if not argv:
            return StepResult(False, "no PoE command is configured ([remediation] poe_command)")
        limit = self.settings.poe_timeout_seconds
        code, out, why = _operator(argv, limit)
        said = _tail(out)
        if code is None:
            return StepResult(False, f"PoE command {why}{said}")
        if code != 0:
            return StepResult(False, f"PoE command exited {code}{said}")
        return StepResult(True, f"PoE port power-cycled{said}")

    def port_status(self, counter: CounterConfig) -> dict[str, Any] | None:
        """What the switch says of the counter's port, from ``[remediation]
        port_status_command``: ``{"link": bool, "power": bool, "output": ...}``, or with an
        ``error`` when the command failed, hung or said something unreadable; None when no
        command is configured. Read-only: it is asked whenever the gate needs it."""
        if not self.settings.port_status_command:
            return None
        try:
            argv = self._poe_argv(counter, self.settings.port_status_command)
        except (KeyError, IndexError, ValueError) as exc:
            return {"error": f"port_status_command has a placeholder it cannot fill: {exc}"}
        limit = self.settings.port_status_timeout_seconds
        code, out, why = _operator(argv, limit)
        text = self.redactor.text((out or b"").decode("utf-8", "replace").strip())[-500:]
        facts: dict[str, Any] = {"output": text, "at": self.clock.now().isoformat()}
        if code is None:
            return {**facts, "error": f"port status command {why}"}
        if code != 0:
            return {**facts, "error": f"port status command exited {code}"}
        try:
            return {**facts, **parse_port_status(text)}
        except ValueError as exc:
            return {**facts, "error": f"port status not understood: {exc}"}

    # -- checking again -------------------------------------------------------------------------

    def recheck_until(self, sent_at: datetime) -> datetime:
        return sent_at + timedelta(seconds=self.settings.recheck_seconds)

    def settle_pending(self) -> list[Attempt]:
        """Check once, without waiting, each counter a reboot or power cycle was sent to.

        Back and well: the rung ``healed``. Not yet, before its recheck time: still pending.
        Not back when the time is over: ``not_healed``, and the ladder goes on. Returns the
        attempts settled now, with their new outcome.
        """
        settled: list[Attempt] = []
        now = self.clock.now()
        for attempt in self.rmas.pending():
            try:
                counter = self.config.counter(attempt.counter)
            except KeyError:
                continue  # left the configuration: it stays pending, on record
            healed, why = self._well(counter, "")
            until = self.recheck_until(attempt.at)
            if not healed and now < until:
                continue
            outcome = Outcome.HEALED if healed else Outcome.NOT_HEALED
            sent = attempt.detail.split("; awaiting recheck", 1)[0]
            when = "checked" if healed else f"not back by {until.isoformat(timespec='seconds')}"
            detail = self.redactor.text(f"{sent}; {when}: {why}")[:_DETAIL_MAX]
            self.rmas.settle(attempt, outcome, detail, now)
            settled.append(replace(attempt, outcome=outcome, detail=detail))
            log.info("%s on %s: %s", TITLES[attempt.step], attempt.counter, outcome.value)
        return settled

    def recheck(self, counter: CounterConfig, code: str, *, patient: bool) -> tuple[bool, str]:
        """Whether the counter is well again; after a reboot or power cycle, keep asking for up
        to ``recheck_seconds`` while it boots."""
        limit = time.monotonic() + (self.settings.recheck_seconds if patient else 0.0)
        while True:
            healed, why = self._well(counter, code)
            if healed or time.monotonic() >= limit:
                return healed, why
            time.sleep(min(_RECHECK_EVERY_S, max(0.0, limit - time.monotonic())))

    def _well(self, counter: CounterConfig, code: str) -> tuple[bool, str]:
        timeout = self.config.agent.probe_timeout_seconds
        deadline = time.monotonic() + timeout * 3
        now = self.clock.now()
        try:
            self.client_for(counter).counts(now - timedelta(hours=1), now, deadline)
        except ProbeError as exc:
            return False, f"the API still fails ({exc.code})"
        target = SshTarget.for_counter(counter)
        if target is None:
            return True, "the API answers counts again"
        obs = probe_device_ssh(
            target,
            self.known_hosts,
            counter=counter.serial,
            timeout_s=timeout,
            deadline=time.monotonic() + timeout * 3,
            now=now,
        )
        # the fresh reading replaces the one that showed the fault, so the next cycle's health
        # check judges the device as it is now, not as it was before the fix
        self.rmas.store.add_observation(
            replace(obs, data=self.redactor.data(obs.data), error=self.redactor.text(obs.error))
        )
        if not obs.ok:
            return False, f"SSH health check failed ({obs.error_code})"
        service, camera = obs.data.get("counting_service"), obs.data.get("camera_present")
        if service is not None and service not in _RUNNING:
            return False, f"the counting service is {service}"
        if camera is False:
            return False, "the camera is still not detected"
        return True, "the API answers and the counting service runs"


def _operator(argv: list[str], limit: float) -> tuple[int | None, bytes | None, str]:
    """Run the operator's own command without a shell, in its own process group, killed whole
    when it overruns ``limit``: (exit code or None, its output, why it did not finish)."""
    try:
        proc = subprocess.Popen(  # noqa: S603 - the operator's own command, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a hang is killed whole
        )
    except OSError as exc:
        return None, None, f"could not start: {exc.strerror or exc}"
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return None, out, f"did not finish within {limit:g}s"
    return proc.returncode, out, ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(out: bytes | None) -> str:
    text = (out or b"").decode("utf-8", "replace").strip()
    return f"; output: {text[-500:]}" if text else ""


def latest_for(assessed: list[Assessed], serial: str) -> tuple[Finding, ...]:
    return tuple(a.finding for a in assessed if a.finding.subject == serial)


class LadderStage:
    """The cycle's remediation step (DESIGN.md §5.6), between the gate and the incidents.

    For each genuine device fault the ladder can help, on a counter whose incident has no
    ticket yet, it climbs the ladder. A healed fault becomes an ``ok`` finding and its incident
    is resolved with a note, so no ticket is filed. An unhealed one carries the attempts and the
    ladder's last word in its evidence, for the ticket. Then the evidence gate decides whether
    it is a hardware fault: a confirmed one opens an RMA (``requested``) and is filed as an RMA
    request; a "hardware" finding the rest of the evidence contradicts is relabelled
    ``hardware_unconfirmed``, so it is filed as a Technical Issue, not an RMA request.
    A counter healed too often (a repeat offender) becomes an RMA candidate even while it is up.
    """

    def __init__(
        self,
        fixer: Remediator,
        store: Store,
        *,
        confirm_checks: int,
        post: Callable[[str, str, int | None, datetime], object] | None = None,
        post_tasks: PostTasks | None = None,
    ) -> None:
        self.fixer = fixer
        self.store = store
        self.confirm_checks = confirm_checks
        self.post = post  # (ticket key, text, incident id, now): a message on a ticket
        self.post_tasks = post_tasks  # an RMA move: task-list lines and a message

    def run(
        self, assessed: list[Assessed], now: datetime, *, dry_run: bool = False
    ) -> list[Assessed]:
        if not self.fixer.settings.enabled:
            return assessed
        back: dict[str, Attempt] = {}
        if not dry_run:
            try:  # the reboots sent in earlier cycles: is the counter back yet?
                settled = self.fixer.settle_pending()
            except Exception:  # the cycle's boundary, as below
                log.exception("checking the counters rebooted earlier failed")
                settled = []
            back = {t.counter: t for t in settled if t.outcome is Outcome.HEALED}
        out: list[Assessed] = []
        for a in assessed:
            f = a.finding
            if not (a.genuine and f.subject and f.problem and fixable(f.code)):
                out.append(a)
                continue
            try:
                counter = self.fixer.config.counter(f.subject)
            except KeyError:
                out.append(a)
                continue
            inc = self.store.open_incident(f.check_id, f.site or "", f.subject)
            if inc is not None and inc.ticket_key is not None:
                out.append(a)  # already filed: support has it, the ladder had its turn
                continue
            if counter.serial in back:
                # probed before the recheck found it back: the recheck is the newer word
                out.append(self._heal(f, counter, inc, back.pop(counter.serial), now))
                continue
            if inc is None and self.confirm_checks > 1:
                out.append(a)  # first sighting: confirm before touching the device
                continue
            try:
                out.append(self._remediate(a, counter, inc, assessed, now, dry_run))
            except Exception:  # the cycle's boundary: a broken fix must not stop the tickets
                log.exception("remediation of %s failed; filing as usual", counter.serial)
                out.append(a)
        for serial, healed in back.items():  # back, and this cycle saw no fault: the RMA's turn
            note = f"healed by the remediation ladder: {TITLES[healed.step]}"
            self._healed(self.fixer.config.counter(serial), note, now)
        return out

    def _remediate(
        self,
        a: Assessed,
        counter: CounterConfig,
        inc: Incident | None,
        assessed: list[Assessed],
        now: datetime,
        dry_run: bool,
    ) -> Assessed:
        f = a.finding
        since = inc.opened_at if inc is not None else now
        rma = None if dry_run else self._begin(counter, f, inc, assessed, since, now)
        if rma is not None and rma.state is State.REMEDIATING:
            # a run killed mid-ladder resumes this ladder: the rungs it ran count as tried
            since = min(since, self._remediating_since(rma.id, now))
        _made, plan = self.fixer.walk(
            counter,
            f.code,
            since,
            incident_id=inc.id if inc is not None else None,
            dry_run=True if dry_run else None,
            defer=True,
        )
        tried = self.fixer.rmas.attempts(counter.serial, since)
        healed = next((t for t in tried if t.outcome is Outcome.HEALED), None)
        if healed is not None:
            return self._heal(f, counter, inc, healed, now)
        ladder = {
            "remediation": [
                {
                    "at": t.at.isoformat(),
                    "step": t.step.value,
                    "outcome": t.outcome.value,
                    "actor": t.actor,
                    "detail": t.detail,
                }
                for t in tried
            ],
            "ladder": plan.to_json(),
        }
        if plan.waiting is not None:
            # sent a reboot or power cycle: neither filed nor judged until it had time to boot
            sent = next(t for t in reversed(tried) if t.step is plan.waiting)
            until = self.fixer.recheck_until(sent.at)
            why = f"{plan.reason} (recheck until {until.isoformat(timespec='seconds')})"
            evidence = {**f.evidence, **ladder}
            return Assessed(
                replace(f, evidence=evidence, summary=f"{f.summary} ({why})"),
                Verdict(Decision.PENDING, (why,), rule="remediation", until=until),
            )
        ran = [t for t in tried if t.outcome in (Outcome.NOT_HEALED, Outcome.FAILED)]
        # "every fix tried" only when some fix ran and none is left for a reason other than
        # the budget: a counter the agent cannot reach or may not touch today is not proven sick
        exhausted = plan.exhausted and bool(ran) and not plan.over_budget
        open_rma = self.fixer.rmas.open_for(counter.serial)
        reports = dict(open_rma.data.get("reports", {})) if open_rma is not None else {}
        latest = latest_for(assessed, counter.serial)
        port = self.fixer.port_status(counter) if unreachable_in(latest) else None
        if port is not None:
            ladder["switch_port"] = port
        verdict = judge(
            Evidence(
                latest,
                port=port if port is not None and "error" not in port else None,
                reports=reports,
                ladder_exhausted=exhausted,
                repeat_offender=self.fixer.repeat_offender(counter.serial),
                heals=len(
                    heals(self.fixer.rmas.attempts(counter.serial), self.fixer.budget(), now)
                ),
            )
        )
        evidence = {**f.evidence, **ladder, "gate": verdict.to_json()}
        if verdict.rma and not dry_run:
            text = self._request_text(counter, f, inc, verdict, tried, now, port)
            evidence["rma_request"] = text
            self._request(counter, f, inc, verdict.reason, evidence, now)
            code = HARDWARE_FAULT
            summary = f"{f.summary} — hardware fault confirmed: {verdict.reason}"
        elif is_hardware(f):
            code, summary = "hardware_unconfirmed", f"{f.summary} — {verdict.reason}"
        elif verdict.signatures:  # weighed and ruled out: say why, keep what the check said
            code, summary = f.code, f"{f.summary} — {verdict.reason}"
        else:
            code, summary = f.code, f.summary
        if ran or plan.over_budget:
            steps = ", ".join(
                f"{TITLES[t.step]} ({t.outcome.value.replace('_', ' ')})" for t in ran
            )
            said = f"tried: {steps}" if steps else "no fix tried"
            budget = f"; {plan.reason}" if plan.over_budget else ""
            summary = f"{summary} (remote fixes {said}{budget})"
        if code != f.code:
            evidence["original_code"] = f.code
        return Assessed(replace(f, code=code, summary=summary, evidence=evidence), a.verdict)

    def _begin(
        self,
        counter: CounterConfig,
        f: Finding,
        inc: Incident | None,
        assessed: list[Assessed],
        since: datetime,
        now: datetime,
    ) -> Rma | None:
        """Before the first rung: the counter's RMA candidate moves to ``remediating``.

        The candidate is the counter's open RMA (a person's, a repeat offender's) or, when a
        hardware signature already holds before any fix (a camera gone while the view is not
        clear, storage errors, a reboot loop), one the ladder opens now. Each move is recorded
        with its reason and "agent" as who made it; a run killed between them resumes from the
        state it reached.
        """
        rmas = self.fixer.rmas
        rma = rmas.open_for(counter.serial)
        if rma is None:
            before = judge(Evidence(latest_for(assessed, counter.serial)))
            if not before.rma:
                return None
            rma, _created = rmas.start(
                counter.serial,
                site=counter.site,
                actor="agent",
                reason=f"suspected hardware fault: {before.reason}",
                at=now,
                incident_id=inc.id if inc is not None else None,
                data={"opened_by": "ladder"},
            )
            crashpoint("rma.ladder.candidate")
        if rma.state is not State.CANDIDATE:
            return rma
        plan = self.fixer.plan(counter, f.code, since)
        if plan.step is None:
            return rma  # nothing to try: it stays a candidate, the gate decides
        rma = rmas.advance(
            rma.id,
            State.REMEDIATING,
            actor="agent",
            at=now,
            reason=f"the safe remote fixes come first ({plan.reason}) for: {f.summary}",
        )
        crashpoint("rma.ladder.remediating")
        return rma

    def _remediating_since(self, rma_id: int, now: datetime) -> datetime:
        moves = [m for m in self.fixer.rmas.moves(rma_id) if m.to_state is State.REMEDIATING]
        return moves[-1].at if moves else now

    def _heal(
        self,
        f: Finding,
        counter: CounterConfig,
        inc: Incident | None,
        healed: Attempt,
        now: datetime,
    ) -> Assessed:
        """A rung healed the fault: the finding is ok, its incident resolves with a note."""
        note = f"healed by the remediation ladder: {TITLES[healed.step]}"
        if inc is not None:
            self.store.update_incident(inc.id, at=now, state=RESOLVED, reason=note)
        self._healed(counter, note, now)
        return Assessed(replace(f, status=Status.OK, code="healed", summary=note), None)

    def _healed(self, counter: CounterConfig, note: str, now: datetime) -> None:
        """After a heal: a remediating RMA the ladder opened itself is cancelled; one a person
        or the repeat-offender rule opened goes back to ``candidate`` (the suspicion stays).
        A counter healed too often becomes a candidate."""
        rma = self.fixer.rmas.open_for(counter.serial)
        if rma is not None and rma.state is State.REMEDIATING:
            to = State.CANCELLED if rma.data.get("opened_by") == "ladder" else State.CANDIDATE
            self.fixer.rmas.advance(rma.id, to, actor="agent", at=now, reason=note)
        self._repeat_offender(counter, now)

    def _request_text(
        self,
        counter: CounterConfig,
        f: Finding,
        inc: Incident | None,
        verdict: GateVerdict,
        tried: list[Attempt],
        now: datetime,
        port: dict[str, Any] | None = None,
    ) -> str:
        api = self.store.observations(counter.serial, "api", limit=20)
        device: dict[str, Any] = {}
        for obs in api:
            for key in ("serial", "model", "firmware"):
                if obs.data.get(key) and key not in device:
                    device[key] = obs.data[key]
        ssh = self.store.observations(counter.serial, "ssh", limit=1)
        readings = f.evidence if "camera_present" in f.evidence else (ssh[0].data if ssh else {})
        history = [
            (i.opened_at, f"{i.summary} ({i.state})")
            for i in self.store.incidents(subject=counter.serial)
            if inc is None or i.id != inc.id
        ]
        good = [s for s in self.store.slots(counter.serial, now - timedelta(days=7)) if s.total]
        last = (good[-1].start, good[-1].count_in, good[-1].count_out) if good else None
        site = self.fixer.config.site(counter.site)
        return compose_request(
            RequestFacts(
                serial=counter.serial,
                name=counter.name,
                site=f"{site.code} ({site.name})",
                first_seen=inc.opened_at if inc is not None else f.at,
                verdict=verdict,
                device=device,
                readings=readings,
                history=history[-10:],
                attempts=tried,
                last_good=last,
                port=port,
            )
        )

    def post_requests(self, now: datetime) -> None:
        """Post each requested RMA's full request on its ticket once the ticket exists, then
        its moves as lines of the ticket's task list (RMAs still open or moved this week)."""
        if self.post is None:
            return
        rmas = self.fixer.rmas
        recent = now - timedelta(days=7)
        for rma in rmas.all():
            if not rma.open and rma.updated_at < recent:
                continue
            key = rma.ticket_key or next(
                (
                    i.ticket_key
                    for i in self.store.incidents(subject=rma.counter)
                    if i.ticket_key and i.opened_at >= rma.opened_at
                ),
                None,
            )
            if key is None:
                continue
            text = rma.data.get("evidence", {}).get("rma_request")
            if text and not rmas.done(rma.id, "request_message"):
                with self.store.transaction():
                    self.post(key, text, rma.incident_id, now)
                    rmas.mark_done(rma.id, "request_message", now, {"ticket": key}, "agent")
            if self.post_tasks is not None:
                rmas.post_tasks(rma, key, self.post_tasks, now)

    def _request(
        self,
        counter: CounterConfig,
        f: Finding,
        inc: Incident | None,
        reason: str,
        evidence: dict[str, object],
        now: datetime,
    ) -> None:
        rmas = self.fixer.rmas
        rma, created = rmas.start(
            counter.serial,
            site=counter.site,
            actor="agent",
            reason=reason,
            at=now,
            incident_id=inc.id if inc is not None else None,
            data={"finding": f.to_json(), "evidence": evidence},
        )
        if not created:  # a candidate opened earlier: the request's evidence joins it
            rma = rmas.update(rma.id, at=now, data={"finding": f.to_json(), "evidence": evidence})
        if rma.state in (State.CANDIDATE, State.REMEDIATING):
            rmas.advance(
                rma.id,
                State.REQUESTED,
                actor="agent",
                at=now,
                reason=f"every safe fix tried; {reason}",
            )
        if created:
            log.warning("RMA %s requested for %s: %s", rma.id, counter.serial, reason)

    def _repeat_offender(self, counter: CounterConfig, now: datetime) -> None:
        if not self.fixer.repeat_offender(counter.serial):
            return
        n = len(heals(self.fixer.rmas.attempts(counter.serial), self.fixer.budget(), now))
        days = self.fixer.budget().repeat_window_days
        self.fixer.rmas.start(
            counter.serial,
            site=counter.site,
            actor="agent",
            at=now,
            reason=f"repeat offender: healed {n} times in {days:g} days",
        )
