"""``ffc-agent run``: the service — cycles on schedule, reloads on SIGHUP, stops cleanly.

Contract with systemd (``systemd/ffc-agent.service``, ``Type=notify``):

- a bad configuration at start exits 78 (EX_CONFIG) before ``READY=1``: the unit does not
  restart a typo; a bad configuration on SIGHUP keeps the running one and logs why, line by line;
- ``READY=1`` once the store is open; ``STATUS=`` a one-line summary after every cycle; watchdog
  pings between every stage and while sleeping, so a wedged agent is restarted;
- SIGTERM or SIGINT finishes the current step and exits 0; every state change is in SQLite
  transactions and the outbox, so nothing is lost or sent twice across a stop;
- cycles start every ``cycle_seconds`` with ±10 % jitter, so the gateways of a chain do not
  poll and file in step; a cycle that fails unexpectedly is logged with its traceback and the
  next one runs as usual.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from agent import sdnotify
from agent.config import EX_CONFIG, Config, ConfigError, load_config
from agent.logs import LogRing, setup_logging
from agent.runner import CycleResult, Runner, SystemClock
from agent.store import Store

log = logging.getLogger(__name__)

JITTER = 0.1


@dataclass
class _Signals:
    stop: threading.Event
    reload: threading.Event


def summary(result: CycleResult, config: Config) -> str:
    """The one line systemd shows as the unit's status."""
    problems = result.problems
    up = sum(
        1
        for a in result.assessed
        if a.finding.check_id == "counter.offline" and a.finding.status.value == "ok"
    )
    probed = sum(1 for c in config.counters if c.host)
    head = f"{up}/{probed} counters up, {len(problems)} problem(s)"
    if result.tickets:
        head += f", {len(result.tickets)} ticket(s) filed"
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
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.signals = _Signals(threading.Event(), threading.Event())
        self.ring = LogRing()
        self.push: Any = None
        self.metrics: Any = None

    # -- signals ------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.signals.reload.set()
        else:
            self.signals.stop.set()

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    # -- the life of the service ------

    def run(self) -> int:
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            for line in exc.lines:
                log.error("%s", line)
            return EX_CONFIG
        self.install_signals()
        with Store.open(Path(config.agent.state_dir)) as store:
            runner = self._runner(config, store)
            self._start_extras(config, runner)
            sdnotify.ready(f"watching {len(config.counters)} counters")
            log.warning(
                "ffc-agent started: %d counters, %d sites, cycle %ds",
                len(config.counters),
                len(config.sites),
                config.agent.cycle_seconds,
            )
            try:
                while not self.signals.stop.is_set():
                    if self.signals.reload.is_set():
                        config, runner = self._reload(config, runner, store)
                    self._cycle(runner, config)
                    self._sleep(config.agent.cycle_seconds)
            finally:
                sdnotify.stopping()
                self._stop_extras()
                logging.getLogger().removeHandler(self.ring)
                log.warning("ffc-agent stopped")
        return 0

    def _runner(self, config: Config, store: Store) -> Runner:
        """A runner for ``config``; logging and the log ring scrub with its redactor."""
        runner = Runner(config, store, clock=self.clock, log_excerpt=lambda: self.ring.text())
        setup_logging(max(self.verbosity, 1), redactor=runner.redactor)
        root = logging.getLogger()
        root.removeHandler(self.ring)
        lines = list(self.ring.lines)
        self.ring = LogRing(redactor=runner.redactor)
        self.ring.lines.extend(runner.redactor.text(line) for line in lines)
        root.addHandler(self.ring)
        return runner

    def _cycle(self, runner: Runner, config: Config) -> None:
        sdnotify.watchdog()
        try:
            result = runner.run_cycle()
        except Exception:  # process boundary: one bad cycle must not stop the service
            log.exception("the cycle failed; the next one runs as usual")
            sdnotify.status("last cycle failed: see the journal")
            return
        sdnotify.watchdog()
        sdnotify.status(summary(result, config), runner.redactor)
        self._metrics(runner, result)

    def _sleep(self, seconds: float) -> None:
        """Until the next cycle (with jitter), pinging the watchdog, waking for signals."""
        wait = seconds * (1 + self.rng.uniform(-JITTER, JITTER))
        interval = sdnotify.watchdog_interval()
        step = min(wait, interval / 2) if interval else wait
        end = time.monotonic() + wait
        while not self.signals.stop.is_set() and not self.signals.reload.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self.signals.stop.wait(min(step, left))
            sdnotify.watchdog()

    def _reload(self, config: Config, runner: Runner, store: Store) -> tuple[Config, Runner]:
        self.signals.reload.clear()
        sdnotify.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("the new configuration is not valid; keeping the running one:")
            for line in exc.lines:
                log.error("  %s", line)
            sdnotify.ready("configuration reload refused: see the journal")
            return config, runner
        if Path(new.agent.state_dir) != Path(config.agent.state_dir):
            log.error(
                "state_dir cannot change on reload (restart the service); keeping the "
                "running configuration"
            )
            sdnotify.ready()
            return config, runner
        self._stop_extras()
        runner = self._runner(new, store)
        self._start_extras(new, runner)
        log.warning(
            "configuration reloaded: %d counters, %d sites", len(new.counters), len(new.sites)
        )
        sdnotify.ready(f"watching {len(new.counters)} counters")
        return new, runner

    # -- push and metrics ------

    def _start_extras(self, config: Config, runner: Runner) -> None:
        from agent.metrics import Metrics

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
        now = datetime.now(UTC)
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
        )
        for sink, n in runner.tickets.last_filed.items():
            self.metrics.record_filed(sink, n)
        if config.metrics.textfile:
            try:
                self.metrics.write_textfile(config.metrics.textfile)
            except OSError as exc:
                log.error("cannot write the metrics file %s: %s", config.metrics.textfile, exc)
