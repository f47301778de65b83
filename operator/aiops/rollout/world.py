"""What a rollout reads and writes beyond the kind-neutral client: the Triton Deployment of one
ModelDeployment and its pods (`World`, from the informers' cache on the hot path), its
ReplicaSets for a rollback, the template patch, and the pods and nodes capacity is computed from."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from aiops.builders.triton import KIND_LABEL, NAME_LABEL, TRITON
from aiops.capacity import PodUsage, pod_usage
from aiops.kube.client import JSON_PATCH, STRATEGIC, KubeClient, path
from aiops.kube.session import ApiSession

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


class ChildCache(Protocol):
    """Triton Deployments and pods as the operator's informers last saw them (childcache in the
    operator): reads a reconcile triggered by their own events need not ask the API server again."""

    def deployment(self, namespace: str, name: str) -> dict | None: ...

    def pods(self, namespace: str, md_name: str) -> list[dict]: ...


class CapacitySource(Protocol):
    """Unfinished pods' requests and all nodes as the informers last saw them (aiops.podusage)."""

    async def pod_usages_and_nodes(self) -> tuple[list[PodUsage], list[dict]]: ...


def triton_selector(md_name: str = "") -> str:
    """The Triton Deployment and pods of one ModelDeployment, or of all of them."""
    return f"{KIND_LABEL}={md_name},{TRITON_NAME}" if md_name else f"{KIND_LABEL},{TRITON_NAME}"


class RolloutClient(KubeClient):
    """cache: where `observe` reads from unless asked for a fresh read (None: always the API).
    capacity: where the capacity check reads pods and nodes from (None: a LIST of each)."""

    def __init__(self, session: ApiSession | None, concurrency: int = 16, cache: ChildCache | None = None,
                 capacity: CapacitySource | None = None):
        super().__init__(session, concurrency)
        self.cache = cache
        self.capacity = capacity

    async def observe(self, namespace: str, md_name: str, deployment_name: str, fresh: bool = False) -> World:
        """The Deployment and its pods: from the watch's cache, or read side by side when there is
        none or the caller acts on what may have changed a moment ago (`fresh`)."""
        if self.cache is not None and not fresh:
            return World(self.cache.deployment(namespace, deployment_name), self.cache.pods(namespace, md_name))
        deployment, pods = await asyncio.gather(self.read("Deployment", namespace, deployment_name),
                                                self.list("Pod", namespace, selector=triton_selector(md_name)))
        return World(deployment, pods)

    async def replica_sets(self, namespace: str, md_name: str) -> list[dict]:
        """The Deployment's ReplicaSets: only a rollback of the pod template needs them."""
        return await self.list("ReplicaSet", namespace, selector=triton_selector(md_name))

    async def pod_usages_and_nodes(self) -> tuple[list[PodUsage], list[dict]]:
        """All unfinished pods' requests and all nodes, cluster-wide: what capacity is computed from."""
        if self.capacity is not None:
            return await self.capacity.pod_usages_and_nodes()
        pods, nodes = await asyncio.gather(
            self._items("/api/v1/pods", fieldSelector="status.phase!=Succeeded,status.phase!=Failed"),
            self._items("/api/v1/nodes"))
        return [u for u in map(pod_usage, pods) if u], nodes

    async def apply_deployment(self, obj: dict, existing: dict | None) -> dict | None:
        """Creates the Deployment (returning it as the API server has it: a Deployment of that name
        that already existed comes back as it is, for the caller to see whose it is), or replaces
        its spec when our template revision changed."""
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if existing is None:
            return await self.create_or_read(obj)
        patch = {"metadata": {"annotations": obj["metadata"].get("annotations", {})}, "spec": obj["spec"]}
        await self.patch("Deployment", ns, name, patch, content_type=STRATEGIC)
        return None

    async def restore_template(self, existing: dict, replica_set: dict, annotations: dict) -> None:
        """`kubectl rollout undo` for one revision: the ReplicaSet's template back into the Deployment."""
        template = replica_set["spec"]["template"]
        labels = {k: v for k, v in template["metadata"].get("labels", {}).items() if k != "pod-template-hash"}
        template = {**template, "metadata": {**template["metadata"], "labels": labels}}
        body = [{"op": "replace", "path": "/spec/template", "value": template},
                {"op": "replace", "path": "/metadata/annotations", "value": {
                    **(existing["metadata"].get("annotations") or {}), **annotations}}]
        meta = existing["metadata"]
        await self._request("PATCH", path("Deployment", meta["namespace"], meta["name"]), body,
                            content_type=JSON_PATCH)
