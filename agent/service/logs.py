"""Logging for the daemon and the CLI: one line per event on stderr, never a secret.

Under systemd the agent's stderr is a journald stream. journald stamps each line itself and
reads a leading ``<N>`` as its syslog priority (sd-daemon(3)), so there each line is
``<3>agent.runner: ...`` and ``journalctl -u ffc-agent -p warning`` shows just the problems,
in the right colour. In a shell (support staff in a remote session, an installer trying
``ffc-agent check``) lines carry a timestamp and a level name instead.

Every line passes ``rma.redact``: the pattern layer always (``password=...``, URL credentials,
``Authorization`` headers, PEM keys), and the configured secrets by value when the caller hands
over its ``Redactor``. urllib3 is held at WARNING whatever the verbosity: at DEBUG it logs
request URLs with their query strings, and the counter API carries its token there.

``setup_logging`` may be called again (after a configuration reload, say): it replaces the
handler it installed before and leaves any other handler alone.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import sys
from typing import Protocol, TextIO, cast

from rma.redact import RedactingFilter, Redactor

# Loggers that are chatty or leaky below these levels, whatever -v asks for.
QUIET_LOGGERS = {
    "urllib3": logging.WARNING,  # DEBUG: "GET /cgi-bin/apiCount.cgi?...&access_token=..."
    "paramiko": logging.WARNING,  # INFO: "Connected ...", "Authentication ... successful" per probe
    "PIL": logging.INFO,  # DEBUG: one line per PNG chunk
}

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PLAIN_DATEFMT = "%Y-%m-%d %H:%M:%S"
JOURNAL_FORMAT = "%(name)s: %(message)s"


class _TextRedactor(Protocol):
    def text(self, s: str) -> str: ...


def syslog_priority(levelno: int) -> int:
    """The syslog priority for a ``logging`` level: 2 crit, 3 err, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, without a timestamp (journald adds its own).

    journald splits a stream at newlines and reads the prefix per line, so every line of a
    multi-line record (a traceback) carries it: the whole traceback is filed as an error.
    """

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


class _Handler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so a second call replaces it."""


def under_journald(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is connected to journald.

    systemd sets ``$JOURNAL_STREAM`` to the ``device:inode`` of the stream it connected; a
    child whose stderr was redirected inherits the variable but not the stream, so the pair is
    compared where the stream has a file descriptor, as systemd.exec(5) recommends.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        dev, ino = (int(part) for part in value.split(":"))
    except ValueError:
        return True  # set but unreadable: systemd set something, believe it
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return True  # no descriptor to compare (a test's buffer): go by the variable
    return (st.st_dev, st.st_ino) == (dev, ino)


def level_for(verbosity: int) -> int:
    """0 → WARNING, 1 (``-v``) → INFO, 2 (``-vv``) or more → DEBUG."""
    return max(logging.WARNING - 10 * max(verbosity, 0), logging.DEBUG)


def setup_logging(
    verbosity: int,
    *,
    journald: bool | None = None,
    redactor: _TextRedactor | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (default: stderr) at ``level_for(verbosity)``.

    ``journald``: None detects it (``under_journald``); True or False forces the format.
    ``redactor``: anything with ``.text(str) -> str``, usually the ``rma.redact.Redactor`` built
    from ``Config.secret_values()``; without one, the pattern layer alone still scrubs.
    Returns the installed handler.
    """
    target = sys.stderr if stream is None else stream
    if journald is None:
        journald = under_journald(target)
    handler = _Handler(target)
    if journald:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATEFMT))
    # RedactingFilter only ever calls .text(): any object with it will do.
    scrubber = cast(Redactor, redactor) if redactor is not None else Redactor()
    handler.addFilter(RedactingFilter(scrubber))

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_for(verbosity))
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
    logging.captureWarnings(True)
    return handler


class LogRing(logging.Handler):
    """The last ``size`` log lines, redacted, for the excerpt a diagnostics bundle carries."""

    def __init__(self, size: int = 500, redactor: _TextRedactor | None = None) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATEFMT))
        scrubber = cast(Redactor, redactor) if redactor is not None else Redactor()
        self.addFilter(RedactingFilter(scrubber))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


def config_errors(lines: list[str], heading: str = "") -> None:
    """Print configuration error lines as they are, bypassing the redactor.

    They are built never to repeat a secret's value (agent/config.py), and the pattern layer
    would take ``counters[0].password: expected a string`` for a password and eat the reason.
    """
    prefix = f"<{syslog_priority(logging.ERROR)}>" if under_journald() else ""
    for line in ([heading] if heading else []) + lines:
        sys.stderr.write(f"{prefix}{line}\n")
    sys.stderr.flush()
