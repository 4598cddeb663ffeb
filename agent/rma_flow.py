"""The RMA road's actions: start, advance, rescue a unit's data, verify its replacement.

``rma/workflow.py`` says which moves are allowed; ``agent/rmas.py`` remembers; this module does
what each step needs on the outside, resumably. Each outside effect is a named step recorded in
``rma_steps`` when done, so a run killed halfway and started again skips what already happened:
the rescue's CSV is not attached twice, a closing message is not posted twice, a host key is
not re-pinned once pinned.

The rescue pulls every count slot the counter still holds from its local API (up to the 7 days
it keeps) and, where SSH is configured, from the count file the device keeps
(``cat /var/lib/footfallcam/counts.csv``) into the agent's store, checks them against the
slot ledger, writes the CSV into the state directory and attaches it to the RMA ticket with
exactly which slots are lost. Verifying a
replacement checks that the new unit answers and reports the new serial, pins its SSH host key
deliberately, sees counts flow for ``[remediation] rma_counts_verify_hours``, captures a new
reference image, links the old serial to the new one and moves the configuration over, then
posts the closing message.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import CounterConfig
from agent.delivery.outbox import crashpoint
from agent.probes.device import stored_counts_ssh
from agent.probes.ssh import SshTarget, enroll, pinned_fingerprint
from agent.rmas import Rma, RmaError, Rmas
from agent.runner import SLOT_MINUTES, Runner
from diagnostics.countcsv import CountCsvError, parse_counts_csv
from diagnostics.model import ProbeError, ProbeErrorCode
from rma import rescue as rescue_judge
from rma.workflow import State

log = logging.getLogger(__name__)

RESCUE_DAYS = 7  # what a counter keeps locally (DESIGN.md §3)


@dataclass
class VerifyResult:
    rma_id: int
    new_serial: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    verified: bool = False
    waiting: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "rma": self.rma_id,
            "new_serial": self.new_serial,
            "verified": self.verified,
            "waiting": self.waiting,
            "checks": self.checks,
        }


class RmaFlow:
    """The workflow's hands, over the runner's parts (client, store, outbox, sinks)."""

    def __init__(self, runner: Runner, config_path: Path | None = None) -> None:
        self.runner = runner
        self.config = runner.config
        self.store = runner.store
        self.rmas = Rmas(runner.store)
        self.clock = runner.clock
        self.config_path = config_path
        self.state_dir = Path(self.config.agent.state_dir)

    # -- start and advance ----------------------------------------------------------------------

    def start(
        self, serial: str, *, actor: str, reason: str, reports: dict[str, str] | None = None
    ) -> tuple[Rma, bool]:
        """The counter's open RMA or a new candidate; ``reports`` are what a person on site
        saw (``{"led": "red"}``), which the evidence gate weighs from the next cycle on."""
        counter = self._counter(serial)
        inc = next((i for i in self.store.incidents(open_only=True) if i.subject == serial), None)
        found, created = self.rmas.start(
            serial,
            site=counter.site,
            actor=actor,
            reason=reason,
            at=self.clock.now(),
            incident_id=inc.id if inc else None,
            data={"reports": reports or {}},
        )
        if reports and not created:
            merged = {**found.data.get("reports", {}), **reports}
            found = self.rmas.update(found.id, at=self.clock.now(), data={"reports": merged})
        return found, created

    def advance(self, rma_id: int, state: str, *, actor: str, note: str) -> Rma:
        """Move on; before "shipped" the unit's data is rescued first if nobody did yet."""
        if state == State.SHIPPED.value and not self.rmas.done(rma_id, "rescue"):
            rma = self.rmas.get(rma_id)
            if rma.state is State.APPROVED:
                self.rescue(rma_id, actor=actor)
        moved = self.rmas.advance(rma_id, state, actor=actor, reason=note, at=self.clock.now())
        crashpoint("rma.advance.moved")
        self.post_tasks(moved)
        return moved

    def post_tasks(self, rma: Rma) -> int:
        """The RMA's moves not yet on its ticket's task list, as follow-ups (once each)."""
        key = self.ticket_key(rma)
        if key is None:
            return 0  # no ticket yet: the cycle posts them once it is filed
        return self.rmas.post_tasks(rma, key, self.runner.post_tasks, self.clock.now())

    def ticket_key(self, rma: Rma) -> str | None:
        if rma.ticket_key:
            return rma.ticket_key
        if rma.incident_id is not None:
            inc = self.store.incident(rma.incident_id)
            if inc is not None and inc.ticket_key:
                return inc.ticket_key
        # the ladder opens the RMA in the cycle that files the ticket, before the incident
        # exists: the counter's incident filed since is the RMA's ticket
        filed = [
            i
            for i in self.store.incidents(subject=rma.counter)
            if i.ticket_key and i.opened_at >= rma.opened_at
        ]
        if not filed:
            return None
        key = filed[0].ticket_key
        self.rmas.update(rma.id, at=self.clock.now(), ticket_key=key)
        return key

    # -- rescue -------------------------------------------------------------------------------

    def rescue(self, rma_id: int, *, actor: str, accept_loss: bool = False) -> dict[str, Any]:
        """Pull what the unit still holds, judge it against the ledger, attach the CSV.

        A unit nothing could be read from (``reached`` false) is not rescued: the step stays
        undone, nothing is posted, and the caller says so, unless ``accept_loss`` (a person
        decided that a dead unit's data is gone): then what the agent's store already holds
        is the rescue, and the ticket says the unit could not be reached."""
        rma = self.rmas.get(rma_id)
        done = self.rmas.step_result(rma_id, "rescue")
        if done is not None:
            return done
        counter = self._counter(rma.counter)
        # whole seconds: the API speaks seconds, and a 24-hour chunk with a fraction rounds
        # out to more than the 24 hours a counter answers per call
        now = self.clock.now().replace(microsecond=0)
        start = now - timedelta(days=RESCUE_DAYS)
        notes: list[str] = []
        sources: list[str] = []
        before = self.store.slot_starts(counter.serial, start)
        client = self.runner._ladder_client(counter)
        try:
            reply = client.counts(start, now, time.monotonic() + 120.0)
        except ProbeError as exc:
            notes.append(f"local API: {exc}")
        else:
            slots = [s for s in reply.slots if s.start < now]
            self.store.add_slots(slots, now)
            sources.append(f"local API ({len(slots)} slots)")
        reached = bool(sources)
        target = SshTarget.for_counter(counter)
        if target is not None:
            reached |= self._rescue_ssh(counter.serial, target, start, now, sources, notes)
        crashpoint("rma.rescue.pulled")
        held = self.store.slot_starts(counter.serial, start)
        report = rescue_judge.judge(
            counter.serial,
            held,
            start=start,
            end=now,
            minutes=SLOT_MINUTES,
            recovered=len(held - before),
            sources=sources,
            notes=notes,
        )
        slots = self.store.slots(counter.serial, start, now)
        csv_text = rescue_judge.to_csv(slots)
        folder = self.state_dir / "rma" / str(rma_id)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{counter.serial}-rescued-counts.csv"
        (folder / name).write_text(csv_text, encoding="utf-8")
        result = {**report.to_json(), "csv": str(folder / name), "reached": reached}
        if not reached and not accept_loss:
            return result  # not done: try again when the unit answers, or accept the loss
        body = f"Data rescued before the unit is returned: {report.summary()}"
        if not reached:
            body = (
                f"Data rescue: the unit could not be reached ({'; '.join(notes)}), and its "
                f"data is accepted as lost by {actor}. {report.summary()}"
            )
        key = self.ticket_key(rma)
        crashpoint("rma.rescue.written")
        with self.store.transaction():  # the attachment and "done" together, or neither
            if key is not None:
                self.runner._post(key, body, rma.incident_id, now, {name: csv_text.encode()})
                result["attached_to"] = key
            self.rmas.mark_done(rma_id, "rescue", now, result, actor)
            self.rmas.update(rma_id, at=now, data={"rescue": result})
        return result

    def _rescue_ssh(
        self,
        serial: str,
        target: SshTarget,
        start: datetime,
        now: datetime,
        sources: list[str],
        notes: list[str],
    ) -> bool:
        """Add the slots the device's own count file holds and the store does not; the API's
        slots stay as they are (they are what the device served). Whether the unit answered
        over SSH (one that keeps no count file did, and has nothing more to give)."""
        known = self.state_dir / "known_hosts"
        timeout = self.config.agent.probe_timeout_seconds * 10
        try:
            text = stored_counts_ssh(target, known, timeout_s=timeout)
        except ProbeError as exc:
            notes.append(f"SSH: {exc.message}")
            return exc.code is ProbeErrorCode.UNSUPPORTED
        try:
            parsed, warnings = parse_counts_csv(text)
        except CountCsvError as exc:
            notes.append(f"SSH: the device's count file could not be read: {exc}")
            return True
        notes += [f"SSH: {w}" for w in warnings]
        held = self.store.slot_starts(serial, start)
        # the device's own file: its rows are this unit's counts, whatever name it gives itself
        rows = [replace(s, counter=serial) for slots in parsed.values() for s in slots]
        fresh = [s for s in rows if start <= s.start < now and s.start not in held]
        self.store.add_slots(fresh, now)
        sources.append(f"SSH count file ({len(rows)} slots, {len(fresh)} not held before)")
        return True

    # -- verify the replacement -----------------------------------------------------------------

    def verify_replacement(self, rma_id: int, new_serial: str, *, actor: str) -> VerifyResult:
        rma = self.rmas.get(rma_id)
        out = VerifyResult(rma_id, new_serial)
        if rma.state is State.VERIFIED and rma.new_serial == new_serial:
            # verified before, perhaps killed before the closing message: finish only that
            self._closing_message(rma_id, new_serial, self.clock.now())
            out.checks.append({"check": "closing", "ok": True, "detail": "closing message queued"})
            out.verified = True
            return out
        if rma.state is State.SHIPPED:
            rma = self.advance(rma_id, "replaced", actor=actor, note=f"replacement {new_serial}")
        if rma.state is not State.REPLACED:
            raise RmaError(
                f"RMA {rma_id} is {rma.state.value}: a replacement is verified once the faulty "
                "unit has shipped"
            )
        counter = self._counter(rma.counter) if rma.new_serial is None else self._moved(rma)
        now = self.clock.now()
        self.rmas.update(rma_id, at=now, new_serial=new_serial)

        def check(name: str, ok: bool, detail: str) -> bool:
            out.checks.append({"check": name, "ok": ok, "detail": detail})
            if ok:
                self.rmas.mark_done(rma_id, f"verify.{name}", now, {"detail": detail}, actor)
            return ok

        client = self.runner._ladder_client(counter)
        try:
            reply = client.counts(now - timedelta(hours=1), now, time.monotonic() + 30.0)
        except ProbeError as exc:
            check("answers", False, f"the new unit does not answer: {exc}")
            return out
        check("answers", True, "the new unit answers its API")
        reported = reply.serial or ""
        if not check(
            "serial",
            reported == new_serial,
            f"it reports serial {reported or 'nothing'} (expected {new_serial})",
        ):
            return out
        target = SshTarget.for_counter(counter)
        if target is not None and not self.rmas.done(rma_id, "verify.enrolled"):
            known = self.state_dir / "known_hosts"
            old = pinned_fingerprint(target, known)
            try:
                new = enroll(target, known, timeout=self.config.agent.probe_timeout_seconds)
            except ProbeError as exc:
                check("enrolled", False, f"SSH host key not pinned: {exc.message}")
                return out
            self.store.audit(now, actor, "ssh.enroll", new_serial, {"old": old, "new": new})
            check("enrolled", True, f"SSH host key pinned deliberately: {new}")
            crashpoint("rma.verify.enrolled")
        if not self.rmas.done(rma_id, "verify.reference"):
            try:
                image = client.snapshot(time.monotonic() + 30.0)
            except ProbeError as exc:
                check("reference", False, f"no new reference image: {exc}")
                return out
            refs = self.state_dir / "references"
            refs.mkdir(parents=True, exist_ok=True)
            path = refs / f"{new_serial}.reference.jpg"
            path.write_bytes(image)
            check("reference", True, f"new reference image captured: {path}")
        if not self.rmas.done(rma_id, "verify.config"):
            self.rmas.link_serial(rma.counter, new_serial, rma_id, now)
            check("config", True, self._move_config(rma.counter, new_serial))
        hours = self.config.remediation.rma_counts_verify_hours
        since = self._replaced_at(rma_id)
        flowing = sorted(self.store.slot_starts(counter.serial, since)) + sorted(
            self.store.slot_starts(new_serial, since)
        )
        if reply.slots:
            self.store.add_slots([s for s in reply.slots if s.start < now], now)
        span = (now - since).total_seconds() / 3600
        if span < hours:
            out.waiting = (
                f"counts must flow for {hours:g} h after the replacement; {span:.1f} h so far: "
                f"run `ffc-agent rma verify-replacement {rma_id} --serial {new_serial}` again later"
            )
            check("counts", False, out.waiting)
            return out
        if not reply.slots and not flowing:
            check("counts", False, "no counts have arrived from the new unit")
            return out
        check("counts", True, f"counts flowed for {span:.1f} h")
        self.rmas.mark_done(rma_id, "verify_replacement", now, {"serial": new_serial}, actor)
        crashpoint("rma.verify.checked")
        self.advance(rma_id, "verified", actor=actor, note=f"replacement {new_serial} verified")
        crashpoint("rma.verify.advanced")
        self._closing_message(rma_id, new_serial, now)
        out.verified = True
        return out

    def _closing_message(self, rma_id: int, new_serial: str, now: datetime) -> None:
        if self.rmas.done(rma_id, "closing_message"):
            return
        rma = self.rmas.get(rma_id)
        rescued = self.rmas.step_result(rma_id, "rescue") or {}
        summary = rescued.get("summary", "no data rescue was recorded")
        body = (
            f"The replacement unit {new_serial} for {rma.counter} is installed and verified: it "
            f"answers, reports its serial, its SSH host key is pinned and counts flow again. "
            f"Data from the returned unit: {summary}"
        )
        key = self.ticket_key(rma)
        with self.store.transaction():
            if key is not None:
                self.runner._post(key, body, rma.incident_id, now)
            self.rmas.mark_done(rma_id, "closing_message", now, {"ticket": key}, "agent")

    def _replaced_at(self, rma_id: int) -> datetime:
        for move in reversed(self.rmas.moves(rma_id)):
            if move.to_state is State.REPLACED:
                return move.at
        return self.clock.now()

    def _moved(self, rma: Rma) -> CounterConfig:
        """The counter's config, under its old serial or (after a move) the new one."""
        for serial in (rma.new_serial, rma.counter):
            if serial:
                try:
                    return self.config.counter(serial)
                except KeyError:
                    continue
        raise RmaError(f"counter {rma.counter} is not in the configuration")

    def _move_config(self, old: str, new: str) -> str:
        """Rewrite ``serial = "OLD"`` to the new serial in the config file, keeping a backup."""
        path = self.config_path
        if path is None or not path.exists():
            return f'linked {old} → {new}; set serial = "{new}" in the configuration by hand'
        text = path.read_text(encoding="utf-8")
        pattern = re.compile(rf'^(\s*serial\s*=\s*)"{re.escape(old)}"', re.M)
        if len(pattern.findall(text)) != 1:
            return f'linked {old} → {new}; set serial = "{new}" in {path} by hand'
        backup = path.with_name(path.name + f".before-{new}")
        backup.write_text(text, encoding="utf-8")
        path.write_text(pattern.sub(rf'\g<1>"{new}"', text), encoding="utf-8")
        return f"configuration moved from {old} to {new} in {path} (backup {backup.name})"

    def _counter(self, serial: str) -> CounterConfig:
        try:
            return self.config.counter(serial)
        except KeyError:
            raise RmaError(f"no counter {serial!r} in the configuration") from None
