"""GPU capacity arithmetic, on Node and Pod dicts shaped like the API's."""

import pytest

from aiops.capacity import gpu_capacity, node_usable, pod_request

GPU = "nvidia.com/gpu"


def node(name, gpus, ready=True, labels=None, taints=None, unschedulable=False):
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": {GPU: str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(node_name, gpus, phase="Running", uid="u", init_gpus=None, request=False):
    res = {"requests" if request else "limits": {GPU: str(gpus)}}
    spec = {"nodeName": node_name, "containers": [{"name": "c", "resources": res}]}
    if init_gpus is not None:
        spec["initContainers"] = [{"name": "i", "resources": {"limits": {GPU: str(init_gpus)}}}]
    return {"metadata": {"uid": uid}, "spec": spec, "status": {"phase": phase}}


def test_seed_node_fits_triton_then_shared_then_nothing():
    nodes = [node("gpu0", 3)]
    cap = gpu_capacity(nodes, [], GPU)
    assert (cap.free, cap.allocatable, cap.largest_node) == (3, 3, 3)
    assert cap.fits(1, 2)
    cap = gpu_capacity(nodes, [pod("gpu0", 2, uid="triton")], GPU)
    assert cap.free == 1 and cap.fits(1, 1) and not cap.fits(1, 2)
    cap = gpu_capacity(nodes, [pod("gpu0", 2, uid="a"), pod("gpu0", 1, uid="b")], GPU)
    assert cap.free == 0 and not cap.fits(1, 1)
    assert "needs 1 pod(s) x 1 nvidia.com/gpu; 0 of 3 free" in cap.describe(1, 1)
    assert "gpu0: 0 free of 3" in cap.describe(1, 1)


def test_a_pod_cannot_span_nodes():
    cap = gpu_capacity([node("a", 1), node("b", 1)], [], GPU)
    assert cap.free == 2
    assert not cap.fits(1, 2)
    assert cap.pods_that_fit(1) == 2


def test_finished_pods_and_ignored_pods_free_their_gpus():
    pods = [pod("n", 2, phase="Succeeded", uid="done"), pod("n", 2, uid="old-version")]
    assert gpu_capacity([node("n", 3)], pods, GPU).free == 1
    assert gpu_capacity([node("n", 3)], pods, GPU, ignore_pod_uids=["old-version"]).free == 3


def test_pods_on_unknown_nodes_and_unbound_pods_do_not_count():
    pods = [pod(None, 2, uid="pending"), pod("elsewhere", 2, uid="x")]
    assert gpu_capacity([node("n", 2)], pods, GPU).free == 2


def test_effective_request_takes_init_containers_and_requests_into_account():
    assert pod_request(pod("n", 1, init_gpus=2), GPU) == 2
    assert pod_request(pod("n", 2, init_gpus=1), GPU) == 2
    assert pod_request(pod("n", 1, request=True), GPU) == 1
    assert pod_request({"spec": {"containers": [{"name": "c"}]}}, GPU) == 0


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
    cap = gpu_capacity([node("n", 3)], [], "nvidia.com/gpu.shared")
    assert cap.allocatable == 0 and cap.largest_node == 0 and not cap.fits(1, 1)
    assert "no usable node" in cap.describe(1, 1)
