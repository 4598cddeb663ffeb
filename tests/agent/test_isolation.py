"""Judgement inside the checks' isolation: the outbox's health is a registered agent check, the
live view is judged inside its check under the check's timeout, and a ticket's bundle is built
before the incident transaction opens (only the enqueue is inside it).

Real components throughout: the simulator on 127.0.0.1, the store, the local ticket store."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from agent.app import make_runner
from agent.delivery.bundling import Evidence
from agent.delivery.outbox import DELIVERED, FAILED, PENDING
from agent.delivery.sinks import LocalSink
from agent.runner import Runner
from agent.store import Store, StoreError
from diagnostics.checks import REGISTRY
from diagnostics.checks.agent import OutboxHealth, OutboxState, SinkState
from diagnostics.checks.liveview import LiveViewBlocked
from diagnostics.model import Status
from tests.agent.test_delivery_e2e import LOCAL_SINK, NOW, World, offline_counter

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def agent(tmp_path: Path, serial: str) -> Iterator[tuple[World, Runner]]:
    with (
        offline_counter(tmp_path, serial, LOCAL_SINK) as world,
        Store.open(world.state) as store,
    ):
        yield world, make_runner(world.config(), store, clock=world.clock)


# --- the outbox's health: the agent.outbox check ------------------------------------------------


def test_the_outbox_check_is_registered_for_the_agent() -> None:
    assert REGISTRY["agent.outbox"] is OutboxHealth
    assert OutboxHealth.applies_to == "agent"


def test_the_outbox_check_judges_the_state_it_is_given() -> None:
    refused = SinkState({FAILED: 2}, 0.0, ("k1", "k2"), "HTTP 403 forbidden")
    state = OutboxState(now=NOW, sinks={"rt": refused, "mail": SinkState({"pending": 1}, 60.0)})
    found = OutboxHealth().run(state)
    [f] = [f for f in found if f.problem]
    # a destination that accepts is an ok of its own: it ends an incident about it
    assert [(g.subject, g.status) for g in found if not g.problem] == [("sink:mail", Status.OK)]
    assert (f.check_id, f.status, f.code, f.subject) == (
        "agent.outbox",
        Status.FAIL,
        "destination_refuses",
        "sink:rt",
    )
    assert f.summary == ("the destination rt refused 2 items for good; last: HTTP 403 forbidden")
    assert f.evidence == {
        "sink": "rt",
        "failed": 2,
        "last_error": "HTTP 403 forbidden",
        "keys": ["k1", "k2"],
    }
    assert f.remediation and f.site is None
    lenient = OutboxHealth(OutboxHealth.Options(failures_for_finding=3))
    assert [g.status for g in lenient.run(state)] == [Status.OK, Status.OK]


def test_the_outbox_state_is_read_from_the_store(tmp_path: Path) -> None:
    with agent(tmp_path, "OBX0001") as (_world, runner):
        runner.run_cycle()
        outbox = runner.tickets.outbox
        [item, bundle] = outbox.items()  # the ticket, and its bundle as its first message
        assert (item.kind, bundle.kind, bundle.state) == ("create", "message", DELIVERED)
        outbox._mark(item.id, PENDING)
        waiting = outbox.state(item.created_at + timedelta(minutes=5)).sinks["local"]
        assert (waiting.counts, waiting.oldest_pending_s, waiting.failed_keys) == (
            {PENDING: 1, DELIVERED: 1},
            300.0,
            (),
        )
        outbox._mark(item.id, FAILED, error="HTTP 403 forbidden")
        state = outbox.state(NOW + timedelta(minutes=5))
        assert state.sinks["local"].counts == {FAILED: 1, DELIVERED: 1}
        assert state.sinks["local"].failed_keys == (item.key,)
        [f] = outbox.health(NOW)
        assert f.evidence["keys"] == [item.key] and "403" in f.summary


class BrokenOutboxCheck(OutboxHealth):
    def run(self, evidence: OutboxState) -> list[Any]:
        raise RuntimeError("the outbox check fell over")


def test_the_outbox_check_runs_isolated_in_the_cycle(tmp_path: Path) -> None:
    with agent(tmp_path, "OBX0002") as (world, runner):
        runner.agent_checks = [BrokenOutboxCheck()]
        result = runner.run_cycle()
        [error] = [a.finding for a in result.errors if a.finding.check_id == "agent.outbox"]
        assert error.code == "check_error" and "fell over" in error.summary
        # the crash cost that one check: the counter's ticket was filed all the same
        assert [list(t.counters) for t in result.tickets] == [[world.serial]]


class _Stub:
    """A check that says what it is, or hangs until released."""

    def __init__(self, name: str, release: Any = None, timeout_s: float = 5.0) -> None:
        self.id = f"test.{name}"
        self.release = release
        self.timeout_s = timeout_s

    def run(self, evidence: Any) -> list[Any]:
        if self.release is not None:
            self.release.wait(30)  # hung until the test ends
        if self.id == "test.broken":
            raise ValueError("a bug")
        return [self.id]


def test_one_turn_of_checks_survives_a_hung_one_and_a_broken_one(tmp_path: Path) -> None:
    import threading
    from types import SimpleNamespace

    release = threading.Event()
    evidence = SimpleNamespace(now=NOW, site="LDN01", serial="X1")
    checks = [
        _Stub("first"),
        _Stub("hung", release, timeout_s=0.3),
        _Stub("broken"),
        _Stub("last"),
    ]
    with agent(tmp_path, "ISO0001") as (_world, runner):
        try:
            found = runner.run_checks(evidence, checks)  # type: ignore[arg-type]
        finally:
            release.set()
    assert found[0] == "test.first" and found[-1] == "test.last"
    hung, broken = found[1], found[2]
    assert hung.check_id == "test.hung" and "overran 0.3s" in hung.summary
    assert broken.check_id == "test.broken" and "ValueError: a bug" in broken.summary
    assert len(found) == 4


# --- the live view: judged inside its check, under the check's timeout --------------------------


class HurriedLiveView(LiveViewBlocked):
    timeout_s = 0.001  # far less than decoding and judging any picture takes


def large_picture() -> bytes:
    """12 megapixels of noise as a PNG (no reduced-scale decoding): slow to judge, not a bomb."""
    pixels = np.random.default_rng(1).integers(0, 256, (3000, 4000), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def test_a_live_view_check_that_overruns_its_timeout_is_an_error_not_a_ticket(
    tmp_path: Path,
) -> None:
    with agent(tmp_path, "LVT0001") as (world, runner):
        world.fleet.clear_fault(world.serial)  # answering, with a live view
        runner.views.record(world.serial, NOW - timedelta(minutes=5), large_picture())
        runner.checks = [HurriedLiveView()]
        for minutes in (0, 15):  # with confirm_checks = 1, one cycle would be enough to file
            world.clock.set(NOW + timedelta(minutes=minutes))
            result = runner.run_cycle()
            [a] = [a for a in result.assessed if a.finding.check_id == LiveViewBlocked.id]
            assert a.finding.status is Status.ERROR and a.finding.code == "check_error"
            assert "overran" in a.finding.summary and not a.genuine
            assert result.tickets == [] and result.composed == []
        assert not [i for i in runner.store.incidents() if i.check_id == LiveViewBlocked.id]


def test_the_agent_gathers_bytes_and_a_reference_prepared_once(tmp_path: Path) -> None:
    with agent(tmp_path, "LVT0002") as (world, runner):
        world.fleet.clear_fault(world.serial)
        runner.run_cycle()
        ref = tmp_path / "tuned.jpg"
        ref.write_bytes(world.fleet.reference(world.serial))
        counter = world.config().counter(world.serial).model_copy(update={"reference_image": ref})
        first, again = runner.views.evidence(counter), runner.views.evidence(counter)
        assert first.source == "configured" and first.reference is not None
        assert again.reference is first.reference  # prepared once, kept
        [shot] = first.snapshots
        assert isinstance(shot.data, bytes) and shot.data[:2] == b"\xff\xd8"  # the JPEG sent
        stat = ref.stat()
        os.utime(ref, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        changed = runner.views.evidence(counter)
        assert changed.reference is not first.reference  # the file changed: prepared again


def test_prepared_references_stay_within_their_memory_budget(tmp_path: Path) -> None:
    from agent.views import LiveViews, _nbytes

    with agent(tmp_path, "LVT0003") as (world, _runner):
        jpeg = world.fleet.reference(world.serial)
        views = LiveViews(tmp_path / "views")
        counters = []
        for i in range(4):
            ref = tmp_path / f"tuned-{i}.jpg"
            ref.write_bytes(jpeg)
            counters.append(
                world.config()
                .counter(world.serial)
                .model_copy(update={"serial": f"LVT9{i:03d}", "reference_image": ref})
            )
        one = views.reference(counters[0])[0]
        assert one is not None
        views.budget = 2 * views.prepared_bytes + 1  # room for two prepared references
        views.end_round()  # the round of one fitted: it is kept
        assert views.reference(counters[0])[0] is one
        kept = [views.reference(c)[0] for c in counters]
        assert views.prepared_bytes <= views.budget
        # four do not fit two: past the budget only the one in use is held ...
        assert views.reference(counters[3])[0] is kept[3] and views.prepared_bytes < views.budget
        again = views.reference(counters[2])[0]
        assert again is not kept[2] and again is not None  # ... the others are prepared again
        assert again.spectra.shape == one.spectra.shape
        # ... and none is kept between rounds, where it would hold the budget for nothing
        views.end_round()
        assert views.prepared_bytes == 0
        assert views.reference(counters[1])[0] is not None
        assert views.prepared_bytes == _nbytes(one)
        # a round that fits keeps its references again
        views.end_round()
        assert views.prepared_bytes == _nbytes(one)
        views.end_round()
        assert views.reference(counters[1])[0] is views.reference(counters[1])[0]


# --- the bundle is built before the incident transaction; only the enqueue is inside ------------


class RecordingEvidence(Evidence):
    """The real bundle builder, noting whether a transaction was open each time it built one."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.in_transaction: list[bool] = []

    def bundle(self, **kw: Any) -> Any:
        self.in_transaction.append(self.store.in_transaction)
        return super().bundle(**kw)


def recording(runner: Runner) -> RecordingEvidence:
    old = runner.tickets.evidence
    rec = RecordingEvidence(old.config, old.store, old.views, old.redactor, old.log_excerpt)
    runner.tickets.evidence = rec
    return rec


def test_the_bundle_is_built_before_the_incident_transaction(tmp_path: Path) -> None:
    with agent(tmp_path, "BTX0001") as (world, runner):
        rec = recording(runner)
        result = runner.run_cycle()
        [ticket] = result.tickets
        assert rec.in_transaction == [False] and ticket.number  # built once, outside
        [item, bundle] = runner.tickets.outbox.items()  # the ticket, then its bundle
        [inc] = [i for i in runner.store.incidents() if i.check_id == "counter.offline"]
        assert (item.incident_id, inc.ticket_key) == (inc.id, ticket.key)  # enqueued with it
        assert (bundle.incident_id, bundle.key) == (inc.id, ticket.key)
        filed = LocalSink(world.state / "tickets").get(ticket.number)
        assert filed is not None  # with the bundle that was built before the transaction
        assert any(a.name.endswith(".tar.gz") for a in filed.attachments)
        # the next cycles extend the incident: nothing more is built, nothing filed twice
        world.clock.set(NOW + timedelta(minutes=15))
        assert runner.run_cycle().tickets == [] and rec.in_transaction == [False]


def test_the_trial_leaves_no_trace_and_a_suspected_problem_builds_nothing(tmp_path: Path) -> None:
    with agent(tmp_path, "BTX0002") as (world, runner):
        runner.config = runner.config.model_copy(
            update={"agent": runner.config.agent.model_copy(update={"confirm_checks": 2})}
        )
        rec = recording(runner)
        first = runner.run_cycle()  # seen once: suspected, no ticket due, no bundle built
        assert rec.in_transaction == [] and first.tickets == []
        [inc] = [i for i in runner.store.incidents() if i.check_id == "counter.offline"]
        assert inc.state == "suspected"
        world.clock.set(NOW + timedelta(minutes=15))
        [ticket] = runner.run_cycle().tickets  # confirmed: one bundle, built outside
        assert rec.in_transaction == [False]
        # the trial was rolled back: one incident, one transition into open, one ticket item
        # (and its bundle's)
        assert [i.state for i in runner.store.incidents() if i.check_id == "counter.offline"] == [
            "open"
        ]
        kinds = [i.kind for i in runner.tickets.outbox.items()]
        assert kinds == ["create", "message"] and ticket.number


def test_a_trial_refuses_to_run_inside_a_transaction(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store, store.transaction():
        with pytest.raises(StoreError):
            with store.rolled_back():
                pass


def test_a_ticket_not_prepared_is_still_filed_with_its_bundle(tmp_path: Path) -> None:
    with agent(tmp_path, "BTX0003") as (world, runner):
        rec = recording(runner)
        runner.tickets.prepare = lambda *args, **kw: {}  # type: ignore[method-assign]
        [ticket] = runner.run_cycle().tickets
        # as if the trial had foreseen nothing: built in place, never left out
        assert rec.in_transaction == [True] and ticket.number
        filed = LocalSink(world.state / "tickets").get(ticket.number)
        assert filed is not None
        assert any(a.name.endswith(".tar.gz") for a in filed.attachments)
