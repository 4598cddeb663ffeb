"""How long ``ffc-agent --help`` takes, for the root and each command, and what each loads.

Runs each ``--help`` in a fresh interpreter (``python -m agent``) N times and prints the best
wall time, and which heavy modules (numpy, Pillow, holidays, paramiko, pydantic, rich,
requests) the help loaded: a command's help should load only what the help itself needs.
Asserts nothing; on a shared machine read the best-of figures.

Run: ``python3 bench/startup.py [--repeat 5] [COMMAND ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEAVY = ("numpy", "PIL", "holidays", "paramiko", "pydantic", "rich", "requests", "psutil")
PROBE = (
    "import sys, json, runpy\n"
    "sys.argv = ['ffc-agent', *json.loads(sys.argv[1])]\n"
    "try:\n"
    "    runpy.run_module('agent', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
    "sys.stderr.write('\\nHEAVY ' + json.dumps(heavy) + '\\n')\n"
)


def run(args: list[str]) -> tuple[float, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    wall = time.perf_counter() - began
    line = [x for x in done.stderr.splitlines() if x.startswith("HEAVY ")]
    return wall, json.loads(line[-1][6:]) if line else ["?"]


def main() -> None:
    from agent.cli import COMMANDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("commands", nargs="*", default=["", *sorted(COMMANDS)])
    args = parser.parse_args()
    print(f"--help, best of {args.repeat} (wall ms), and the heavy modules it loaded")
    for name in args.commands:
        argv = [*name.split(), "--help"] if name else ["--help"]
        best, heavy = min(run(argv) for _ in range(args.repeat))
        label = f"ffc-agent {' '.join(argv)}"
        print(f"  {label:36s} {best * 1000:7.0f} ms  {', '.join(heavy) or '-'}")


if __name__ == "__main__":
    main()
