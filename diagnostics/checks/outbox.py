"""The agent's outbox: a ticket destination that refuses items for good.

``agent.delivery.outbox`` makes these findings (it holds the items); this class declares what
they mean: about the agent, never a ticket to FootfallCam.
"""

from __future__ import annotations

from typing import ClassVar

from diagnostics.checks.base import DerivedCheck, Family, TicketKind


class OutboxHealth(DerivedCheck):
    id: ClassVar[str] = "agent.outbox"
    title: ClassVar[str] = "Every ticket destination accepts what the agent sends"
    applies_to = "agent"
    family = Family.AGENT
    ticket = TicketKind.NONE
    priority = 110
    ticket_subject = "The agent at {site}: {code} {since}"
    ticket_what = "The agent cannot deliver to one of its ticket destinations. {said}"
    remediation: ClassVar[str] = (
        "Check the destination's settings and credentials in the config, then retry with "
        "`ffc-agent tickets retry`."
    )
