"""What a simulated GPU node advertises: its capacity, allocatable resources and the labels GPU
feature discovery would put on it. Pure data, shared by the node agent, the dev session, the tests
and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubernetes.utils.quantity import parse_quantity

from aiops.api.common import DEFAULT_SHARED_GPU_RESOURCE


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node; the default is the reference node (3 GPUs, 128 GiB) advertising what
    the chart's gpuLayout makes NVIDIA's device plugin advertise there: GPUs 0 and 1 whole
    (`nvidia.com/gpu: 2`), GPU 2 as two time-sliced replicas (`nvidia.com/gpu.shared: 2`, for Milvus
    and training). tests/unit/test_sim_node_resources.py holds the default to the chart's layout.

    Allocatable memory is the capacity less what a kubelet keeps for the system and its eviction
    threshold (`reserved_memory`), as on a real node; the rest of allocatable equals capacity."""

    name: str = "aiops-gpu-0"
    gpus: int = 2  # whole GPUs, as the plugin instance without sharing advertises them
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product: str = "NVIDIA-RTX-4000-Ada-Generation"
    gpu_memory_mib: int = 20475
    physical_gpus: int = 3  # GPU feature discovery's nvidia.com/gpu.count: every GPU of the machine
    cpu: str = "32"
    memory: str = "128Gi"
    reserved_memory: str = "3Gi"  # --system-reserved + --kube-reserved + the eviction threshold
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    shared_gpus: int = 2  # replicas of the time-sliced GPU (0: no shared resource)
    shared_gpu_resource: str = DEFAULT_SHARED_GPU_RESOURCE
    # Other extended resources, e.g. {"example.com/fpga": "1"}.
    extended_resources: dict[str, str] = field(default_factory=dict)

    def capacity(self) -> dict[str, str]:
        # Quantities as strings: server-side apply on 1.20 rejects bare numbers.
        shared = {self.shared_gpu_resource: str(self.shared_gpus)} if self.shared_gpus else {}
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods),
                "ephemeral-storage": "2Ti", self.gpu_resource: str(self.gpus),
                **shared, **self.extended_resources}

    def allocatable(self) -> dict[str, str]:
        memory = parse_quantity(self.memory) - parse_quantity(self.reserved_memory)
        return {**self.capacity(), "memory": f"{int(memory) // 2**20}Mi"}

    def all_labels(self) -> dict[str, str]:
        # GPU feature discovery's labels; with time-slicing it adds the replica count and strategy.
        sharing = {"nvidia.com/gpu.replicas": str(self.shared_gpus),
                   "nvidia.com/gpu.sharing-strategy": "time-slicing"} if self.shared_gpus else {}
        return {
            "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.gpu_product,
            "nvidia.com/gpu.count": str(max(self.physical_gpus, self.gpus)),
            "nvidia.com/gpu.memory": str(self.gpu_memory_mib), **sharing, **self.labels,
        }
