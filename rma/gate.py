"""The evidence gate: does this counter need a replacement unit, or is it a Technical Issue?

An RMA costs the store a counter for days and its data for good, so one reading never decides
it. The gate looks for a hardware-fault signature — camera not present, storage errors, a reboot
loop, overheating, unreachable while its switch port has link and power, a red LED reported by a
person, counts that stay wrong after every fix, a repeat offender — and cross-checks each with
the rest of the evidence: a "camera missing" while the live view is clear and the counts are
normal is the probe's problem, not the camera's. Without a signature that survives, the fault
stays a Technical Issue.

It works on what the check findings already say (codes and evidence), so it stays pure and
never asks a check what its id means. ``is_hardware_code`` is the small question the ticket
composer and the workflow need ("is this finding a hardware-fault kind?").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diagnostics.model import Finding, Status

# Finding codes whose presence alone hints at hardware; the gate still cross-checks them.
_HARDWARE_CODES = frozenset({"hardware_fault", "overheating", "frequent_reboots", "kernel_errors"})
_OFFLINE_CODES = frozenset({"refused", "timeout", "unreachable", "offline"})
_COUNT_CODES = frozenset({"zero_run", "under_count", "over_count", "imbalance", "frozen"})
_COUNTS_OK = frozenset({"counting", "complete", "balanced", "quiet", "level"})
_STORAGE = re.compile(r"i/o error|mmc\d*: .*(error|timeout)|ext4-fs error|read-only", re.I)

QUESTIONS_FOR_SITE: tuple[str, ...] = (
    "What colour is the counter's LED (steady blue, flashing blue, yellow, red, none)?",
    "Is there any physical damage to the counter, its cable or its mounting?",
    "Has the counter been moved, re-aimed, covered or modified recently?",
    "Has there been building work, a power cut or network change near the counter?",
)


def is_hardware_code(code: str) -> bool:
    """Whether a finding code is one of the hardware-fault kinds the gate judges."""
    return code in _HARDWARE_CODES


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the gate may weigh for one counter, as of now.

    ``findings`` are the counter's latest findings of every check (ok ones included: a clear
    live view is evidence too). ``port`` is what the switch says of the counter's port
    (``{"link": bool, "power": bool}``) when the operator's PoE tooling can tell;
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
    held = [s for s in sigs if s.holds]
    if held:
        return GateVerdict(True, "; ".join(s.summary for s in held), tuple(sigs))
    if sigs:
        why = "; ".join(f"{s.summary} — but {s.contradicted_by}" for s in sigs)
        return GateVerdict(False, f"no hardware fault confirmed: {why}", tuple(sigs))
    return GateVerdict(False, "no hardware-fault signature: a Technical Issue", ())


def _signatures(ev: Evidence) -> Iterable[Signature]:
    problems = [f for f in ev.findings if f.problem]
    codes = {f.code for f in problems}
    health = _health(ev.findings)
    liveview_clear = (
        ev.liveview_clear if ev.liveview_clear is not None else liveview_clear_in(ev.findings)
    )
    counts_ok = ev.counts_normal if ev.counts_normal is not None else counts_normal_in(ev.findings)
    camera_missing = health.get("camera_present") is False or "hardware_fault" in codes
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
    if "overheating" in codes:
        temp = health.get("temperature_c")
        contra = "" if ev.ladder_exhausted else "not yet tried to cool it down with a restart"
        yield Signature("overheating", f"overheating ({temp} °C)", contra)
    if codes & _OFFLINE_CODES and ev.port is not None:
        if ev.port.get("link") and ev.port.get("power"):
            contra = "" if ev.ladder_exhausted else "the power-cycle has not been tried yet"
            yield Signature(
                "unreachable_with_link",
                "unreachable while its switch port has link and power",
                contra,
            )
    led = (ev.reports.get("led") or "").strip().lower()
    if led == "red":
        yield Signature("red_led", "a person on site reports a red LED")
    wrong = codes & _COUNT_CODES
    if wrong and ev.ladder_exhausted:
        what = ", ".join(sorted(wrong)).replace("_", " ")
        contra = "" if not liveview_clear or not counts_ok else "the counts look normal now"
        yield Signature(
            "counts_wrong_after_fixes", f"counts stay wrong ({what}) after every fix", contra
        )
    if ev.repeat_offender:
        yield Signature("repeat_offender", f"repeat offender: healed {ev.heals} times recently")


def _health(findings: Iterable[Finding]) -> Mapping[str, Any]:
    """The SSH readings from the device-health finding, when there is one."""
    for f in findings:
        if "camera_present" in f.evidence or "temperature_c" in f.evidence:
            return f.evidence
    return {}


def liveview_clear_in(findings: Iterable[Finding]) -> bool:
    """Whether the latest live-view judgement was "clear" (the camera delivers a good image)."""
    return any(f.status is Status.OK and f.code == "clear" for f in findings)


def counts_normal_in(findings: Iterable[Finding]) -> bool:
    """Whether a counts check said all is well and none reports wrong or missing counts."""
    found = list(findings)
    if any(f.problem and f.code in _COUNT_CODES | {"missing"} for f in found):
        return False
    return any(f.status is Status.OK and f.code in _COUNTS_OK for f in found)
