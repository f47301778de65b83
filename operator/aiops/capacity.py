"""Node capacity: whether pods of one shape (GPUs, memory, CPU) fit on the nodes a workload may use.

Pure functions over Node objects and pod usages, so the operator can answer "will this fit?"
before it creates pods that would sit Pending, and say by how much it does not fit. The scheduler
remains the authority; this is its arithmetic (allocatable minus the effective requests of the
bound, unfinished pods, per node and per resource), done early.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

TERMINAL_PHASES = ("Succeeded", "Failed")
# Besides extended resources (GPUs), what the capacity check counts.
COUNTED = ("memory", "cpu")
GI = Decimal(2**30)
_REASONS = {"memory": "InsufficientMemory", "cpu": "InsufficientCPU"}
CAPACITY_REASONS = ("InsufficientGPU", "InsufficientMemory", "InsufficientCPU")


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def counted(resource: str) -> bool:
    return resource in COUNTED or "/" in resource


def pod_requests(pod: dict) -> dict[str, Decimal]:
    """What a pod holds of each counted resource, as the scheduler reckons it: per resource the
    larger of its containers' sum and any single init container, plus the pod's overhead. A limit
    without a request implies an equal request (the API server's defaulting, repeated here for
    pods that have not been through it)."""

    def one(container: dict) -> dict[str, Decimal]:
        res = container.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {name: Decimal(parse_quantity(value)) for name, value in merged.items() if counted(name)}

    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, value in one(container).items():
            total[name] = total.get(name, Decimal(0)) + value
    for container in spec.get("initContainers") or []:
        for name, value in one(container).items():
            total[name] = max(total.get(name, Decimal(0)), value)
    for name, value in (spec.get("overhead") or {}).items():
        if counted(name):
            total[name] = total.get(name, Decimal(0)) + Decimal(parse_quantity(value))
    return {name: value for name, value in total.items() if value > 0}


@dataclass(frozen=True)
class PodUsage:
    """A bound or pending pod as capacity sees it: its node (None while unscheduled) and requests."""

    uid: str
    node: str | None
    requests: dict[str, Decimal]


def pod_usage(pod: dict) -> PodUsage | None:
    """The usage of an unfinished pod that requests something counted; None otherwise."""
    if _get(pod, "status", "phase") in TERMINAL_PHASES:
        return None
    requests = pod_requests(pod)
    if not requests:
        return None
    return PodUsage(_get(pod, "metadata", "uid", default=""), _get(pod, "spec", "nodeName"), requests)


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


def format_amount(resource: str, value: Decimal) -> str:
    """64Gi, 1.5Gi, 250m, 2: a quantity as a person reads it in a message."""
    if resource == "memory":
        return f"{value / GI:.1f}".removesuffix(".0") + "Gi"
    if value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    return str(int(value))


def _fit(available: dict[str, Decimal], shape: dict[str, Decimal]) -> int:
    return min((int(available.get(name, Decimal(0)) // need) for name, need in shape.items()), default=1 << 30)


@dataclass(frozen=True)
class Capacity:
    """Per usable node, what is allocatable and free of each resource one pod of `shape` asks for."""

    shape: dict[str, Decimal]
    allocatable: dict[str, dict[str, Decimal]]
    free: dict[str, dict[str, Decimal]]

    def pods_that_fit(self) -> int:
        """How many pods of the shape fit now (a pod's resources are all on one node)."""
        return sum(_fit(free, self.shape) for free in self.free.values())

    def fits(self, pods: int) -> bool:
        return self.pods_that_fit() >= pods

    def ever_fits(self) -> bool:
        """Whether one such pod fits on some usable node at all, with nothing else running there."""
        return any(_fit(allocatable, self.shape) >= 1 for allocatable in self.allocatable.values())

    def short_of(self, pods: int) -> str | None:
        """The resource that keeps `pods` pods from fitting (the scarcest one), or None."""
        if self.fits(pods):
            return None
        fits_by = {name: sum(int(free.get(name, Decimal(0)) // need) for free in self.free.values())
                   for name, need in self.shape.items()}
        return min(fits_by, key=lambda name: (fits_by[name], name in COUNTED))

    def reason(self, pods: int) -> str:
        """InsufficientGPU, InsufficientMemory or InsufficientCPU: the condition reason for `short_of`."""
        short = self.short_of(pods) or next(iter(self.shape), "")
        return _REASONS.get(short, "InsufficientGPU")

    def describe(self, pods: int) -> str:
        """A sentence for a condition message: what was asked, what is free where."""
        names = sorted(self.shape, key=lambda name: (name in COUNTED, name))
        asked = ", ".join(f"{format_amount(n, self.shape[n])} {n}" for n in names) or "nothing"
        where = "; ".join(
            f"{node}: " + ", ".join(f"{format_amount(n, self.free[node].get(n, Decimal(0)))} of "
                                    f"{format_amount(n, self.allocatable[node].get(n, Decimal(0)))} {n} free"
                                    for n in names)
            for node in sorted(self.free)) or "no usable node"
        return f"needs {pods} pod(s) x ({asked}); allocatable and free on usable nodes: {where}"


def capacity(nodes: Iterable[dict], pods: Iterable[PodUsage], shape: dict[str, Decimal],
             selector: dict[str, str] | None = None, tolerations: Iterable[dict] = (),
             ignore_pod_uids: Iterable[str] = ()) -> Capacity:
    """Allocatable minus what bound, unfinished pods request, per usable node, for the resources
    of `shape` (a pod's requests, e.g. pod_requests of the pod template).

    `ignore_pod_uids`: pods whose resources count as free (e.g. the pods a rollout would replace).
    A node that does not offer a resource of the shape at all (a CPU node for a GPU pod) is not
    usable."""
    tolerations, ignored = list(tolerations), set(ignore_pod_uids)
    allocatable: dict[str, dict[str, Decimal]] = {}
    for node in nodes:
        if not node_usable(node, selector or {}, tolerations):
            continue
        offered = _get(node, "status", "allocatable", default={}) or {}
        if any(name not in offered for name in shape if "/" in name):
            continue
        allocatable[node["metadata"]["name"]] = {name: Decimal(parse_quantity(offered[name]))
                                                 for name in shape if name in offered}
    free = {name: dict(values) for name, values in allocatable.items()}
    for pod in pods:
        if pod.node not in free or pod.uid in ignored:
            continue
        for name, value in pod.requests.items():
            if name in free[pod.node]:
                free[pod.node][name] -= value
    free = {node: {name: max(Decimal(0), value) for name, value in values.items()} for node, values in free.items()}
    return Capacity(dict(shape), allocatable, free)
