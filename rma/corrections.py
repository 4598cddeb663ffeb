"""The estimate support needs to correct a retailer's reports: one CSV row per slot.

A data-accuracy ticket is only half useful without it: FootfallCam can replace a missing or
wrong interval in the portal when it is told what the counter should have counted. Each row
gives what arrived (blank when the slot never arrived: missing is not zero), what was
expected with its band, the IN/OUT split of the estimate, and the correction to apply.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from diagnostics.estimate import SlotEstimate

HEADER = (
    "timestamp",
    "counter",
    "observed_in",
    "observed_out",
    "missing",
    "expected_total",
    "expected_low",
    "expected_high",
    "estimated_in",
    "estimated_out",
    "correction_total",
)


def _num(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def corrections_csv(rows: Sequence[SlotEstimate], tz: ZoneInfo) -> bytes:
    """The rows as CSV, timestamps in the site's local time with their offset."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(HEADER)
    for r in rows:
        out.writerow(
            (
                r.start.astimezone(tz).isoformat(),
                r.counter,
                _num(r.count_in),
                _num(r.count_out),
                "yes" if r.missing else "no",
                _num(r.expected),
                _num(r.low),
                _num(r.high),
                _num(r.expected_in),
                _num(r.expected_out),
                _num(r.correction),
            )
        )
    return buf.getvalue().encode()
