"""GPU capacity: how many GPUs of a resource are free on the nodes a workload may use.

Pure functions over Node and Pod objects as dicts (what a watch or a list gives), so the operator
can answer "will this fit?" before it creates pods that would sit Pending, and say by how much it
does not fit. The scheduler remains the authority; this is the same arithmetic, done early.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils.quantity import parse_quantity

TERMINAL_PHASES = ("Succeeded", "Failed")


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def pod_request(pod: dict, resource: str) -> int:
    """What a pod holds of an extended resource: the larger of its containers' sum and any single
    init container (Kubernetes' effective request). Extended resources only have whole units, and
    a limit without a request implies an equal request."""

    def one(container: dict) -> int:
        res = container.get("resources") or {}
        value = (res.get("requests") or {}).get(resource, (res.get("limits") or {}).get(resource))
        return int(parse_quantity(value)) if value is not None else 0

    spec = pod.get("spec") or {}
    main = sum(one(c) for c in spec.get("containers") or [])
    init = max((one(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def _tolerated(taint: dict, tolerations: Iterable[dict]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def node_usable(node: dict, selector: dict[str, str], tolerations: Iterable[dict] = ()) -> bool:
    """Ready, schedulable, matching the selector, and without taints the workload doesn't tolerate."""
    labels = _get(node, "metadata", "labels", default={}) or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    if _get(node, "spec", "unschedulable"):
        return False
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in _get(node, "status", "conditions", default=[]) or [])
    if not ready:
        return False
    tolerations = list(tolerations)
    return all(_tolerated(t, tolerations) for t in _get(node, "spec", "taints", default=[]) or []
               if t.get("effect") in ("NoSchedule", "NoExecute"))


@dataclass(frozen=True)
class GPUCapacity:
    """Free GPUs of one resource per usable node."""

    resource: str
    free_per_node: dict[str, int] = field(default_factory=dict)
    allocatable_per_node: dict[str, int] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return sum(self.free_per_node.values())

    @property
    def allocatable(self) -> int:
        return sum(self.allocatable_per_node.values())

    @property
    def largest_node(self) -> int:
        """The most GPUs any usable node has at all: a pod asking for more can never run."""
        return max(self.allocatable_per_node.values(), default=0)

    def pods_that_fit(self, gpus_per_pod: int) -> int:
        """How many pods of this size fit in the free GPUs (a pod's GPUs are on one node)."""
        if gpus_per_pod <= 0:
            return 1 << 30
        return sum(free // gpus_per_pod for free in self.free_per_node.values())

    def fits(self, pods: int, gpus_per_pod: int) -> bool:
        return self.pods_that_fit(gpus_per_pod) >= pods

    def describe(self, pods: int, gpus_per_pod: int) -> str:
        """A sentence for a condition message: what was asked, what is free where."""
        where = ", ".join(f"{n}: {f} free of {self.allocatable_per_node[n]}"
                          for n, f in sorted(self.free_per_node.items())) or "no usable node"
        return (f"needs {pods} pod(s) x {gpus_per_pod} {self.resource}; "
                f"{self.free} of {self.allocatable} free on usable nodes ({where})")


def gpu_capacity(nodes: Iterable[dict], pods: Iterable[dict], resource: str,
                 selector: dict[str, str] | None = None, tolerations: Iterable[dict] = (),
                 ignore_pod_uids: Iterable[str] = ()) -> GPUCapacity:
    """Allocatable minus what bound, unfinished pods hold, per usable node.

    `ignore_pod_uids`: pods whose GPUs count as free (e.g. the pods a rollout would replace)."""
    tolerations = list(tolerations)
    ignored = set(ignore_pod_uids)
    allocatable: dict[str, int] = {}
    for node in nodes:
        if not node_usable(node, selector or {}, tolerations):
            continue
        value = (_get(node, "status", "allocatable", default={}) or {}).get(resource)
        if value is not None:
            allocatable[node["metadata"]["name"]] = int(parse_quantity(value))
    used = dict.fromkeys(allocatable, 0)
    for pod in pods:
        node_name = _get(pod, "spec", "nodeName")
        if node_name not in used or _get(pod, "status", "phase") in TERMINAL_PHASES:
            continue
        if _get(pod, "metadata", "uid") in ignored:
            continue
        used[node_name] += pod_request(pod, resource)
    return GPUCapacity(resource, {n: max(0, allocatable[n] - used[n]) for n in allocatable}, allocatable)
