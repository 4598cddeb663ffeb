"""Flapping: a counter that goes up and down is one intermittent problem, not twenty incidents.

The measure is Nagios's: over the last 21 checks, the share of transitions where the state
changed, with recent transitions weighted more (0.8 for the oldest up to 1.2 for the newest).
A problem starts flapping at 20 % and stops at 5 %; the gap between the two keeps it from
flapping in and out of "flapping".
"""

from __future__ import annotations

from collections.abc import Sequence

WINDOW = 21
START_PERCENT = 20.0
STOP_PERCENT = 5.0


def state_change_percent(states: Sequence[bool]) -> float:
    """Weighted percent of state changes over ``states`` (oldest first, True = problem)."""
    states = list(states)[-WINDOW:]
    if not states:
        return 0.0
    # a short history is padded with its oldest state: the unknown past counts as steady, as
    # Nagios starts a new check's history, so two early changes are not "flapping"
    states = [states[0]] * (WINDOW - len(states)) + states
    n = len(states)
    total = 0.0
    for t in range(1, n):
        weight = 0.8 + 0.4 * (t - 1) / (n - 2)
        if states[t] != states[t - 1]:
            total += weight
    return 100.0 * total / (n - 1)


def is_flapping(states: Sequence[bool], *, was_flapping: bool) -> bool:
    """Hysteresis: start at ``START_PERCENT``, stop only below ``STOP_PERCENT``."""
    percent = state_change_percent(states)
    return percent >= STOP_PERCENT if was_flapping else percent >= START_PERCENT
