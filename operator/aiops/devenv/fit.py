"""Makes manifests written for the reference node run on this machine's real node: the same objects,
with memory and CPU requests scaled to this node's allocatable and NVIDIA's and Milvus's images
replaced by the local images that carry the same servers (they cannot be pulled here).

The examples ask for what the reference machine has (128 GB, 64 + 32 + 32 for Triton, Milvus and
training). A development VM has a fraction of that, and a real kubelet will not admit a pod that
asks for more memory than the node can give, so `make dev` and the end-to-end tests apply the
examples through `fit_manifest`, and say what they changed. Nothing here is used in a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity

from aiops.api.modeldeployment import TRITON_IMAGE
from aiops.api.vectorindex import MILVUS_IMAGE

GI = 1024**3
SEED_MEMORY = 128 * GI
SEED_CPUS = 32
# Kept free for the Jobs that come and go beside the long-running servers (a validation Job asks
# for 2Gi, an ingest Job for its embedding memory) and the node's own pods.
TRANSIENT_MEMORY = 5 * GI
FLOORS = {"triton": 2 * GI, "milvus": 2 * GI, "training": 3 * GI, "embedding": int(1.5 * GI)}
# Images of the examples and the API defaults, by the local image (aiops.devenv.images) that
# carries the same server: (prefix of the published reference, local image's name).
IMAGE_STAND_INS = (("ghcr.io/aiops-operator/aiops-triton:", "triton"),
                   ("nvcr.io/nvidia/tritonserver:", "tritonserver"),
                   ("milvusdb/milvus:", "milvus"))


@dataclass(frozen=True)
class NodeFit:
    """How this node differs from the reference node: scale factors and the local images."""

    memory_factor: float
    cpu_factor: float
    local_images: dict[str, str]  # local image name -> reference

    @classmethod
    def for_allocatable(cls, allocatable: dict[str, str], local_images: dict[str, str]) -> NodeFit:
        memory = int(parse_quantity(allocatable["memory"]))
        cpus = float(parse_quantity(allocatable["cpu"]))
        return cls(memory_factor=min(1.0, max(memory - TRANSIENT_MEMORY, GI) / SEED_MEMORY),
                   cpu_factor=min(1.0, cpus / SEED_CPUS), local_images=local_images)

    def image(self, reference: str) -> str | None:
        """The local stand-in for a published image reference, if there is one."""
        for prefix, name in IMAGE_STAND_INS:
            if reference.startswith(prefix) and name in self.local_images:
                return self.local_images[name]
        return None

    def memory(self, value: str, role: str) -> str:
        scaled = int(Decimal(parse_quantity(value)) * Decimal(self.memory_factor))
        return f"{max(scaled, FLOORS[role]) // (1024 * 1024)}Mi"

    def cpu(self, value: str) -> str:
        return f"{max(int(float(parse_quantity(value)) * self.cpu_factor * 1000), 100)}m"


def _scale(resources: dict, fit: NodeFit, role: str, default_memory: str, changes: list[str], where: str) -> None:
    before = resources.get("memory", default_memory)
    resources["memory"] = fit.memory(before, role)
    changes.append(f"{where}.memory {before} -> {resources['memory']}")
    if resources.get("memoryRequest") is not None:
        before_request = str(resources["memoryRequest"])
        resources["memoryRequest"] = fit.memory(before_request, role)
        changes.append(f"{where}.memoryRequest {before_request} -> {resources['memoryRequest']}")
    if resources.get("cpu") is not None:
        before_cpu = str(resources["cpu"])
        resources["cpu"] = fit.cpu(before_cpu)
        changes.append(f"{where}.cpu {before_cpu} -> {resources['cpu']}")


def _image(holder: dict, key: str, fit: NodeFit, default: str, changes: list[str], where: str) -> None:
    defaulted = key not in holder
    current = holder.get(key, default)
    local = fit.image(current)
    if local:
        holder[key] = local
        changes.append(f"{where}.{key} {current}{' (default)' if defaulted else ''} -> {local}")


def _model_deployment(spec: dict, fit: NodeFit, changes: list[str]) -> None:
    _scale(spec.setdefault("resources", {}), fit, "triton", "64Gi", changes, "spec.resources")
    _image(spec.setdefault("runtime", {}), "image", fit, TRITON_IMAGE, changes, "spec.runtime")


def _vector_index(spec: dict, fit: NodeFit, changes: list[str]) -> None:
    managed = spec.get("milvus", {}).get("managed")
    if managed is not None:
        _scale(managed.setdefault("resources", {}), fit, "milvus", "32Gi", changes, "spec.milvus.managed.resources")
        _image(managed, "image", fit, MILVUS_IMAGE, changes, "spec.milvus.managed")
    embedding = spec.setdefault("embedding", {})
    _scale(embedding.setdefault("resources", {}), fit, "embedding", "8Gi", changes, "spec.embedding.resources")


def _training_job(spec: dict, fit: NodeFit, changes: list[str]) -> None:
    _scale(spec.setdefault("resources", {}), fit, "training", "32Gi", changes, "spec.resources")


FITTERS: dict[str, Callable[[dict, NodeFit, list[str]], None]] = {
    "ModelDeployment": _model_deployment, "VectorIndex": _vector_index, "TrainingJob": _training_job}


def fit_manifest(obj: dict, fit: NodeFit) -> list[str]:
    """Changes `obj` (one parsed manifest) in place to fit this node; returns what changed."""
    fitter = FITTERS.get(obj.get("kind", ""))
    if fitter is None or not obj.get("apiVersion", "").startswith("aiops.dev/"):
        return []
    changes: list[str] = []
    fitter(obj.setdefault("spec", {}), fit, changes)
    name = obj.get("metadata", {}).get("name", "?")
    return [f"{obj['kind']}/{name}: {c}" for c in changes]
