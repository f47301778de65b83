"""What every kind's rules share: the problem type, the cluster facts the rules may know, and
the rules that apply to more than one kind (GPUs per node, memory request and limit, env vars,
mounted repositories)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from aiops.api.common import EnvVar, HostPath, ModelRepository


@dataclass(frozen=True)
class Problem:
    """One violated rule: where, a CamelCase reason, and a message for `kubectl describe`."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class ClusterFacts:
    """What the rules may know about the cluster. `max_gpus_per_node` is the most any single node
    offers: one number for every GPU resource name, or a number per resource name (a name not in
    the map is treated as unknown). None: unknown, so the rule is skipped.

    `allowed_host_paths` is the admin's list of node directories a CR may mount as a hostPath
    (the directories and everything under them); None: not restricted, for callers outside the
    operator."""

    max_gpus_per_node: int | Mapping[str, int] | None = None
    allowed_host_paths: tuple[str, ...] | None = None

    def max_gpus(self, resource_name: str) -> int | None:
        if isinstance(self.max_gpus_per_node, Mapping):
            return self.max_gpus_per_node.get(resource_name)
        return self.max_gpus_per_node



def gpus_fit_a_node(
    field: str, gpus: int, resource: str, facts: ClusterFacts
) -> Iterator[Problem]:
    largest = facts.max_gpus(resource)
    if largest is not None and gpus > largest:
        yield Problem(
            field,
            "GPUsExceedNodeCapacity",
            f"asks for {gpus} {resource} per pod, but the largest node offers {largest}, "
            f"so no node could ever run it; lower it to at most {largest} or add a node "
            "with more GPUs.",
        )


def resources_rules(resources: Any, facts: ClusterFacts) -> Iterator[Problem]:
    """spec.resources of a kind that runs pods on GPUs: the GPUs fit a node, the memory request
    fits the limit."""
    yield from gpus_fit_a_node("spec.resources.gpus", resources.gpus, resources.gpu_resource_name, facts)
    yield from memory_rules("spec.resources", resources)


def memory_rules(field: str, resources: Any) -> Iterator[Problem]:
    request, limit = resources.memory_request, resources.memory
    if request is None:
        return
    try:
        above = parse_quantity(str(request)) > parse_quantity(str(limit))
    except ValueError:  # what the schema's pattern lets through and Kubernetes would refuse itself
        return
    if above:
        yield Problem(
            f"{field}.memoryRequest",
            "MemoryRequestAboveLimit",
            f"requests {request} of memory but is limited to {limit}; Kubernetes refuses a "
            "request above the limit, so lower memoryRequest or raise memory.",
        )


def env_rules(field: str, env: list[EnvVar]) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, var in enumerate(env):
        if var.value is not None and var.value_from is not None:
            yield Problem(
                f"{field}[{i}]",
                "EnvVarValueConflict",
                f"variable {var.name} sets both value and valueFrom; keep one.",
            )
        if var.name in seen:
            yield Problem(
                f"{field}[{i}].name",
                "DuplicateEnvVar",
                f"variable {var.name} is set twice; the later one would silently win, "
                "so remove one.",
            )
        seen.add(var.name)


def host_path_allowed(path: str, allowed: Iterable[str]) -> bool:
    """Whether `path`, once `..` and `.` are resolved, is one of `allowed` or under one. Symlinks
    on the node are the admin's to keep out of the allowed directories: the kubelet follows them."""
    resolved = posixpath.normpath(path)
    for root in allowed:
        root = posixpath.normpath(root)
        if resolved == root or resolved.startswith(root.rstrip("/") + "/"):
            return True
    return False


def host_path_rules(field: str, host_path: HostPath | None, facts: ClusterFacts) -> Iterator[Problem]:
    """A hostPath outside the admin's list: mounting it would let the CR's author reach any node
    directory (the kubelet mounts what the operator's pod spec names), which Kubernetes itself
    grants only to those allowed to create hostPath pods."""
    allowed = facts.allowed_host_paths
    if host_path is None or allowed is None or host_path_allowed(host_path.path, allowed):
        return
    offered = ", ".join(allowed) if allowed else "none: this cluster allows no hostPath"
    yield Problem(
        f"{field}.hostPath.path",
        "HostPathNotAllowed",
        f"{host_path.path} is outside the node directories this cluster lets custom resources mount "
        f"({offered}); use a directory under one of them or a persistentVolumeClaim. The operator's "
        "admin lists them in the Helm value hostPaths.allowed.",
    )


def repository_rules(field: str, repository: ModelRepository, facts: ClusterFacts) -> Iterator[Problem]:
    yield from host_path_rules(field, repository.host_path, facts)
    pvc = repository.persistent_volume_claim
    if pvc is not None and pvc.sub_path and ".." in pvc.sub_path.split("/"):
        yield Problem(
            f"{field}.persistentVolumeClaim.subPath",
            "SubPathEscapesVolume",
            f"subPath {pvc.sub_path!r} contains '..', which Kubernetes refuses to mount; "
            "use a path inside the volume.",
        )


def duplicates(values: Iterable[Any]) -> list[Any]:
    seen, repeated = set(), []
    for v in values:
        if v in seen and v not in repeated:
            repeated.append(v)
        seen.add(v)
    return repeated

