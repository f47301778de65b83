"""The unfinished pods that hold extended resources (GPUs), as the pod informer last saw them,
with the node cache: what the GPU capacity check counts (aiops.capacity), without a LIST of every
pod and node in the cluster on each check.

That LIST ran on every first pass of a ModelDeployment (does its Deployment fit beside the
validation Job?). With a hundred arriving at once, each listed every pod the others had made so
far: the API server read and encoded all pods from etcd each time. The cache is as fresh as the
watch (milliseconds); the LIST was no safer against a rollout created at the same moment, whose
pods did not exist yet either."""

from __future__ import annotations

from aiops.capacity import TERMINAL_PHASES
from aiops.nodes import NodeCache

Key = tuple[str, str]


def _resources(containers: list[dict] | None) -> list[dict]:
    return [{"resources": c.get("resources") or {}} for c in containers or []]


def gpu_pod_summary(pod: dict) -> dict | None:
    """What capacity needs of a pod (node, phase, resources), or None when it holds no extended
    resource or has finished."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if status.get("phase") in TERMINAL_PHASES:
        return None
    containers, init = _resources(spec.get("containers")), _resources(spec.get("initContainers"))
    if not any("/" in name for c in containers + init for kind in ("requests", "limits")
               for name in c["resources"].get(kind) or {}):
        return None
    meta = pod["metadata"]
    return {"metadata": {"namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid")},
            "spec": {"nodeName": spec.get("nodeName"), "containers": containers, "initContainers": init},
            "status": {"phase": status.get("phase")}}


class GPUPods:
    def __init__(self, nodes: NodeCache):
        self._nodes = nodes
        self._pods: dict[Key, dict] = {}

    def observe(self, pod: dict, deleted: bool) -> bool:
        """Records a pod event; True when a pod that held GPUs let go of them (finished or gone):
        what a ModelDeployment waiting for capacity waits for."""
        key = (pod["metadata"].get("namespace"), pod["metadata"]["name"])
        summary = None if deleted else gpu_pod_summary(pod)
        if summary is None:
            return self._pods.pop(key, None) is not None
        self._pods[key] = summary
        return False

    async def gpu_pods_and_nodes(self) -> tuple[list[dict], list[dict]]:
        """The same answer as KubeIO.gpu_pods_and_nodes, from the caches."""
        return list(self._pods.values()), self._nodes.all()
