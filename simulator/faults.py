"""Scripted device faults: what can go wrong with a counter, from when, and what it does.

Every fault the agent must tell apart from a quiet store is here: the device gone (``offline``),
hung, slow or talking garbage; counting stopped, under- or over-counting, IN/OUT imbalance; a
live view that is covered, dark, blurred, moved or obstructed; and a device that lost its
uplink but kept counting (``held_back``), whose data arrives late when it comes back.

A fault has a ``since`` (simulated time) and, once cleared, an ``until``. Connection and live-view
faults act while active; counting faults and data gaps stay in the record after clearing,
because counts the device got wrong while faulty stay wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

CONNECTION_KINDS = frozenset({"offline", "hung", "slow", "garbage", "held_back"})
COUNTING_KINDS = frozenset({"zeros", "under_count", "over_count", "imbalance"})
LIVEVIEW_KINDS = frozenset({"covered", "dark", "blurred", "moved", "obstructed"})
FAULT_KINDS = CONNECTION_KINDS | COUNTING_KINDS | LIVEVIEW_KINDS

# kind -> parameter -> (default, lowest, highest); the first parameter is the "primary" one that
# the CLI's SERIAL:KIND:VALUE form sets.
PARAMS: dict[str, dict[str, tuple[Any, float, float]]] = {
    "offline": {},
    "hung": {},
    "slow": {"delay": (3.0, 0.0, 600.0)},
    "garbage": {"style": ("binary", 0, 0)},
    "held_back": {"window_days": (7.0, 0.0, 365.0)},
    "zeros": {},
    "under_count": {"factor": (0.6, 0.0, 0.99)},
    "over_count": {"factor": (1.5, 1.01, 10.0)},
    "imbalance": {"factor": (0.8, 0.0, 10.0)},
    "covered": {"fraction": (0.85, 0.5, 1.0)},
    "dark": {"level": (0.06, 0.0, 0.5)},
    "blurred": {"radius": (8.0, 2.0, 50.0)},
    "moved": {"shift": (0.15, 0.0, 0.2), "angle": (12.0, -30.0, 30.0)},
    "obstructed": {"fraction": (0.5, 0.2, 0.8)},
}
GARBAGE_STYLES = ("binary", "html", "truncated")


@dataclass
class Fault:
    kind: str
    since: datetime
    params: Mapping[str, Any] = field(default_factory=dict)
    until: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.since <= now and (self.until is None or now < self.until)

    def mask(self, epoch: np.ndarray) -> np.ndarray:
        """Which minutes (unix seconds of their start) fall inside the fault's window."""
        inside = epoch >= self.since.timestamp()
        if self.until is not None:
            inside &= epoch < self.until.timestamp()
        return inside


def make_fault(kind: str, since: datetime, params: Mapping[str, Any]) -> Fault:
    """Validate a fault request; ValueError names the bad kind or parameter."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
    if since.tzinfo is None:
        raise ValueError("fault 'since' must be timezone-aware")
    spec = PARAMS[kind]
    unknown = set(params) - set(spec)
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise ValueError(f"fault {kind}: unknown parameter {min(unknown)!r}; allowed: {allowed}")
    values: dict[str, Any] = {}
    for name, (default, low, high) in spec.items():
        value = params.get(name, default)
        if name == "style":
            if value not in GARBAGE_STYLES:
                raise ValueError(f"fault garbage: style must be one of {GARBAGE_STYLES}")
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"fault {kind}: {name} must be a number, got {value!r}") from None
            if not low <= value <= high:
                raise ValueError(f"fault {kind}: {name} must be in [{low}, {high}], got {value}")
        values[name] = value
    return Fault(kind, since, values)


class FaultBook:
    """One counter's faults, past and present. Thread-safe: servers read while tests write."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault, now: datetime) -> None:
        """Add a fault; an open fault of the same kind ends where the new one starts."""
        with self._lock:
            self._end(fault.kind, min(now, fault.since))
            self._faults.append(fault)

    def clear(self, kind: str | None, now: datetime) -> list[str]:
        """End open faults (of one kind, or all) now; returns the kinds that were ended."""
        with self._lock:
            kinds = {f.kind for f in self._faults if f.until is None and kind in (None, f.kind)}
            for k in kinds:
                self._end(k, now)
            return sorted(kinds)

    def _end(self, kind: str, at: datetime) -> None:
        for fault in list(self._faults):
            if fault.kind == kind and fault.until is None:
                if fault.since < at:
                    fault.until = at
                else:  # cleared before it began: it never happened
                    self._faults.remove(fault)

    def active(self, kind: str, now: datetime) -> Fault | None:
        with self._lock:
            for fault in reversed(self._faults):
                if fault.kind == kind and fault.active(now):
                    return replace(fault)
        return None

    def history(self) -> list[Fault]:
        with self._lock:
            return [replace(f) for f in self._faults]


def apply_counting(
    faults: list[Fault],
    epoch: np.ndarray,
    ins: np.ndarray,
    outs: np.ndarray,
    u_in: np.ndarray,
    u_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The counts the device recorded, given the true traffic and its counting faults."""
    ins, outs = ins.astype(np.int64), outs.astype(np.int64)
    for fault in faults:
        if fault.kind in ("under_count", "over_count", "imbalance"):
            mask = fault.mask(epoch)
            factor = float(fault.params["factor"])
            scaled_out = np.floor(outs * factor + u_out).astype(np.int64)
            outs = np.where(mask, scaled_out, outs)
            if fault.kind != "imbalance":
                ins = np.where(mask, np.floor(ins * factor + u_in).astype(np.int64), ins)
    for fault in faults:
        if fault.kind == "zeros":
            mask = fault.mask(epoch)
            ins = np.where(mask, 0, ins)
            outs = np.where(mask, 0, outs)
    return ins, outs


def held_minutes(faults: list[Fault], epoch: np.ndarray, now: datetime) -> np.ndarray:
    """Minutes the device does not hold: powered off (``offline``) or lost from a late upload.

    An ``offline`` device is powered off or its counting service is down, so nothing is
    recorded. A ``held_back`` device keeps counting; when it comes back (or, while still away,
    as if it came back now) slots older than ``window_days`` at that moment are lost.
    """
    missing = np.zeros(epoch.shape, dtype=bool)
    for fault in faults:
        if fault.kind == "offline":
            missing |= fault.mask(epoch)
        elif fault.kind == "held_back":
            upload = fault.until or now
            cutoff = upload - timedelta(days=float(fault.params["window_days"]))
            missing |= fault.mask(epoch) & (epoch < cutoff.timestamp())
    return missing
