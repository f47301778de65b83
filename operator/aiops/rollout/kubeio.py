"""The Kubernetes reads and writes of a rollout, run in threads (the client is synchronous) so the
operator's event loop never blocks on the network."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from aiops.api.common import GROUP, VERSION
from aiops.builders.triton import KIND_LABEL

log = logging.getLogger(__name__)
PLURAL = "modeldeployments"
TEMPLATE_ANNOTATION = "aiops.dev/template-revision"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


@dataclass
class World:
    """What exists for one ModelDeployment right now."""

    deployment: dict | None
    pods: list[dict]
    observed: bool = True  # False: not looked up (a first version still validating has no pods)


class KubeIO:
    """threads: calls in flight at once (each holds a pooled connection while it waits)."""

    def __init__(self, api_client: client.ApiClient, threads: int = 16):
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        # Our own pool: the default one has cores+4 threads, too few for calls that mostly wait.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubeio")
        self._posting: set[asyncio.Task] = set()  # Events being posted behind their reconcile

    def close(self) -> None:
        """Lets go of the I/O threads; calls still in flight finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn, *args, **kwargs) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))

    @staticmethod
    def _raw(fn, *args, **kwargs) -> Any:
        """The response as plain JSON dicts: skips the client's model classes, which cost several
        times the CPU and memory of the JSON itself on large lists."""
        return json.loads(fn(*args, _preload_content=False, **kwargs).data)

    @staticmethod
    def _send(fn, *args, **kwargs) -> None:
        """A write whose answer we do not need: read and dropped, never built into model classes."""
        fn(*args, _preload_content=False, **kwargs).data  # noqa: B018 - reading returns the connection

    def _send_unless(self, status: int, fn, *args, **kwargs) -> None:
        """_send, where an answer of `status` means done already (409 to a create, 404 to a delete)."""
        try:
            self._send(fn, *args, **kwargs)
        except ApiException as e:
            if e.status != status:
                raise

    def _get(self, fn, *args, **kwargs) -> dict | None:
        try:
            return self._raw(fn, *args, **kwargs)
        except ApiException as e:
            if e.status != 404:
                raise
            return None

    def _items(self, fn, *args, **kwargs) -> list[dict]:
        return self._raw(fn, *args, **kwargs)["items"]

    # ---- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _triton_selector(md_name: str) -> str:
        return f"{KIND_LABEL}={md_name},app.kubernetes.io/name=triton"

    async def observe(self, namespace: str, md_name: str, deployment_name: str) -> World:
        """The Deployment and its pods, read side by side."""
        deployment, pods = await asyncio.gather(
            self._run(self._get, self.apps.read_namespaced_deployment, deployment_name, namespace),
            self._run(self._items, self.core.list_namespaced_pod, namespace,
                      label_selector=self._triton_selector(md_name)))
        return World(deployment, pods)

    async def replica_sets(self, namespace: str, md_name: str) -> list[dict]:
        """The Deployment's ReplicaSets: only a rollback of the pod template needs them."""
        return await self._run(self._items, self.apps.list_namespaced_replica_set, namespace,
                               label_selector=self._triton_selector(md_name))

    async def read_job(self, namespace: str, name: str) -> tuple[dict | None, list[dict]]:
        def read():
            job = self._get(self.batch.read_namespaced_job, name, namespace)
            if job is None:
                return None, []
            return job, self._items(self.core.list_namespaced_pod, namespace, label_selector=f"job-name={name}")

        return await self._run(read)

    async def read(self, kind: str, namespace: str, name: str) -> dict | None:
        """One object by kind, or None when it does not exist."""
        read = {"ConfigMap": self.core.read_namespaced_config_map,
                "Secret": self.core.read_namespaced_secret,
                "StatefulSet": self.apps.read_namespaced_stateful_set}[kind]
        return await self._run(self._get, read, name, namespace)

    async def list_pods(self, namespace: str, selector: str) -> list[dict]:
        return await self._run(self._items, self.core.list_namespaced_pod, namespace, label_selector=selector)

    async def gpu_pods_and_nodes(self) -> tuple[list[dict], list[dict]]:
        """All unfinished pods and all nodes, cluster-wide: what GPU capacity is computed from."""
        def read():
            pods = self._items(self.core.list_pod_for_all_namespaces,
                               field_selector="status.phase!=Succeeded,status.phase!=Failed")
            return pods, self._items(self.core.list_node)

        return await self._run(read)

    # ---- writing ---------------------------------------------------------------------------------
    async def create_if_missing(self, obj: dict) -> None:
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        create = {"Service": self.core.create_namespaced_service,
                  "ConfigMap": self.core.create_namespaced_config_map,
                  "PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
                  "Job": self.batch.create_namespaced_job,
                  "Deployment": self.apps.create_namespaced_deployment,
                  "StatefulSet": self.apps.create_namespaced_stateful_set}[kind]
        await self._run(self._send_unless, 409, create, ns, obj)

    async def apply_deployment(self, obj: dict, existing: dict | None) -> None:
        """Creates the Deployment, or replaces its spec when our template revision changed."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if existing is None:
            await self.create_if_missing(obj)
            return
        patch = {"metadata": {"annotations": obj["metadata"].get("annotations", {})}, "spec": obj["spec"]}
        await self._run(self._send, self.apps.patch_namespaced_deployment, name, ns, patch)

    async def patch_statefulset(self, namespace: str, name: str, patch: dict) -> None:
        await self._run(self._send, self.apps.patch_namespaced_stateful_set, name, namespace, patch)

    async def patch_configmap(self, namespace: str, name: str, patch: dict) -> None:
        await self._run(self._send, self.core.patch_namespaced_config_map, name, namespace, patch)

    async def restore_template(self, existing: dict, replica_set: dict, annotations: dict) -> None:
        """`kubectl rollout undo` for one revision: the ReplicaSet's template back into the Deployment."""
        template = replica_set["spec"]["template"]
        labels = {k: v for k, v in template["metadata"].get("labels", {}).items() if k != "pod-template-hash"}
        template = {**template, "metadata": {**template["metadata"], "labels": labels}}
        body = [{"op": "replace", "path": "/spec/template", "value": template},
                {"op": "replace", "path": "/metadata/annotations", "value": {
                    **(existing["metadata"].get("annotations") or {}), **annotations}}]
        await self._run(self._send, self.apps.patch_namespaced_deployment, existing["metadata"]["name"],
                        existing["metadata"]["namespace"], body)

    async def scale_deployment(self, deployment: dict, replicas: int) -> None:
        """Sets the replicas of a Deployment (only its metadata is read); one that is gone is left gone."""
        meta = deployment["metadata"]
        await self._run(self._send_unless, 404, self.apps.patch_namespaced_deployment_scale, meta["name"],
                        meta["namespace"], {"spec": {"replicas": replicas}})

    async def patch_status(self, namespace: str, name: str, status: dict, plural: str = PLURAL) -> dict:
        return await self._run(self._raw, self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace,
                               plural, name, {"status": status})

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
        return await self._run(self._items, self.batch.list_namespaced_job, namespace, label_selector=selector)

    async def delete_job(self, namespace: str, name: str) -> None:
        """Deletes a Job and its pods (a stale step of a spec that changed: frees its GPU now)."""
        await self._run(self._send_unless, 404, self.batch.delete_namespaced_job, name, namespace,
                        propagation_policy="Background")

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
            await self._run(self._send, self.core.create_namespaced_event, meta["namespace"], body)
        except ApiException as e:  # an Event is a courtesy: never fail a reconcile over one
            log.warning("could not post event %s on %s: %s", reason, meta["name"], e.reason)
        except RuntimeError as e:  # the I/O threads were let go: the operator is stopping
            log.warning("could not post event %s on %s: %s", reason, meta["name"], e)
