"""The controllers' reads and writes, for any kind: plain REST calls with JSON dicts both ways, made
through the shared session (aiops.kube.session) on the operator's event loop, so no call blocks it
and none needs a thread.

Plain JSON, not the kubernetes client's typed methods: those validate every body into models and
back (a sixth of the operator's GIL time in a py-spy profile of bench_reconcile), and their
synchronous calls needed a thread each (72 of them, and the hand-offs, were another sixth)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from typing import Any

import aiohttp
import orjson
from kubernetes.client.rest import ApiException

from aiops.api.common import GROUP, VERSION
from aiops.kube.objects import NameTaken, controller_of, owned_by_uid, resource_version
from aiops.kube.session import ApiSession

log = logging.getLogger(__name__)

# Where each kind lives in the API (path prefix, plural).
PATHS = {
    "Pod": ("/api/v1", "pods"), "Service": ("/api/v1", "services"), "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"), "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Event": ("/api/v1", "events"), "Job": ("/apis/batch/v1", "jobs"),
    "Deployment": ("/apis/apps/v1", "deployments"), "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
}
# Repeats of an Event are counted on the first for this long, as client-go's recorder does (its
# aggregation interval), among at most this many recent Events (its cache size).
EVENT_SERIES_SECONDS = 600.0
EVENT_SERIES_KEPT = 4096
LOG_TAIL_BYTES = 64 * 1024
MERGE, STRATEGIC, JSON_PATCH = ("application/merge-patch+json", "application/strategic-merge-patch+json",
                                "application/json-patch+json")


def path(kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
    prefix, plural = PATHS[kind]
    return "/".join(p for p in (f"{prefix}/namespaces/{namespace}/{plural}", name, subresource) if p)


def custom_path(plural: str, namespace: str, name: str = "", subresource: str = "") -> str:
    """Where one of our own kinds lives (by plural: modeldeployments, vectorindexes, trainingjobs)."""
    return "/".join(p for p in (f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}", name, subresource) if p)


class KubeClient:
    """session: the operator's shared ApiSession (None: a client that is never called, for tests
    that replace its calls). concurrency: calls in flight at once, each on a pooled keep-alive
    connection; a controller that makes many objects at once asks for more."""

    def __init__(self, session: ApiSession | None, concurrency: int = 16):
        self.api = session
        self._slots = asyncio.Semaphore(concurrency)
        self._posting: set[asyncio.Task] = set()  # Events being posted behind their reconcile
        self._log_errors: set[tuple[int, str, str]] = set()  # log reads refused, logged once each
        # Events posted lately, by (object uid, type, reason, message): the same one again
        # within EVENT_SERIES_SECONDS counts up on the Event already there.
        self._series: OrderedDict[tuple[str, str, str, str], tuple[str, int, float]] = OrderedDict()

    async def _request(self, method: str, url: str, body: Any = None, **kwargs) -> bytes:
        async with self._slots:
            return await self.api.request(method, url, body, **kwargs)

    async def _send_unless(self, status: int, method: str, url: str, body: Any = None, **kwargs) -> None:
        """A write where an answer of `status` means done already (409 to a create, 404 to a delete)."""
        try:
            await self._request(method, url, body, **kwargs)
        except ApiException as e:
            if e.status != status:
                raise

    async def _get(self, url: str, **query) -> dict | None:
        try:
            return orjson.loads(await self._request("GET", url, params=query))
        except ApiException as e:
            if e.status != 404:
                raise
            return None

    async def _items(self, url: str, **query) -> list[dict]:
        return orjson.loads(await self._request("GET", url, params=query))["items"]

    # ---- reading ---------------------------------------------------------------------------------
    async def read(self, kind: str, namespace: str, name: str) -> dict | None:
        """One object by kind, or None when it does not exist."""
        return await self._get(path(kind, namespace, name))

    async def list(self, kind: str, namespace: str, selector: str = "", fields: str = "") -> list[dict]:
        """A namespace's objects of one kind, by label and/or field selector."""
        query = {k: v for k, v in (("labelSelector", selector), ("fieldSelector", fields)) if v}
        return await self._items(path(kind, namespace), **query)

    async def list_custom(self, namespace: str, plural: str) -> tuple[list[dict], int]:
        """Our custom objects of one kind in a namespace, and the resourceVersion the LIST was
        taken at (to tell what it predates)."""
        body = orjson.loads(await self._request("GET", custom_path(plural, namespace)))
        return body["items"], resource_version(body)

    async def read_job(self, namespace: str, name: str) -> tuple[dict | None, list[dict]]:
        """A Job and its pods (None, [] when there is no such Job)."""
        job = await self._get(path("Job", namespace, name))
        if job is None:
            return None, []
        return job, await self.list("Pod", namespace, selector=f"job-name={name}")

    async def log_tail(self, namespace: str, pod: str, container: str, lines: int = 20,
                       limit_bytes: int = LOG_TAIL_BYTES) -> str | None:
        """The last `lines` lines of a container's log, at most `limit_bytes` (the pod runs an image
        the CR author chose: its log is read bounded); None when there is no log (yet)."""
        try:
            body = await self._request("GET", path("Pod", namespace, pod, "log"), params={
                "container": container, "tailLines": str(lines), "limitBytes": str(limit_bytes)})
        except ApiException as e:
            # Not started yet or gone (400, 404), or the node cannot serve logs: what the log says is
            # extra to the reconcile, which goes on without it; a steady reason is logged once.
            if e.status not in (400, 404) and (e.status, namespace, pod) not in self._log_errors:
                if len(self._log_errors) > 1024:
                    self._log_errors.clear()
                self._log_errors.add((e.status, namespace, pod))
                log.warning("cannot read the log of pod %s/%s (%s): %s", namespace, pod, e.status, e.reason)
            return None
        return body.decode("utf-8", "replace")

    async def mount_failures(self, namespace: str) -> list[dict]:
        """The kubelet's FailedMount Events on the namespace's pods (why a pod stays ContainerCreating)."""
        return await self.list("Event", namespace, fields="involvedObject.kind=Pod,reason=FailedMount")

    # ---- writing ---------------------------------------------------------------------------------
    async def create_if_missing(self, obj: dict) -> None:
        """Creates `obj`; one of its name that exists already is fine when `obj`'s controller owns
        it too (a pass that made it and lost its status write), and NameTaken when not."""
        try:
            await self._request("POST", path(obj["kind"], obj["metadata"]["namespace"]), obj)
        except ApiException as e:
            if e.status != 409:
                raise
        else:
            return
        owner = controller_of(obj)
        if owner is None:
            return
        meta = obj["metadata"]
        found = await self._get(path(obj["kind"], meta["namespace"], meta["name"]))
        if found is None:  # deleted between the two calls: the next pass creates it again
            raise ApiException(status=409, reason=f"{obj['kind']} {meta['name']} went away while it was created")
        if not owned_by_uid(found, owner["uid"]):
            raise NameTaken(obj["kind"], meta["name"], owner["kind"])

    async def create_unread(self, obj: dict) -> None:
        """Creates `obj`; one of its name that exists already is left unread (a Secret the operator
        may create but not read: its name says what it holds)."""
        await self._send_unless(409, "POST", path(obj["kind"], obj["metadata"]["namespace"]), obj)

    async def create_or_read(self, obj: dict) -> dict:
        """Creates `obj`, or reads it when it exists already; returns it as the API server has it
        (with its uid, for what is to be owned by it, and its owner, for whose it is)."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            return orjson.loads(await self._request("POST", path(obj["kind"], ns), obj))
        except ApiException as e:
            if e.status != 409:
                raise
        found = await self._get(path(obj["kind"], ns, name))
        if found is None:  # deleted between the two calls: the next pass creates it again
            raise ApiException(status=409, reason=f"{obj['kind']} {ns}/{name} went away while it was created")
        return found

    async def patch(self, kind: str, namespace: str, name: str, patch: Any, content_type: str = STRATEGIC) -> None:
        await self._request("PATCH", path(kind, namespace, name), patch, content_type=content_type)

    async def scale(self, kind: str, obj: dict, replicas: int) -> None:
        """Sets the replicas of a Deployment or StatefulSet (only its metadata is read); one that is
        gone is left gone."""
        meta = obj["metadata"]
        await self._send_unless(404, "PATCH", path(kind, meta["namespace"], meta["name"], "scale"),
                                {"spec": {"replicas": replicas}}, content_type=MERGE)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Deletes an object and, in the background, what it owns (a Job's pods: a stale step of a
        spec that changed frees its GPU now). One that is gone already is fine."""
        await self._send_unless(404, "DELETE", path(kind, namespace, name), params={"propagationPolicy": "Background"})

    async def patch_status(self, namespace: str, name: str, status: dict, plural: str,
                           resource_version: str | None = None) -> dict:
        """A merge patch of status; with `resource_version`, only onto that version of the object
        (409 Conflict otherwise)."""
        url = custom_path(plural, namespace, name, "status")
        body: dict = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return orjson.loads(await self._request("PATCH", url, body, content_type=MERGE))

    async def write_back(self, obj: dict, plural: str, before: dict, status: dict,
                         events: list[tuple[str, str, str]]) -> dict | None:
        """The end of every reconcile: a merge patch of the top-level status keys that changed
        (removed ones as null), then the Events. Returns the object as written, or None.

        The patch applies only to the version of the object the pass read. A pass whose object
        changed meanwhile (a new spec, another writer: a deposed leader's pass finishing after its
        successor wrote) writes nothing and posts no Event: what it concluded may be stale, and
        the change that moved the version reaches the work queue through the watch."""
        changed = {k: v for k, v in status.items() if before.get(k) != v}
        removed = {k: None for k in before if k not in status}
        written = None
        if changed or removed:
            meta = obj["metadata"]
            try:
                written = await self.patch_status(meta["namespace"], meta["name"], {**changed, **removed}, plural,
                                                  meta.get("resourceVersion"))
            except ApiException as e:
                if e.status != 409:
                    raise
                log.info("%s %s/%s changed while it was reconciled; its status is written by the next pass",
                         obj.get("kind", plural), meta["namespace"], meta["name"])
                return None
        if events:
            # Posted behind the reconcile, not inside it: they are for `kubectl describe`, and
            # each one is a round trip the next object in the queue should not wait for.
            task = asyncio.get_running_loop().create_task(self._post_events(obj, events))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
        return written

    async def _post_events(self, obj: dict, events: list[tuple[str, str, str]]) -> None:
        for type_, reason, message in events:
            await self.event(obj, type_, reason, message)

    async def flush(self, timeout: float = 5.0) -> None:
        """Waits (a while) for Events still being posted, e.g. before the operator stops."""
        if self._posting:
            await asyncio.wait(list(self._posting), timeout=timeout)

    async def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on `obj`, for `kubectl describe`. The same Event again (same object,
        type, reason and message) within EVENT_SERIES_SECONDS is counted on the one posted before
        (count and lastTimestamp), as client-go's event recorder does, instead of a new object
        each time; that Event gone (the API server's TTL), a new one starts the count again."""
        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC)
        message = message[:1024]
        key = (meta["uid"], type_, reason, message)
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": type_, "reason": reason, "message": message,
            "source": {"component": "aiops-operator"}, "reportingComponent": "aiops-operator",
            "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(), "count": 1,
        }
        try:
            if not await self._count_again(key, meta["namespace"], now):
                posted = orjson.loads(await self._request("POST", path("Event", meta["namespace"]), body))
                self._remember(key, posted["metadata"]["name"], 1)
        except ApiException as e:  # an Event is a courtesy: never fail a reconcile over one
            log.warning("could not post event %s on %s: %s", reason, meta["name"], e.reason)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as e:  # e.g. the operator is stopping
            log.warning("could not post event %s on %s: %s", reason, meta["name"], e)

    async def _count_again(self, key: tuple[str, str, str, str], namespace: str, now: dt.datetime) -> bool:
        """Counts one more on the Event of `key` posted lately; False when there is none to count on."""
        seen = self._series.get(key)
        if seen is None or time.monotonic() - seen[2] > EVENT_SERIES_SECONDS:
            return False
        name, count = seen[0], seen[1] + 1
        try:
            await self._request("PATCH", path("Event", namespace, name),
                                {"count": count, "lastTimestamp": now.isoformat()}, content_type=MERGE)
        except ApiException as e:
            if e.status != 404:
                raise
            del self._series[key]
            return False
        self._remember(key, name, count, seen[2])
        return True

    def _remember(self, key: tuple[str, str, str, str], name: str, count: int, since: float | None = None) -> None:
        self._series[key] = (name, count, time.monotonic() if since is None else since)
        self._series.move_to_end(key)
        while len(self._series) > EVENT_SERIES_KEPT:
            self._series.popitem(last=False)
