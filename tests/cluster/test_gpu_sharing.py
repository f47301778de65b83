"""The shared GPU on the simulated node: the reference node's layout, scheduled by the real scheduler.

GPUs 0 and 1 serve inference (Triton), GPU 2 is time-sliced into 2 replicas of
`nvidia.com/gpu.shared` for Milvus and training, as the NVIDIA device plugin's time-slicing with a
renamed resource advertises it."""

from __future__ import annotations

from kubernetes import client

from aiops.api.common import DEFAULT_SHARED_GPU_RESOURCE

NODE = "aiops-gpu-0"
SHARED = DEFAULT_SHARED_GPU_RESOURCE


def pod(name: str, limits: dict[str, str]) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="main", image=f"example/{name}:1", resources=client.V1ResourceRequirements(limits=limits))]))


def ready_on_node(kube, namespace: str, name: str):
    p = kube.core.read_namespaced_pod(name, namespace)
    ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    return p.spec.node_name == NODE and ready and p


def test_node_advertises_the_shared_gpu(kube):
    node = kube.core.read_node(NODE)
    assert node.status.allocatable[SHARED] == "2"
    assert node.metadata.labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"


def test_triton_milvus_and_training_share_the_node(kube, namespace, wait_for):
    """Two Triton pods hold 2 whole GPUs; training (1 shared, 32Gi) and Milvus (1 shared) both run
    on the time-sliced GPU at once; a third claimant of the shared GPU waits, and says why."""
    for name, limits in (("triton-a", {"nvidia.com/gpu": "1", "memory": "32Gi"}),
                         ("triton-b", {"nvidia.com/gpu": "1", "memory": "32Gi"}),
                         ("training", {SHARED: "1", "memory": "32Gi"}),
                         ("milvus", {SHARED: "1", "memory": "16Gi"})):
        kube.core.create_namespaced_pod(namespace, pod(name, limits))
    for name in ("triton-a", "triton-b", "training", "milvus"):
        wait_for(lambda n=name: ready_on_node(kube, namespace, n), what=f"{name} on {NODE} and Ready")

    kube.core.create_namespaced_pod(namespace, pod("extra", {SHARED: "1"}))

    def scheduling_failure():
        events = kube.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=extra,reason=FailedScheduling").items
        return next((e.message for e in events if f"Insufficient {SHARED}" in e.message), None)

    message = wait_for(scheduling_failure, what="FailedScheduling event for the third shared-GPU pod")
    assert "nodes are available" in message
    extra = kube.core.read_namespaced_pod("extra", namespace)
    assert extra.spec.node_name is None and extra.status.phase == "Pending"

    # Training finishing frees its replica: the waiting pod gets it.
    kube.core.delete_namespaced_pod("training", namespace)
    wait_for(lambda: ready_on_node(kube, namespace, "extra"), timeout=60,
             what="the waiting pod scheduled once a shared replica was free")
