"""The gate's first pass: many failures at once usually have one cause.

A support engineer who sees every counter of a store offline at 09:02 does not raise six
tickets; they ask whether the store's power or network is down. This pass looks at a whole
cycle's findings and folds them:

- the gateway itself at fault (no uplink, a full disk): counter findings are not trusted;
- a storm, more than half of the gateway's counters failing at once: automatic tickets stop,
  and one finding names the likely common cause for a person to look at;
- a whole site down at once: one site-level finding (one site ticket), not one per counter.

It returns the findings (with any new ones appended) and the verdicts it decided, by index.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from diagnostics.model import Decision, Finding, Status, Verdict

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
    return f.check_id == "counter.offline" and f.problem


def group_pass(
    findings: list[Finding], counters_by_site: Mapping[str, Sequence[str]]
) -> tuple[list[Finding], dict[int, Verdict]]:
    decided: dict[int, Verdict] = {}
    blocking = _gateway_blocking(findings)
    if blocking:
        why = (
            f"the gateway itself is at fault ({blocking}): counter findings are not trusted "
            "until it recovers"
        )
        for i, f in enumerate(findings):
            if f.problem and f.subject != "gateway" and not f.check_id.startswith("gateway."):
                decided[i] = Verdict(Decision.FALSE_ALARM, (why,), rule="gateway_fault")
        return findings, decided
    total = sum(len(v) for v in counters_by_site.values())
    offline = [i for i, f in enumerate(findings) if _offline(f)]
    if total >= 2 and len(offline) >= 2 and len(offline) > STORM_SHARE * total:
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
    extra: list[Finding] = []
    for site, members in counters_by_site.items():
        down = by_site.get(site, [])
        if len(members) < 2 or len(down) < len(members):
            continue
        site_finding = _site_down(findings, down, site)
        why = f"all {len(members)} counters of site {site} are down at once: one site incident"
        for i in down:
            decided[i] = Verdict(Decision.FALSE_ALARM, (why,), rule="site_outage")
        decided[len(findings) + len(extra)] = Verdict(Decision.GENUINE, (why,), rule="site_outage")
        extra.append(site_finding)
    return [*findings, *extra], decided


def _gateway_blocking(findings: Sequence[Finding]) -> str:
    for f in findings:
        if f.check_id == "gateway.health" and f.problem:
            codes = [p.get("code") for p in f.evidence.get("problems", [])] or [f.code]
            found = [GATEWAY_BLOCKING[c] for c in codes if c in GATEWAY_BLOCKING]
            if found:
                return " and ".join(found)
    return ""


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
        check_id="gateway.storm",
        status=Status.FAIL,
        code="storm",
        summary=f"{len(failing)} of {total} counters failed at once ({how}); likely cause: {cause}",
        at=failing[0].at,
        site=None,
        subject="gateway",
        evidence={
            "failing": sorted(f.subject or "" for f in failing),
            "total": total,
            "codes": dict(codes),
            "likely_cause": cause,
        },
        remediation="Check what the counters share before anything else: the store's power, "
        "the network switch or PoE injector they hang off, and the gateway's own network port.",
    )


def _site_down(findings: Sequence[Finding], down: Sequence[int], site: str) -> Finding:
    failing = [findings[i] for i in down]
    codes = Counter(f.code for f in failing)
    since = min(
        (str(f.evidence.get("failing_since")) for f in failing if f.evidence.get("failing_since")),
        default=failing[0].at.isoformat(),
    )
    return Finding(
        check_id="site.offline",
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
        remediation="Check the store's power and its network link to the counters first; "
        "the counters themselves are probably fine.",
    )
