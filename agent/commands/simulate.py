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
    help="Script a fault (repeatable), e.g. FFC0002:offline or FFC0003:under_count:0.6; "
    "the kinds are listed above.",
)
@click.option(
    "--port-base",
    type=click.IntRange(1024, 65000),
    default=None,
    help="First port to listen on (default: any free ports).",
)
def simulate(count: int, seed: int, faults: tuple[str, ...], port_base: int | None) -> None:
    """Run simulated counters on 127.0.0.1 and print the config to point the agent at them.

    Blocks until Ctrl-C or SIGTERM: run it in its own terminal (or in the background) and
    point the agent at the printed configuration, e.g.

    \b
      ffc-agent simulate --counters 3 --fault FFC0002:offline > sim.toml &
      ffc-agent check --config sim.toml

    \b
    Fault kinds (SERIAL:KIND[:PARAM]):
      connection: offline, hung, slow, garbage, held_back
      counting:   zeros, under_count, over_count, imbalance
      live view:  covered, dark, blurred, moved, obstructed
    """
    from simulator import run_standalone

    try:
        run_standalone(counters=count, seed=seed, faults=list(faults), port_base=port_base)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
