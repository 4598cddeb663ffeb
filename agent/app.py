"""The one assembly point: the agent's parts, built once from the configuration.

Every command and the service ask the ``App`` for the part they need — the store, the ticket
destinations (sinks), the redactor, the outbox, the notifier, the bundler (what support
receives with a ticket), the live views, the ticketing and the runner — instead of building a
whole runner to reach one of them. Each part is built on first use, once, from the sections of
the configuration it needs, and shares the parts it depends on: one redactor scrubs the
tickets, the bundles, the notifications and the log, one outbox carries everything that leaves
the gateway, one clock says what time it is. A command that only reads the outbox therefore
never imports a probe or opens a session to a counter.

``with App.open(config, clock) as app:`` opens the state directory's store and closes what it
opened on the way out; the service, which keeps one store across configuration reloads,
builds ``App(config, store, clock=...)`` around the store it holds and closes the app, not the
store. ``clock`` is the only source of "now" in the agent (``diagnostics.model.Clock``); the
real one is ``diagnostics.model.SYSTEM_CLOCK``, and tests hand in a fake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from diagnostics.model import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:  # the parts are imported where they are built: see the module docstring
    from agent.config import Config
    from agent.delivery.bundling import Bundler
    from agent.delivery.notify import Notifier
    from agent.delivery.outbox import Outbox
    from agent.delivery.sinks import Sink
    from agent.delivery.ticketing import Ticketing
    from agent.rmas import Rmas
    from agent.runner import Runner
    from agent.store import Store
    from agent.views import LiveViews
    from diagnostics.checks.base import Check
    from rma.redact import Redactor


class App:
    """The agent's parts for one configuration and one store; see the module docstring."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sinks: Sequence[Sink] | None = None,
        log_excerpt: Callable[[], str] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.state_dir = Path(config.agent.state_dir)
        self.log_excerpt = log_excerpt or (lambda: "")
        self.dry_run = dry_run  # the runner decides and composes as usual; queues nothing
        if sinks is not None:
            self.__dict__["sinks"] = list(sinks)  # given (tests): never built from the config

    @classmethod
    @contextmanager
    def open(
        cls,
        config: Config,
        clock: Clock = SYSTEM_CLOCK,
        *,
        sinks: Sequence[Sink] | None = None,
        log_excerpt: Callable[[], str] | None = None,
        dry_run: bool = False,
    ) -> Iterator[App]:
        """The app on the state directory's store, closed (store included) on leaving."""
        from agent.store import Store

        with Store.open(Path(config.agent.state_dir)) as store:
            app = cls(
                config, store, clock=clock, sinks=sinks, log_excerpt=log_excerpt, dry_run=dry_run
            )
            try:
                yield app
            finally:
                app.close()

    def close(self) -> None:
        """Close what the app built (the runner's worker pool and HTTP sessions); the store
        is its opener's to close."""
        runner = self.__dict__.pop("runner", None)
        if runner is not None:
            runner.close()

    # -- the parts, each built once on first use ------------------------------------------------

    @cached_property
    def redactor(self) -> Redactor:
        """Scrubs the configuration's secrets (by value) and the counters' hosts."""
        from rma.redact import Redactor

        return Redactor(
            self.config.secret_values(),
            hosts=[c.host for c in self.config.counters if c.host],
        )

    @cached_property
    def sinks(self) -> list[Sink]:
        """The ticket destinations of ``[[sinks]]``, in the order of the file."""
        from agent.delivery.sinks import make_sinks

        return make_sinks(self.config, self.clock)

    @cached_property
    def outbox(self) -> Outbox:
        """The durable queue of everything that leaves the gateway."""
        from agent.delivery.outbox import Outbox

        give_up = timedelta(hours=self.config.agent.delivery_give_up_hours)
        return Outbox(self.store, self.state_dir, give_up_after=give_up)

    @cached_property
    def notifier(self) -> Notifier:
        """E-mail and chat notifications, as ``[notifications]`` says."""
        from agent.delivery.notify import Notifier

        return Notifier(self.config, self.outbox, redactor=self.redactor, clock=self.clock.now)

    @cached_property
    def views(self) -> LiveViews:
        """Each counter's recent snapshots and its reference view, on disk."""
        from agent.views import LiveViews

        return LiveViews(self.state_dir)

    @cached_property
    def bundler(self) -> Bundler:
        """Assembles what support receives: the diagnostics bundle and the estimate CSV."""
        from agent.delivery.bundling import Bundler

        return Bundler(self.config, self.store, self.views, self.redactor, self.log_excerpt)

    @cached_property
    def tickets(self) -> Ticketing:
        """Compose, queue, deliver and follow up tickets."""
        from agent.delivery.ticketing import Ticketing

        return Ticketing(
            self.config,
            self.store,
            self.sinks,
            self.bundler,
            self.redactor,
            notifier=self.notifier,
            outbox=self.outbox,
        )

    @cached_property
    def rmas(self) -> Rmas:
        """The RMAs and repairs on record: the road to a replacement unit."""
        from agent.rmas import Rmas

        return Rmas(self.store)

    @cached_property
    def runner(self) -> Runner:
        """One cycle: probe, record, check, assess, incidents, tickets."""
        from agent.runner import Runner

        return Runner(self, dry_run=self.dry_run)


def make_runner(
    config: Config,
    store: Store,
    *,
    clock: Clock | None = None,
    sinks: Sequence[Sink] | None = None,
    log_excerpt: Callable[[], str] | None = None,
    history_days: int = 28,
    checks: Sequence[Check] | None = None,
    dry_run: bool = False,
) -> Runner:
    """A runner on a private ``App`` over ``config`` and ``store``: for tests and one-off
    callers that hold a store already (the service and the commands use ``App.runner``)."""
    from agent.runner import Runner

    app = App(
        config,
        store,
        clock=clock or SYSTEM_CLOCK,
        sinks=sinks,
        log_excerpt=log_excerpt,
        dry_run=dry_run,
    )
    runner = Runner(app, history_days=history_days, checks=checks, dry_run=dry_run)
    app.__dict__["runner"] = runner  # the app's runner is this one: closing the app closes it
    return runner
