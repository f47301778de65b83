"""The GPU pods the capacity check counts, kept from pod events instead of a LIST per check."""

import asyncio

from aiops.capacity import gpu_capacity
from aiops.gpupods import GPUPods, gpu_pod_summary
from aiops.nodes import NodeCache

NODE = {"metadata": {"name": "gpu-node", "labels": {}}, "spec": {},
        "status": {"allocatable": {"nvidia.com/gpu": "4", "cpu": "8"},
                   "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, gpus: int = 0, phase: str = "Running", init_gpus: int = 0) -> dict:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {"cpu": "1"}
    spec = {"nodeName": "gpu-node", "containers": [{"name": "c", "image": "i", "resources": {"limits": limits}}]}
    if init_gpus:
        spec["initContainers"] = [{"name": "i", "resources": {"requests": {"nvidia.com/gpu": str(init_gpus)}}}]
    return {"metadata": {"namespace": "ns", "name": name, "uid": name, "labels": {"a": "b"}},
            "spec": spec, "status": {"phase": phase, "podIP": "10.0.0.1"}}


def test_only_unfinished_pods_holding_extended_resources_are_kept():
    assert gpu_pod_summary(pod("cpu-only")) is None
    assert gpu_pod_summary(pod("done", gpus=2, phase="Succeeded")) is None
    kept = gpu_pod_summary(pod("init", init_gpus=1))
    assert kept["spec"]["initContainers"][0]["resources"]["requests"] == {"nvidia.com/gpu": "1"}
    assert "labels" not in kept["metadata"] and "podIP" not in kept["status"]


def test_capacity_from_the_cache_follows_pod_events():
    nodes = NodeCache()
    nodes.observe(NODE, deleted=False)
    cache = GPUPods(nodes)
    for p in (pod("a", gpus=2), pod("b", gpus=1), pod("cpu-only")):
        cache.observe(p, deleted=False)

    def free() -> int:
        pods, listed_nodes = asyncio.run(cache.gpu_pods_and_nodes())
        return gpu_capacity(listed_nodes, pods, "nvidia.com/gpu").free

    assert free() == 1
    # Finished: its GPUs are free, which is what a ModelDeployment waiting for capacity waits for.
    assert cache.observe(pod("a", gpus=2, phase="Succeeded"), deleted=False) is True
    assert free() == 3
    assert cache.observe(pod("a", gpus=2, phase="Succeeded"), deleted=False) is False  # nothing new freed
    assert cache.observe({"metadata": {"namespace": "ns", "name": "b"}}, deleted=True) is True  # as a re-list says
    assert free() == 4
    assert cache.observe(pod("cpu-only"), deleted=True) is False
