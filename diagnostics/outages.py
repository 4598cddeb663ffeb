"""The gate's first pass: many failures at once usually have one cause.

A support engineer who sees every counter of a store offline at 09:02 does not raise six
tickets; they ask whether the store's power or network is down. This pass looks at a whole
cycle's findings and folds them:

- the gateway itself at fault (no uplink, a full disk): counter findings are not trusted;
- a storm, more than half of the gateway's counters failing at once: automatic tickets stop,
  and one finding names the likely common cause for a person to look at; and an ok one once
  enough counters answer that no storm can be going on (so the storm's incident recovers);
- a whole site down at once: one site-level finding (one site ticket), not one per counter,
  and an ok one once a counter of it answers again (so the site's incident recovers: a site
  dark for a minute, a switch or router rebooting, is not a ticket); and no count finding of
  its counters inside the outage (a gap, zeros, a low level or an odd split there are the
  outage, seen from one counter), whichever check saw the outage —
  the counters not answering (``site.offline``) or every counter's slots missing
  (``site.counts.outage``);
- a site finding a counter's own problem already explains, and a counter's under- or
  over-count that its own IN/OUT imbalance explains (``explained_by_counter``).

It returns the findings (with any new ones appended) and the verdicts it decided, by index.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from diagnostics.checks import Family, counter_up, meta
from diagnostics.checks.counts_imbalance import CountImbalance, explains_level
from diagnostics.checks.counts_missing import SiteCountsOutage
from diagnostics.checks.gateway import GATEWAY, GatewayHealth
from diagnostics.checks.outages import GatewayStorm, SiteOffline
from diagnostics.model import Decision, Finding, Status, Verdict, as_datetime, plural

GATEWAY_BLOCKING = {"uplink_down": "it has no network uplink", "disk_full": "its disk is full"}
STORM_SHARE = 0.5

_CAUSES = {
    "timeout": "the network between the gateway and the counters (a switch, PoE injector or VLAN)",
    "unreachable": "the network between the gateway and the counters (a switch, PoE "
    "injector or VLAN)",
    "refused": "the counters restarting together (a power cut or power-cycle)",
    "auth_failed": "the counters' credentials changed together (a configuration push)",
}


def _offline(f: Finding) -> bool:
    """A counter not answering: a problem of the check whose ok means the counter is up."""
    return f.problem and meta(f).liveness


def group_pass(
    findings: list[Finding], counters_by_site: Mapping[str, Sequence[str]]
) -> tuple[list[Finding], dict[int, Verdict]]:
    decided: dict[int, Verdict] = explained_by_counter(findings)
    blocking = _gateway_blocking(findings)
    if blocking:
        why = (
            f"the gateway itself is at fault ({blocking}): counter findings are not trusted "
            "until it recovers"
        )
        for i, f in enumerate(findings):
            if f.problem and f.subject != GATEWAY and meta(f).applies_to != "gateway":
                decided[i] = Verdict(Decision.FALSE_ALARM, (why,), rule="gateway_fault")
        return findings, decided
    total = sum(len(v) for v in counters_by_site.values())
    offline = [i for i, f in enumerate(findings) if _offline(f)]
    if _is_storm(len(offline), total):
        storm = _storm(findings, offline, counters_by_site, total)
        why = (
            f"{len(offline)} of {total} counters failed at once: automatic tickets stop; "
            f"the likely common cause is {storm.evidence['likely_cause']}"
        )
        for i in offline:
            decided[i] = Verdict(Decision.FALSE_ALARM, (why,), rule="storm_guard")
        decided[len(findings)] = Verdict(Decision.GENUINE, (why,), rule="storm_guard")
        return [*findings, storm], decided
    by_site: dict[str, list[int]] = defaultdict(list)
    for i in offline:
        by_site[findings[i].site or ""].append(i)
    # the counters that answered, by site: found once, not once per site (a fleet of a
    # thousand counters has a hundred sites and ten thousand findings a cycle)
    up_at: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        if counter_up(f):
            up_at[f.site or ""].append(f)
    extra: list[Finding] = []
    for site, members in counters_by_site.items():
        down = by_site.get(site, [])
        if len(members) < 2:
            continue
        if len(down) < len(members):
            up = _site_up(up_at.get(site, []), site, members)
            if up is not None:
                extra.append(up)
            continue
        site_finding = _site_down(findings, down, site)
        why = f"all {len(members)} counters of site {site} are down at once: one site incident"
        for i in down:
            decided[i] = Verdict(Decision.FALSE_ALARM, (why,), rule="site_outage")
        decided[len(findings) + len(extra)] = Verdict(Decision.GENUINE, (why,), rule="site_outage")
        extra.append(site_finding)
    calm = _storm_over([f for at in up_at.values() for f in at], total)
    if calm is not None:
        extra.append(calm)
    findings = [*findings, *extra]
    for i, verdict in inside_site_outage(findings).items():
        decided.setdefault(i, verdict)
    return findings, decided


def inside_site_outage(findings: Sequence[Finding]) -> dict[int, Verdict]:
    """Rule out each counter's count finding that lies inside a whole-site outage.

    When every counter of a site is down (``site.offline``: none answers; or
    ``site.counts.outage``: every counter's slots are missing), what one counter's count
    checks see over that time — slots missing, zeros, a level or split gone odd — is the
    outage itself, which the site finding reports once. A counter's count finding is a false
    alarm, rule ``site_outage``, when its counter is one of the outage's and its span lies
    within the outage's (from the first counter failing to the last slot missing, or to now
    while the site is still down). A counter's own fault that began before or lasts beyond
    the outage stays its own.
    """
    windows = []
    for f in findings:
        if not (f.problem and f.subject is None):
            continue
        if f.check_id == SiteCountsOutage.id:
            start, end = as_datetime(f.evidence.get("start")), as_datetime(f.evidence.get("end"))
        elif f.check_id == SiteOffline.id:
            start, end = as_datetime(f.evidence.get("failing_since")), f.at
        else:
            continue
        if start is not None and end is not None:
            windows.append((f, start, end))
    decided: dict[int, Verdict] = {}
    if not windows:
        return decided
    for i, f in enumerate(findings):
        if not (f.problem and f.subject is not None and meta(f).family is Family.COUNTS):
            continue
        ev = f.evidence
        start = as_datetime(ev.get("zero_since")) or as_datetime(ev.get("start"))
        end = as_datetime(ev.get("last_slot_end")) or as_datetime(ev.get("end"))
        if start is None or end is None:
            continue
        for outage, o_start, o_end in windows:
            if (
                outage.site == f.site
                and f.subject in outage.evidence.get("counters", ())
                and o_start <= start
                and end <= o_end
            ):
                why = (
                    f"inside the whole-site outage of {f.site} ({outage.summary}): one finding, "
                    "about the site, not one per counter"
                )
                decided[i] = Verdict(Decision.FALSE_ALARM, (why,), rule="site_outage")
                break
    return decided


def explained_by_counter(findings: Sequence[Finding]) -> dict[int, Verdict]:
    """Rule out a problem that a counter's own, more specific problem already explains.

    The rule: a finding whose check declares ``explained_by`` is a false alarm, rule
    ``explained_by_counter``, when in the same cycle a problem (warn or fail) from one of
    those checks covers an overlapping time (when both say when) and explains it:

    - a site finding (the site's IN/OUT imbalance): a counter of the same site has its own
      IN/OUT imbalance, or an under- or over-count. That counter's finding leads to one
      ticket, about the counter, with the right category; the site's imbalance is its
      symptom. Once the counter balances again, a site imbalance that remains (an entrance
      without a counter) stands on its own and raises its own data-accuracy ticket.
    - a counter's under- or over-count: the same counter's IN/OUT imbalance accounts for it
      (one direction counted short also lowers the total; ``explains_level``). One fault,
      one finding: the imbalance, which says which direction, leads. A level shift larger
      than the lost direction explains (the view half blocked, and the split moved too)
      stands on its own.

    The leading finding still faces the gate's other rules (a silence, an unfinished tuning)
    on its own.
    """
    decided: dict[int, Verdict] = {}
    for i, f in enumerate(findings):
        by = meta(f).explained_by
        if not (f.problem and by):
            continue
        causes = [
            c
            for c in findings
            if c.check_id in by
            and c.problem
            and c.site == f.site
            and c.subject is not None
            and (f.subject is None or _explains(c, f))
            and _overlap(c, f)
        ]
        if causes:
            said = "; ".join(f"{c.subject}: {c.summary}" for c in causes[:3])
            whom = "the counter" if f.subject is None else "its own IN/OUT imbalance"
            why = (
                f"explained by the counter's own finding ({said}): one ticket, about "
                f"{whom}, not a second one"
            )
            decided[i] = Verdict(Decision.FALSE_ALARM, (why,), rule="explained_by_counter")
    return decided


def _explains(cause: Finding, f: Finding) -> bool:
    """A counter's finding is explained only by the same counter's, and only by a cause
    that accounts for it."""
    if cause.subject != f.subject or cause is f:
        return False
    if cause.check_id == CountImbalance.id:
        return explains_level(cause.evidence, f.evidence, f.code)
    return True


def _overlap(a: Finding, b: Finding) -> bool:
    a_start, a_end = as_datetime(a.evidence.get("start")), as_datetime(a.evidence.get("end"))
    b_start, b_end = as_datetime(b.evidence.get("start")), as_datetime(b.evidence.get("end"))
    if a_start is None or a_end is None or b_start is None or b_end is None:
        return True  # the same cycle is overlap enough
    return a_start < b_end and b_start < a_end


def _gateway_blocking(findings: Sequence[Finding]) -> str:
    for f in findings:
        if f.check_id == GatewayHealth.id and f.problem:
            codes = [p.get("code") for p in f.evidence.get("problems", [])] or [f.code]
            found = [GATEWAY_BLOCKING[c] for c in codes if c in GATEWAY_BLOCKING]
            if found:
                return " and ".join(found)
    return ""


def _is_storm(failing: int, total: int) -> bool:
    """The storm condition: at least two of the gateway's counters, and more than half of them
    (``STORM_SHARE``), fail their liveness check in the same cycle."""
    return total >= 2 and failing >= 2 and failing > STORM_SHARE * total


def _storm_over(answered: Sequence[Finding], total: int) -> Finding | None:
    """An ok ``gateway.storm`` finding when the storm condition (``_is_storm``) cannot hold
    this cycle: even if every counter that did not answer were failing, too few would be.
    Only counters whose liveness check said they answer count as up: a counter not probed or
    whose check erred is counted as possibly failing, so a cycle in which nothing could be
    judged gives no ok (and no verdict on the storm either way). Its ok recovers an open storm
    incident through the usual good checks; without one it is the check passing.
    ``answered``: this cycle's liveness findings that say a counter answers."""
    answering = sorted({f.subject or "" for f in answered})
    if not answering or _is_storm(total - len(answering), total):
        return None
    return Finding(
        check_id=GatewayStorm.id,
        status=Status.OK,
        code="calm",
        summary=f"no storm: {len(answering)} of {plural(total, 'counter')} answering",
        at=max(f.at for f in answered),
        site=None,
        subject=GATEWAY,
        evidence={"answering": len(answering), "total": total},
    )


def _storm(
    findings: Sequence[Finding],
    offline: Sequence[int],
    counters_by_site: Mapping[str, Sequence[str]],
    total: int,
) -> Finding:
    failing = [findings[i] for i in offline]
    sites = {f.site for f in failing}
    codes = Counter(f.code for f in failing)
    site = next(iter(sites)) if len(sites) == 1 else None
    if site and len(failing) == len(counters_by_site.get(site or "", ())):
        cause = f"site {site}'s power or network"
    elif len(codes) == 1:
        cause = _CAUSES.get(next(iter(codes)), "a cause the counters share (network or power)")
    else:
        cause = "a cause the counters share (the local network or power)"
    how = ", ".join(f"{n} {code}" for code, n in codes.most_common())
    return Finding(
        check_id=GatewayStorm.id,
        status=Status.FAIL,
        code="storm",
        summary=f"{len(failing)} of {total} counters failed at once ({how}); likely cause: {cause}",
        at=failing[0].at,
        site=None,
        subject=GATEWAY,
        evidence={
            "failing": sorted(f.subject or "" for f in failing),
            "total": total,
            "codes": dict(codes),
            "likely_cause": cause,
        },
        remediation=GatewayStorm.remediation,
    )


def _site_up(answered: Sequence[Finding], site: str, members: Sequence[str]) -> Finding | None:
    """The site is not wholly offline when one of its counters answers (``answered``: the
    site's liveness findings that say so this cycle): an ok finding, which recovers the site's
    outage incident. None when none answered (not probed, or an error): that says nothing
    either way."""
    up = [f for f in answered if f.subject in members]
    if not up:
        return None
    return Finding(
        check_id=SiteOffline.id,
        status=Status.OK,
        code="online",
        summary=f"site {site} is reachable: {len(up)} of {plural(len(members), 'counter')} "
        "answering",
        at=up[0].at,
        site=site,
        subject=None,
        evidence={"answering": sorted(f.subject or "" for f in up)},
    )


def _site_down(findings: Sequence[Finding], down: Sequence[int], site: str) -> Finding:
    failing = [findings[i] for i in down]
    codes = Counter(f.code for f in failing)
    since = min(
        (str(f.evidence.get("failing_since")) for f in failing if f.evidence.get("failing_since")),
        default=failing[0].at.isoformat(),
    )
    return Finding(
        check_id=SiteOffline.id,
        status=Status.FAIL,
        code="site_offline",
        summary=f"every counter of site {site} is offline at once "
        f"({', '.join(f'{n} {c}' for c, n in codes.most_common())}): the site's power or "
        "network is the likely cause",
        at=failing[0].at,
        site=site,
        subject=None,
        evidence={
            "counters": sorted(f.subject or "" for f in failing),
            "codes": dict(codes),
            "failing_since": since,
        },
        remediation=SiteOffline.remediation,
    )
