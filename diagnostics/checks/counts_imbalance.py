"""IN/OUT imbalance: everyone who comes in goes out, so a day's IN and OUT should match.

A counter whose counting line sits too close to the door, or whose directions are mixed up,
counts one way more than the other; occupancy and conversion figures then drift all day. Per
day (per counter, and for the whole site) the imbalance |in − out| / (in + out) is warned
above 5 % and critical above 10 %, but only over enough traffic that chance cannot explain it:
with n crossings split at random, the imbalance has a standard deviation of 1/√n, so at least
(3 / 5 %)² = 3,600 crossings are needed before 5 % is three standard deviations. Quieter
counters are judged over several days pooled. A door whose imbalance is its usual one while
its group balances (people come in at the front and leave by the side) is flow between
doors, not a fault; a change in a door's imbalance is raised even when its group balances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from diagnostics.checks.base import SiteEvidence
from diagnostics.checks.counts import CountCheck, local, site_columns, site_model, span
from diagnostics.model import Finding, Status
from diagnostics.series import Balance, CountModel


class _Options(CountCheck.Options):
    lookback_days: int = Field(8, ge=1)
    warn_ratio: float = Field(0.05, gt=0, lt=1)
    fail_ratio: float = Field(0.10, gt=0, lt=1)
    noise_sigmas: float = Field(3.0, gt=0)  # the warn level is this many binomial σ
    max_days: int = Field(7, ge=1)  # pool at most this many days to reach enough traffic

    @property
    def min_total(self) -> float:
        return (self.noise_sigmas / self.warn_ratio) ** 2


class _Balance(CountCheck):
    options: _Options

    def balances(self, model: CountModel, rows: list[int], lo: int) -> list[Balance]:
        opts = self.options
        return model.balances(rows, min_total=opts.min_total, lo=lo, max_days=opts.max_days)

    def status(self, b: Balance) -> Status:
        if b.imbalance > self.options.fail_ratio:
            return Status.FAIL
        return Status.WARN if b.imbalance > self.options.warn_ratio else Status.OK

    def report(
        self,
        model: CountModel,
        evidence: Any,
        balances: Sequence[Balance],
        judge: Callable[[Balance], Finding],
    ) -> list[Finding]:
        if not balances:
            return [
                self.finding(
                    evidence,
                    Status.SKIP,
                    "too_little",
                    "not enough complete days with traffic to judge IN/OUT",
                )
            ]
        if self.options.scope != "all":
            return [judge(balances[-1])]
        problems = [f for b in balances if (f := judge(b)).problem]
        return self.settle(problems, evidence, "balanced", "IN and OUT balance")

    def words(self, model: CountModel, b: Balance) -> tuple[dict[str, Any], str]:
        start, end = span(model, b.first, b.last)
        days = f"{b.days} days from " if b.days > 1 else ""
        details = {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "count_in": round(b.count_in),
            "count_out": round(b.count_out),
            "imbalance": round(b.imbalance, 4),
            "days": b.days,
            # every visitor who comes in leaves: OUT is expected to match IN
            "expected": round(b.count_in),
            "observed": round(b.count_out),
        }
        return details, (
            f"{days}{local(start, model.grid.tz)}: IN {b.count_in:.0f}, "
            f"OUT {b.count_out:.0f} ({b.imbalance:.1%} apart)"
        )


class CountImbalance(_Balance):
    id: ClassVar[str] = "counter.counts.imbalance"
    title: ClassVar[str] = "Counter's IN and OUT balance over a day"
    applies_to = "counter"
    remediation: ClassVar[str] = (
        "Check the counter's direction settings and counting line in its configuration; if "
        "IN and OUT stay apart, raise a data-accuracy ticket for re-tuning."
    )

    class Options(_Options):
        pass

    def judge(self, model: CountModel, evidence: Any) -> list[Finding]:
        i = model.index(evidence.serial)
        group = [i, *model.peers[i].tolist()]
        everything = self.balances(model, [i], 0)
        signed = [(b.count_in - b.count_out) / (b.count_in + b.count_out) for b in everything]
        usual = float(np.median(signed)) if len(signed) >= 5 else None

        def judge(b: Balance) -> Finding:
            details, text = self.words(model, b)
            status = self.status(b)
            if status is not Status.OK and len(group) > 1:
                both = _over(model, group, b)
                now = (b.count_in - b.count_out) / (b.count_in + b.count_out)
                habitual = usual is None or abs(now - usual) <= self.options.warn_ratio / 2
                if both is not None and both.imbalance <= self.options.warn_ratio and habitual:
                    details["group_imbalance"] = round(both.imbalance, 4)
                    return self.finding(
                        evidence,
                        Status.OK,
                        "flow_between_doors",
                        f"{text}; as usual for this door, and its group balances "
                        f"({both.imbalance:.1%}): people leave by another door",
                        **details,
                    )
            code = "imbalance" if status is not Status.OK else "balanced"
            return self.finding(evidence, status, code, text, **details)

        lo = self.low(model, evidence)
        return self.report(model, evidence, [b for b in everything if b.last >= lo], judge)


class SiteImbalance(_Balance):
    id: ClassVar[str] = "site.counts.imbalance"
    title: ClassVar[str] = "The site's IN and OUT balance over a day"
    applies_to = "site"
    remediation: ClassVar[str] = (
        "The site as a whole counts more in one direction: look for an entrance without a "
        "counter, or a counter counting the wrong way, then raise a data-accuracy ticket."
    )

    class Options(_Options):
        pass

    def run(self, evidence: SiteEvidence) -> list[Finding]:
        if not any(len(c) for c in site_columns(evidence).values()):
            return [self.finding(evidence, Status.SKIP, "no_data", "no count data received yet")]
        return self.judge(site_model(evidence), evidence)

    def judge(self, model: CountModel, evidence: Any) -> list[Finding]:
        rows = [i for i in range(len(model.arrays.serials)) if model.present[i].any()]

        def judge(b: Balance) -> Finding:
            details, text = self.words(model, b)
            status = self.status(b)
            code = "imbalance" if status is not Status.OK else "balanced"
            return self.finding(
                evidence,
                status,
                code,
                f"site {text}",
                **details,
                counters=[model.arrays.serials[i] for i in rows],
            )

        return self.report(
            model, evidence, self.balances(model, rows, self.low(model, evidence)), judge
        )


def _over(model: CountModel, rows: list[int], b: Balance) -> Balance | None:
    """The same days' balance over several counters, if they all sent every slot."""
    sl = slice(b.first, b.last + 1)
    if not model.present[rows, sl].all():
        return None
    return Balance(
        b.first,
        b.last,
        float(np.sum(model.arrays.cin[rows, sl])),
        float(np.sum(model.arrays.cout[rows, sl])),
        b.days,
    )
