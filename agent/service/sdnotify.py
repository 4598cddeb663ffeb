"""sd_notify(3), written by hand: tell systemd the agent is ready, what it is doing, and alive.

The unit is ``Type=notify`` with ``WatchdogSec=``: systemd considers the agent started only
once it says ``READY=1`` (after the configuration is loaded and the store opened), shows the
one-line ``STATUS=`` in ``systemctl status``, and restarts the agent when the ``WATCHDOG=1``
pings stop, so a hung agent on an unattended gateway comes back by itself instead of going
quietly blind. The protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket
named by ``$NOTIFY_SOCKET`` (a name starting with ``@`` is in the abstract namespace); a few
lines here spare a dependency on libsystemd or a wheel that needs it.

Contract:

- Outside systemd (no ``$NOTIFY_SOCKET``: a shell, a test, a container) every call does
  nothing and returns False, so the daemon never needs to ask where it runs.
- Nothing here raises. A failed send returns False and is logged once, at debug: the agent's
  job is watching counters, and it must not fall over because the service manager is busy.
- ``STATUS=`` is readable by every local user (``systemctl status``): ``status()`` puts the
  text on one line and scrubs it (the redactor's pattern layer, or the one given).
- The service calls ``take_environment()`` once at start: the variables then live on here
  and leave ``os.environ``, so the programs the agent runs do not inherit them. systemd's own
  tools (timedatectl) report a failure to ``$NOTIFY_SOCKET`` as ``ERRNO=``; under
  ``NotifyAccess=main`` systemd drops each such message with a warning in the journal.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Protocol

from rma.redact import scrub

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 2.0  # a full notify queue must not stall the cycle; systemd drains it fast
STATUS_MAX = 200  # one line in `systemctl status`, not an essay

_send_failed_logged = False
_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_taken: dict[str, str] = {}  # the variables take_environment() moved out of os.environ


class _TextRedactor(Protocol):
    def text(self, s: str) -> str: ...


def _env(name: str) -> str:
    """A variable of the service manager's: the environment's, else the one taken from it."""
    value = os.environ.get(name)
    return value if value is not None else _taken.get(name, "")


def take_environment() -> None:
    """Keep ``$NOTIFY_SOCKET`` and the watchdog variables for this process alone: remove them
    from the environment child processes inherit (what ``sd_notify(unset_environment=1)``
    does), while every function here goes on using them."""
    for name in _VARIABLES:
        value = os.environ.pop(name, None)
        if value is not None:
            _taken[name] = value


def _address() -> str | None:
    """The notify socket's address for ``socket.sendto``, or None when there is none."""
    name = _env("NOTIFY_SOCKET")
    if name.startswith("@"):
        return "\0" + name[1:]  # Linux abstract namespace
    if name.startswith("/"):
        return name
    # Unset, empty, or a transport this module does not speak (systemd 254's "vsock:"):
    # the agent runs on regardless.
    return None


def notify(message: str) -> bool:
    """Send ``message`` (newline-separated ``KEY=VALUE`` assignments) to the service manager.

    True when the datagram was sent; False without ``$NOTIFY_SOCKET`` or when sending failed.
    """
    global _send_failed_logged
    address = _address()
    if address is None:
        return False
    data = message.encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(data, address)
    except OSError as exc:
        if not _send_failed_logged:
            _send_failed_logged = True
            log.debug("sd_notify to %s failed: %s", _env("NOTIFY_SOCKET"), exc)
        return False
    return True


def one_line(text: str, redactor: _TextRedactor | None = None) -> str:
    """``text`` as one scrubbed line of at most ``STATUS_MAX`` characters."""
    line = " ".join(text.split())
    line = redactor.text(line) if redactor is not None else scrub(line)
    return line if len(line) <= STATUS_MAX else line[: STATUS_MAX - 1] + "…"


def ready(status_text: str | None = None) -> bool:
    """The agent is up (and, after a reload, up again); optionally with its first status."""
    return notify("READY=1" + (f"\nSTATUS={one_line(status_text)}" if status_text else ""))


def status(text: str, redactor: _TextRedactor | None = None) -> bool:
    """Set the one-line status ``systemctl status ffc-agent`` shows, e.g. the last cycle."""
    return notify(f"STATUS={one_line(text, redactor)}")


def watchdog() -> bool:
    """Tell the watchdog the agent is alive. Send at least every ``watchdog_interval() / 2``."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """The agent received SIGTERM and is finishing the step in flight."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """The agent is re-reading its configuration (SIGHUP); send ``ready()`` when done.

    ``MONOTONIC_USEC`` makes the message valid for ``Type=notify-reload`` (systemd 253+) too,
    which matches it against the time the reload was asked for.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (``WatchdogSec=``), or None when there is no watchdog
    for this process: ``$WATCHDOG_USEC`` unset, not a positive number, or ``$WATCHDOG_PID``
    naming another process (the variables leaked into a child)."""
    usec = _env("WATCHDOG_USEC")
    pid = _env("WATCHDOG_PID")
    try:
        timeout = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return timeout / 1_000_000 if timeout > 0 else None
