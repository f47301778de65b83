"""Capacity arithmetic (GPUs, memory, CPU), on Node and Pod dicts shaped like the API's."""

from decimal import Decimal

import pytest

from aiops.capacity import capacity, format_amount, node_usable, pod_requests, pod_usage

GPU = "nvidia.com/gpu"
GI = 2**30


def node(name, gpus, ready=True, labels=None, taints=None, unschedulable=False, memory="120Gi", cpu="32"):
    allocatable = {"memory": memory, "cpu": cpu, **({GPU: str(gpus)} if gpus is not None else {})}
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(node_name, gpus=0, phase="Running", uid="u", init_gpus=None, request=False, memory=None):
    res = {"requests" if request else "limits": {GPU: str(gpus)} if gpus else {}}
    if memory:
        res.setdefault("requests", {})["memory"] = memory
    spec = {"nodeName": node_name, "containers": [{"name": "c", "resources": res}]}
    if init_gpus is not None:
        spec["initContainers"] = [{"name": "i", "resources": {"limits": {GPU: str(init_gpus)}}}]
    return {"metadata": {"uid": uid}, "spec": spec, "status": {"phase": phase}}


def usages(*pods):
    return [u for u in map(pod_usage, pods) if u]


def shape(gpus=0, memory_gi=0):
    return {**({GPU: Decimal(gpus)} if gpus else {}), **({"memory": Decimal(memory_gi * GI)} if memory_gi else {})}


def test_seed_node_fits_triton_then_shared_then_nothing():
    nodes = [node("gpu0", 3)]
    cap = capacity(nodes, [], shape(2))
    assert cap.fits(1) and cap.ever_fits() and cap.pods_that_fit() == 1
    cap = capacity(nodes, usages(pod("gpu0", 2, uid="triton")), shape(1))
    assert cap.fits(1) and not capacity(nodes, usages(pod("gpu0", 2, uid="triton")), shape(2)).fits(1)
    cap = capacity(nodes, usages(pod("gpu0", 2, uid="a"), pod("gpu0", 1, uid="b")), shape(1))
    assert not cap.fits(1) and cap.ever_fits()
    assert cap.reason(1) == "InsufficientGPU"
    assert cap.describe(1) == ("needs 1 pod(s) x (1 nvidia.com/gpu); allocatable and free on usable nodes: "
                               "gpu0: 0 of 3 nvidia.com/gpu free")


def test_memory_counts_beside_gpus_and_names_the_scarce_resource():
    nodes = [node("gpu0", 3, memory="120Gi")]
    held = usages(pod("gpu0", 1, uid="milvus", memory="24Gi"), pod("gpu0", 0, uid="other", memory="60Gi"))
    cap = capacity(nodes, held, shape(2, 48))
    assert not cap.fits(1) and cap.ever_fits()
    assert cap.short_of(1) == "memory" and cap.reason(1) == "InsufficientMemory"
    assert "2 nvidia.com/gpu, 48Gi memory" in cap.describe(1)
    assert "2 of 3 nvidia.com/gpu free, 36Gi of 120Gi memory free" in cap.describe(1)
    # More than the node has allocatable at all: it can never fit, whatever finishes.
    never = capacity(nodes, [], shape(2, 128))
    assert not never.ever_fits() and never.reason(1) == "InsufficientMemory"
    # Both short: the GPU is named first when both fit no pod.
    assert capacity(nodes, held + usages(pod("gpu0", 2, uid="t")), shape(2, 48)).reason(1) == "InsufficientGPU"


def test_a_pod_cannot_span_nodes():
    cap = capacity([node("a", 1), node("b", 1)], [], shape(2))
    assert not cap.fits(1) and not cap.ever_fits()
    assert capacity([node("a", 1), node("b", 1)], [], shape(1)).pods_that_fit() == 2


def test_finished_pods_and_ignored_pods_free_their_resources():
    pods = usages(pod("n", 2, phase="Succeeded", uid="done"), pod("n", 2, uid="old-version", memory="100Gi"))
    assert capacity([node("n", 3)], pods, shape(1, 30)).pods_that_fit() == 0
    assert capacity([node("n", 3)], pods, shape(1, 30), ignore_pod_uids=["old-version"]).pods_that_fit() == 3


def test_pods_on_unknown_nodes_and_unbound_pods_do_not_count():
    pods = usages(pod(None, 2, uid="pending"), pod("elsewhere", 2, uid="x"))
    assert capacity([node("n", 2)], pods, shape(2)).fits(1)


def test_effective_request_takes_init_containers_limits_and_overhead_into_account():
    assert pod_requests(pod("n", 1, init_gpus=2))[GPU] == 2
    assert pod_requests(pod("n", 2, init_gpus=1))[GPU] == 2
    assert pod_requests(pod("n", 1, request=True))[GPU] == 1
    assert pod_requests({"spec": {"containers": [{"name": "c"}]}}) == {}
    limited = {"spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}},
                                       {"name": "b", "resources": {"requests": {"memory": "512Mi"},
                                                                   "limits": {"memory": "2Gi"}}}],
                        "overhead": {"memory": "128Mi"}}}
    assert pod_requests(limited) == {"memory": Decimal(GI + GI // 2 + GI // 8), "cpu": Decimal("0.5")}
    assert pod_usage({**pod("n", 1), "status": {"phase": "Succeeded"}}) is None


def test_amounts_read_as_people_write_them():
    assert format_amount("memory", Decimal(48 * GI)) == "48Gi"
    assert format_amount("memory", Decimal(3 * GI // 2)) == "1.5Gi"
    assert format_amount("cpu", Decimal("0.25")) == "250m"
    assert format_amount(GPU, Decimal(2)) == "2"


@pytest.mark.parametrize("n,selector,tolerations,usable", [
    (node("n", 1), {}, [], True),
    (node("n", 1, ready=False), {}, [], False),
    (node("n", 1, unschedulable=True), {}, [], False),
    (node("n", 1, labels={"pool": "gpu"}), {"pool": "gpu"}, [], True),
    (node("n", 1, labels={"pool": "cpu"}), {"pool": "gpu"}, [], False),
    (node("n", 1, taints=[{"key": GPU, "effect": "NoSchedule"}]), {}, [], False),
    (node("n", 1, taints=[{"key": GPU, "effect": "NoSchedule"}]), {},
     [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}], True),
    (node("n", 1, taints=[{"key": "x", "value": "y", "effect": "NoExecute"}]), {},
     [{"key": "x", "value": "y"}], True),
    (node("n", 1, taints=[{"key": "x", "effect": "PreferNoSchedule"}]), {}, [], True),
])
def test_node_usable(n, selector, tolerations, usable):
    assert node_usable(n, selector, tolerations) is usable


def test_nodes_without_the_resource_are_not_counted():
    cap = capacity([node("n", 3), node("cpu-only", None)], [], {"nvidia.com/gpu.shared": Decimal(1)})
    assert not cap.fits(1) and not cap.ever_fits()
    assert "no usable node" in cap.describe(1)
    # A pod asking for memory only may use any node.
    assert capacity([node("n", 3), node("cpu-only", None)], [], shape(0, 100)).pods_that_fit() == 2
