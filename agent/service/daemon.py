"""``ffc-agent run``: the service — cycles on schedule, reloads on SIGHUP, stops cleanly.

Contract with systemd (``systemd/ffc-agent.service``, ``Type=notify``):

- a bad configuration at start exits 78 (EX_CONFIG) before ``READY=1``: the unit does not
  restart a typo; a bad configuration on SIGHUP keeps the running one and logs why, line by line;
- ``READY=1`` once the store is open; ``STATUS=`` a one-line summary after every cycle; watchdog
  pings between every stage and while sleeping, so a wedged agent is restarted;
- SIGTERM or SIGINT finishes the current step and exits 0; every state change is in SQLite
  transactions and the outbox, so nothing is lost or sent twice across a stop;
- cycles start every ``cycle_seconds`` with ±10 % jitter, so the gateways of a chain do not
  poll and file in step; a cycle that overruns skips to the next start, never runs back to
  back; a cycle that fails unexpectedly is logged with its traceback and the next one runs as
  usual;
- a start that cannot open the state directory or the destinations logs why and exits 1
  (systemd retries: a full disk or a permission fixed by hand heals); a damaged state file is
  moved aside by the store and a fresh one used; a state file of a schema this agent does not
  know exits 65 (``EX_SCHEMA``), which the unit does not restart either;
- a configuration that fails to load in any way (``ConfigError``, whatever the cause) is exit
  78 at start and, on SIGHUP, one logged refusal while the running configuration carries on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from agent.app import App
from agent.config import EX_CONFIG, Config, ConfigError, load_config
from agent.runner import CycleResult, Runner
from agent.service import sdnotify
from agent.service.logs import LogRing, config_errors, setup_logging
from agent.store import Store, StoreError, StoreSchemaError, damage_in
from diagnostics.checks import counter_up
from diagnostics.model import SYSTEM_CLOCK, plural

log = logging.getLogger(__name__)

JITTER = 0.1
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def pause(cycle_seconds: float, elapsed: float, jitter: float) -> float:
    """Seconds to wait after a cycle that took ``elapsed``, so that cycles start every
    ``cycle_seconds * (1 + jitter)`` counted from the start of the last one; one that overran
    waits for the next boundary of the period instead of starting the next one at once."""
    period = cycle_seconds * (1 + jitter)
    return period - elapsed if elapsed < period else -elapsed % period


class _Signals:
    """Which signals arrived, and a way to sleep until the next one.

    A Python signal handler runs in the main thread between two bytecodes, possibly while that
    thread is inside ``threading.Event.wait`` holding the event's lock: an ``Event.set`` in the
    handler then waits for that lock forever (the trap of python/cpython#126434). So the handler
    only sets these flags, and ``wait`` sleeps on a pipe the interpreter writes a byte to when
    a signal arrives (``signal.set_wakeup_fd``), which no lock guards.
    """

    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    @property
    def wakeup_fd(self) -> int:
        return self._write

    def wait(self, timeout: float) -> None:
        """Up to ``timeout`` seconds, less if a signal arrives (or arrived since the last)."""
        readable, _, _ = select.select([self._read], [], [], max(timeout, 0.0))
        if readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read, 512):
                    pass

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def summary(result: CycleResult, config: Config) -> str:
    """The one line systemd shows as the unit's status."""
    problems = result.problems
    up = sum(1 for a in result.assessed if counter_up(a.finding))
    probed = sum(1 for c in config.counters if c.host)
    head = f"{up}/{probed} counters up, {plural(len(problems), 'problem')}"
    if result.tickets:
        head += f", {plural(len(result.tickets), 'ticket')} filed"
    return f"{head}; last cycle {result.started_at:%H:%M:%S} in {result.duration_s:.1f}s"


class Daemon:
    def __init__(
        self,
        config_path: Path,
        *,
        clock: Any = None,
        rng: random.Random | None = None,
        verbosity: int = 1,
    ):
        self.config_path = Path(config_path)
        self.verbosity = verbosity
        self.clock = clock or SYSTEM_CLOCK
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.signals = _Signals()
        self._previous: dict[int, Any] = {}
        self._previous_wakeup_fd: int | None = None
        self.ring = LogRing()
        self.push: Any = None
        self.metrics: Any = None

    # -- signals ------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Flags only: see _Signals for why nothing here may take a lock.
        if signum == signal.SIGHUP:
            self.signals.reload = True
        else:
            self.signals.stop = True

    def install_signals(self) -> None:
        """Handle SIGTERM, SIGINT and SIGHUP (main thread only); ``close`` undoes it."""
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        self._previous_wakeup_fd = signal.set_wakeup_fd(
            self.signals.wakeup_fd, warn_on_full_buffer=False
        )

    def close(self) -> None:
        """Put the previous signal handlers back and release the wake-up pipe."""
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None
        while self._previous:
            sig, handler = self._previous.popitem()
            signal.signal(sig, handler)
        self.signals.close()

    # -- the life of the service ------

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> int:
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            config_errors(exc.lines)
            return EX_CONFIG
        # The tools the agent runs (timedatectl) must not report to systemd in its name.
        sdnotify.take_environment()
        self.install_signals()
        try:
            store = Store.open(Path(config.agent.state_dir))
        except StoreSchemaError as exc:
            log.error("cannot start: %s", exc)
            return exc.exit_code
        except (StoreError, OSError) as exc:
            log.error("cannot start: %s", exc)
            return 1
        with store:
            try:
                runner = self._runner(config, store)
            except OSError as exc:
                log.error("cannot start: %s", exc)
                return 1
            self._start_extras(config, runner)
            sdnotify.ready(f"watching {plural(len(config.counters), 'counter')}")
            log.warning(
                "ffc-agent started: %s, %s, cycle %ds",
                plural(len(config.counters), "counter"),
                plural(len(config.sites), "site"),
                config.agent.cycle_seconds,
            )
            try:
                while not self.signals.stop:
                    if self.signals.reload:
                        config, runner = self._reload(config, runner, store)
                    started = time.monotonic()
                    if self._cycle(runner, config, store):
                        try:
                            runner = self._fresh_store(config, runner, store)
                        except (StoreError, OSError) as exc:
                            log.error("cannot go on: %s", exc)
                            return 1
                    self.idle(self.pause(config.agent.cycle_seconds, time.monotonic() - started))
            finally:
                sdnotify.stopping()
                self._stop_extras()
                logging.getLogger().removeHandler(self.ring)
                log.warning("ffc-agent stopped")
        return 0

    def _runner(self, config: Config, store: Store) -> Runner:
        """A runner for ``config``, from its own ``App`` on the service's store; logging and
        the log ring scrub with its redactor."""
        app = App(config, store, clock=self.clock, log_excerpt=lambda: self.ring.text())
        runner = app.runner
        runner.heartbeat = runner.tickets.heartbeat = sdnotify.watchdog
        setup_logging(max(self.verbosity, 1), redactor=runner.redactor)
        root = logging.getLogger()
        root.removeHandler(self.ring)
        lines = list(self.ring.lines)
        self.ring = LogRing(redactor=runner.redactor)
        self.ring.lines.extend(runner.redactor.text(line) for line in lines)
        root.addHandler(self.ring)
        return runner

    def _cycle(self, runner: Runner, config: Config, store: Store) -> bool:
        """One cycle; True when it showed the state file to be damaged."""
        sdnotify.watchdog()
        try:
            result = runner.run_cycle()
        except Exception as exc:  # process boundary: one bad cycle must not stop the service
            if damage_in(exc) or store.damage:
                return True
            log.exception("the cycle failed; the next one runs as usual")
            sdnotify.status("last cycle failed: see the journal")
            return False
        if store.damage:
            return True
        sdnotify.watchdog()
        sdnotify.status(summary(result, config), runner.redactor)
        try:
            self._metrics(runner, result)
        except Exception:  # process boundary: metrics must never stop the service
            log.exception("updating the metrics failed")
        return False

    def _fresh_store(self, config: Config, runner: Runner, store: Store) -> Runner:
        """The state file was found damaged while running: never write into it again. It is
        kept aside (one error line), a fresh store takes its place, and the parts are built
        anew on it (their caches belong to the old file)."""
        store.recover(store.damage or "a statement found the file damaged")
        sdnotify.status("state database was damaged: kept aside, running on a fresh one")
        self._stop_extras()
        runner.app.close()
        runner = self._runner(config, store)
        self._start_extras(config, runner)
        return runner

    def pause(self, cycle_seconds: float, elapsed: float) -> float:
        """The wait before the next cycle, with this cycle's jitter drawn."""
        return pause(cycle_seconds, elapsed, self.rng.uniform(-JITTER, JITTER))

    def idle(self, seconds: float) -> None:
        """Wait ``seconds``, pinging the watchdog; return early on a stop or reload signal."""
        interval = sdnotify.watchdog_interval()
        step = min(seconds, interval / 2) if interval else seconds
        end = time.monotonic() + seconds
        while not self.signals.stop and not self.signals.reload:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.signals.wait(min(step, left))
            sdnotify.watchdog()

    def _reload(self, config: Config, runner: Runner, store: Store) -> tuple[Config, Runner]:
        self.signals.reload = False
        sdnotify.reloading()
        try:
            new = load_config(self.config_path)
        except Exception as exc:  # noqa: BLE001 - boundary: no new file may stop the service
            lines = (
                exc.lines
                if isinstance(exc, ConfigError)
                else [f"{self.config_path}: cannot be loaded ({type(exc).__name__})"]
            )
            config_errors(
                [f"  {line}" for line in lines],
                "the new configuration is not valid; keeping the running one:",
            )
            sdnotify.ready("configuration reload refused: see the journal")
            return config, runner
        if Path(new.agent.state_dir) != Path(config.agent.state_dir):
            log.error(
                "state_dir cannot change on reload (restart the service); keeping the "
                "running configuration"
            )
            sdnotify.ready()
            return config, runner
        try:
            new_runner = self._runner(new, store)
        except OSError as exc:  # valid, but unusable here (a ticket directory it cannot make)
            log.error("cannot use the new configuration (%s); keeping the running one", exc)
            sdnotify.ready("configuration reload refused: see the journal")
            return config, runner
        self._stop_extras()
        runner.app.close()
        runner = new_runner
        self._start_extras(new, runner)
        log.warning(
            "configuration reloaded: %s, %s",
            plural(len(new.counters), "counter"),
            plural(len(new.sites), "site"),
        )
        sdnotify.ready(f"watching {plural(len(new.counters), 'counter')}")
        return new, runner

    # -- push and metrics ------

    def _start_extras(self, config: Config, runner: Runner) -> None:
        from agent.service.metrics import Metrics

        self.metrics = Metrics(sinks=[s.name for s in runner.sinks])
        if config.metrics.http_port:
            try:
                self.metrics.serve(config.metrics.http_port, config.metrics.http_host)
            except OSError as exc:
                log.error("cannot serve metrics on port %s: %s", config.metrics.http_port, exc)
        if config.mqtt is not None:
            from agent.probes.mqtt import PushListener

            self.push = PushListener.from_config(
                config.mqtt, serials=[c.serial for c in config.counters], clock=self.clock
            )
            self.push.start()
            runner.push = self.push

    def _stop_extras(self) -> None:
        if self.push is not None:
            self.push.stop()
            self.push = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def _metrics(self, runner: Runner, result: CycleResult) -> None:
        if self.metrics is None:
            return
        config = runner.config
        now = self.clock.now()
        tickets = []
        for sink in runner.sinks:
            if sink.name == "local":
                tickets += sink.list()
        self.metrics.update_from_cycle(
            result,
            incidents=runner.store.incidents(open_only=True),
            tickets=tickets,
            outbox=runner.tickets.outbox.depth(now),
            now=now,
            observations=result.observations,
            counter_sites={c.serial: c.site for c in config.counters},
            rma_states={r.counter: r.state.value for r in runner.rmas.all(open_only=True)},
        )
        for sink_name, n in runner.tickets.last_filed.items():
            self.metrics.record_filed(sink_name, n)
        if config.metrics.textfile:
            try:
                self.metrics.write_textfile(config.metrics.textfile)
            except OSError as exc:
                log.error("cannot write the metrics file %s: %s", config.metrics.textfile, exc)
