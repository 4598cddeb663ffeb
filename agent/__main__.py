"""``python -m agent`` is ``ffc-agent``."""

from agent.cli import main

main()
