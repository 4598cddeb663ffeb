"""Where tickets go. ``make_sinks`` builds the configured destinations; local is the default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.delivery.sinks.base import Sink, SinkError
from agent.delivery.sinks.local import LocalSink
from diagnostics.model import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from agent.config import Config


def make_sinks(config: Config, clock: Clock = SYSTEM_CLOCK) -> list[Sink]:
    """Every configured destination, in the order of the file. Write-only destinations
    (e-mail, webhook) answer from the outbox's record of what it delivered to them."""
    sent = Path(config.agent.state_dir)
    sinks: list[Sink] = []
    for sink in config.sinks:
        if sink.type == "local":
            directory = sink.directory or Path(config.agent.state_dir) / "tickets"
            sinks.append(LocalSink(Path(directory)))
        elif sink.type == "rt":
            from agent.delivery.sinks.rt import RtSink

            sinks.append(RtSink(sink, clock=clock))
        elif sink.type == "smtp":
            from agent.delivery.sinks.smtp import SmtpSink

            sinks.append(SmtpSink(sink, state_dir=sent, clock=clock.now))
        elif sink.type == "webhook":
            from agent.delivery.sinks.webhook import WebhookSink

            sinks.append(WebhookSink(sink, state_dir=sent, clock=clock.now))
    return sinks


__all__ = ["LocalSink", "Sink", "SinkError", "make_sinks"]
