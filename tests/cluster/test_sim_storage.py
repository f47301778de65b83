"""PersistentVolumeClaims on the simulated node: the agent's local-path provisioner with the real
PV controller and scheduler (WaitForFirstConsumer), the volume's directory seen by the pod's
process, data kept across pod replacement, and the directory removed with a deleted claim."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from aiops.devenv.storage import STORAGE_CLASS

NODE = "aiops-gpu-0"


def claim(name: str, size: str = "1Gi") -> client.V1PersistentVolumeClaim:
    # No storageClassName: the default class is filled in by the API server's admission plugin.
    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], resources=client.V1VolumeResourceRequirements(requests={"storage": size})))


def claim_phase(kube, namespace, name) -> str:
    return kube.core.read_namespaced_persistent_volume_claim(name, namespace).status.phase


def writer(name: str, claim_name: str, script: str, restart: str = "Never") -> client.V1Pod:
    """A python pod with the claim at /data; the script gets that path as argv[1] (the node
    translates paths in arguments, not inside a `-c` program)."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(restart_policy=restart, termination_grace_period_seconds=2, containers=[
            client.V1Container(name="c", image="python:3.11", command=["python3", "-c", script, "/data"],
                               volume_mounts=[client.V1VolumeMount(name="data", mount_path="/data")])],
            volumes=[client.V1Volume(name="data", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                claim_name=claim_name))]))


def test_claim_binds_for_its_first_consumer_and_its_directory_goes_with_it(kube, namespace, wait_for):
    kube.core.create_namespaced_persistent_volume_claim(namespace, claim("scratch"))
    pvc = kube.core.read_namespaced_persistent_volume_claim("scratch", namespace)
    assert pvc.spec.storage_class_name == STORAGE_CLASS  # the default class
    assert claim_phase(kube, namespace, "scratch") == "Pending"  # no consumer yet

    kube.core.create_namespaced_pod(namespace, writer(
        "writer", "scratch", "import sys; open(sys.argv[1] + '/hello.txt', 'w').write('written in the pod')"))
    wait_for(lambda: claim_phase(kube, namespace, "scratch") == "Bound", what="the claim Bound")
    wait_for(lambda: kube.core.read_namespaced_pod("writer", namespace).status.phase == "Succeeded",
             what="the writer pod Succeeded")
    pvc = kube.core.read_namespaced_persistent_volume_claim("scratch", namespace)
    pv = kube.core.read_persistent_volume(pvc.spec.volume_name)
    path = Path(pv.spec.host_path.path)
    assert pv.spec.claim_ref.uid == pvc.metadata.uid
    assert pv.spec.node_affinity.required.node_selector_terms[0].match_expressions[0].values == [NODE]
    assert path == kube.agent.claim_path(namespace, "scratch")
    assert (path / "hello.txt").read_text() == "written in the pod"

    # Delete policy: the released volume and its directory go.
    kube.core.delete_namespaced_pod("writer", namespace)
    kube.core.delete_namespaced_persistent_volume_claim("scratch", namespace)

    def volume_gone():
        try:
            kube.core.read_persistent_volume(pv.metadata.name)
            return False
        except client.ApiException as e:
            return e.status == 404
    wait_for(volume_gone, timeout=60, what="the released volume deleted")
    assert not path.exists()


def test_statefulset_claim_template_keeps_data_across_pod_replacement(kube, namespace, wait_for):
    apps = client.AppsV1Api(kube.api_client)
    labels = {"app": "counter"}
    script = ("import sys, time; f = open(sys.argv[1] + '/boots', 'a'); f.write('boot\\n'); f.close(); "
              "time.sleep(600)")
    template = writer("unused", "data", script, restart="Always").spec
    template.volumes = None  # the claim template provides the volume
    apps.create_namespaced_stateful_set(namespace, client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="counter"),
        spec=client.V1StatefulSetSpec(
            service_name="counter", replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=template),
            volume_claim_templates=[client.V1PersistentVolumeClaim(
                metadata=client.V1ObjectMeta(name="data"), spec=claim("data").spec)])))

    def running(previous_uid: str | None = None):
        try:
            p = kube.core.read_namespaced_pod("counter-0", namespace)
        except client.ApiException:
            return None
        ok = p.status.phase == "Running" and p.metadata.uid != previous_uid and not p.metadata.deletion_timestamp
        return ok and kube.agent.container_pids(namespace, "counter-0").get("c") and p

    first = wait_for(running, timeout=60, what="counter-0 Running with its process")
    boots = kube.agent.claim_path(namespace, "data-counter-0") / "boots"
    wait_for(lambda: boots.exists() and boots.read_text() == "boot\n", what="the first boot recorded")

    kube.core.delete_namespaced_pod("counter-0", namespace)
    wait_for(lambda: running(first.metadata.uid), timeout=60, what="counter-0 recreated and Running")
    wait_for(lambda: boots.read_text() == "boot\nboot\n", what="the second boot appended to the same volume")
