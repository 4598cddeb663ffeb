"""Device health: the counter's clock, its body (over SSH), and the SSH host key it shows.

``counter.device.clock`` reads the clock offset the counter's HTTP API reveals (or, failing
that, the one measured over SSH). Counts are filed in 1- to 15-minute slots by the device's own
clock, so skew moves people into the wrong slot: beyond a minute (warn) the hourly figures
start to disagree with the door; beyond five minutes (fail) whole slots shift and compare
wrongly with peers and baselines, and a Pi with no RTC that far off has lost NTP for good.
Network delay over the local API is well under a second, so neither threshold is noise.

``counter.device.health`` judges the SSH probe's readings: disk, temperature (a Raspberry Pi
throttles at 80–85 °C), camera present (missing is a ``hardware_fault``, which the ticket
composer turns into an RMA request), counting service, reboots, last counted event while the
store is open, and kernel errors about storage or power. Incidents key on (check, counter), so
it returns one finding: the worst problem decides status and code, and ``problems`` lists all.

``counter.ssh.hostkey`` makes a changed host key loud: the agent refused it, and only a person
who knows the device was replaced may pin the new one with ``ffc-agent enroll SERIAL``.

Without SSH configured the SSH-based checks ``skip`` with that reason; the runner tells them
through ``extra["ssh_configured"]`` and the latest "ssh" observation.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field

from diagnostics.checks.base import (
    HARDWARE_FAULT,
    LED_QUESTION,
    POWER_CYCLE_QUESTION,
    Check,
    CounterEvidence,
    Family,
    TicketKind,
)
from diagnostics.model import Finding, Observation, Status, as_datetime

SSH_NOT_CONFIGURED = "SSH is not configured for this counter: deep device checks are off"
_KERNEL_WORRY = re.compile(r"i/o error|mmc|voltage|ext4-fs error", re.I)  # storage or power
_READINGS = (
    "uptime_s",
    "reboots_24h",
    "disk_used_pct",
    "temperature_c",
    "camera_present",
    "counting_service",
    "last_event_at",
    "kernel_errors",
    "device_clock_offset_s",
)
_RUNNING = ("active", "reloading", "activating")


def _ssh(check: Check, ev: CounterEvidence) -> tuple[Observation | None, list[Finding]]:
    """The SSH observation, or the one ``skip`` finding that says why there is none."""
    obs = ev.observations.get("ssh")
    if not ev.extra.get("ssh_configured", obs is not None):
        return None, [check.finding(ev, Status.SKIP, "ssh_not_configured", SSH_NOT_CONFIGURED)]
    if obs is None:
        return None, [check.finding(ev, Status.SKIP, "not_probed", "not probed over SSH yet")]
    return obs, []


class _ClockOptions(Check.Options):
    warn_s: float = Field(60.0, gt=0, description="seconds off the gateway's clock that warn")
    fail_s: float = Field(300.0, gt=0, description="seconds off that are critical")


class _Device(Check):
    """What the device checks share: their family and how their ticket reads."""

    family = Family.DEVICE
    ticket = TicketKind.TECHNICAL
    priority = 40
    ticket_subject = "{who} device fault ({code}) {since}"
    ticket_what = "{who} reports a device fault. {said}"


class DeviceClock(_Device):
    id: ClassVar[str] = "counter.device.clock"
    title: ClassVar[str] = "Counter clock in step with the gateway"
    ticket_ask = (
        "Please set the counter's time source (NTP) right and move the counts it filed in the "
        "wrong time slots back where they belong."
    )
    ticket_evidence = ("offset_s", "source")
    remediation: ClassVar[str] = (
        "Check the counter's NTP settings and that it can reach its time server; until its "
        "clock is right, its counts land in the wrong time slots."
    )

    class Options(_ClockOptions):
        pass

    options: _ClockOptions

    def run(self, evidence: CounterEvidence) -> list[Finding]:
        for probe, key in (("api", "clock_offset_s"), ("ssh", "device_clock_offset_s")):
            obs = evidence.observations.get(probe)
            if obs is not None and obs.ok and obs.data.get(key) is not None:
                offset, source = float(obs.data[key]), probe
                break
        else:
            reason = "the counter did not report its time (API or SSH)"
            return [self.finding(evidence, Status.SKIP, "no_clock", reason)]
        o, size = self.options, abs(offset)
        status = Status.FAIL if size > o.fail_s else Status.WARN if size > o.warn_s else Status.OK
        ahead = "ahead of" if offset > 0 else "behind"
        summary = (
            f"counter clock is {size:.0f} s {ahead} the gateway"
            if size >= 0.5
            else "counter clock in step with the gateway"
        )
        code = "clock_ok" if status is Status.OK else "clock_skew"
        details = {"offset_s": offset, "source": source, "warn_s": o.warn_s, "fail_s": o.fail_s}
        return [self.finding(evidence, status, code, summary, **details)]


class _HealthOptions(Check.Options):
    disk_warn_pct: float = Field(90.0, gt=0, le=100, description="disk use (%) that warns")
    disk_fail_pct: float = Field(97.0, gt=0, le=100, description="disk use (%) that is critical")
    temp_warn_c: float = Field(75.0, description="SoC temperature (°C) that warns")
    temp_fail_c: float = Field(82.0, description="SoC temperature (°C) that is critical")
    reboots_warn: int = Field(
        3, ge=2, description="boots in 24 h (the current one included) that warn"
    )
    stale_event_open_h: float = Field(
        3.0, gt=0, description="hours of opening time without one counted event that warn"
    )
    max_age_h: float = Field(6.0, gt=0, description="older SSH readings are not judged")


class DeviceHealth(_Device):
    id: ClassVar[str] = "counter.device.health"
    title: ClassVar[str] = "Counter hardware and software healthy (over SSH)"
    # a missing camera is the one fault no remote fix can help: a replacement unit, first
    ticket_ask = (
        "Please restart the counter's counting service (or fix what is listed) remotely and "
        "recover the counts it missed meanwhile."
    )
    store_questions = (LED_QUESTION, POWER_CYCLE_QUESTION)
    ticket_evidence = (
        "counting_service",
        "camera_present",
        "disk_used_pct",
        "temperature_c",
        "reboots_24h",
        "uptime_s",
        "last_event_at",
        "measured_at",
    )
    remediation: ClassVar[str] = (
        "See the listed problems: free disk space, improve ventilation, check the power supply "
        "and SD card, restart the counting service; a missing camera needs a replacement unit."
    )

    class Options(_HealthOptions):
        pass

    options: _HealthOptions

    def run(self, evidence: CounterEvidence) -> list[Finding]:
        obs, skipped = _ssh(self, evidence)
        if obs is None:
            return skipped
        if not obs.ok:
            return [
                self.finding(
                    evidence,
                    Status.SKIP,
                    "ssh_failed",
                    f"no SSH readings: {obs.error}",
                    error_code=str(obs.error_code),
                )
            ]
        if evidence.now - obs.at > timedelta(hours=self.options.max_age_h):
            summary = f"SSH readings from {obs.at.isoformat()} are too old to judge"
            return [self.finding(evidence, Status.SKIP, "stale", summary)]
        readings = {k: obs.data.get(k) for k in _READINGS}
        api = evidence.observations.get("api")
        device = {k: api.data[k] for k in ("model", "firmware") if api and api.data.get(k)}
        problems = self._problems(readings, evidence)
        details: dict[str, Any] = {
            **readings,
            **device,
            "problems": problems,
            "unknown": [k for k, v in readings.items() if v is None],
            "notes": obs.data.get("notes", []),
            "measured_at": obs.at.isoformat(),
        }
        if not problems:
            return [
                self.finding(evidence, Status.OK, "healthy", "no device problem found", **details)
            ]
        worst = Status.FAIL if any(p["status"] == "fail" for p in problems) else Status.WARN
        code = next(p["code"] for p in problems if p["status"] == worst)
        summary = "; ".join(p["summary"] for p in problems)
        return [self.finding(evidence, worst, code, summary, **details)]

    def _problems(self, d: dict[str, Any], ev: CounterEvidence) -> list[dict[str, str]]:
        """Every problem in the readings, in order of what support must hear first."""
        o, out = self.options, []

        def add(failed: bool, codes: tuple[str, str], summary: str) -> None:
            status, code = ("fail", codes[0]) if failed else ("warn", codes[1])
            out.append({"status": status, "code": code, "summary": summary})

        if d["camera_present"] is False:
            add(True, (HARDWARE_FAULT, ""), "camera not detected (/dev/video0 missing)")
        if d["counting_service"] is not None and d["counting_service"] not in _RUNNING:
            add(True, ("counting_service_down", ""), f"counting service is {d['counting_service']}")
        if (disk := d["disk_used_pct"]) is not None and disk >= o.disk_warn_pct:
            add(disk >= o.disk_fail_pct, ("disk_full", "disk_filling"), f"disk {disk:g}% used")
        if (temp := d["temperature_c"]) is not None and temp >= o.temp_warn_c:
            add(temp >= o.temp_fail_c, ("overheating", "running_hot"), f"SoC at {temp:g} °C")
        if (boots := d["reboots_24h"]) is not None and boots >= o.reboots_warn:
            add(False, ("", "frequent_reboots"), f"{boots} boots in the last 24 h")
        last = as_datetime(d["last_event_at"])
        if last is not None and (hours := _open_hours(ev, last)) >= o.stale_event_open_h:
            add(
                False,
                ("", "no_recent_events"),
                f"no counted event for {hours:.1f} h of "
                f"opening time (last at {last.isoformat(timespec='minutes')})",
            )
        worrying = [line for line in d["kernel_errors"] or [] if _KERNEL_WORRY.search(line)]
        if worrying:
            add(False, ("", "kernel_errors"), "kernel reports: " + " | ".join(worrying[:3]))
        return out


def _open_hours(ev: CounterEvidence, since: datetime) -> float:
    """Hours the store was open from ``since`` to now, in 15-minute steps, at most a week."""
    t, total = max(since, ev.now - timedelta(days=7)), 0.0
    while t < ev.now:
        total += ev.calendar.open_fraction(t, 15) * 0.25
        t += timedelta(minutes=15)
    return total


class SshHostKey(_Device):
    id: ClassVar[str] = "counter.ssh.hostkey"
    title: ClassVar[str] = "Counter's SSH host key matches the pinned key"
    ticket_subject = "{who} SSH {code} {since}"  # "SSH host key changed"
    ticket_what = (
        "{who} shows an SSH host key the agent does not trust: a swapped device, or worse. {said}"
    )
    ticket_ask = (
        "Please tell us whether this counter was replaced or re-imaged; if it was not, treat "
        "it as a security incident."
    )
    store_questions = ("Was the counter replaced, re-imaged or sent for repair recently?",)
    ticket_evidence = ("key_type", "offered", "pinned")
    remediation: ClassVar[str] = (
        "If the counter was replaced on purpose, run `ffc-agent enroll SERIAL` and compare the "
        "fingerprint with the device; otherwise treat it as a security incident."
    )

    def run(self, evidence: CounterEvidence) -> list[Finding]:
        obs, skipped = _ssh(self, evidence)
        if obs is None:
            return skipped
        d, code, serial = obs.data, str(obs.error_code or ""), evidence.serial
        keys = {
            "offered": d.get("offered_host_key") or d.get("host_key"),
            "pinned": d.get("pinned_host_key"),
            "key_type": d.get("host_key_type"),
        }
        if code == "host_key_mismatch":
            summary = (
                "the counter's SSH host key changed — a swapped device, or worse; not "
                "accepted; if the device was replaced on purpose, run "
                f"`ffc-agent enroll {serial}`"
            )
            return [self.finding(evidence, Status.FAIL, "host_key_changed", summary, **keys)]
        if code == "host_key_unknown":
            summary = f"the counter's SSH host key is not enrolled: run `ffc-agent enroll {serial}`"
            return [self.finding(evidence, Status.WARN, "host_key_unknown", summary, **keys)]
        if obs.ok:
            return [self.finding(evidence, Status.OK, "host_key_ok", "host key matches", **keys)]
        summary = f"host key not checked: {obs.error}"
        return [self.finding(evidence, Status.SKIP, "ssh_failed", summary, error_code=code)]
