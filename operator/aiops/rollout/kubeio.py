"""The Kubernetes reads and writes of the reconcilers: plain REST calls with JSON dicts both ways,
made on the operator's event loop (aiohttp, aiops.kubehttp), so no call blocks it and none needs a
thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.api.common import GROUP, VERSION
from aiops.builders.triton import KIND_LABEL, NAME_LABEL, TRITON
from aiops.capacity import PodUsage, pod_usage
from aiops.kube import resource_version
from aiops.kubehttp import ApiSession

log = logging.getLogger(__name__)
PLURAL = "modeldeployments"
TRITON_NAME = f"{NAME_LABEL}={TRITON}"
TEMPLATE_ANNOTATION = "aiops.dev/template-revision"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


@dataclass
class World:
    """What exists for one ModelDeployment right now."""

    deployment: dict | None
    pods: list[dict]
    observed: bool = True  # False: not looked up (a first version still validating has no pods)


# Where each kind lives in the API (path prefix, plural): KubeIO speaks plain REST with dicts.
PATHS = {
    "Pod": ("/api/v1", "pods"), "Service": ("/api/v1", "services"), "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"), "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Event": ("/api/v1", "events"), "Job": ("/apis/batch/v1", "jobs"),
    "Deployment": ("/apis/apps/v1", "deployments"), "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
}
MERGE, STRATEGIC, JSON_PATCH = ("application/merge-patch+json", "application/strategic-merge-patch+json",
                                "application/json-patch+json")


def path(kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
    prefix, plural = PATHS[kind]
    return "/".join(p for p in (f"{prefix}/namespaces/{namespace}/{plural}", name, subresource) if p)


class ChildCache(Protocol):
    """Triton Deployments and pods as the operator's informers last saw them (childcache in the
    operator): reads a reconcile triggered by their own events need not ask the API server again."""

    def deployment(self, namespace: str, name: str) -> dict | None: ...

    def pods(self, namespace: str, md_name: str) -> list[dict]: ...


class CapacitySource(Protocol):
    """Unfinished pods' requests and all nodes as the informers last saw them (aiops.podusage)."""

    async def pod_usages_and_nodes(self) -> tuple[list[PodUsage], list[dict]]: ...


class KubeIO:
    """connections: calls in flight at once (each holds a pooled keep-alive connection).
    cache: where `observe` reads from unless asked for a fresh read (None: always the API).
    capacity: where the capacity check reads pods and nodes from (None: a LIST of each).

    Calls go through aiops.kubehttp.ApiSession, plain JSON both ways, not the kubernetes client's
    typed methods: those validate every body into models and back (a sixth of the operator's GIL
    time in a py-spy profile of bench_reconcile), and their synchronous calls needed a thread each
    (72 of them, and the hand-offs, were another sixth)."""

    def __init__(self, api_client: client.ApiClient | None, connections: int = 16, cache: ChildCache | None = None,
                 capacity: CapacitySource | None = None):
        self.api = ApiSession(api_client.configuration, connections) if api_client is not None else None
        self.cache = cache
        self.capacity = capacity
        self._posting: set[asyncio.Task] = set()  # Events being posted behind their reconcile

    async def close(self) -> None:
        """Closes the connections; the operator is stopping."""
        if self.api is not None:
            await self.api.close()

    async def _send_unless(self, status: int, method: str, url: str, body: Any = None, **kwargs) -> None:
        """A write where an answer of `status` means done already (409 to a create, 404 to a delete)."""
        try:
            await self.api.request(method, url, body, **kwargs)
        except ApiException as e:
            if e.status != status:
                raise

    async def _get(self, url: str, **query) -> dict | None:
        try:
            return orjson.loads(await self.api.request("GET", url, params=query))
        except ApiException as e:
            if e.status != 404:
                raise
            return None

    async def _items(self, url: str, **query) -> list[dict]:
        return orjson.loads(await self.api.request("GET", url, params=query))["items"]

    # ---- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _triton_selector(md_name: str = "") -> str:
        """The Triton Deployment and pods of one ModelDeployment, or of all of them."""
        return f"{KIND_LABEL}={md_name},{TRITON_NAME}" if md_name else f"{KIND_LABEL},{TRITON_NAME}"

    async def observe(self, namespace: str, md_name: str, deployment_name: str, fresh: bool = False) -> World:
        """The Deployment and its pods: from the watch's cache, or read side by side when there is
        none or the caller acts on what may have changed a moment ago (`fresh`)."""
        if self.cache is not None and not fresh:
            return World(self.cache.deployment(namespace, deployment_name), self.cache.pods(namespace, md_name))
        deployment, pods = await asyncio.gather(
            self._get(path("Deployment", namespace, deployment_name)),
            self._items(path("Pod", namespace), labelSelector=self._triton_selector(md_name)))
        return World(deployment, pods)

    async def list_custom(self, namespace: str, plural: str = PLURAL) -> tuple[list[dict], int]:
        """Our custom objects of one kind in a namespace (ModelDeployments by default), and the
        resourceVersion the LIST was taken at (to tell what it predates)."""
        body = orjson.loads(await self.api.request("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"))
        return body["items"], resource_version(body)

    async def replica_sets(self, namespace: str, md_name: str) -> list[dict]:
        """The Deployment's ReplicaSets: only a rollback of the pod template needs them."""
        return await self._items(path("ReplicaSet", namespace), labelSelector=self._triton_selector(md_name))

    async def read_job(self, namespace: str, name: str) -> tuple[dict | None, list[dict]]:
        job = await self._get(path("Job", namespace, name))
        if job is None:
            return None, []
        return job, await self._items(path("Pod", namespace), labelSelector=f"job-name={name}")

    async def read(self, kind: str, namespace: str, name: str) -> dict | None:
        """One object by kind, or None when it does not exist."""
        return await self._get(path(kind, namespace, name))

    async def mount_failures(self, namespace: str) -> list[dict]:
        """The kubelet's FailedMount Events on the namespace's pods (why a pod stays ContainerCreating)."""
        return await self._items(path("Event", namespace), fieldSelector="involvedObject.kind=Pod,reason=FailedMount")

    async def list_pods(self, namespace: str, selector: str) -> list[dict]:
        return await self._items(path("Pod", namespace), labelSelector=selector)

    async def pod_usages_and_nodes(self) -> tuple[list[PodUsage], list[dict]]:
        """All unfinished pods' requests and all nodes, cluster-wide: what capacity is computed from."""
        if self.capacity is not None:
            return await self.capacity.pod_usages_and_nodes()
        pods, nodes = await asyncio.gather(
            self._items("/api/v1/pods", fieldSelector="status.phase!=Succeeded,status.phase!=Failed"),
            self._items("/api/v1/nodes"))
        return [u for u in map(pod_usage, pods) if u], nodes

    # ---- writing ---------------------------------------------------------------------------------
    async def create_if_missing(self, obj: dict) -> None:
        await self._send_unless(409, "POST", path(obj["kind"], obj["metadata"]["namespace"]), obj)

    async def create_or_read(self, obj: dict) -> dict:
        """Creates `obj`, or reads it when it exists already; returns it as the API server has it
        (with its uid, for what is to be owned by it)."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            return orjson.loads(await self.api.request("POST", path(obj["kind"], ns), obj))
        except ApiException as e:
            if e.status != 409:
                raise
        found = await self._get(path(obj["kind"], ns, name))
        if found is None:  # deleted between the two calls: the next pass creates it again
            raise ApiException(status=409, reason=f"{obj['kind']} {ns}/{name} went away while it was created")
        return found

    async def apply_deployment(self, obj: dict, existing: dict | None) -> dict | None:
        """Creates the Deployment (returning it as the API server has it: a Deployment of that name
        that already existed comes back as it is, for the caller to see whose it is), or replaces
        its spec when our template revision changed."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if existing is None:
            return await self.create_or_read(obj)
        patch = {"metadata": {"annotations": obj["metadata"].get("annotations", {})}, "spec": obj["spec"]}
        await self.api.request("PATCH", path("Deployment", ns, name), patch, content_type=STRATEGIC)
        return None

    async def patch_statefulset(self, namespace: str, name: str, patch: dict) -> None:
        await self.api.request("PATCH", path("StatefulSet", namespace, name), patch, content_type=STRATEGIC)

    async def patch_configmap(self, namespace: str, name: str, patch: dict) -> None:
        await self.api.request("PATCH", path("ConfigMap", namespace, name), patch, content_type=STRATEGIC)

    async def restore_template(self, existing: dict, replica_set: dict, annotations: dict) -> None:
        """`kubectl rollout undo` for one revision: the ReplicaSet's template back into the Deployment."""
        template = replica_set["spec"]["template"]
        labels = {k: v for k, v in template["metadata"].get("labels", {}).items() if k != "pod-template-hash"}
        template = {**template, "metadata": {**template["metadata"], "labels": labels}}
        body = [{"op": "replace", "path": "/spec/template", "value": template},
                {"op": "replace", "path": "/metadata/annotations", "value": {
                    **(existing["metadata"].get("annotations") or {}), **annotations}}]
        meta = existing["metadata"]
        await self.api.request("PATCH", path("Deployment", meta["namespace"], meta["name"]), body,
                               content_type=JSON_PATCH)

    async def scale_deployment(self, deployment: dict, replicas: int) -> None:
        """Sets the replicas of a Deployment (only its metadata is read); one that is gone is left gone."""
        meta = deployment["metadata"]
        await self._send_unless(404, "PATCH", path("Deployment", meta["namespace"], meta["name"], "scale"),
                                {"spec": {"replicas": replicas}}, content_type=MERGE)

    async def patch_status(self, namespace: str, name: str, status: dict, plural: str = PLURAL) -> dict:
        url = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status"
        return orjson.loads(await self.api.request("PATCH", url, {"status": status}, content_type=MERGE))

    async def write_back(self, obj: dict, plural: str, before: dict, status: dict,
                         events: list[tuple[str, str, str]]) -> dict | None:
        """The end of every reconcile: a merge patch of the top-level status keys that changed
        (removed ones as null), then the Events. Returns the object as written, or None."""
        changed = {k: v for k, v in status.items() if before.get(k) != v}
        removed = {k: None for k in before if k not in status}
        written = None
        if changed or removed:
            meta = obj["metadata"]
            written = await self.patch_status(meta["namespace"], meta["name"], {**changed, **removed}, plural)
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

    async def list_jobs(self, namespace: str, selector: str) -> list[dict]:
        return await self._items(path("Job", namespace), labelSelector=selector)

    async def delete_job(self, namespace: str, name: str) -> None:
        """Deletes a Job and its pods (a stale step of a spec that changed: frees its GPU now)."""
        await self._send_unless(404, "DELETE", path("Job", namespace, name),
                                params={"propagationPolicy": "Background"})

    async def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on `obj`, for `kubectl describe`."""
        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": "aiops-operator"}, "reportingComponent": "aiops-operator",
            "firstTimestamp": now.isoformat(), "lastTimestamp": now.isoformat(), "count": 1,
        }
        try:
            await self.api.request("POST", path("Event", meta["namespace"]), body)
        except ApiException as e:  # an Event is a courtesy: never fail a reconcile over one
            log.warning("could not post event %s on %s: %s", reason, meta["name"], e.reason)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as e:  # e.g. the operator is stopping
            log.warning("could not post event %s on %s: %s", reason, meta["name"], e)
