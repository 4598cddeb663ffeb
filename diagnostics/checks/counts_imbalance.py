"""IN/OUT imbalance: a door's (or the whole site's) IN share moved away from its usual one.

Everyone who comes in goes out, so over a day the site's IN and OUT match, apart from staff
doors and entrances without a counter; that balance, all entrances together, is the primary
signal. One door's split is rarely 50/50 (people come in at the front and leave by the side),
so a door is judged against *its own* usual split, never against 50/50: a door that is always
55/45 is normal. A counter whose counting line moved, or whose directions got mixed up,
shows as a change. Each whole day's IN share is tested against the usual share with an
overdispersed binomial (``diagnostics.share``: the volume of the day, the door's own
day-to-day spread, the uncertainty of the usual share), sequentially: a finding needs the
evidence of at least ``min_days`` days that the share moved by ``tolerance`` one way, at a
false-alarm rate of one per door and direction in ``false_alarm_days``: quiet days cannot
reach it on noise, and one odd day is not a fault. The finding says what the
usual split is, what it is now, over which days, and how sure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from diagnostics.checks.base import SiteEvidence
from diagnostics.checks.counts import CountCheck, local, site_columns, site_model, span
from diagnostics.checks.counts_level import CountLevel
from diagnostics.model import Finding, Status
from diagnostics.series import CountModel, ModelCache
from diagnostics.share import Episode, Judged, ShareDay, episodes, judge_days


class _Options(CountCheck.Options):
    lookback_days: int = Field(8, ge=1, description="days of history the check looks at")
    confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        description="two-sided confidence that a day's IN share is not the usual one",
    )
    min_days: int = Field(
        2, ge=1, description="consecutive significant days (one direction) before it is raised"
    )
    warn_ratio: float = Field(
        0.025,
        gt=0,
        lt=1,
        description="least move of (in − out)/(in + out) from the usual one worth raising "
        "(0.025: a 5 % count error in one direction)",
    )
    fail_ratio: float = Field(
        0.10, gt=0, lt=1, description="a move of (in − out)/(in + out) above this is critical"
    )
    history_days: int = Field(
        28, ge=3, description="days of the door's own history that say what its usual split is"
    )
    min_history_days: int = Field(
        5, ge=2, description="whole days of history needed before a day is judged"
    )
    false_alarm_days: float = Field(
        730.0,
        ge=2,
        description="the sequential test's threshold: at most one false alarm per door and "
        "direction in this many days (Wald's bound)",
    )


def one_direction_factors(usual: float, share: float) -> dict[str, float]:
    """What a move of the IN share from ``usual`` to ``share`` does to the counter's total,
    if one direction alone is counted wrong: ``under_count`` the total's factor when the
    direction now short was lost, ``over_count`` when the other one was counted in excess.

    A door usually 50 % IN whose OUT is counted 20 % short is now 55.6 % IN, and its total
    is 0.9× its usual: that is one fault, seen by the level check as well.
    """
    p0, p = min(max(usual, 0.01), 0.99), min(max(share, 0.01), 0.99)
    odds = (p / (1 - p)) / (p0 / (1 - p0))  # IN's factor over OUT's
    if odds >= 1:  # OUT lost by 1/odds, or IN gained by odds
        return {"under_count": p0 + (1 - p0) / odds, "over_count": p0 * odds + (1 - p0)}
    return {"under_count": p0 * odds + (1 - p0), "over_count": p0 + (1 - p0) / odds}


def explains_level(imbalance: Mapping[str, Any], level: Mapping[str, Any], code: str) -> bool:
    """Does a counter's IN/OUT imbalance (its finding's evidence) explain its under- or
    over-count (``code``, evidence with ``factor``)? Yes when the level moved the way one
    direction counted wrong moves it, and by no more than twice as far (on the log scale,
    with 0.05 of slack for the two checks' different spans): a counter counting 40 % fewer
    both ways that also lost some OUT stays an under-count of its own.
    """
    usual, share = imbalance.get("usual_share_in"), imbalance.get("share_in")
    factor = level.get("factor")
    if usual is None or share is None or factor is None or factor <= 0:
        return False
    implied = one_direction_factors(float(usual), float(share)).get(code)
    if implied is None or (factor < 1) != (implied < 1):
        return False
    return abs(math.log(factor)) <= 2 * abs(math.log(implied)) + 0.05


class _Balance(CountCheck):
    options: _Options

    @staticmethod
    def share_days(
        model: CountModel, rows: list[int], within: tuple[int, int] | None = None
    ) -> list[ShareDay]:
        """The whole days of ``rows`` together, not judged yet; only those from local day
        ``within[0]`` to ``within[1]`` (ordinals) when given."""
        if model.grid.n == 0 or not rows:
            return []
        whole, first, end, day_in, day_out = model.whole_days(rows)
        day = model.grid.day[first]
        if within is not None:
            whole &= (day >= within[0]) & (day <= within[1])
        return [
            ShareDay(d, a, b - 1, c_in, c_out)
            for d, a, b, c_in, c_out in zip(
                day[whole].tolist(),
                first[whole].tolist(),
                end[whole].tolist(),
                day_in[whole].tolist(),
                day_out[whole].tolist(),
                strict=True,
            )
        ]

    def judge_share(
        self,
        days: list[ShareDay],
        *,
        paired: bool = False,
        tolerance: float = 0.0,
        kept: tuple[int, float] | None = None,
    ) -> tuple[list[ShareDay], dict[int, float]]:
        o = self.options
        return judge_days(
            days,
            confidence=o.confidence,
            tolerance=tolerance or o.warn_ratio,
            history_days=o.history_days,
            min_history=o.min_history_days,
            min_days=o.min_days,
            false_alarm_days=o.false_alarm_days,
            paired=paired,
            kept=kept,
        )

    def judged(
        self,
        model: CountModel,
        rows: list[int],
        *,
        paired: bool = False,
        tolerance: float = 0.0,
        cache: ModelCache | None = None,
        kept: tuple[int, float] | None = None,
    ) -> tuple[list[Episode], ShareDay | None]:
        """Every lasting episode over the whole days of ``rows`` together, and the last day.
        With ``cache``, the judgement of the same days is kept between cycles (it changes
        only when a day ends). ``kept``: the usual share of an open incident (``judge_days``)."""
        o = self.options
        days = self.share_days(model, rows)

        def judge() -> tuple[list[ShareDay], dict[int, float]]:
            return self.judge_share(days, paired=paired, tolerance=tolerance, kept=kept)

        if cache is None:
            judged, taus = judge()
        else:
            who = (self.id, tuple(model.arrays.serials[i] for i in rows))
            inputs = (Judged.key(days), paired, tolerance, self.options, kept)
            packed = cache.days.get(who, inputs, lambda: Judged.pack(*judge()))
            judged, taus = packed.unpack(days)
        # sustained, and sure: the move over its days is itself significant at the level
        found = [
            e
            for e in episodes(judged, taus)
            if len(e.days) >= o.min_days and e.p_value <= 1 - o.confidence
        ]
        return found, (judged[-1] if judged else None)

    def report(
        self,
        model: CountModel,
        evidence: Any,
        rows: list[int],
        *,
        paired: bool = False,
        tolerance: float = 0.0,
        kept: tuple[int, float] | None = None,
        **extra: Any,
    ) -> list[Finding]:
        cache = getattr(evidence, "models", None)
        found, last = self.judged(
            model, rows, paired=paired, tolerance=tolerance, cache=cache, kept=kept
        )
        lo = self.low(model, evidence)
        if last is None or last.last < lo or last.usual is None:
            return [
                self.finding(
                    evidence,
                    Status.SKIP,
                    "too_little",
                    "not enough complete days with traffic to know the usual IN/OUT split",
                )
            ]
        if self.options.scope == "all":
            found = [e for e in found if e.days[-1].last >= lo]
        else:
            found = [e for e in found if e.days[-1] is last]
        blamed = self.blame(model, rows, found)
        problems = [
            self.episode(model, evidence, e, **extra, **who)
            for e, who in zip(found, blamed, strict=True)
        ]
        usual = f"IN {last.usual:.1%} / OUT {1 - last.usual:.1%}"
        said = f"the IN/OUT split is as usual ({usual}; last whole day IN {last.share:.1%})"
        unusual = last.unusual and not last.significant
        if unusual and self.options.scope != "all":
            # one unusual day is not a fault yet: said, and raised only if it lasts
            said = (
                f"the last whole day's IN share {last.share:.1%} is unusual (usually "
                f"{last.usual:.1%}); raised if it lasts {self.options.min_days} days"
            )
        return self.settle(
            problems,
            evidence,
            "unusual_day" if unusual else "balanced",
            said,
            usual_share_in=round(last.usual, 4),
            share_in=round(last.share, 4),
        )

    def blame(
        self, model: CountModel, rows: list[int], found: list[Episode]
    ) -> list[dict[str, Any]]:
        """Per lasting move, evidence that says which counter it is about, beyond its
        subject."""
        return [{} for _ in found]

    def episode(self, model: CountModel, evidence: Any, e: Episode, **extra: Any) -> Finding:
        o = self.options
        first, last = e.days[0], e.days[-1]
        start, end = span(model, first.first, last.last)
        # a held door's move began when its incident's did, whatever the window still shows:
        # the runner holds it since then (``held_since``, as the level check's)
        since = extra.pop("held_since", None)
        if since is not None:
            extra["held_since"] = min(since, start).isoformat()
        raised = next((d for d in e.days if d.alarm), e.days[min(o.min_days, len(e.days)) - 1])
        detected = span(model, first.first, raised.last)[1]
        n = len(e.days)
        when = f"{n} days from {local(start, model.grid.tz)}"
        sure = "p < 0.001" if e.p_value < 0.001 else f"p = {e.p_value:.3f}"
        status = Status.FAIL if abs(e.shift) > o.fail_ratio else Status.WARN
        suspect = extra.get("suspect")
        who = (
            f"; most likely {suspect}, whose own split moved the same way "
            f"(probability {extra.get('suspect_probability', 0):.0%})"
            if suspect
            else ""
        )
        return self.finding(
            evidence,
            status,
            "imbalance",
            f"IN share {e.share:.1%} over {when} (IN {e.count_in:.0f}, OUT {e.count_out:.0f}); "
            f"usually {e.usual:.1%}: the imbalance moved {abs(e.shift):.1%} ({sure}, sustained "
            f"over {n} days){who}",
            start=start.isoformat(),
            end=end.isoformat(),
            detected_at=detected.isoformat(),
            days=n,
            count_in=round(e.count_in),
            count_out=round(e.count_out),
            usual_share_in=round(e.usual, 4),
            share_in=round(e.share, 4),
            daily_share_in=[round(d.share, 4) for d in e.days],
            imbalance=round(abs(e.count_in - e.count_out) / (e.count_in + e.count_out), 4),
            shift=round(e.shift, 4),
            z=round(e.z, 2),
            p_value=float(f"{e.p_value:.3g}"),
            confidence=o.confidence,
            # OUT expected from IN and the usual split; observed is what was counted
            expected=round(e.count_in * (1 - e.usual) / e.usual),
            observed=round(e.count_out),
            **extra,
        )


class CountImbalance(_Balance):
    id: ClassVar[str] = "counter.counts.imbalance"
    title: ClassVar[str] = "Counter's IN/OUT split stays its usual one"
    applies_to = "counter"
    priority = 90
    accuracy = True
    ticket_subject = "{who} IN/OUT imbalance {since}"
    ticket_what = (
        "{who}'s split between IN and OUT moved away from its usual one, so one direction is "
        "counted more than before. {said}"
    )
    ticket_ask = (
        "Please check the counter's counting line and direction settings against its live view "
        "and re-tune it if needed."
    )
    store_questions = (
        "Has the way people use this entrance changed (a door closed, a one-way system)?",
    )
    ticket_evidence = ("start", "end", "days")
    remediation: ClassVar[str] = (
        "Check the counter's direction settings and counting line in its configuration; if "
        "the split stays off its usual one, raise a data-accuracy ticket for re-tuning."
    )

    class Options(_Options):
        pass

    def judge(self, model: CountModel, evidence: Any) -> list[Finding]:
        # an open imbalance incident holds the door to the usual share its finding named
        hold = evidence.held_split.get(evidence.serial)
        if hold is None:
            return self.report(model, evidence, [model.index(evidence.serial)])
        since = hold.since.astimezone(model.grid.tz).date().toordinal()
        return self.report(
            model,
            evidence,
            [model.index(evidence.serial)],
            kept=(since, hold.usual),
            held_since=hold.since,
        )


class SiteImbalance(_Balance):
    id: ClassVar[str] = "site.counts.imbalance"
    title: ClassVar[str] = "The site's IN and OUT balance over a day"
    applies_to = "site"
    # a symptom: a counter's own imbalance or level finding explains it, and leads (see the
    # gate's ``explained_by_counter``)
    priority = 95
    # an untuned counter the site's move is blamed on (``suspect``) is not judged either
    accuracy = True
    explained_by = (CountImbalance.id, CountLevel.id)
    ticket_subject = "{who} IN/OUT imbalance {since}"
    ticket_what = (
        "The counts of {low} as a whole do not balance: more people are counted in one "
        "direction than the other, beyond the site's usual balance, and no counter's own "
        "split moved enough to be raised on its own. {said}"
    )
    ticket_ask = (
        "Please check whether an entrance has no counter or a counter counts the wrong way, "
        "and correct the site's setup."
    )
    store_questions = ("Has an entrance been opened, closed or moved at the store?",)
    ticket_evidence = ("start", "end", "days")
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
        serials = [model.arrays.serials[i] for i in rows]
        # the least move worth raising: what a 5 % error in one direction (``warn_ratio``) of
        # the busiest counter does to the site's balance; any explanation of a larger move
        # has some counter (or an entrance without one) off by more than that. The busiest is
        # found over the whole days judged: they change once a day, so their judgement is
        # kept between cycles
        whole = model.whole_days(rows)[0]
        day_in, day_out, _ = model.day_counts()
        crossings = (day_in[rows][:, whole] + day_out[rows][:, whole]).sum(axis=1)
        busiest = float(crossings.max() / crossings.sum()) if crossings.sum() > 0 else 1.0
        tolerance = self.options.warn_ratio * max(busiest, 0.05)
        return self.report(
            model, evidence, rows, paired=True, tolerance=tolerance, counters=serials
        )

    def blame(
        self, model: CountModel, rows: list[int], found: list[Episode]
    ) -> list[dict[str, Any]]:
        if len(rows) < 2 or not found:
            return [{} for _ in found]
        # each counter's own days, judged for each move from two history windows before it
        # (what its usual share then is; the months before do not change it much)
        reach = 2 * self.options.history_days
        out = []
        for e in found:
            within = (e.days[0].day - reach, e.days[-1].day)
            own = {
                i: {d.day: d for d in self.judge_share(self.share_days(model, [i], within))[0]}
                for i in rows
            }
            out.append(self.suspects(model, own, e))
        return out

    def suspects(
        self, model: CountModel, own: dict[int, dict[int, ShareDay]], e: Episode
    ) -> dict[str, Any]:
        """Which counter explains the site's move? Each counter's own split over the move's
        days, against its own history: its excess IN over its usual share (in counts, with
        its own variance). The hypotheses: "counter i lost the direction the site is short
        of, as many as the site lost" (its excess is then the site's, all of it), one per
        counter; "every door alike" (an exit without a counter, a staff door: each door's
        excess in proportion to its flow in that direction); and "no counter's split moved"
        (a counter counting both ways short at a door whose split is not even — its level
        check speaks for it — or an entrance used both ways without a counter); equal
        priors. A counter is named (``suspect``) when it is more likely than all the others
        together; every probability is in ``suspects``.
        """
        days = {d.day for d in e.days}
        site_excess = sum(d.count_in - (d.usual or 0.0) * d.n for d in e.days)
        site_flow = e.count_out if e.direction > 0 else e.count_in
        # per counter: its excess, variance, and what each hypothesis says it should be
        doors: dict[str, tuple[float, float, float, float]] = {}
        for i, by_day in own.items():
            sel = [by_day[k] for k in days if k in by_day and by_day[k].usual is not None]
            if len(sel) < len(days):
                return {}  # a counter not judged on every day of the move: no one to name
            n = sum(d.n for d in sel)
            usual = sum((d.usual or 0.0) * d.n for d in sel) / n
            excess = sum(d.count_in - (d.usual or 0.0) * d.n for d in sel)
            var = sum((d.n * d.sd) ** 2 for d in sel)
            # OUT lost (site share up): both excesses are the usual IN share of the lost
            # crossings; IN lost: minus the usual OUT share
            ratio = usual / e.usual if e.direction > 0 else (1 - usual) / (1 - e.usual)
            flow = sum(d.count_out if e.direction > 0 else d.count_in for d in sel)
            alone = ratio * site_excess
            alike = alone * flow / site_flow if site_flow > 0 else 0.0
            doors[model.arrays.serials[i]] = (excess, var, alone, alike)

        def gain(fits: dict[str, float]) -> float:  # log-likelihood against "no door moved"
            return sum(
                (x * x - (x - fits.get(k, 0.0)) ** 2) / (2 * v) for k, (x, v, _, _) in doors.items()
            )

        gains = {k: gain({k: alone}) for k, (_, _, alone, _) in doors.items()}
        gains["every door alike"] = gain({k: alike for k, (_, _, _, alike) in doors.items()})
        gains["no counter's split moved"] = 0.0
        top = max(gains.values())
        norm = sum(math.exp(g - top) for g in gains.values())
        chances = {k: math.exp(g - top) / norm for k, g in gains.items()}
        best = max(chances, key=lambda k: chances[k])
        out: dict[str, Any] = {"suspects": {k: round(v, 4) for k, v in chances.items()}}
        if best in doors and chances[best] > 0.5:
            out |= {"suspect": best, "suspect_probability": round(chances[best], 4)}
        return out
