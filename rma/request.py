"""The RMA request's body: everything FootfallCam needs to approve a return without asking back.

FootfallCam diagnoses remotely before it approves a return (DESIGN.md §2). Each question it
would ask is answered here from what the agent already holds: which unit (serial, model and
firmware as the device reports them), where, since when, what went wrong and how often, every
remote fix tried and its result, the last good count, the device's own readings, and the
evidence that makes it hardware. What only a person on site can answer is listed for the store.
Pure: the agent gathers the facts, this module writes them down the same way every time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rma.gate import QUESTIONS_FOR_SITE, GateVerdict, port_words
from rma.ladder import TITLES, Attempt

_FACTS = (
    ("uptime_s", "uptime", "s"),
    ("temperature_c", "SoC temperature", " °C"),
    ("disk_used_pct", "disk used", " %"),
    ("reboots_24h", "boots in the last 24 h", ""),
    ("counting_service", "counting service", ""),
    ("camera_present", "camera present", ""),
)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    serial: str
    name: str
    site: str
    first_seen: datetime
    verdict: GateVerdict
    device: Mapping[str, Any] = field(default_factory=dict)  # model, firmware, reported serial
    readings: Mapping[str, Any] = field(default_factory=dict)  # the SSH health readings
    history: Sequence[tuple[datetime, str]] = ()  # earlier faults of this unit
    attempts: Sequence[Attempt] = ()
    last_good: tuple[datetime, int, int] | None = None  # slot start, in, out
    port: Mapping[str, Any] | None = None  # the switch port's facts (port_status_command)


def compose_request(f: RequestFacts) -> str:
    """The request as plain text, one section per question support would ask."""
    d = f.device
    lines = [
        f"RMA request for counter {f.serial} ({f.name}) at site {f.site}.",
        "",
        "Unit as the device reports it:",
        f"  serial: {d.get('serial') or f.serial}",
        f"  model: {d.get('model') or 'not reported'}",
        f"  firmware: {d.get('firmware') or 'not reported'}",
        f"First seen: {f.first_seen.isoformat(timespec='minutes')}",
        "",
        "Why it is hardware:",
        *[f"  - {s.summary}" for s in f.verdict.held],
    ]
    contradicted = [s for s in f.verdict.signatures if not s.holds]
    if contradicted:
        lines.append("Signatures ruled out by the rest of the evidence:")
        lines += [f"  - {s.summary}: {s.contradicted_by}" for s in contradicted]
    lines += ["", "Remote fixes tried (in order):"]
    lines += [
        f"  - {a.at.isoformat(timespec='minutes')} {TITLES[a.step]}: "
        f"{a.outcome.value.replace('_', ' ')} ({a.actor}){' — ' + a.detail if a.detail else ''}"
        for a in f.attempts
    ] or ["  - none could be tried"]
    lines += ["", "Fault history of this unit:"]
    lines += [f"  - {at.isoformat(timespec='minutes')} {text}" for at, text in f.history] or [
        "  - none before this fault"
    ]
    if f.last_good is not None:
        at, n_in, n_out = f.last_good
        lines.append(f"Last good count: {at.isoformat(timespec='minutes')} in {n_in}, out {n_out}")
    else:
        lines.append("Last good count: none held by the agent")
    facts = [
        f"  {label}: {f.readings[key]}{unit}"
        for key, label, unit in _FACTS
        if f.readings.get(key) is not None
    ]
    lines += ["", "Device readings (over SSH):", *(facts or ["  not available"])]
    if f.port is not None:
        said = f.port.get("error") or port_words(f.port)
        lines.append(f"Switch port (the store's switch, asked {f.port.get('at', '')}): {said}")
        if f.port.get("output"):
            lines.append(f"  the switch said: {f.port['output']}")
    lines += [
        "",
        "Questions for the store (only a person on site can answer):",
        *[f"  - {q}" for q in QUESTIONS_FOR_SITE],
        "",
        "Before the unit is returned the agent rescues its count data into the store's records "
        "and reports which slots, if any, could not be recovered.",
    ]
    return "\n".join(lines)
