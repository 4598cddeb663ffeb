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
