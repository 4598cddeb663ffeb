"""How the probes of one cycle run: concurrently, bounded, and never past the cycle's deadline.

A store's counters are probed in parallel so that a hung one costs one timeout, not the cycle.
The scheduler here is the contract the runner relies on:

- at most ``limit`` jobs younger than ``soft_s`` run at once; a job older than that (a counter
  slower than its probe timeout) frees its slot, so ``limit`` slow counters cannot starve the
  rest;
- jobs expected to take long (``long``: counters that were slow or timed out last cycle)
  start first, beside the others, but hold at most half of ``limit`` while others wait: their
  wait overlaps everyone else's work instead of following it (longest first is what keeps a
  batch short), and the rest always have half the slots;
- no job starts after ``deadline``, and nothing waits for a job past ``deadline + grace``;
- jobs run in daemon threads: one that never returns does not hold up the cycle, the
  interpreter's exit or SIGTERM (a ``ThreadPoolExecutor`` joins its workers at exit, which kept
  the daemon alive a minute after SIGTERM beside a dripping counter);
- an exception raised by a job is returned as its value, for the caller to judge.

Each job must bound itself (the probes do: every request has a total deadline at the socket),
so an abandoned thread ends soon after the deadline rather than lingering.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any


def run_bounded(
    jobs: Sequence[tuple[str, Callable[[], Any]]],
    *,
    limit: int,
    soft_s: float,
    deadline: float,
    grace: float = 0.0,
    long: Collection[str] = (),
    on_done: Callable[[str, Any], None] | None = None,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Run ``jobs`` in daemon threads, at most ``limit`` of them younger than ``soft_s`` at
    once, until all are done or ``deadline`` (monotonic) passes. The jobs named in ``long``
    start first, at most ``limit // 2`` of them young at once while other jobs wait.
    ``on_done(key, value)`` is called in the calling thread as each job ends (the runner
    records a counter's answer while the others are still being probed).

    Returns (done: key → the job's value, or the exception it raised; keys still running at
    the deadline; keys never started). Why not a ThreadPoolExecutor: its workers are joined at
    interpreter exit, so one stuck probe held the daemon a minute past SIGTERM; and a fixed
    pool lets ``limit`` slow jobs starve the rest. Here a job older than ``soft_s`` frees its
    slot, and nothing waits for a thread after the deadline (each probe's own deadlines end
    it soon after)."""
    results: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def work(key: str, job: Callable[[], Any]) -> None:
        try:
            results.put((key, job()))
        except Exception as exc:  # noqa: BLE001 - a worker's boundary: the caller judges it
            results.put((key, exc))

    todo = deque(j for j in jobs if j[0] not in long)
    todo_long = deque(j for j in jobs if j[0] in long)
    long_cap = max(1, limit // 2)
    started: dict[str, float] = {}
    order: deque[str] = deque()  # started jobs, oldest first, until they finish or turn old
    young: set[str] = set()  # started less than soft_s ago and not done
    young_long: set[str] = set()
    done: dict[str, Any] = {}
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        while order and (order[0] not in young or now - started[order[0]] >= soft_s):
            young.discard(key := order.popleft())
            young_long.discard(key)
        while (todo or todo_long) and len(young) < limit:
            if todo_long and (len(young_long) < long_cap or not todo):
                key, job = todo_long.popleft()
                young_long.add(key)
            else:
                key, job = todo.popleft()
            started[key] = now
            order.append(key)
            young.add(key)
            threading.Thread(target=work, args=(key, job), name=f"probe-{key}", daemon=True).start()
        if len(done) == len(started) and not (todo or todo_long):
            break
        wake = deadline
        if (todo or todo_long) and order:  # the next slot frees when the oldest turns old
            wake = min(wake, started[order[0]] + soft_s)
        try:
            key, value = results.get(timeout=max(0.0, wake - now))
        except queue.Empty:
            continue
        done[key] = value
        young.discard(key)
        young_long.discard(key)
        if on_done is not None:
            on_done(key, value)
    # no job starts after the deadline; those running get ``grace`` to hand in what they
    # have (their own deadlines end them at the deadline, give or take the scheduler)
    end = deadline + grace
    while len(done) < len(started):
        try:
            key, value = results.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            break
        done[key] = value
        if on_done is not None:
            on_done(key, value)
    running = [k for k in started if k not in done]
    return done, running, [k for k, _ in (*todo_long, *todo)]
