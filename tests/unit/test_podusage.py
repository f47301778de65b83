"""The pods the capacity check counts, kept from pod events instead of a LIST per check."""

import asyncio
from decimal import Decimal

from aiops.capacity import capacity, pod_usage
from aiops.nodes import NodeCache
from aiops.podusage import PodUsages

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


def test_only_unfinished_pods_that_request_something_are_kept():
    assert pod_usage({**pod("nothing"), "spec": {"nodeName": "gpu-node", "containers": [{"name": "c"}]}}) is None
    assert pod_usage(pod("done", gpus=2, phase="Succeeded")) is None
    kept = pod_usage(pod("init", init_gpus=1))
    assert kept.requests == {"nvidia.com/gpu": 1, "cpu": 1} and kept.node == "gpu-node" and kept.uid == "init"


def test_capacity_from_the_cache_follows_pod_events():
    nodes = NodeCache()
    nodes.observe(NODE, deleted=False)
    cache = PodUsages(nodes)
    for p in (pod("a", gpus=2), pod("b", gpus=1), pod("cpu-only")):
        cache.observe(p, deleted=False)

    def free() -> int:
        pods, listed_nodes = asyncio.run(cache.pod_usages_and_nodes())
        return capacity(listed_nodes, pods, {"nvidia.com/gpu": Decimal(1)}).pods_that_fit()

    assert free() == 1
    # Finished: its GPUs are free, which is what a ModelDeployment waiting for capacity waits for.
    assert cache.observe(pod("a", gpus=2, phase="Succeeded"), deleted=False) is True
    assert free() == 3
    assert cache.observe(pod("a", gpus=2, phase="Succeeded"), deleted=False) is False  # nothing new freed
    assert cache.observe({"metadata": {"namespace": "ns", "name": "b"}}, deleted=True) is True  # as a re-list says
    assert free() == 4
    # A CPU pod going away frees CPU: whatever waits for room is woken too.
    assert cache.observe(pod("cpu-only"), deleted=True) is True
