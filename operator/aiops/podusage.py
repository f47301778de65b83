"""The unfinished pods' requests (GPUs, memory, CPU) as the pod informer last saw them, with the
node cache: what the capacity check counts (aiops.capacity), without a LIST of every pod and node
in the cluster on each check.

That LIST ran on every first pass of a ModelDeployment (does its Deployment fit beside the
validation Job?). With a hundred arriving at once, each listed every pod the others had made so
far: the API server read and encoded all pods from etcd each time. The cache is as fresh as the
watch (milliseconds); the LIST was no safer against a rollout created at the same moment, whose
pods did not exist yet either. Each pod is kept as a PodUsage (uid, node, a few numbers), not the
pod."""

from __future__ import annotations

from aiops.capacity import PodUsage, pod_usage
from aiops.nodes import NodeCache

Key = tuple[str, str]


class PodUsages:
    def __init__(self, nodes: NodeCache):
        self._nodes = nodes
        self._pods: dict[Key, PodUsage] = {}

    def observe(self, pod: dict, deleted: bool) -> bool:
        """Records a pod event; True when a pod that held resources on a node let go of them
        (finished or gone): what a ModelDeployment waiting for capacity waits for."""
        key = (pod["metadata"].get("namespace"), pod["metadata"]["name"])
        usage = None if deleted else pod_usage(pod)
        if usage is None:
            gone = self._pods.pop(key, None)
            return gone is not None and gone.node is not None
        self._pods[key] = usage
        return False

    async def pod_usages_and_nodes(self) -> tuple[list[PodUsage], list[dict]]:
        """The same answer as RolloutClient.pod_usages_and_nodes, from the caches."""
        return list(self._pods.values()), self._nodes.all()
