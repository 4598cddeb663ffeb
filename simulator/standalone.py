"""Run a simulated fleet by itself: ``ffc-agent simulate`` and ``python -m simulator``.

An installer or support engineer can try the agent without a single real counter: this starts
N generated counters over one or two stores, applies the faults asked for on the command line
(``SERIAL:KIND[:PARAM]``), prints a ready ffc-agent config for them on stdout, and serves until
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from simulator.faults import FAULT_KINDS, PARAMS, make_fault
from simulator.fleet import Fleet
from simulator.model import Clock, SimCounter, SimSite

LONDON_HOURS = {
    **{d: "09:00-20:00" for d in ("mon", "tue", "wed", "thu", "fri")},
    "sat": "09:00-19:00",
    "sun": "11:00-17:00",
}
PARIS_HOURS = {d: "10:00-19:30" for d in ("mon", "tue", "wed", "thu", "fri", "sat")}
DOORS = (
    ("Main door", "front"),
    ("Side door", "front"),
    ("Mall entrance", None),
    ("Rear door", None),
)


class FaultSpecError(ValueError):
    """A ``SERIAL:KIND[:PARAM]`` that names an unknown counter, kind or parameter."""


def generate(
    counters: int, seed: int, port_base: int | None = None
) -> tuple[list[SimSite], list[SimCounter]]:
    """N counters over one store (N ≤ 3) or two (London, and Paris, which shuts on Sundays).

    With four or more, the last one is a legacy 3D Plus (``pi-cgi``).
    """
    if counters < 1:
        raise ValueError("at least one counter is needed")
    sites = [SimSite("LDN01", "London Oxford St", "Europe/London", LONDON_HOURS)]
    if counters > 3:
        sites.append(SimSite("PAR01", "Paris Rivoli", "Europe/Paris", PARIS_HOURS))
    rng = np.random.default_rng([seed, 99])
    first_site = -(-counters // len(sites))
    made = []
    for i in range(counters):
        site = sites[0] if i < first_site else sites[1]
        door, group = DOORS[(i if i < first_site else i - first_site) % len(DOORS)]
        made.append(
            SimCounter(
                serial=f"FFC{i + 1:04d}",
                name=door,
                site=site.code,
                base_rate=round(float(rng.uniform(60, 180)), 1),
                username="admin",
                password=f"sim-{seed}-{i + 1}",
                api="pi-cgi" if counters >= 4 and i == counters - 1 else "cgi-bin",
                port=port_base + i if port_base else 0,
                group=group,
            )
        )
    return sites, made


def parse_fault_spec(
    spec: str, serials: Sequence[str], now: datetime
) -> tuple[str, str, datetime, dict[str, Any]]:
    """``SERIAL:KIND[:PARAM]`` → (serial, kind, since, params).

    PARAM is a value for the kind's main parameter (``FFC0002:under_count:0.5``) or
    ``name=value`` pairs joined by commas; ``since=-2h`` (or -30m, -3d, or an ISO time)
    backdates the fault.
    """
    serial, _, rest = spec.partition(":")
    kind, _, param = rest.partition(":")
    if not serial or not kind:
        raise FaultSpecError(f"fault {spec!r}: expected SERIAL:KIND[:PARAM]")
    if serial not in serials:
        raise FaultSpecError(
            f"fault {spec!r}: unknown counter {serial!r}; known: {', '.join(serials)}"
        )
    if kind not in FAULT_KINDS:
        known = ", ".join(sorted(FAULT_KINDS))
        raise FaultSpecError(f"fault {spec!r}: unknown kind {kind!r}; known: {known}")
    params: dict[str, Any] = {}
    since = now
    for part in filter(None, param.split(",")):
        name, eq, value = part.partition("=")
        if not eq:
            if not PARAMS[kind]:
                raise FaultSpecError(f"fault {spec!r}: {kind} takes no parameter")
            name, value = next(iter(PARAMS[kind])), part
        if name == "since":
            since = _since(value, now, spec)
        else:
            params[name] = value
    try:
        make_fault(kind, since, params)
    except ValueError as exc:
        raise FaultSpecError(f"fault {spec!r}: {exc}") from None
    return serial, kind, since, params


def _since(text: str, now: datetime, spec: str) -> datetime:
    match = re.fullmatch(r"-(\d+(?:\.\d+)?)([mhd])", text)
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return now - timedelta(**{unit: float(match.group(1))})
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise FaultSpecError(f"fault {spec!r}: since must be like -2h, -30m, -3d or ISO") from None
    if at.tzinfo is None:
        raise FaultSpecError(f"fault {spec!r}: an ISO since needs a UTC offset")
    return at


def run_standalone(
    counters: int = 6,
    seed: int = 7,
    faults: Sequence[str] = (),
    port_base: int | None = None,
    *,
    state_dir: str | Path | None = None,
    reference_dir: str | Path | None = None,
    clock: Clock | None = None,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Serve a generated fleet until Ctrl-C, SIGTERM or ``stop`` is set; returns 0.

    Raises ``FaultSpecError`` (a ValueError) before anything starts if a fault is bad.
    """
    out = out or sys.stdout
    stop = stop or threading.Event()
    sites, made = generate(counters, seed, port_base)
    fleet = Fleet(sites, made, seed=seed, clock=clock)
    now = fleet.clock.now()
    parsed = [parse_fault_spec(spec, [c.serial for c in made], now) for spec in faults]
    # reference images only live as long as the fleet they show, unless a folder was given
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if reference_dir:
        refs = Path(reference_dir)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="ffc-sim-refs-")
        refs = Path(scratch.name)
    try:
        _serve(fleet, parsed, refs, state_dir, made, counters, out, stop)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


def _serve(
    fleet: Fleet,
    parsed: Sequence[tuple[str, str, datetime, dict[str, Any]]],
    refs: Path,
    state_dir: str | Path | None,
    made: Sequence[SimCounter],
    counters: int,
    out: TextIO,
    stop: threading.Event,
) -> None:
    with fleet:
        for serial, kind, since, params in parsed:
            fleet.set_fault(serial, kind, since, **params)
        fleet.write_references(refs)
        out.write(fleet.agent_config_toml(state_dir or Path.cwd() / "state", refs))
        out.flush()
        ports = ", ".join(f"{c.serial}:{fleet.port(c.serial)}" for c in made)
        noun = "counter" if counters == 1 else "counters"
        print(
            f"simulating {counters} {noun} on 127.0.0.1 ({ports}); Ctrl-C to stop",
            file=sys.stderr,
        )
        _wait(stop)


def _wait(stop: threading.Event) -> None:
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main else None
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def cli_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Serve simulated FootfallCam counters on 127.0.0.1 and print their config.",
    )
    add = parser.add_argument
    add("--counters", type=int, default=6, help="how many counters (default 6)")
    add("--seed", type=int, default=7, help="traffic and image seed (default 7)")
    add(
        "--fault",
        action="append",
        default=[],
        metavar="SERIAL:KIND[:PARAM]",
        help="a fault to apply, e.g. FFC0002:offline or FFC0003:under_count:0.5 (repeatable)",
    )
    add("--port-base", type=int, default=None, help="first port (default: free ports)")
    add("--state-dir", default=None, help="agent state_dir in the printed config")
    add("--reference-dir", default=None, help="where to write reference images")
    args = parser.parse_args(argv)
    try:
        return run_standalone(
            args.counters,
            args.seed,
            args.fault,
            args.port_base,
            state_dir=args.state_dir,
            reference_dir=args.reference_dir,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a --port-base port already taken
        print(f"error: cannot listen on 127.0.0.1: {exc}", file=sys.stderr)
        return 1
