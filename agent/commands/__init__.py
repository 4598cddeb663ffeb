"""What each ``ffc-agent`` command does: one module per command group (``status.py`` holds
``ffc-agent status``, ``tickets.py`` the ``tickets`` group …), with ``common.py`` for what they
share. ``agent/cli.py`` maps each command name to its module in ``COMMANDS`` and imports the
module only when the command runs, so a module keeps its heavy imports inside its functions.
A command takes its parts from ``agent.app.App`` and its "now" from ``common.clock()``."""
