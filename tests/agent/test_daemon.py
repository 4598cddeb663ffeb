"""``ffc-agent run`` as systemd runs it: a real subprocess, real signals, a real notify socket.

The service is what keeps an unattended gateway watching its counters, so these tests start
``python -m agent run`` the way the unit does (``Type=notify``, ``WatchdogSec=``, stderr to
journald) against a simulated fleet on 127.0.0.1, and read what systemd would read: the
datagrams on ``$NOTIFY_SOCKET`` with their sender's pid (``NotifyAccess=main`` checks it), the
exit code, the journal lines on stderr, and the state database left behind.

The schedule's pure parts (``Runner.plan``, the pause between cycles, the signal wake-up) are
tested in-process at the end, without servers.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.app import make_runner
from agent.config import parse_config
from agent.service.daemon import Daemon, pause
from agent.store import DB_NAME, Store
from diagnostics.model import Observation
from simulator import Fleet, SimCounter, SimSite

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Planted-Pa55-q7Zx"  # every counter's password: it must never reach the journal
ALL_DAY = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
# The probe phase's deadline is 1.75 probe timeouts (1.75 s here); a first fetch of four weeks
# of counts cut short by it is kept and goes on next cycle. 4 s cycles leave room on 2 cores.
CYCLE_S = 4
WATCHDOG_USEC = 1_000_000  # so the idle wait pings every 0.5 s
SERVICE_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")

# Generous: on a loaded 2-core box the agent imports numpy, Pillow and scikit-image first.
START_DEADLINE_S = 120.0
STEP_DEADLINE_S = 90.0
STOP_DEADLINE_S = 60.0


# -- systemd's side: the notify socket and the service process ------------------------------------


@dataclass(frozen=True)
class Note:
    """One datagram: who sent it (SCM_CREDENTIALS) and its KEY=VALUE lines."""

    pid: int
    fields: dict[str, str]


class NotifySocket:
    """The socket systemd owns, drained by a thread as systemd drains it: the kernel queues
    only ``net.unix.max_dgram_qlen`` datagrams (often 10) before the sender blocks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.notes: queue.Queue[Note] = queue.Queue()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="notify-socket", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        creds = struct.calcsize("3i")
        while not self._done.is_set():
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:creds])[0]
            lines = data.decode("utf-8", "replace").split("\n")
            self.notes.put(Note(pid, dict(line.split("=", 1) for line in lines if "=" in line)))

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Service:
    """``ffc-agent run`` in a subprocess, with its notify socket and its stderr in a file."""

    def __init__(self, config: Path, workdir: Path, *, verbose: bool = False) -> None:
        self.stderr_path = workdir / "stderr.log"
        self.seen: list[Note] = []  # every datagram handed out by next(), in order
        # An AF_UNIX path must fit in 108 bytes; pytest's tmp_path may not.
        self._sockdir = tempfile.TemporaryDirectory(prefix="ffc-notify-")
        self.notify = NotifySocket(str(Path(self._sockdir.name) / "notify"))
        self._stderr = self.stderr_path.open("wb")
        st = os.fstat(self._stderr.fileno())
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
        env.update(
            NOTIFY_SOCKET=self.notify.path,
            WATCHDOG_USEC=str(WATCHDOG_USEC),
            # what systemd sets when stderr is a journald stream: that stream's device:inode
            JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        argv = [sys.executable, "-m", "agent", *(["-vv"] if verbose else []), "run"]
        argv += ["--config", str(config)]
        # systemd sets WATCHDOG_PID to the main pid in the child before exec; `exec` keeps the
        # shell's pid, so $$ is the agent's own pid, and the agent's check of it is exercised.
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        self.pid = self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def lines(self) -> list[str]:
        return [line for line in self.stderr().splitlines() if line.strip()]

    def next(self, predicate: Callable[[Note], bool], what: str, deadline_s: float) -> Note:
        """The next datagram that satisfies ``predicate`` (those before it go to ``seen`` as
        well); fails with the service's stderr if the deadline passes or the service exits."""
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {what} within {deadline_s:.0f}s; stderr:\n{self.stderr()}")
            try:
                note = self.notify.notes.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.notify.notes.empty():
                    pytest.fail(
                        f"the service exited ({self.proc.returncode}) before {what}; "
                        f"stderr:\n{self.stderr()}"
                    )
                continue
            self.seen.append(note)
            if predicate(note):
                return note

    def ready(self, deadline_s: float = STEP_DEADLINE_S) -> Note:
        return self.next(lambda n: n.fields.get("READY") == "1", "READY=1", deadline_s)

    def status(self, pattern: str, deadline_s: float = STEP_DEADLINE_S) -> re.Match[str]:
        """The next cycle's ``STATUS=`` line (not READY's), which must match ``pattern``."""
        note = self.next(
            lambda n: "STATUS" in n.fields and "READY" not in n.fields,
            "a cycle's STATUS=",
            deadline_s,
        )
        match = re.search(pattern, note.fields["STATUS"])
        assert match is not None, (pattern, note.fields["STATUS"])
        return match

    def signal_and_wait(self, sig: int) -> int:
        """Send ``sig``; expects STOPPING=1 and returns the exit code."""
        self.proc.send_signal(sig)
        self.next(lambda n: n.fields.get("STOPPING") == "1", "STOPPING=1", STOP_DEADLINE_S)
        return self.wait_exit()

    def wait_exit(self, deadline_s: float = STOP_DEADLINE_S) -> int:
        try:
            return self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the service did not exit within {deadline_s:.0f}s:\n{self.stderr()}")

    def rest(self) -> list[Note]:
        """Every datagram still queued once the service has exited (also added to ``seen``):
        a marker sent after its exit arrives after everything it sent."""
        assert self.proc.poll() is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"TEST_MARKER=1", self.notify.path)
        start = len(self.seen)
        self.next(lambda n: "TEST_MARKER" in n.fields, "the test's marker", STEP_DEADLINE_S)
        self.seen.pop()
        return self.seen[start:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.notify.close()
        self._stderr.close()
        self._sockdir.cleanup()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Starts services; each one still running when the test ends is killed."""
    services: list[Service] = []

    def start(config: Path, *, verbose: bool = False) -> Service:
        workdir = tmp_path / f"service-{len(services)}"
        workdir.mkdir()
        services.append(Service(config, workdir, verbose=verbose))
        return services[-1]

    try:
        yield start
    finally:
        for service in services:
            service.close()


# -- the fleet and its configurations ------------------------------------------------------------


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """HEALTHY answers; OFFLINE has refused connections for an hour; SPARE is left out of the
    first configuration so that a reload can add it. The store is open around the clock."""
    site = SimSite("LDN01", "London", "Europe/London", ALL_DAY)
    counters = [
        SimCounter("HEALTHY", "Main door", "LDN01", base_rate=200.0, password=SECRET),
        SimCounter("OFFLINE", "Side door", "LDN01", base_rate=150.0, password=SECRET),
        SimCounter("SPARE", "Lift", "LDN01", base_rate=100.0, password=SECRET),
    ]
    with Fleet([site], counters, seed=5) as running:
        running.set_fault("OFFLINE", "offline", since=datetime.now(UTC) - timedelta(hours=1))
        yield running


def config_text(
    fleet: Fleet, state_dir: Path, *, without: tuple[str, ...] = ("SPARE",), **agent: Any
) -> str:
    """The fleet's configuration with a short cycle, without the counters in ``without``."""
    settings = {"cycle_seconds": CYCLE_S, "confirm_checks": 1, **agent}
    text = fleet.agent_config_toml(state_dir, probe_timeout_seconds=1, agent=settings)
    blocks = text.split("\n\n")
    return "\n\n".join(b for b in blocks if not any(f'serial = "{s}"' in b for s in without))


def db_rows(state_dir: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(state_dir / DB_NAME, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def local_tickets(state_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((state_dir / "tickets").glob("*.json"))]


def finished_cycles(state_dir: Path) -> int:
    return db_rows(state_dir, "SELECT COUNT(*) FROM cycles WHERE finished_at IS NOT NULL")[0][0]


def assert_intact(state_dir: Path) -> None:
    """What a stop must leave: a whole database, nothing half-sent, the ticket filed once."""
    assert db_rows(state_dir, "PRAGMA integrity_check") == [("ok",)]
    assert db_rows(state_dir, "SELECT COUNT(*) FROM outbox WHERE state = 'sending'") == [(0,)]
    assert db_rows(state_dir, "SELECT state FROM outbox WHERE kind = 'create'") == [("delivered",)]
    assert [t["counters"] for t in local_tickets(state_dir)] == [["OFFLINE"]]


# -- the service ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_service_cycles_files_once_and_stops_cleanly_on_sigterm(
    fleet: Fleet, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_text(fleet, state))
    service = start_service(config)

    ready = service.ready(START_DEADLINE_S)
    assert ready.fields.get("STATUS") == "watching 2 counters"
    first = service.status(r"^(\d+)/(\d+) counters up, (\d+) (problems?)[,;]")
    assert first.group(1, 2) == ("1", "2")  # HEALTHY up, OFFLINE down
    assert int(first.group(3)) >= 1
    assert first.group(4) == ("problem" if first.group(3) == "1" else "problems")  # in words
    service.status(r"counters up")
    quiet_from = len(service.lines())
    # Between two finished cycles the idle wait pings the watchdog as well as the cycle does.
    before = len(service.seen)
    service.status(r"^1/2 counters up")
    assert sum(n.fields == {"WATCHDOG": "1"} for n in service.seen[before:]) >= 3
    service.status(r"^1/2 counters up")

    # One incident and one ticket for the offline counter, however many cycles ran.
    assert finished_cycles(state) >= 4
    assert [t["counters"] for t in local_tickets(state)] == [["OFFLINE"]]
    # The live view is on its own, slower schedule (snapshot_seconds = 900): fetched once.
    count = "SELECT COUNT(*) FROM observations WHERE counter = 'HEALTHY' AND probe = ?"
    assert db_rows(state, count, "api")[0][0] >= 4
    assert db_rows(state, count, "snapshot")[0][0] == 1

    assert service.signal_and_wait(signal.SIGTERM) == 0
    assert_intact(state)

    service.rest()
    notes = service.seen
    # Only the agent itself spoke to the socket (what NotifyAccess=main accepts): the tools it
    # runs, such as timedatectl, must not inherit $NOTIFY_SOCKET and report there.
    assert {n.pid for n in notes} == {service.pid}
    assert {k for n in notes for k in n.fields} == {"READY", "STATUS", "WATCHDOG", "STOPPING"}

    lines = service.lines()
    assert not any(SECRET in line for line in lines)
    # journald's format: a priority on every line and no timestamp of our own
    assert all(re.match(r"<[0-7]>[\w.]+: \S", line) for line in lines), lines
    assert (
        sum(bool(re.search(r"^<4>.*incident \d+ open: counter OFFLINE", ln)) for ln in lines) == 1
    )
    assert sum(bool(re.search(r"ticket L-\d+ delivered", ln)) for ln in lines) == 1
    # One line per transition, not per cycle: once the counters settled they were not
    # mentioned again, and no line was repeated.
    assert not [ln for ln in lines[quiet_from:] if "HEALTHY" in ln or "OFFLINE" in ln]
    assert [ln for ln, n in Counter(lines).items() if n > 1] == []
    assert lines[-1].endswith("ffc-agent stopped")


@pytest.mark.integration
def test_sighup_reloads_a_good_configuration_and_keeps_the_running_one_otherwise(
    fleet: Fleet, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_text(fleet, state))
    service = start_service(config, verbose=True)  # -vv: even debug lines hold no secret
    service.ready(START_DEADLINE_S)
    service.status(r"^1/2 counters up")

    # A valid change: one more counter. It is watched from the next cycle on.
    config.write_text(config_text(fleet, state, without=()))
    service.proc.send_signal(signal.SIGHUP)
    reloading = service.next(lambda n: "RELOADING" in n.fields, "RELOADING=1", STEP_DEADLINE_S)
    assert reloading.fields["RELOADING"] == "1"
    assert int(reloading.fields["MONOTONIC_USEC"]) > 0  # what Type=notify-reload matches on
    assert service.ready().fields.get("STATUS") == "watching 3 counters"
    service.status(r"^2/3 counters up")
    spare = "SELECT COUNT(*) FROM findings WHERE subject = 'SPARE' AND check_id = 'counter.offline'"
    assert db_rows(state, spare)[0][0] >= 1

    # A broken file: every bad field is logged, as an error, and the running config stays.
    good = config.read_text()
    bad = good.replace('timezone = "Europe/London"', 'timezone = "Mars/Olympus"')
    config.write_text(bad.replace(f"cycle_seconds = {CYCLE_S}", "cycle_seconds = 0"))
    cycles = finished_cycles(state)
    service.proc.send_signal(signal.SIGHUP)
    service.next(lambda n: "RELOADING" in n.fields, "RELOADING=1", STEP_DEADLINE_S)
    assert "refused" in service.ready().fields.get("STATUS", "")
    errors = [ln for ln in service.lines() if ln.startswith("<3>")]
    assert any("sites[0].timezone: unknown time zone 'Mars/Olympus'" in ln for ln in errors)
    assert any("agent.cycle_seconds:" in ln for ln in errors)
    service.status(r"^2/3 counters up")  # still cycling, still with SPARE
    service.status(r"^2/3 counters up")
    assert finished_cycles(state) >= cycles + 2

    # A file that validates but cannot be used (its ticket directory cannot be created): the
    # running configuration stays too, instead of the service dying on the reload.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    sink = '[[sinks]]\ntype = "local"'
    assert sink in good
    unusable = good.replace(sink, f'{sink}\ndirectory = "{blocker / "tickets"}"')
    config.write_text(unusable.replace(f"cycle_seconds = {CYCLE_S}", "cycle_seconds = 1"))
    service.proc.send_signal(signal.SIGHUP)
    service.next(lambda n: "RELOADING" in n.fields, "RELOADING=1", STEP_DEADLINE_S)
    assert "refused" in service.ready().fields.get("STATUS", "")
    assert any(
        ln.startswith("<3>") and "keeping the running one" in ln and "not-a-directory" in ln
        for ln in service.lines()
    ), service.stderr()
    service.status(r"^2/3 counters up")

    # SIGINT (Ctrl-C in a remote session) stops it as SIGTERM does.
    assert service.signal_and_wait(signal.SIGINT) == 0
    assert_intact(state)  # and the reloads filed nothing twice
    assert {n.pid for n in service.seen} == {service.pid}
    assert SECRET not in service.stderr()


@pytest.mark.integration
def test_sighup_with_a_file_that_cannot_even_be_loaded_keeps_the_running_configuration(
    fleet: Fleet, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    """Not field mistakes: files that used to kill the service on reload (RecursionError,
    MemoryError from /dev/zero) or hang it (a FIFO). Each is one refusal, and cycles go on."""
    from tests.agent.test_config_loading import TOKEN, bad_files

    state = tmp_path / "state"
    config = tmp_path / "ffc-agent.toml"
    good = config_text(fleet, state)
    config.write_text(good)
    service = start_service(config)
    service.ready(START_DEADLINE_S)
    service.status(r"^1/2 counters up")

    (tmp_path / "bad").mkdir()
    bad = bad_files(tmp_path / "bad")
    for kind, path in bad.items():
        if kind == "not_utf8" or kind.endswith("_url") or kind == "oversized_secret":
            continue  # the same refusal path as a field mistake, covered above
        config.unlink()
        if kind == "directory":
            config.mkdir()
        else:
            os.rename(path, config)
        service.proc.send_signal(signal.SIGHUP)
        service.next(lambda n: "RELOADING" in n.fields, "RELOADING=1", STEP_DEADLINE_S)
        assert "refused" in service.ready().fields.get("STATUS", ""), kind
        service.status(r"^1/2 counters up")  # still cycling with the running configuration
        assert service.proc.poll() is None, kind
        if config.is_dir():
            config.rmdir()
        elif config.exists():
            config.unlink()
        config.write_text(good)
    refusals = [ln for ln in service.lines() if "keeping the running one" in ln]
    assert len(refusals) == 5
    assert TOKEN not in service.stderr() and "Traceback" not in service.stderr()
    assert service.signal_and_wait(signal.SIGTERM) == 0


@pytest.mark.integration
def test_a_damaged_state_file_is_kept_aside_and_the_service_runs_on_a_fresh_one(
    fleet: Fleet, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    from tests.agent.test_state_faults import T0, damage_second_half, fill

    state = tmp_path / "state"
    with Store.open(state) as store:
        for i in range(300):
            fill(store, T0 + timedelta(minutes=5 * i))
    damage_second_half(state / DB_NAME)
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_text(fleet, state))
    service = start_service(config)
    service.ready(START_DEADLINE_S)
    service.status(r"^1/2 counters up")  # cycles, no traceback, on a fresh file
    [aside] = state.glob(f"{DB_NAME}.damaged-*")
    lines = [ln for ln in service.lines() if "damaged" in ln]
    assert len(lines) == 1 and lines[0].startswith("<3>") and aside.name in lines[0]
    assert "Traceback" not in service.stderr()
    assert service.signal_and_wait(signal.SIGTERM) == 0
    assert db_rows(state, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.integration
def test_a_state_file_of_another_schema_stops_the_service_with_65_before_ready(
    fleet: Fleet, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    from agent.store import EX_SCHEMA

    state = tmp_path / "state"
    Store.open(state).close()
    db = sqlite3.connect(state / DB_NAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = (state / DB_NAME).read_bytes()
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_text(fleet, state))
    service = start_service(config)
    assert service.wait_exit(START_DEADLINE_S) == EX_SCHEMA  # RestartPreventExitStatus
    assert not any("READY" in n.fields for n in service.rest())
    errors = [ln for ln in service.lines() if ln.startswith("<3>")]
    assert len(errors) == 1 and "schema 99" in errors[0], service.stderr()
    assert (state / DB_NAME).read_bytes() == before


@pytest.mark.integration
def test_a_bad_configuration_at_start_exits_78_before_ready(
    fleet: Fleet, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    text = config_text(fleet, tmp_path / "state")
    config = tmp_path / "ffc-agent.toml"
    config.write_text(text.replace('timezone = "Europe/London"', 'timezone = "Mars/Olympus"'))
    service = start_service(config)

    assert service.wait_exit(START_DEADLINE_S) == 78  # EX_CONFIG: the unit does not restart
    assert not any("READY" in n.fields for n in service.rest())
    lines = service.lines()
    assert any(
        # the same line `config check` prints, at priority 3 (error)
        re.match(r"<3>sites\[0\]\.timezone: unknown time zone 'Mars/Olympus'$", ln)
        for ln in lines
    ), lines
    assert SECRET not in service.stderr()
    assert not (tmp_path / "state").exists()  # nothing was started


@pytest.mark.integration
def test_a_state_directory_that_cannot_be_used_fails_the_start_with_an_error_line(
    fleet: Fleet, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_text(fleet, blocker / "state"))
    service = start_service(config)

    # 1, not 78: a full disk or a permission fixed by hand heals, and systemd retries.
    assert service.wait_exit(START_DEADLINE_S) == 1
    assert not any("READY" in n.fields for n in service.rest())
    lines = service.lines()
    # The reason is one error line journald files as such, not an unprefixed traceback.
    assert all(ln.startswith("<") for ln in lines), lines
    assert any(ln.startswith("<3>") and "not-a-directory" in ln for ln in lines), lines


# -- the schedule, in-process ---------------------------------------------------------------------


def test_cycles_start_every_cycle_seconds_with_jitter_whatever_a_cycle_takes() -> None:
    # the pause after a cycle that took `elapsed` seconds, for a jitter draw
    assert pause(300, 0, 0.0) == 300
    assert pause(300, 30, 0.0) == 270  # counted from the start of the cycle
    assert pause(300, 30, 0.1) == pytest.approx(300)
    assert pause(300, 30, -0.1) == pytest.approx(240)
    # An overrun skips to the next boundary of the period: never cycles back to back.
    assert pause(300, 400, 0.0) == 200
    assert pause(300, 300, 0.0) == 0

    daemon = Daemon(Path("unused.toml"), rng=random.Random(7))
    try:
        waits = [daemon.pause(300, 10) for _ in range(200)]
    finally:
        daemon.close()
    assert all(260 <= w <= 320 for w in waits)  # ±10 %
    assert max(waits) - min(waits) > 30  # and spread, so a chain's gateways drift apart


def test_a_signal_only_sets_a_flag_and_wakes_the_idle_wait(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "unused.toml")
    daemon.install_signals()
    try:
        signal.raise_signal(signal.SIGHUP)
        assert daemon.signals.reload
        assert not daemon.signals.stop
        daemon.idle(3600)  # returns at once: a reload is waiting
        daemon.signals.reload = False

        # Sent from another thread, it arrives before or during the wait; either way the
        # wait ends (a wait that ignored it would hold this test for an hour).
        sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
        sender.start()
        daemon.idle(3600)
        sender.join()
        assert daemon.signals.stop
    finally:
        daemon.close()


def test_plan_fetches_the_live_view_and_ssh_on_their_own_slower_schedules(
    tmp_path: Path,
) -> None:
    key = tmp_path / "ssh-key"
    key.write_text("unused: nothing connects in this test")

    def config(**agent: Any) -> Any:
        counter = {"site": "LDN01", "host": "127.0.0.1"}
        return parse_config(
            {
                "agent": {"state_dir": str(tmp_path / "state"), "cycle_seconds": 300, **agent},
                "sites": [
                    {
                        "code": "LDN01",
                        "name": "London",
                        "timezone": "Europe/London",
                        "opening_hours": ALL_DAY,
                    }
                ],
                "counters": [
                    {
                        "serial": "SSH",
                        "name": "a",
                        **counter,
                        "ssh": {"user": "pi", "key_file": str(key)},
                    },
                    {"serial": "PLAIN", "name": "b", **counter},
                ],
            },
            base_dir=tmp_path,
        )

    now = datetime(2026, 11, 25, 14, 7, 30, tzinfo=UTC)
    cfg = config(snapshot_seconds=900, ssh_seconds=3600)
    with Store.open(tmp_path / "state") as store:
        runner = make_runner(cfg, store, sinks=[])
        with_ssh, plain = cfg.counters

        first = runner.plan(with_ssh, now)
        assert (first.snapshot, first.ssh) == (True, True)  # never fetched: due now
        # counts from the history window, on a slot boundary
        assert first.fetch_from == datetime(2026, 10, 28, 14, 0, tzinfo=UTC)
        assert runner.plan(plain, now).ssh is False  # no SSH where none is configured

        store.add_observation(Observation("SSH", "snapshot", now, True))
        store.add_observation(Observation("SSH", "ssh", now, True))

        def due(seconds: int) -> tuple[bool, bool]:
            p = runner.plan(with_ssh, now + timedelta(seconds=seconds))
            return p.snapshot, p.ssh

        assert due(300) == (False, False)  # the next cycle
        assert due(900) == (True, False)  # snapshot_seconds after the last one
        assert due(3600) == (True, True)  # ssh_seconds after the last one

        # 0 means every cycle
        every = make_runner(config(snapshot_seconds=0, ssh_seconds=0), store, sinks=[])
        p = every.plan(every.config.counters[0], now + timedelta(seconds=1))
        assert (p.snapshot, p.ssh) == (True, True)
