"""``ffc-agent simulate``: FootfallCam counters on 127.0.0.1 to point the agent at.

The simulator is the outside world (DESIGN.md §4): it is imported only when this runs.
"""

from __future__ import annotations

import click


@click.command("simulate")
@click.option("--counters", "count", type=click.IntRange(1, 500), default=4, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SERIAL:KIND[:PARAM]",
    help="Script a fault, e.g. FFC0002:offline or FFC0003:under_count:0.6.",
)
@click.option(
    "--port-base",
    type=click.IntRange(1024, 65000),
    default=None,
    help="First port to listen on (default: any free ports).",
)
def simulate(count: int, seed: int, faults: tuple[str, ...], port_base: int | None) -> None:
    """Run simulated counters on 127.0.0.1 and print the config to point the agent at them."""
    from simulator import run_standalone

    try:
        run_standalone(counters=count, seed=seed, faults=list(faults), port_base=port_base)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
