"""Every check the agent runs, in one registry. Ids are never renamed: incidents key on them.

``COUNTER_CHECKS`` run once per counter on a ``CounterEvidence``; ``SITE_CHECKS`` run once per
site on a ``SiteEvidence``; ``GATEWAY_CHECKS`` once per cycle on a ``GatewayEvidence``;
``AGENT_CHECKS`` once per cycle on the agent's own state (``OutboxState``). Then
``fold_site_outages`` removes the counters' missing-data findings that a whole-site outage
already reports, so a site that goes dark files one ticket.
"""

from __future__ import annotations

from diagnostics.checks.agent import OutboxHealth
from diagnostics.checks.base import Check, CounterEvidence, SiteEvidence
from diagnostics.checks.counts import CountingStopped
from diagnostics.checks.counts_imbalance import CountImbalance, SiteImbalance
from diagnostics.checks.counts_level import CountLevel
from diagnostics.checks.counts_missing import CountsMissing, SiteCountsOutage, fold_site_outages
from diagnostics.checks.device import DeviceClock, DeviceHealth, SshHostKey
from diagnostics.checks.gateway import GatewayHealth
from diagnostics.checks.liveview import LiveViewBlocked
from diagnostics.checks.offline import CounterOffline
from diagnostics.checks.push import PushSilent

COUNTER_CHECKS: tuple[type[Check], ...] = (
    CounterOffline,
    CountingStopped,
    CountsMissing,
    CountLevel,
    CountImbalance,
    DeviceClock,
    DeviceHealth,
    SshHostKey,
    LiveViewBlocked,
    PushSilent,
)

SITE_CHECKS: tuple[type[Check], ...] = (SiteCountsOutage, SiteImbalance)

GATEWAY_CHECKS: tuple[type[Check], ...] = (GatewayHealth,)

AGENT_CHECKS: tuple[type[Check], ...] = (OutboxHealth,)

REGISTRY: dict[str, type[Check]] = {
    c.id: c for c in (*COUNTER_CHECKS, *SITE_CHECKS, *GATEWAY_CHECKS, *AGENT_CHECKS)
}

__all__ = [
    "AGENT_CHECKS",
    "COUNTER_CHECKS",
    "GATEWAY_CHECKS",
    "REGISTRY",
    "SITE_CHECKS",
    "Check",
    "CounterEvidence",
    "SiteEvidence",
    "fold_site_outages",
]
