"""A reconcile loop for one kind: a cache of the objects' latest bodies fed by Kopf's watch, and a
level-triggered work queue that reconciles an object from the current state of the world.

Handlers of related objects (a TrainingJob's Jobs, a VectorIndex's Milvus pods) only enqueue the
owner's key. Status writes that come back through the watch are recognised by resourceVersion and
do not cause another reconcile, so a status patch never loops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiops import logs, metrics
from aiops.controllers.workqueue import WorkQueue
from aiops.kube.client import KubeClient
from aiops.kube.objects import resource_version, vanished
from aiops.nodes import NodeCache

log = logging.getLogger(__name__)

Key = tuple[str, str]
RESYNC_SECONDS = 300.0  # how often what the watches filled is checked against a LIST


class Reconciler(Protocol):
    kube: KubeClient

    async def reconcile(self, body: dict, nodes: list[dict]) -> tuple[float | None, dict | None]:
        """Returns (seconds until the next look or None, the body as written back or None)."""


def shared_nodes(memo: dict) -> NodeCache:
    """The one node cache every controller reads (the node watch in `modeldeployment` fills it),
    made by whichever startup handler runs first."""
    return memo.setdefault("nodes", NodeCache())


class ReconcileLoop:
    def __init__(self, kind: str, reconciler: Reconciler, nodes: NodeCache, workers: int = 4, urgent_workers: int = 0):
        self.kind = kind
        self.reconciler = reconciler
        self.nodes = nodes
        self.objects: dict[Key, dict] = {}
        self._checks: asyncio.Task | None = None
        self.queue = WorkQueue(self._reconcile, workers=workers, urgent_workers=urgent_workers, kind=kind)

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        if self._checks is not None:
            self._checks.cancel()
        await self.queue.stop()
        await self.reconciler.kube.flush()  # the shared session closes with the watches

    def observe(self, body: dict, deleted: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self.objects.pop(key, None)
            self.queue.forget(key)
            metrics.forget(self.kind, *key)
            return
        known = self.objects.get(key)
        if known is not None and resource_version(body) <= resource_version(known):
            return  # our own status write, already in the cache
        self.objects[key] = body  # new, or changed by someone else: ahead of child-event re-checks
        self.queue.add(key, urgent=True)

    def drop_vanished(self, namespace: str, items: list[dict], listed_at: int) -> list[Key]:
        """Forgets the objects of `namespace` that a LIST (its `items`, taken at resourceVersion
        `listed_at`) lacks though they are older than it: deleted while Kopf's watch was listing
        again, which sends no DELETED for them. Without this such an object is reconciled for good."""
        gone = vanished(self.objects, namespace, items, listed_at)
        for key in gone:
            self.objects.pop(key, None)
            self.queue.forget(key)
            metrics.forget(self.kind, *key)
        return gone

    async def check_against_list(self, namespace: str, plural: str) -> list[Key]:
        """Lists `namespace`'s objects and forgets those the watch missed deleting; returns them."""
        items, listed_at = await self.reconciler.kube.list_custom(namespace, plural)
        gone = self.drop_vanished(namespace, items, listed_at)
        for key in gone:
            log.warning("%s %s/%s: the watch missed its deletion; forgetting it", self.kind, *key)
        return gone

    def start_checks(self, plural: str, on_gone: Callable[[Key], None] | None = None) -> None:
        """`check_against_list` for every namespace with objects, every RESYNC_SECONDS, until
        `stop`; `on_gone` hears of each object found deleted."""
        self._checks = asyncio.get_running_loop().create_task(self._check_now_and_then(plural, on_gone))

    async def _check_now_and_then(self, plural: str, on_gone: Callable[[Key], None] | None) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            for namespace in sorted({ns for ns, _ in self.objects}):
                try:
                    for key in await self.check_against_list(namespace, plural):
                        if on_gone is not None:
                            on_gone(key)
                except Exception:  # noqa: BLE001 - a network error must not end the checks for good
                    log.exception("could not list the %ss in %s", self.kind, namespace)

    def enqueue(self, namespace: str, name: str) -> None:
        if (namespace, name) in self.objects:
            self.queue.add((namespace, name))

    async def _reconcile(self, key: Key) -> float | None:
        body = self.objects.get(key)
        if body is None:
            return None
        try:
            with logs.about(self.kind, *key, body["metadata"].get("uid")):
                delay, written = await self.reconciler.reconcile(body, self.nodes.all())
        except Exception:
            metrics.RECONCILE_ERRORS.labels(kind=self.kind).inc()
            raise
        if written is not None and key in self.objects and \
                resource_version(written) > resource_version(self.objects[key]):
            self.objects[key] = written
        return delay
