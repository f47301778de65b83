"""A reconcile loop for one kind: a cache of the objects' latest bodies fed by Kopf's watch, and a
level-triggered work queue that reconciles an object from the current state of the world.

Handlers of related objects (a TrainingJob's Jobs, a VectorIndex's Milvus pods) only enqueue the
owner's key. Status writes that come back through the watch are recognised by resourceVersion and
do not cause another reconcile, so a status patch never loops.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiops import metrics
from aiops.controllers.workqueue import WorkQueue

log = logging.getLogger(__name__)

Key = tuple[str, str]
Reconcile = Callable[[dict], Awaitable[tuple[float | None, dict | None]]]
"""Reconciles one body; returns (seconds until the next look or None, the body as written back or None)."""


def resource_version(obj: dict) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):  # opaque by contract; etcd's happen to be numbers
        return 0


class ReconcileLoop:
    def __init__(self, kind: str, reconcile: Reconcile, workers: int = 4):
        self.kind = kind
        self.objects: dict[Key, dict] = {}
        self._reconcile_body = reconcile
        self.queue = WorkQueue(self._reconcile, workers=workers)

    def observe(self, body: dict, deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self.objects.pop(key, None)
            self.queue.forget(key)
            return
        known = self.objects.get(key)
        if known is not None and resource_version(body) <= resource_version(known):
            return  # our own status write, already in the cache
        self.objects[key] = body
        self.queue.add(key)

    def enqueue(self, namespace: str, name: str) -> None:
        if (namespace, name) in self.objects:
            self.queue.add((namespace, name))

    async def _reconcile(self, key: Key) -> float | None:
        body = self.objects.get(key)
        if body is None:
            return None
        try:
            delay, written = await self._reconcile_body(body)
        except Exception:
            metrics.RECONCILE_ERRORS.labels(kind=self.kind).inc()
            raise
        if written is not None and key in self.objects and \
                resource_version(written) > resource_version(self.objects[key]):
            self.objects[key] = written
        return delay
