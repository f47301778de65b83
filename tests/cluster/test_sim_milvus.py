"""Milvus pods on the simulated node: the Milvus image's `milvus run standalone` runs a real
standalone Milvus 2.3 (the PyPI `milvus` package) on the pod IP's 19530/9091, with its data on the
StatefulSet's claim; clients reach it as `milvus.<ns>.svc.cluster.local:19530` from another pod
and from the test process, and the data outlives the pod."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kubernetes import client

from aiops.api.common import DEFAULT_SHARED_GPU_RESOURCE
from aiops.devenv import servicedns

pytest.importorskip("milvus")
pymilvus = pytest.importorskip("pymilvus")

CLIENT_SCRIPT = """
import json, sys
from pymilvus import MilvusClient
milvus = MilvusClient(uri=f"http://milvus.{sys.argv[1]}.svc.cluster.local:19530")
milvus.create_collection("docs", dimension=4, metric_type="L2")
milvus.insert("docs", [{"id": i, "vector": [float(i), 0.0, 0.0, 0.0]} for i in range(10)])
milvus.flush("docs")
hits = milvus.search("docs", data=[[3.1, 0.0, 0.0, 0.0]], limit=2)
print("RESULT", json.dumps([h["id"] for h in hits[0]]))
"""


def milvus_statefulset() -> client.V1StatefulSet:
    labels = {"app": "milvus"}
    container = client.V1Container(
        name="milvus", image="milvusdb/milvus:v2.3.5", command=["milvus", "run", "standalone"],
        env=[client.V1EnvVar(name="ETCD_USE_EMBED", value="true"),
             client.V1EnvVar(name="COMMON_STORAGETYPE", value="local")],
        ports=[client.V1ContainerPort(name="grpc", container_port=19530),
               client.V1ContainerPort(name="metrics", container_port=9091)],
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/healthz", port="metrics"),
                                       period_seconds=2, failure_threshold=3),
        resources=client.V1ResourceRequirements(limits={DEFAULT_SHARED_GPU_RESOURCE: "1", "memory": "32Gi"}),
        volume_mounts=[client.V1VolumeMount(name="data", mount_path="/var/lib/milvus")])
    return client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="milvus"),
        spec=client.V1StatefulSetSpec(
            service_name="milvus", replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=20)),
            volume_claim_templates=[client.V1PersistentVolumeClaim(
                metadata=client.V1ObjectMeta(name="data"),
                spec=client.V1PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    resources=client.V1VolumeResourceRequirements(requests={"storage": "10Gi"})))]))


def ready_pod(kube, namespace, previous_uid=None):
    try:
        p = kube.core.read_namespaced_pod("milvus-0", namespace)
    except client.ApiException:
        return None
    ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    return ready and p.metadata.uid != previous_uid and not p.metadata.deletion_timestamp and p


def test_milvus_statefulset_serves_by_service_name_and_keeps_its_data(kube, namespace, wait_for):
    kube.core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="milvus"),
        spec=client.V1ServiceSpec(selector={"app": "milvus"}, ports=[
            client.V1ServicePort(name="grpc", port=19530, target_port="grpc")])))
    client.AppsV1Api(kube.api_client).create_namespaced_stateful_set(namespace, milvus_statefulset())
    try:
        first = wait_for(lambda: ready_pod(kube, namespace), timeout=240, what="milvus-0 Ready (/healthz)")
    except BaseException:
        print(kube.agent.container_log(namespace, "milvus-0")[-4000:])
        raise
    data_dir = kube.agent.claim_path(namespace, "data-milvus-0")
    assert (data_dir / "data" / "etcd.data").is_dir()  # Milvus's data lives on the claim

    # A process in another pod, by the service's DNS name.
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="client"),
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
            name="c", image="python:3.11", command=["python3", "-c", CLIENT_SCRIPT, namespace])])))

    def finished():
        phase = kube.core.read_namespaced_pod("client", namespace).status.phase
        return phase in ("Succeeded", "Failed") and phase
    phase = wait_for(finished, timeout=120, what="the client pod finished")
    log = kube.agent.container_log(namespace, "client")
    assert phase == "Succeeded", log
    assert 'RESULT [3, 4]' in log

    # The pod replaced: same claim, same data, found by the test process through the API.
    kube.core.delete_namespaced_pod("milvus-0", namespace)
    wait_for(lambda: ready_pod(kube, namespace, first.metadata.uid), timeout=240,
             what="milvus-0 recreated and Ready")
    servicedns.install(kube.api_client)
    try:
        milvus = pymilvus.MilvusClient(uri=f"http://milvus.{namespace}.svc:19530")
        try:
            assert milvus.get_collection_stats("docs")["row_count"] == 10
            milvus.load_collection("docs")
            hits = milvus.search("docs", data=[[7.9, 0.0, 0.0, 0.0]], limit=1)
            assert [h["id"] for h in hits[0]] == [8]
        finally:
            milvus.close()
    finally:
        servicedns.uninstall()

    # Scaled down, the pod goes only once Milvus stopped (SIGTERM, then SIGKILL after the grace).
    client.AppsV1Api(kube.api_client).patch_namespaced_stateful_set_scale("milvus", namespace,
                                                                         {"spec": {"replicas": 0}})
    t0 = time.monotonic()
    wait_for(lambda: not kube.core.list_namespaced_pod(namespace, label_selector="app=milvus").items,
             timeout=60, what="milvus-0 stopped and gone")
    print(json.dumps({"data_dir": str(data_dir), "stop_seconds": round(time.monotonic() - t0, 1)}))
    assert not milvus_processes(data_dir), "Milvus outlived its pod"


def milvus_processes(data_dir: Path) -> list[int]:
    """Live Milvus servers whose config lives in `data_dir` (milvusserver runs them in a session
    of their own, so the container's process group does not cover them)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(data_dir) in (entry / "environ").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
