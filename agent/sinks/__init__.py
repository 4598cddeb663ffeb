"""Where tickets go. ``make_sinks`` builds the configured destinations; local is the default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.sinks.base import Sink, SinkError
from agent.sinks.local import LocalSink

if TYPE_CHECKING:
    from agent.config import Config


def make_sinks(config: Config) -> list[Sink]:
    sinks: list[Sink] = []
    for sink in config.sinks:
        if sink.type == "local":
            directory = sink.directory or Path(config.agent.state_dir) / "tickets"
            sinks.append(LocalSink(Path(directory)))
    return sinks


__all__ = ["LocalSink", "Sink", "SinkError", "make_sinks"]
