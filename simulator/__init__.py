"""FootfallCam counters on loopback, for tests, benches and ``ffc-agent demo``.

Each simulated counter is its own HTTP server on 127.0.0.1 speaking the counter's local API
(token, counts as JSON or XML, the legacy 3D Plus API, live-view snapshots) with realistic,
reproducible traffic and faults that can be switched on and off while it runs. It imports
nothing of the agent: it stands in for the outside world. The wire format is written down in
docs/counter-api.md.
"""

from simulator.faults import FAULT_KINDS
from simulator.fleet import Fleet
from simulator.model import FakeClock, SimCounter, SimSite, SystemClock
from simulator.standalone import (
    FaultSpecError,
    cli_main,
    generate,
    parse_fault_spec,
    run_standalone,
)

__all__ = [
    "FAULT_KINDS",
    "FakeClock",
    "FaultSpecError",
    "Fleet",
    "SimCounter",
    "SimSite",
    "SystemClock",
    "cli_main",
    "generate",
    "parse_fault_spec",
    "run_standalone",
]
