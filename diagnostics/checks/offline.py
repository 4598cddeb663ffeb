"""Counter offline: the counter's API did not answer, and how it failed.

How it failed tells support where to look: *refused* means the device is up on the network
but its service is down (or it is rebooting); *timeout* means it hangs or the path drops
packets; *auth_failed* means it answers but someone changed its credentials; *http_error* and
*bad_response* point at its firmware; *tls_error* at its certificate or the configured CA;
*redirect* at something between the agent and the counter (a captive portal, a proxy's login
page) or a misconfigured address.
"""

from __future__ import annotations

from typing import ClassVar

from diagnostics.checks.base import Check, CounterEvidence, Family, TicketKind
from diagnostics.model import Finding, Status

_WORDS = {
    "refused": "refuses connections",
    "timeout": "does not answer (timed out)",
    "unreachable": "cannot be reached on the network",
    "http_error": "answers with HTTP errors",
    # not "credentials:": the redactor takes the word after it for a secret
    "auth_failed": "refuses the agent's login",
    "bad_response": "answers with data the agent cannot read",
    "tls_error": "fails the TLS handshake (certificate not trusted, or no TLS)",
    "redirect": "redirects the agent elsewhere instead of answering",
}


class CounterOffline(Check):
    id: ClassVar[str] = "counter.offline"
    title: ClassVar[str] = "Counter reachable and answering its API"
    applies_to = "counter"
    family = Family.CONNECTIVITY
    ticket = TicketKind.TECHNICAL
    priority = 20
    liveness = True
    ticket_subject = "{who} offline {since} ({reason})"
    ticket_what = (
        "{who} is offline: the agent cannot reach it ({reason}), so its counts are not "
        "reaching the portal. {said}"
    )
    remediation: ClassVar[str] = (
        "Check the counter's power and network cable (LED: none/yellow means power or cabling, "
        "red means hardware); power-cycle it; if it still does not answer, raise a ticket."
    )

    def run(self, evidence: CounterEvidence) -> list[Finding]:
        obs = evidence.observations.get("api")
        if obs is None:
            reason = evidence.extra.get("not_probed", "the counter has not been probed yet")
            return [self.finding(evidence, Status.SKIP, "not_probed", reason)]
        if obs.ok:
            return [
                self.finding(
                    evidence,
                    Status.OK,
                    "online",
                    "the counter answers its API",
                    elapsed_s=round(obs.elapsed_s, 3),
                )
            ]
        code = str(obs.error_code)
        since = evidence.extra.get("api_failing_since", obs.at)
        failures = evidence.extra.get("api_consecutive_failures", 1)
        summary = f"counter {evidence.serial} {_WORDS.get(code, 'fails')}: {obs.error}"
        return [
            self.finding(
                evidence,
                Status.FAIL,
                code,
                summary,
                error=obs.error,
                failing_since=since.isoformat(),
                consecutive_failures=failures,
                last_success=evidence.extra.get("api_last_success"),
                last_count_slot=evidence.extra.get("last_count_slot"),
            )
        ]
