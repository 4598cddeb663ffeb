"""The probe scheduler alone: slots, the deadline, daemon threads, and crashes as values.

Jobs wait on events, not on sleeps, so the outcomes do not depend on the machine's speed; the
only timed assertions are generous ceilings.
"""

from __future__ import annotations

import threading
import time

from agent.probes.schedule import run_bounded


def test_every_job_runs_and_a_crash_is_returned_as_its_value():
    boom = ValueError("a bug")

    def crash():
        raise boom

    done, running, unstarted = run_bounded(
        [("a", lambda: 1), ("b", crash), ("c", lambda: 3)],
        limit=2,
        soft_s=5,
        deadline=time.monotonic() + 30,
    )
    assert done == {"a": 1, "b": boom, "c": 3}
    assert (running, unstarted) == ([], [])


def test_jobs_older_than_soft_s_free_their_slot_for_the_rest():
    release = threading.Event()
    slow = [(f"slow{i}", lambda: release.wait(30)) for i in range(2)]
    try:
        started = time.monotonic()
        done, running, unstarted = run_bounded(
            [*slow, ("fast", lambda: "answered")],
            limit=2,  # both slots taken by jobs that never finish in time
            soft_s=0.2,
            deadline=time.monotonic() + 3,
        )
        took = time.monotonic() - started
    finally:
        release.set()
    assert done == {"fast": "answered"}
    assert sorted(running) == ["slow0", "slow1"] and unstarted == []
    assert took < 10  # the deadline (3 s), not the slow jobs (30 s)


def test_nothing_starts_after_the_deadline_and_stuck_threads_are_daemons():
    release = threading.Event()
    try:
        done, running, unstarted = run_bounded(
            [("stuck", lambda: release.wait(30)), ("queued", lambda: 1)],
            limit=1,
            soft_s=60,  # the stuck job keeps its slot
            deadline=time.monotonic() + 0.5,
            grace=0.1,
        )
        assert (done, running, unstarted) == ({}, ["stuck"], ["queued"])
        [thread] = [t for t in threading.enumerate() if t.name == "probe-stuck"]
        assert thread.daemon  # never joined at exit, so never holds up SIGTERM
    finally:
        release.set()


def test_long_jobs_start_first_on_at_most_half_the_slots():
    release, hung_started = threading.Event(), threading.Event()

    def hung():
        hung_started.set()
        release.wait(30)

    # each quick job answers only once a long one has begun: named first, the quick ones
    # would hold both slots waiting for it; all long first, they would never start at all
    quick = [(f"ok{i}", lambda: hung_started.wait(5)) for i in range(2)]
    try:
        done, running, unstarted = run_bounded(
            [*quick, ("hung0", hung), ("hung1", hung)],
            limit=2,
            soft_s=60,  # no slot frees by age
            deadline=time.monotonic() + 1.0,
            long={"hung0", "hung1"},
        )
    finally:
        release.set()
    assert done == {"ok0": True, "ok1": True}
    # once the others are done, the long ones left take the free slots
    assert sorted(running) == ["hung0", "hung1"] and unstarted == []


def test_long_jobs_are_left_unstarted_only_when_no_slot_ever_frees():
    release = threading.Event()
    try:
        done, running, unstarted = run_bounded(
            [("ok", lambda: 1), *((f"hung{i}", lambda: release.wait(30)) for i in range(3))],
            limit=2,
            soft_s=60,
            deadline=time.monotonic() + 0.5,
            long={"hung0", "hung1", "hung2"},
        )
    finally:
        release.set()
    assert done == {"ok": 1}
    assert sorted(running) == ["hung0", "hung1"] and unstarted == ["hung2"]
