"""Log lines: journald priority prefixes under systemd, timestamps in a shell, never a secret."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import logs
from rma.redact import Redactor

STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide state: put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)
    logging.captureWarnings(False)


def emit_each_level() -> None:
    log = logging.getLogger("agent.runner")
    log.debug("debug line")
    log.info("counter %s back online", "C1")
    log.warning("counter %s offline", "C2")
    log.error("sink %s failed", "rt")
    log.critical("store unusable")


def test_priority_prefixes_under_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    logs.setup_logging(2, stream=out)
    emit_each_level()
    assert out.getvalue().splitlines() == [
        "<7>agent.runner: debug line",
        "<6>agent.runner: counter C1 back online",
        "<4>agent.runner: counter C2 offline",
        "<3>agent.runner: sink rt failed",
        "<2>agent.runner: store unusable",
    ]


def test_plain_format_with_a_timestamp_in_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    logs.setup_logging(1, stream=out)
    emit_each_level()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # -v: INFO and up
    assert re.fullmatch(rf"{STAMP} INFO agent\.runner: counter C1 back online", lines[0])
    assert re.fullmatch(rf"{STAMP} ERROR agent\.runner: sink rt failed", lines[2])
    assert not any(line.startswith("<") for line in lines)


def test_forced_formats_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    logs.setup_logging(0, journald=True, stream=out)
    logging.getLogger("agent").warning("w")
    assert out.getvalue() == "<4>agent: w\n"

    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    logs.setup_logging(0, journald=False, stream=out)
    logging.getLogger("agent").warning("w")
    assert re.fullmatch(rf"{STAMP} WARNING agent: w\n", out.getvalue())


def test_journal_stream_must_name_the_stream_when_it_has_a_descriptor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with (tmp_path / "stderr").open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.under_journald(stream)
        # inherited from a parent under systemd, but this stderr goes elsewhere
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not logs.under_journald(stream)
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not logs.under_journald(io.StringIO())


def test_every_line_of_a_traceback_keeps_the_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    logs.setup_logging(0, journald=True, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("agent.runner").exception("cycle failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>agent.runner: cycle failed"
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_a_planted_secret_is_scrubbed_from_messages_and_tracebacks() -> None:
    secret = "Tr0ub4dor&3-counter"
    out = io.StringIO()
    logs.setup_logging(0, journald=True, redactor=Redactor({secret}), stream=out)
    log = logging.getLogger("agent.probes.counter_api")
    log.warning("login to %s with %s refused", "C1", secret)
    try:
        raise ValueError(f"bad reply to password {secret}")
    except ValueError:
        log.exception("probe failed")
    text = out.getvalue()
    assert secret not in text
    assert "[REDACTED]" in text
    assert "<4>agent.probes.counter_api: login to C1 with [REDACTED] refused" in text


def test_the_pattern_layer_scrubs_even_without_a_redactor() -> None:
    out = io.StringIO()
    logs.setup_logging(0, journald=False, stream=out)
    logging.getLogger("agent").warning("GET /cgi-bin/apiCount.cgi?access_token=a1B2c3D4e5")
    assert "a1B2c3D4e5" not in out.getvalue()


def test_urllib3_stays_at_warning_even_with_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    logs.setup_logging(2, journald=True, stream=out)
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("urllib3").level == logging.WARNING
    urllib3_pool = logging.getLogger("urllib3.connectionpool")
    urllib3_pool.debug('http://10.0.0.5:80 "GET /cgi-bin/apiCount.cgi?x=1 HTTP/1.1" 200 99')
    urllib3_pool.warning("Retrying after connection broken")
    assert out.getvalue() == "<4>urllib3.connectionpool: Retrying after connection broken\n"


def test_quiet_loggers_follow_a_stricter_root_level() -> None:
    out = io.StringIO()
    logs.setup_logging(0, journald=True, stream=out)
    logging.getLogger("PIL.PngImagePlugin").info("STREAM b'IHDR'")
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("verbosity", "level"),
    [(-1, logging.WARNING), (0, logging.WARNING), (1, logging.INFO), (2, logging.DEBUG), (5, 10)],
)
def test_level_for(verbosity: int, level: int) -> None:
    assert logs.level_for(verbosity) == level


def test_calling_again_replaces_the_handler() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    first = logs.setup_logging(0, journald=True, stream=io.StringIO())
    out = io.StringIO()
    second = logs.setup_logging(0, journald=True, stream=out)
    assert first not in root.handlers
    assert second in root.handlers
    assert len(root.handlers) == before + 1
    logging.getLogger("agent").warning("once")
    assert out.getvalue() == "<4>agent: once\n"
