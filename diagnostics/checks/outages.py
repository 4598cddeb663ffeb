"""The findings the gate's first pass makes: a whole site offline, a storm of failures.

``diagnostics.outages`` folds many counter findings into one about their common cause; these
classes declare what those findings mean, so tickets, status and the metrics read them from
the registry like any other. The runner never runs them (``DerivedCheck``).
"""

from __future__ import annotations

from typing import ClassVar

from diagnostics.checks.base import DerivedCheck, Family, TicketKind


class SiteOffline(DerivedCheck):
    id: ClassVar[str] = "site.offline"
    title: ClassVar[str] = "Not every counter of the site offline at once"
    applies_to = "site"
    family = Family.CONNECTIVITY
    ticket = TicketKind.TECHNICAL
    priority = 10  # the site's power or network explains each counter being offline
    reboot_wait = True  # a switch or router restarting darkens the site for a minute or two
    ticket_subject = "{who} outage {since} ({code})"
    ticket_what = "The whole of {low} is down at once, not just one counter. {said}"
    ticket_ask = (
        "Please help the store bring its counters back online and recover the counts they kept "
        "meanwhile; the counters themselves are probably fine."
    )
    store_questions = (
        "Is the store's power and internet up, and the network switch the counters hang off?",
        "Has anything been changed or restarted on the store's network recently?",
    )
    remediation: ClassVar[str] = (
        "Check the store's power and its network link to the counters first; the counters "
        "themselves are probably fine."
    )


class GatewayStorm(DerivedCheck):
    """Two or more, and more than half, of the gateway's counters fail their liveness check in
    one cycle (``diagnostics.outages._is_storm``). Ok once enough counters answer that the
    storm cannot hold even if every other counter were failing; nothing when none answered."""

    id: ClassVar[str] = "gateway.storm"
    title: ClassVar[str] = "Not more than half the counters failing at once"
    applies_to = "gateway"
    family = Family.GATEWAY
    ticket = TicketKind.NONE  # automatic tickets stop: a person looks at the common cause
    priority = 30
    ticket_subject = "{who}: many counters failing at once {since}"
    ticket_what = "Many counters watched by the gateway at {site} failed at once. {said}"
    remediation: ClassVar[str] = (
        "Check what the counters share before anything else: the store's power, the network "
        "switch or PoE injector they hang off, and the gateway's own network port."
    )
