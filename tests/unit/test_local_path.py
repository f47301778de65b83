"""The node's local-path provisioner (pure parts) and the Milvus launcher's command line."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from aiops.devenv.launchers import LaunchContext, is_milvus, launcher_for
from aiops.devenv.podenv import claim_volume_paths, plan_volumes
from aiops.devenv.storage import (
    PROVISIONER,
    SELECTED_NODE,
    build_volume,
    releasable,
    storage_class,
    volume_dir,
    wants_volume,
)


def claim(selected="aiops-gpu-0", cls="local-path", volume=None):
    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data-milvus-0", namespace="ns", uid="1234-abcd",
                                     annotations={SELECTED_NODE: selected} if selected else None),
        spec=client.V1PersistentVolumeClaimSpec(
            storage_class_name=cls, volume_name=volume, access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": "5Gi"})))


def test_default_class_waits_for_the_first_consumer():
    sc = storage_class()
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer" and sc["provisioner"] == PROVISIONER


def test_only_claims_placed_on_our_nodes_are_provisioned():
    nodes = {"aiops-gpu-0"}
    assert wants_volume(claim(), nodes)
    assert not wants_volume(claim(selected=None), nodes)  # no consumer scheduled yet
    assert not wants_volume(claim(selected="other-node"), nodes)  # another agent's
    assert not wants_volume(claim(cls="manual"), nodes)
    assert not wants_volume(claim(volume="pv-1"), nodes)  # bound already


def test_volume_is_bound_to_the_claim_and_pinned_to_the_node():
    pv = build_volume(claim(), Path("/v/pvc-1234-abcd_ns_data-milvus-0"), "aiops-gpu-0")
    spec = pv["spec"]
    assert pv["metadata"]["name"] == "pvc-1234-abcd"
    assert spec["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns",
                                "name": "data-milvus-0", "uid": "1234-abcd"}
    assert spec["capacity"] == {"storage": "5Gi"} and spec["storageClassName"] == "local-path"
    assert spec["hostPath"]["path"] == "/v/pvc-1234-abcd_ns_data-milvus-0"
    term = spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == ["aiops-gpu-0"]
    assert volume_dir(Path("/v"), claim()) == Path("/v/pvc-1234-abcd_ns_data-milvus-0")


def pv(phase, path="/v/pvc-1", policy="Delete", by=PROVISIONER):
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name="pvc-1", annotations={"pv.kubernetes.io/provisioned-by": by}),
        spec=client.V1PersistentVolumeSpec(persistent_volume_reclaim_policy=policy,
                                           host_path=client.V1HostPathVolumeSource(path=path)),
        status=client.V1PersistentVolumeStatus(phase=phase))


def test_only_our_released_delete_policy_volumes_are_removed():
    assert releasable(pv("Released"), Path("/v")) == Path("/v/pvc-1")
    assert releasable(pv("Bound"), Path("/v")) is None
    assert releasable(pv("Released", policy="Retain"), Path("/v")) is None
    assert releasable(pv("Released", by="rancher.io/local-path"), Path("/v")) is None
    assert releasable(pv("Released", path="/elsewhere/pvc-1"), Path("/v")) is None  # another agent's


def test_a_claim_mounts_its_bound_volumes_directory():
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p", namespace="ns", uid="u"),
                       spec=client.V1PodSpec(containers=[], volumes=[
                           client.V1Volume(name="data", persistent_volume_claim=client.
                                           V1PersistentVolumeClaimVolumeSource(claim_name="data-milvus-0")),
                           client.V1Volume(name="other", persistent_volume_claim=client.
                                           V1PersistentVolumeClaimVolumeSource(claim_name="unbound"))]))
    paths = claim_volume_paths(pod, lambda ns, name: "/v/pvc-1" if name == "data-milvus-0" else None)
    plans = plan_volumes(pod, Path("/legacy"), Path("/pods/p"), paths)
    assert plans["data"].path == "/v/pvc-1"
    assert plans["other"].path == "/legacy/ns/unbound"


def milvus(command=None, args=None, image="milvusdb/milvus:v2.4.15-gpu"):
    return client.V1Container(name="milvus", image=image, command=command, args=args)


def test_milvus_image_running_standalone_is_launched():
    assert is_milvus(milvus(["milvus", "run", "standalone"]))
    assert is_milvus(milvus(args=["milvus", "run", "standalone"]))
    assert is_milvus(milvus())
    assert not is_milvus(milvus(["milvus", "run", "querynode"]))
    assert not is_milvus(milvus(["sh", "-c", "sleep 1"]))
    assert not is_milvus(milvus(["milvus", "run", "standalone"], image="example/other"))


def ctx(mounts, env=None):
    return LaunchContext(pod_ip="127.100.3.4", env=env or {}, mounts=mounts, workdir="/pods/p/milvus/work",
                         python="/venv/bin/python")


def test_milvus_runs_on_the_pod_ip_with_its_data_on_the_volume():
    c = milvus(["milvus", "run", "standalone"])
    spec = launcher_for(c).build(c, ctx({"/var/lib/milvus": "/v/pvc-1"}))
    assert spec.argv == ["/venv/bin/python", "-m", "aiops.devenv.milvusserver", "--base-dir", "/v/pvc-1",
                         "--host", "127.100.3.4", "--port", "19530", "--health-port", "9091"]
    ephemeral = launcher_for(c).build(c, ctx({}, {"COMMON_SECURITY_AUTHORIZATIONENABLED": "true"}))
    assert ephemeral.argv[4] == "/pods/p/milvus/work/var-lib-milvus"
    assert ephemeral.argv[-1] == "--authorization"
