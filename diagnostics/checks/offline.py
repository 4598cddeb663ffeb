"""Counter offline: the counter's API did not answer, and how it failed.

How it failed tells support where to look: *refused* means the device is up on the network
but its service is down (or it is rebooting); *timeout* means it hangs or the path drops
packets; *auth_failed* means it answers but someone changed its credentials; *http_error* and
*bad_response* point at its firmware; *tls_error* at its certificate or the configured CA;
*redirect* at something between the agent and the counter (a captive portal, a proxy's login
page) or a misconfigured address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar

from diagnostics.checks.base import (
    LED_QUESTION,
    POWER_CYCLE_QUESTION,
    Check,
    CounterEvidence,
    Family,
    TicketKind,
    Wording,
)
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
    reboot_wait = True  # a counter restarting is not a ticket
    ticket_subject = "{who} offline {since} ({reason})"
    ticket_what = (
        "{who} is offline: the agent cannot reach it ({reason}), so its counts are not "
        "reaching the portal. {said}"
    )
    ticket_ask = (
        "Please bring the counter back online (remotely if you can reach it, else tell us what "
        "to check on site) and recover the counts it kept while it was offline."
    )
    store_questions = (
        LED_QUESTION,
        POWER_CYCLE_QUESTION,
        "Was any work done on the store's power or network around the time it went offline?",
    )
    ticket_evidence = (
        "last_success",
        "last_count_slot",
        "consecutive_failures",
        "reachability",
    )
    codes: ClassVar[Mapping[str, Wording]] = {
        # it answers, so power and cabling are fine: the login is what changed
        "auth_failed": Wording(
            ticket_ask=(
                "Please tell us whether the counter's login was changed or reset (a factory "
                "reset, a firmware update), and restore the agent's access so its counts can "
                "be collected again."
            ),
            store_questions=(
                "Has anyone changed the counter's password, reset it or updated it recently?",
            ),
        ),
    }
    remediation: ClassVar[str] = (
        "Check the counter's power and network cable (LED: none/yellow means power or cabling, "
        "red means hardware); power-cycle it; if it still does not answer, raise a ticket."
    )
    # how it failed says where to look: a counter that answers needs no power or cable check
    _REMEDIATIONS: ClassVar[Mapping[str, str]] = {
        "auth_failed": (
            "The counter answers but refuses the agent's login: its password was changed or "
            "reset. Put the counter's current credentials in the agent's configuration (or "
            "reset them on the counter); power and cabling are fine."
        ),
        "tls_error": (
            "The counter answers but its TLS certificate is not trusted: check the configured "
            "CA or the counter's certificate; power and cabling are fine."
        ),
        "redirect": (
            "Something between the agent and the counter answers in its place (a captive "
            "portal, a proxy login): check the counter's address and the network path."
        ),
    }

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
        found = self.finding(
            evidence,
            Status.FAIL,
            code,
            summary,
            error=obs.error,
            failing_since=since.isoformat(),
            consecutive_failures=failures,
            last_success=evidence.extra.get("api_last_success"),
            last_count_slot=evidence.extra.get("last_count_slot"),
            reachability=obs.data.get("reachability"),
        )
        if code in self._REMEDIATIONS:
            found = replace(found, remediation=self._REMEDIATIONS[code])
        return [found]
