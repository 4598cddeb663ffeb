"""The evidence gate: does this counter need a replacement unit, or is it a Technical Issue?

An RMA costs the store a counter for days and its data for good, so one reading never decides
it. The gate looks for a hardware-fault signature — camera not present, storage errors, a reboot
loop, overheating, unreachable while its switch port has link and power, a red LED reported by a
person, counts that stay wrong after every fix, a repeat offender — and cross-checks each with
the rest of the evidence: a "camera missing" while the live view is clear and the counts are
normal is the probe's problem, not the camera's. Without a signature that survives, the fault
stays a Technical Issue.

It works on what the check findings already say, and asks the check registry
(``diagnostics.checks.meta``) what each finding is about — its family, its ticket kind, whether
it says the counter answers — so a code is only ever read inside its own family: "counts that
stay wrong" means count-family findings, never a live view that happens to be ``frozen``.
``is_hardware`` is the small question the ticket composer and the workflow need ("does this
finding ask for a replacement unit?").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diagnostics.checks import Family, TicketKind, meta
from diagnostics.model import Finding, Status

_STORAGE = re.compile(r"i/o error|mmc\d*: .*(error|timeout)|ext4-fs error|read-only", re.I)

QUESTIONS_FOR_SITE: tuple[str, ...] = (
    "What colour is the counter's LED (steady blue, flashing blue, yellow, red, none)?",
    "Is there any physical damage to the counter, its cable or its mounting?",
    "Has the counter been moved, re-aimed, covered or modified recently?",
    "Has there been building work, a power cut or network change near the counter?",
)


_UP = frozenset({"up", "on", "true", "yes", "1", "enabled", "delivering"})
_DOWN = frozenset({"down", "off", "false", "no", "0", "disabled", "searching"})


def parse_port_status(text: str) -> dict[str, bool]:
    """The switch port's facts from the operator's status command: ``link`` and ``power``.

    The command prints a JSON object (``{"link": true, "power": "on"}``) or key=value words
    (``link=up power=on``); keys it does not print are absent, words it cannot read raise
    ``ValueError`` with what it said, so a garbled answer never passes for "link up".
    """
    text = text.strip()
    raw: dict[str, Any]
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg}") from None
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
        raw = loaded
    else:
        raw = {}
        for word in text.split():
            key, sep, value = word.partition("=")
            if sep:
                raw[key.strip().lower()] = value.strip()
    out: dict[str, bool] = {}
    for key in ("link", "power"):
        if key not in raw:
            continue
        value = raw[key]
        word = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
        if word in _UP:
            out[key] = True
        elif word in _DOWN:
            out[key] = False
        else:
            raise ValueError(f"{key}={value!r} is neither up/on nor down/off")
    if not out:
        raise ValueError("it said neither link nor power")
    return out


def port_words(port: Mapping[str, Any]) -> str:
    """``switch port: link up, power on`` — what the switch said, for people."""

    def word(key: str, yes: str, no: str) -> str:
        value = port.get(key)
        return f"{key} {yes if value else no}" if value is not None else f"{key} not reported"

    return f"switch port: {word('link', 'up', 'down')}, {word('power', 'on', 'off')}"


def is_hardware(finding: Finding) -> bool:
    """Whether the finding's check files it as a hardware fault (an RMA request kind)."""
    return finding.problem and meta(finding).ticket is TicketKind.HARDWARE


def _of(findings: Iterable[Finding], family: Family) -> list[Finding]:
    return [f for f in findings if meta(f).family is family]


def unreachable_in(findings: Iterable[Finding]) -> bool:
    """Whether a liveness check (the one that says the counter answers) reports it does not."""
    return any(f.problem and meta(f).liveness for f in findings)


def counts_wrong_in(findings: Iterable[Finding]) -> list[Finding]:
    """The count-family findings that report a problem with the counts."""
    return [f for f in _of(findings, Family.COUNTS) if f.problem]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the gate may weigh for one counter, as of now.

    ``findings`` are the counter's latest findings of every check (ok ones included: a clear
    live view is evidence too). ``port`` is what the switch says of the counter's port
    (``{"link": bool, "power": bool}``, see ``parse_port_status``) when the operator's
    ``port_status_command`` can tell;
    ``reports`` are what people on site reported (``{"led": "red"}``).
    """

    findings: tuple[Finding, ...]
    ladder_exhausted: bool = False
    repeat_offender: bool = False
    heals: int = 0
    port: Mapping[str, Any] | None = None
    reports: Mapping[str, str] = field(default_factory=dict)
    reboot_loop_at: int = 6  # boots in 24 h that make a loop, not just a bad day
    liveview_clear: bool | None = None  # None: derive from the findings' codes
    counts_normal: bool | None = None


@dataclass(frozen=True, slots=True)
class Signature:
    code: str
    summary: str
    contradicted_by: str = ""  # why this signature does not count, when it does not

    @property
    def holds(self) -> bool:
        return not self.contradicted_by


@dataclass(frozen=True, slots=True)
class GateVerdict:
    rma: bool
    reason: str
    signatures: tuple[Signature, ...] = ()

    @property
    def held(self) -> tuple[Signature, ...]:
        return tuple(s for s in self.signatures if s.holds)

    def to_json(self) -> dict[str, Any]:
        return {
            "rma": self.rma,
            "reason": self.reason,
            "signatures": [
                {"code": s.code, "summary": s.summary, "contradicted_by": s.contradicted_by}
                for s in self.signatures
            ],
        }


def judge(ev: Evidence) -> GateVerdict:
    """Whether the evidence supports an RMA request, with every signature and its cross-check."""
    sigs = list(_signatures(ev))
    sigs += _red_led(ev, sigs)
    held = [s for s in sigs if s.holds]
    if held:
        return GateVerdict(True, "; ".join(s.summary for s in held), tuple(sigs))
    if sigs:
        why = "; ".join(f"{s.summary} — but {s.contradicted_by}" for s in sigs)
        return GateVerdict(False, f"no hardware fault confirmed: {why}", tuple(sigs))
    return GateVerdict(False, "no hardware-fault signature: a Technical Issue", ())


def _signatures(ev: Evidence) -> Iterable[Signature]:
    device = [f for f in _of(ev.findings, Family.DEVICE) if f.problem]
    health = _health(ev.findings)
    liveview_clear = (
        ev.liveview_clear if ev.liveview_clear is not None else liveview_clear_in(ev.findings)
    )
    counts_ok = ev.counts_normal if ev.counts_normal is not None else counts_normal_in(ev.findings)
    camera_missing = health.get("camera_present") is False or any(map(is_hardware, device))
    if camera_missing:
        contra = ""
        if liveview_clear and counts_ok:
            contra = "the live view is clear and the counts are normal (a probe problem)"
        elif liveview_clear:
            contra = "the live view is clear (the camera is delivering images)"
        yield Signature("camera_missing", "camera not present (/dev/video0 missing)", contra)
    storage = [line for line in health.get("kernel_errors") or [] if _STORAGE.search(str(line))]
    if storage:
        yield Signature("storage_errors", "storage errors: " + " | ".join(storage[:3]))
    boots = health.get("reboots_24h")
    if isinstance(boots, int | float) and boots >= ev.reboot_loop_at:
        yield Signature("reboot_loop", f"reboot loop: {boots:g} boots in 24 h")
    if any(f.code == "overheating" for f in device):
        temp = health.get("temperature_c")
        contra = "" if ev.ladder_exhausted else "not yet tried to cool it down with a restart"
        yield Signature("overheating", f"overheating ({temp} °C)", contra)
    if unreachable_in(ev.findings) and ev.port is not None:
        link, power = ev.port.get("link"), ev.port.get("power")
        if link is False:
            contra = "its switch port has no link: a cabling or switch problem for the store"
        elif power is False:
            contra = "its switch port delivers no power: a PoE or switch problem for the store"
        elif link and power:
            contra = "" if ev.ladder_exhausted else "the power-cycle has not been tried yet"
        else:
            contra = "the switch did not say both link and power"
        yield Signature("unreachable_with_link", f"unreachable ({port_words(ev.port)})", contra)
    wrong = counts_wrong_in(ev.findings)
    if wrong and ev.ladder_exhausted:
        what = ", ".join(sorted({f.code for f in wrong})).replace("_", " ")
        contra = "" if not liveview_clear or not counts_ok else "the counts look normal now"
        yield Signature(
            "counts_wrong_after_fixes", f"counts stay wrong ({what}) after every fix", contra
        )
    if ev.repeat_offender:
        yield Signature("repeat_offender", f"repeat offender: healed {ev.heals} times recently")


def _red_led(ev: Evidence, others: list[Signature]) -> Iterable[Signature]:
    """A person's report of a red LED corroborates, it never decides alone: it holds with
    another signature that holds, or once every safe fix was tried and none healed."""
    led = (ev.reports.get("led") or "").strip().lower()
    if led != "red":
        return
    contra = ""
    if not ev.ladder_exhausted and not any(s.holds for s in others):
        contra = (
            "a person's report alone needs corroboration: another hardware signature "
            "or the safe fixes tried and failed"
        )
    yield Signature("red_led", "a person on site reports a red LED", contra)


def _health(findings: Iterable[Finding]) -> Mapping[str, Any]:
    """The SSH readings from a device-family finding, when there is one."""
    for f in _of(findings, Family.DEVICE):
        if "camera_present" in f.evidence or "temperature_c" in f.evidence:
            return f.evidence
    return {}


def liveview_clear_in(findings: Iterable[Finding]) -> bool:
    """Whether the latest live-view judgement was "clear" (the camera delivers a good image)."""
    return any(f.status is Status.OK and f.code == "clear" for f in _of(findings, Family.LIVEVIEW))


def counts_normal_in(findings: Iterable[Finding]) -> bool:
    """Whether the count checks said all is well and none reports wrong or missing counts."""
    counts = _of(findings, Family.COUNTS)
    if any(f.problem for f in counts):
        return False
    return any(f.status is Status.OK for f in counts)
