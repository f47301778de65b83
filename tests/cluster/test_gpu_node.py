"""The real scheduler and controllers against the simulated 3-GPU node."""

from __future__ import annotations

import time

from kubernetes import client

from aiops.devenv.podbehaviour import CRASH_LOOP, NEVER_READY, exit_with, succeed

NODE = "aiops-gpu-0"


def gpu_pod(name: str, gpus: int, labels: dict | None = None, resource: str = "nvidia.com/gpu") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": name}),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="main", image="example/triton:1",
            resources=client.V1ResourceRequirements(limits={resource: str(gpus)}))]))


def read_pod(kube, ns, name) -> client.V1Pod:
    return kube.core.read_namespaced_pod(name, ns)


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_node_advertises_the_gpu_layout_and_stays_ready(kube):
    node = kube.core.read_node(NODE)
    assert node.status.allocatable["nvidia.com/gpu"] == "2" and node.status.allocatable["nvidia.com/gpu.shared"] == "2"
    assert node.status.capacity["memory"] == "128Gi"
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert not [t for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/not-ready")]
    lease = client.CoordinationV1Api(kube.api_client).read_namespaced_lease(NODE, "kube-node-lease")
    assert lease.spec.holder_identity == NODE


def test_scheduler_binds_gpu_pods_until_gpus_run_out(kube, namespace, wait_for):
    """Triton's 2 whole GPUs and Milvus's shared slice fit the reference node; a further whole-GPU
    pod stays Pending, and says why."""
    kube.core.create_namespaced_pod(namespace, gpu_pod("triton", 2))
    kube.core.create_namespaced_pod(namespace, gpu_pod("milvus", 1, resource="nvidia.com/gpu.shared"))
    for name in ("triton", "milvus"):
        pod = wait_for(lambda n=name: (p := read_pod(kube, namespace, n)).spec.node_name == NODE
                       and is_ready(p) and p, what=f"{name} bound to {NODE} and Ready")
        assert pod.status.phase == "Running"

    kube.core.create_namespaced_pod(namespace, gpu_pod("extra", 1))

    def scheduling_failure():
        events = kube.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=extra,reason=FailedScheduling").items
        return next((e.message for e in events if "Insufficient nvidia.com/gpu" in e.message), None)

    message = wait_for(scheduling_failure, what="FailedScheduling event for the extra pod")
    assert "Insufficient nvidia.com/gpu" in message
    extra = read_pod(kube, namespace, "extra")
    assert extra.spec.node_name is None and extra.status.phase == "Pending"

    # Freeing whole GPUs lets the real scheduler place the waiting pod.
    kube.core.delete_namespaced_pod("triton", namespace)
    wait_for(lambda: is_ready(read_pod(kube, namespace, "extra")), timeout=60,
             what="the extra pod scheduled and Ready after a GPU was freed")


def test_ready_pods_get_distinct_loopback_ips(kube, namespace, wait_for):
    for i in range(3):
        kube.core.create_namespaced_pod(namespace, gpu_pod(f"cpu-{i}", 0))
    ips = wait_for(lambda: (ips := [read_pod(kube, namespace, f"cpu-{i}").status.pod_ip for i in range(3)])
                   and all(ips) and ips, what="pod IPs")
    assert len(set(ips)) == 3
    assert all(ip.startswith("127.") for ip in ips)


def test_running_pods_are_left_alone(kube, namespace, wait_for):
    """A pod that runs is reported once, as a kubelet would: no restarts counted, no status
    rewritten every second (that load once starved every other pod on a busy node)."""
    kube.core.create_namespaced_pod(namespace, gpu_pod("steady", 0))
    pod = wait_for(lambda: is_ready(p := read_pod(kube, namespace, "steady")) and p, what="steady pod Ready")
    time.sleep(3 * kube.agent.crash_period + 0.5)
    later = read_pod(kube, namespace, "steady")
    assert later.status.container_statuses[0].restart_count == 0
    assert later.metadata.resource_version == pod.metadata.resource_version


def test_deployment_becomes_available_through_real_controllers(kube, namespace, wait_for):
    apps = client.AppsV1Api(kube.api_client)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")])))))
    wait_for(lambda: apps.read_namespaced_deployment("web", namespace).status.available_replicas == 2,
             what="Deployment web with 2 available replicas")
    # Scale to zero: graceful pod deletion only finishes because the node agent confirms it.
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: not kube.core.list_namespaced_pod(namespace, label_selector="app=web").items
             or None, what="the Deployment's pods deleted")


def test_never_ready_fault(kube, namespace, wait_for):
    kube.agent.inject(lambda p: p.metadata.name == "stuck", NEVER_READY)
    kube.core.create_namespaced_pod(namespace, gpu_pod("stuck", 0))
    pod = wait_for(lambda: (p := read_pod(kube, namespace, "stuck")).status.phase == "Running" and p,
                   what="stuck pod Running")
    assert not is_ready(pod)
    assert pod.status.container_statuses[0].ready is False


def test_crash_loop_fault_counts_restarts(kube, namespace, wait_for):
    kube.agent.inject(lambda p: p.metadata.namespace == namespace, CRASH_LOOP)
    kube.core.create_namespaced_pod(namespace, gpu_pod("crashy", 0))

    def restarted_twice():
        statuses = read_pod(kube, namespace, "crashy").status.container_statuses or []
        return statuses and statuses[0].restart_count >= 2 and statuses[0]

    status = wait_for(restarted_twice, what="crashy restarted at least twice")
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.last_state.terminated.exit_code == 1


def test_pod_annotation_selects_behaviour(kube, namespace, wait_for):
    pod = gpu_pod("annotated", 0)
    pod.metadata.annotations = {"sim.aiops.dev/behaviour": "never-ready"}
    kube.core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: read_pod(kube, namespace, "annotated").status.phase == "Running", what="Running")
    assert not is_ready(read_pod(kube, namespace, "annotated"))


def job(name: str) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"job": name}),
            spec=client.V1PodSpec(restart_policy="Never", containers=[
                client.V1Container(name="worker", image="aiops-worker")]))))


def test_job_pod_exit_code_fails_the_job(kube, namespace, wait_for):
    batch = client.BatchV1Api(kube.api_client)
    kube.agent.inject(lambda p: (p.metadata.labels or {}).get("job") == "bad",
                      exit_with(3, message="validation failed: accuracy 0.4 < 0.9"))
    batch.create_namespaced_job(namespace, job("bad"))
    wait_for(lambda: any(c.type == "Failed" and c.status == "True"
                         for c in batch.read_namespaced_job_status("bad", namespace).status.conditions or []),
             what="Job bad Failed")
    pod = kube.core.list_namespaced_pod(namespace, label_selector="job=bad").items[0]
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.message) == (3, "validation failed: accuracy 0.4 < 0.9")


def test_job_pod_success_completes_the_job(kube, namespace, wait_for):
    batch = client.BatchV1Api(kube.api_client)
    kube.agent.inject(lambda p: (p.metadata.labels or {}).get("job") == "good", succeed(after_seconds=0.5))
    batch.create_namespaced_job(namespace, job("good"))
    wait_for(lambda: batch.read_namespaced_job_status("good", namespace).status.succeeded == 1,
             what="Job good succeeded")


def test_agent_never_touches_pods_of_other_nodes(kube, namespace, wait_for):
    other = "not-simulated"
    kube.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=other)))
    try:
        pod = gpu_pod("elsewhere", 0)
        pod.spec.node_name = other  # bound directly, bypassing the scheduler
        kube.core.create_namespaced_pod(namespace, pod)
        # A pod on our node created after it is made Ready: by then the agent has seen both.
        kube.core.create_namespaced_pod(namespace, gpu_pod("here", 0))
        wait_for(lambda: is_ready(read_pod(kube, namespace, "here")), what="pod on our node Ready")
        elsewhere = read_pod(kube, namespace, "elsewhere")
        assert elsewhere.status.phase == "Pending" and not elsewhere.status.pod_ip
    finally:
        kube.core.delete_node(other)
