"""A level-triggered work queue in the controller-runtime style, on asyncio.

Kopf reacts to events of one object at a time. A ModelDeployment also has to react to its pods,
its validation Job, the nodes and a health-check clock; each of those only *enqueues* the object's
key here. Workers then reconcile the whole object from the current state of the world. Keys are
deduplicated (ten pod events in a burst cause one reconcile), one key is never reconciled twice
at once, and a key that comes in while it is being reconciled is reconciled once more afterwards,
so no change is ever lost.

Two priorities: a change to the object itself (new, spec edited) is `urgent` and goes ahead of
re-checks caused by its children's events and timers. When a hundred objects are applied at once,
the last one's first action then waits for the other first actions, not for every pod event
of the ninety-nine before it (controller-runtime's priority queue makes the same split).
Priority alone does not help while every worker is inside a re-check waiting on the API server,
so `urgent_workers` more workers take urgent keys only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

from aiops import metrics

log = logging.getLogger(__name__)
URGENT, NORMAL = 0, 1

Reconcile = Callable[[Hashable], Awaitable[float | None]]
"""Reconciles one key; returns seconds until it wants to run again (None: only on events)."""


class WorkQueue:
    def __init__(self, reconcile: Reconcile, workers: int = 4, max_backoff: float = 60.0, urgent_workers: int = 0,
                 kind: str | None = None):
        self._reconcile = reconcile
        # Its metrics (aiops_workqueue_*), labelled with the kind; None: no metrics (tests).
        self._metrics = (metrics.WORKQUEUE_DEPTH.labels(kind), metrics.WORKQUEUE_ADDS.labels(kind),
                         metrics.WORKQUEUE_WAIT_SECONDS.labels(kind)) if kind else None
        self._queued_at: dict[Hashable, float] = {}  # when each waiting key came in
        self._workers = workers
        self._urgent_workers = urgent_workers
        self._max_backoff = max_backoff
        self._queue: asyncio.PriorityQueue[tuple[int, int, Hashable]] = asyncio.PriorityQueue()
        # Urgent keys go into both queues; whichever worker takes one first runs it, the other
        # copy is skipped as stale (see _work).
        self._urgent: asyncio.PriorityQueue[tuple[int, int, Hashable]] = asyncio.PriorityQueue()
        self._order = itertools.count()  # FIFO within a priority
        self._pending: dict[Hashable, int] = {}  # queued, not yet picked up: key -> priority
        self._active: set[Hashable] = set()  # being reconciled now
        self._again: dict[Hashable, int] = {}  # enqueued while active: run once more after
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(self._queue), name=f"workqueue-{i}") for i in range(self._workers)]
        self._tasks += [loop.create_task(self._work(self._urgent), name=f"workqueue-urgent-{i}")
                        for i in range(self._urgent_workers)]

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancels the workers; a reconcile stuck in a call that ignores cancellation is left
        behind after `timeout` rather than holding up the operator's shutdown."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=timeout)
            for task in stuck:
                log.warning("work queue task %s did not stop within %.0fs", task.get_name(), timeout)
        self._tasks = []

    def add(self, key: Hashable, urgent: bool = False) -> None:
        """Reconcile `key` soon; any number of times, from the loop or from another thread (Kopf
        runs sync handlers in threads, and asyncio's queue is not thread-safe)."""
        priority = URGENT if urgent else NORMAL
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._add, key, priority)
                return
        self._add(key, priority)

    def _add(self, key: Hashable, priority: int = NORMAL) -> None:
        if key in self._active:
            self._again[key] = min(priority, self._again.get(key, priority))
        elif priority < self._pending.get(key, priority + 1):
            # Promoting a queued key leaves its old entry behind; the worker skips that one.
            if key not in self._pending:
                self._queued_at[key] = time.monotonic()
                if self._metrics:
                    self._metrics[1].inc()
            self._pending[key] = priority
            if self._metrics:
                self._metrics[0].set(len(self._pending))
            entry = (priority, next(self._order), key)
            self._queue.put_nowait(entry)
            if priority == URGENT and self._urgent_workers:
                self._urgent.put_nowait(entry)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Reconcile `key` in `delay` seconds (an earlier request wins over a later one)."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        when = loop.time() + delay
        if existing is not None and existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop its timer and failure count."""
        handle = self._timers.pop(key, None)
        if handle:
            handle.cancel()
        self._failures.pop(key, None)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def active(self, key: Hashable) -> bool:
        """Being reconciled right now (a key added now runs once more afterwards)."""
        return key in self._active

    def idle(self) -> bool:
        return not (self._pending or self._active)

    async def _work(self, queue: asyncio.PriorityQueue) -> None:
        while True:
            priority, _, key = await queue.get()
            if self._pending.get(key) != priority:
                continue  # a stale entry: a key that was promoted, or already taken from the other queue
            del self._pending[key]
            self._active.add(key)
            started = time.monotonic()
            queued = self._queued_at.pop(key, started)
            if self._metrics:
                self._metrics[0].set(len(self._pending))
                self._metrics[2].observe(started - queued)
            try:
                delay = await self._reconcile(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self._max_backoff, 0.5 * 2 ** (failures - 1))
                log.exception("reconciling %s failed (attempt %d); retrying in %.1fs", key, failures, delay)
            finally:
                self._active.discard(key)
                log.debug("reconciled %s in %.3fs", key, time.monotonic() - started)
            if key in self._again:
                self._add(key, self._again.pop(key))
            elif delay is not None:
                self.add_after(key, delay)
