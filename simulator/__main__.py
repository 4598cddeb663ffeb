"""``python -m simulator``: serve a simulated fleet and print its agent config."""

import sys

from simulator.standalone import cli_main

sys.exit(cli_main())
