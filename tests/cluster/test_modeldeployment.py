"""ModelDeployment end to end: the real control plane, the operator in-process, the real
tritonserver behind the simulated GPU node, the real validation worker in its Job, and small real
models written for each test."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from kubernetes import client

from aiops.api.common import GROUP, VERSION
from aiops.conditions import get_condition
from aiops.devenv.demomodels import write_python_backend_model
from aiops.devenv.servicedns_table import endpoint_slice_lister
from aiops.kube.client import KubeClient
from aiops.kube.objects import resource_version
from aiops.kube.session import ApiSession

MODEL = "adder"
pytestmark = pytest.mark.timeout(300)


def md_manifest(name: str, repo: Path, version: int, scale: float = 2.0, **spec) -> dict:
    x = [1.0, 2.0, 3.0, 4.0]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL, "version": version, "backend": "python"},
            "repository": {"hostPath": {"path": str(repo)}},
            "resources": {"gpus": 2, "memory": "2Gi"},
            "validation": {"samples": [{
                "name": "double",
                "inputs": [{"name": "INPUT0", "dataType": "FP32", "shape": [1, 4], "data": x}],
                "expectedOutputs": [{"name": "OUTPUT0", "dataType": "FP32", "shape": [1, 4],
                                     "data": [scale * v for v in x]}]}]},
            "healthCheck": {"periodSeconds": 2, "failureThreshold": 2, "progressDeadlineSeconds": 120},
            "monitoring": {"enabled": False},
        },
    }
    body["spec"].update(spec)
    return body


class MDs:
    def __init__(self, kube, namespace):
        self.api = client.CustomObjectsApi(kube.api_client)
        self.ns = namespace

    def create(self, body):
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, "modeldeployments", body)

    def get(self, name):
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, "modeldeployments", name)

    def patch(self, name, body):
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, "modeldeployments", name, body)


def condition(obj: dict, type_: str) -> dict | None:
    return get_condition((obj.get("status") or {}).get("conditions"), type_)


def serving(mds: MDs, name: str, version: int):
    def check():
        obj = mds.get(name)
        st = obj.get("status") or {}
        ready = condition(obj, "Ready")
        return obj if st.get("servingVersion") == version and st.get("phase") == "Ready" and ready \
            and ready["status"] == "True" and not st.get("rollout") else None
    return check


def infer(ip: str, version: int | str = "") -> list[float]:
    c = httpclient.InferenceServerClient(f"{ip}:8000")
    try:
        inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
        return c.infer(MODEL, [inp], model_version=str(version)).as_numpy("OUTPUT0").reshape(-1).tolist()
    finally:
        c.close()


def triton_pods(kube, namespace):
    return [p for p in kube.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=triton").items if not p.metadata.deletion_timestamp]


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "models"
    write_python_backend_model(path, MODEL, 1, behaviour="double", scale=2.0)
    write_python_backend_model(path, MODEL, 2, behaviour="double", scale=3.0)
    return path


def test_deploy_upgrade_and_roll_back_a_bad_version(kube, namespace, operator, wait_for, repo):
    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1))
    obj = wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving and Ready")
    assert condition(obj, "Valid")["status"] == "True"
    assert condition(obj, "ResourcesAvailable")["status"] == "True"
    assert obj["status"]["history"][0]["outcome"] == "Serving"
    assert set(obj["status"]["phaseDurationsSeconds"]) >= {"Validating", "Deploying", "Loading", "HealthChecking"}
    pods = triton_pods(kube, namespace)
    assert len(pods) == 1
    assert pods[0].spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"
    ip = pods[0].status.pod_ip
    assert infer(ip) == [2.0, 4.0, 6.0, 8.0]
    # What the periodic check of Kopf's ModelDeployment watch lists (ReconcileLoop.check_against_list).
    async def listed():
        session = ApiSession(kube.api_client.configuration)
        try:
            return await KubeClient(session).list_custom(namespace, "modeldeployments")
        finally:
            await session.close()

    listed_mds, mds_at = asyncio.run(listed())
    assert [m["metadata"]["name"] for m in listed_mds] == ["adder"] and mds_at >= resource_version(listed_mds[0])
    # The Service, made once the server started, routes to the ready pod.
    slices = endpoint_slice_lister(kube.api_client)
    wait_for(lambda: [e for s in slices(label_selector="kubernetes.io/service-name=adder-triton")["items"]
                      for e in s.get("endpoints") or [] if ip in e.get("addresses", [])
                      and (e.get("conditions") or {}).get("ready")] or None, timeout=30, what="a ready endpoint")

    # v1 -> v2: swapped inside the running server, no new pod.
    v2_samples = md_manifest("x", repo, 2, 3.0)["spec"]["validation"]
    mds.patch("adder", {"spec": {"model": {"version": 2}, "validation": v2_samples}})
    obj = wait_for(serving(mds, "adder", 2), timeout=120, what="version 2 serving")
    assert [p.metadata.uid for p in triton_pods(kube, namespace)] == [pods[0].metadata.uid]
    assert infer(ip) == [3.0, 6.0, 9.0, 12.0]
    outcomes = [(h["version"], h["outcome"]) for h in obj["status"]["history"]]
    assert outcomes[:3] == [(2, "Serving"), (1, "Superseded"), (1, "Serving")]

    # v3 answers wrongly: validation rejects it, v2 keeps serving, the reason is recorded.
    write_python_backend_model(repo, MODEL, 3, behaviour="wrong", scale=3.0)
    mds.patch("adder", {"spec": {"model": {"version": 3}}})

    def rolled_back():
        o = mds.get("adder")
        c = condition(o, "RolledBack")
        return o if c and c["status"] == "True" and 3 in o["status"].get("rejectedVersions", []) else None

    obj = wait_for(rolled_back, timeout=120, what="version 3 rejected and rolled back")
    assert obj["status"]["servingVersion"] == 2
    assert obj["status"]["history"][0]["version"] == 3 and obj["status"]["history"][0]["outcome"] == "Failed"
    assert infer(ip) == [3.0, 6.0, 9.0, 12.0]
    assert condition(obj, "Ready")["status"] == "True"

    # GitOps re-apply of the same spec: no new attempt.
    attempts = len(kube.core.list_namespaced_pod(namespace, label_selector="aiops.dev/role=validation").items)
    mds.patch("adder", {"metadata": {"labels": {"synced-by": "argocd"}}})
    time.sleep(3)
    assert len(kube.core.list_namespaced_pod(
        namespace, label_selector="aiops.dev/role=validation").items) == attempts
    assert mds.get("adder")["status"]["servingVersion"] == 2


@pytest.mark.parametrize("early", [True, False], ids=["server-started-early", "server-after-validation"])
def test_broken_config_is_rejected_before_anything_serves(kube, namespace, operator, wait_for, tmp_path, early):
    """With startServerEarly (the default) the Triton pods start beside the validation Job but
    nothing is loaded into them, so they never become Ready; the failure scales them away. No
    Service is made for a version that never got as far as loading."""
    repo = tmp_path / "models"
    write_python_backend_model(repo, MODEL, 1, behaviour="bad-config")
    mds = MDs(kube, namespace)
    # No GPUs: an early start also waits for free GPUs, and an earlier test's pods may hold them.
    mds.create(md_manifest("broken", repo, 1, validation={"startServerEarly": early},
                           resources={"gpus": 0, "memory": "2Gi"}))

    def failed():
        o = mds.get("broken")
        return o if (o.get("status") or {}).get("phase") == "Failed" else None

    obj = wait_for(failed, timeout=90, what="phase Failed")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ConfigInvalid"
    assert obj["status"]["rejectedVersions"] == [1]
    apps = client.AppsV1Api(kube.api_client)
    assert kube.core.list_namespaced_service(namespace).items == []
    if early:
        assert apps.read_namespaced_deployment("broken-triton", namespace).spec.replicas == 0
        wait_for(lambda: not triton_pods(kube, namespace) or None, timeout=60, what="the unused pods gone")
    else:
        assert apps.list_namespaced_deployment(namespace).items == []
        assert triton_pods(kube, namespace) == []
    # Events are posted right after the status write: wait for them rather than race them.
    wait_for(lambda: any(e.reason == "ConfigInvalid" and e.type == "Warning" for e in kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=broken").items), what="a Warning Event ConfigInvalid")


def test_a_hostpath_outside_the_allowed_directories_is_refused_and_mounts_nothing(kube, namespace, operator,
                                                                                    wait_for, repo):
    """A CR author cannot have the operator mount a node directory the admin did not list: the
    spec is refused before any pod names it, and naming an allowed directory carries on."""
    mds = MDs(kube, namespace)
    mds.create(md_manifest("escape", Path("/etc"), 1, resources={"gpus": 0, "memory": "2Gi"}))

    def refused():
        o = mds.get("escape")
        valid = condition(o, "Valid")
        return o if valid and valid["status"] == "False" else None

    obj = wait_for(refused, timeout=60, what="Valid=False")
    valid = condition(obj, "Valid")
    assert valid["reason"] == "HostPathNotAllowed"
    assert valid["message"].startswith("spec.repository.hostPath.path: /etc")
    assert obj["status"]["phase"] == "Invalid"
    wait_for(lambda: any(e.reason == "HostPathNotAllowed" and e.type == "Warning"
                         for e in kube.core.list_namespaced_event(
                             namespace, field_selector="involvedObject.name=escape").items),
             what="a Warning Event HostPathNotAllowed")
    assert client.BatchV1Api(kube.api_client).list_namespaced_job(namespace).items == []
    assert client.AppsV1Api(kube.api_client).list_namespaced_deployment(namespace).items == []
    assert kube.core.list_namespaced_pod(namespace).items == []

    mds.patch("escape", {"spec": {"repository": {"hostPath": {"path": str(repo)}}}})
    wait_for(serving(mds, "escape", 1), timeout=150, what="version 1 serving from an allowed directory")


def test_a_child_the_api_server_refuses_shows_in_status_with_its_message(kube, namespace, operator, wait_for,
                                                                          repo):
    """A namespace's ResourceQuota allows no Job: the validation Job is refused (403), and the
    refusal is in status and an Event at once, in the API server's words, instead of a retry loop
    nobody sees. Once the quota allows it, the retry annotation carries on."""
    quota = client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="no-jobs"),
                                   spec=client.V1ResourceQuotaSpec(hard={"count/jobs.batch": "0"}))
    kube.core.create_namespaced_resource_quota(namespace, quota)
    wait_for(lambda: (kube.core.read_namespaced_resource_quota("no-jobs", namespace).status.hard or None),
             what="the quota counted by the controller")
    mds = MDs(kube, namespace)
    mds.create(md_manifest("quota", repo, 1, validation={"startServerEarly": False},
                           resources={"gpus": 0, "memory": "2Gi"}))

    def refused():
        applied = condition(mds.get("quota"), "Applied")
        return applied if applied and applied["status"] == "False" else None

    applied = wait_for(refused, timeout=60, what="Applied=False")
    assert applied["reason"] == "RejectedByAPIServer"
    assert "(403)" in applied["message"] and "exceeded quota: no-jobs" in applied["message"]
    wait_for(lambda: [e for e in kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=quota,reason=RejectedByAPIServer").items
        if e.type == "Warning"], what="a Warning Event RejectedByAPIServer")
    assert client.BatchV1Api(kube.api_client).list_namespaced_job(namespace).items == []

    kube.core.delete_namespaced_resource_quota("no-jobs", namespace)
    mds.patch("quota", {"metadata": {"annotations": {"aiops.dev/retry": "quota-raised"}}})
    obj = wait_for(serving(mds, "quota", 1), timeout=150, what="version 1 serving once Jobs are allowed")
    assert (condition(obj, "Applied")["status"], condition(obj, "Applied")["reason"]) == ("True", "Accepted")


def test_retry_annotation_validates_the_same_spec_again(kube, namespace, operator, wait_for, tmp_path):
    """A rejected spec is not retried on its own; the model fixed in place plus a new value of
    aiops.dev/retry runs a fresh validation Job (not the failed one again) and the version serves."""
    repo = tmp_path / "models"
    write_python_backend_model(repo, MODEL, 1, behaviour="bad-config")
    mds = MDs(kube, namespace)
    mds.create(md_manifest("fixed", repo, 1, resources={"gpus": 0, "memory": "2Gi"}))
    wait_for(lambda: (mds.get("fixed").get("status") or {}).get("phase") == "Failed" or None, timeout=90,
             what="phase Failed")

    write_python_backend_model(repo, MODEL, 1, behaviour="double", scale=2.0)
    mds.patch("fixed", {"metadata": {"annotations": {"aiops.dev/retry": "model fixed"}}})
    obj = wait_for(serving(mds, "fixed", 1), timeout=150, what="version 1 serving after the retry")
    assert [(h["version"], h["outcome"]) for h in obj["status"]["history"]][:2] == [(1, "Serving"), (1, "Failed")]
    jobs = client.BatchV1Api(kube.api_client).list_namespaced_job(
        namespace, label_selector="aiops.dev/modeldeployment=fixed").items
    assert len(jobs) == 2  # the failed validation and the retried one


def test_waits_for_gpus_and_creates_nothing_that_would_sit_pending(kube, namespace, operator, wait_for, repo):
    blocker = client.V1Pod(metadata=client.V1ObjectMeta(name="gpu-hog"), spec=client.V1PodSpec(containers=[
        client.V1Container(name="c", image="hog", resources=client.V1ResourceRequirements(
            limits={"nvidia.com/gpu": "2"}))]))
    kube.core.create_namespaced_pod(namespace, blocker)
    wait_for(lambda: kube.core.read_namespaced_pod("gpu-hog", namespace).status.phase == "Running",
             what="the GPU hog running")
    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1))

    def waiting():
        o = mds.get("adder")
        c = condition(o, "ResourcesAvailable")
        return o if c and c["status"] == "False" else None

    obj = wait_for(waiting, timeout=90, what="ResourcesAvailable=False")
    message = condition(obj, "ResourcesAvailable")["message"]
    assert condition(obj, "ResourcesAvailable")["reason"] == "InsufficientGPU"
    assert "needs 1 pod(s) x (2 nvidia.com/gpu, 2Gi memory)" in message and "0 of 2 nvidia.com/gpu free" in message
    assert client.AppsV1Api(kube.api_client).list_namespaced_deployment(namespace).items == []

    kube.core.delete_namespaced_pod("gpu-hog", namespace)
    wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving once the GPUs were freed")


def test_more_memory_than_any_node_has_waits_and_creates_nothing(kube, namespace, operator, wait_for, repo):
    """Larger than any node's allocatable memory: no validation Job, no Deployment, a reason with
    the numbers; lowered to what fits, it rolls out."""
    mds = MDs(kube, namespace)
    mds.create(md_manifest("big", repo, 1, resources={"gpus": 2, "memory": "512Gi", "memoryRequest": "400Gi"}))

    def waiting():
        o = mds.get("big")
        return o if (condition(o, "ResourcesAvailable") or {}).get("reason") == "InsufficientMemory" else None

    obj = wait_for(waiting, timeout=60, what="InsufficientMemory")
    message = condition(obj, "ResourcesAvailable")["message"]
    assert "400Gi memory" in message and "of 125Gi memory free" in message, message
    assert condition(obj, "Ready")["reason"] == "InsufficientMemory"
    assert obj["status"]["rollout"]["waitReason"] == "InsufficientMemory"
    time.sleep(2)  # nothing appears a moment later either
    assert client.BatchV1Api(kube.api_client).list_namespaced_job(namespace).items == []
    assert client.AppsV1Api(kube.api_client).list_namespaced_deployment(namespace).items == []
    events = kube.core.list_namespaced_event(namespace, field_selector="reason=InsufficientMemory").items
    assert len(events) == 1 and "no usable node can hold one Triton pod" in events[0].message

    mds.patch("big", {"spec": {"resources": {"memory": "2Gi", "memoryRequest": None}}})
    wait_for(serving(mds, "big", 1), timeout=150, what="version 1 serving once it fits")


def test_a_validation_pod_the_scheduler_cannot_place_shows_in_status(kube, namespace, operator, wait_for, repo,
                                                                     memory_hog):
    """The node's memory taken by another pod: the validation Job's pod stays Pending, and the
    ModelDeployment says why in the scheduler's words within a pass, then validates once there is room."""
    mds = MDs(kube, namespace)
    mds.create(md_manifest("squeezed", repo, 1, resources={"gpus": 0, "memory": "512Mi"}))

    def waiting():
        o = mds.get("squeezed")
        return o if (condition(o, "Ready") or {}).get("reason") == "InsufficientMemory" else None

    obj = wait_for(waiting, timeout=60, what="Ready=False InsufficientMemory from the scheduler")
    message = condition(obj, "Ready")["message"]
    assert "waits for the scheduler" in message and "Insufficient memory" in message, message
    assert obj["status"]["phase"] == "Validating"
    memory_hog()  # frees the memory
    wait_for(serving(mds, "squeezed", 1), timeout=150, what="version 1 serving once the memory was freed")


def _env_is(name: str, value: str):
    def match(pod) -> bool:
        return any(e.name == name and e.value == value for c in pod.spec.containers for e in c.env or [])
    return match


@pytest.mark.parametrize("fault,reason", [("crash-loop", "CrashLoop"), ("never-ready", "ProgressDeadlineExceeded")])
def test_broken_pods_roll_back_to_the_last_good_template(kube, namespace, operator, wait_for, repo, fault, reason):
    """A new version that also changes the pods (here: an env var) gets pods that crash or never
    become ready: the previous ReplicaSet's template comes back and the old version serves again."""
    from aiops.devenv.podbehaviour import CRASH_LOOP, NEVER_READY

    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1, healthCheck={"periodSeconds": 2, "failureThreshold": 2,
                                                          "progressDeadlineSeconds": 30}))
    wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving")
    kube.agent.inject(_env_is("BROKEN", "1"), CRASH_LOOP if fault == "crash-loop" else NEVER_READY)
    v2 = md_manifest("x", repo, 2, 3.0)["spec"]["validation"]
    mds.patch("adder", {"spec": {"model": {"version": 2}, "validation": v2,
                                 "runtime": {"env": [{"name": "BROKEN", "value": "1"}]}}})

    def rolled_back():
        o = mds.get("adder")
        c = condition(o, "RolledBack")
        return o if c and c["status"] == "True" else None

    obj = wait_for(rolled_back, timeout=120, what=f"rollback after {fault}")
    assert condition(obj, "RolledBack")["reason"] == reason
    assert obj["status"]["servingVersion"] == 1 and obj["status"]["rejectedVersions"] == [2]
    dep = client.AppsV1Api(kube.api_client).read_namespaced_deployment("adder-triton", namespace)
    assert not any(e.name == "BROKEN" for e in dep.spec.template.spec.containers[0].env or [])
    wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving again on restored pods")
    pods = triton_pods(kube, namespace)
    assert len(pods) == 1 and infer(pods[0].status.pod_ip) == [2.0, 4.0, 6.0, 8.0]


def test_operator_restart_mid_rollout_converges_without_duplicates(kube, namespace, crds_installed, wait_for, repo,
                                                                    monkeypatch):
    """Also: the Triton pods' NetworkPolicy, made with their Deployment, follows the operator's
    settings after a restart that changed them (networkPolicies.from)."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "aiops.controllers"]
    mds = MDs(kube, namespace)
    with KopfRunner(args, timeout=60) as first:
        mds.create(md_manifest("adder", repo, 1))
        wait_for(lambda: ((mds.get("adder").get("status") or {}).get("rollout") or {}).get("step")
                 in ("Deploying", "Loading", "HealthChecking"), timeout=90, what="the rollout past validation")
    assert first.exit_code == 0, first.output
    net = client.NetworkingV1Api(kube.api_client)
    policy = net.read_namespaced_network_policy("adder-triton", namespace)
    assert [p.port for p in policy.spec.ingress[0].ports] == [8000, 8001, 8002]
    assert len(policy.spec.ingress[0]._from) == 2  # the namespace and the operator's
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    monkeypatch.setenv("AIOPS_NETWORK_POLICY_PEERS", json.dumps([monitoring]))
    with KopfRunner(args, timeout=120) as second:
        wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving after the restart")
    assert second.exit_code == 0, second.output
    policy = net.read_namespaced_network_policy("adder-triton", namespace)
    assert policy.spec.ingress[0]._from[-1].namespace_selector.match_labels == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert [p.metadata.name for p in net.list_namespaced_network_policy(namespace).items] == ["adder-triton"]
    selected = kube.core.list_namespaced_pod(namespace, label_selector=",".join(
        f"{k}={v}" for k, v in policy.spec.pod_selector.match_labels.items())).items
    assert {p.metadata.name for p in selected} == {p.metadata.name for p in triton_pods(kube, namespace)}
    apps, batch = client.AppsV1Api(kube.api_client), client.BatchV1Api(kube.api_client)
    assert [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items] == ["adder-triton"]
    assert [s.metadata.name for s in kube.core.list_namespaced_service(namespace).items] == ["adder-triton"]
    assert len(batch.list_namespaced_job(namespace).items) == 1
    assert len(triton_pods(kube, namespace)) == 1


def test_a_validation_job_gone_before_its_verdict_was_read_runs_again(kube, namespace, crds_installed, wait_for,
                                                                       repo):
    """Finished validation Jobs are left to Kubernetes' TTL; one deleted while the operator was
    down, before it read the verdict, is simply run again."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "aiops.controllers"]
    mds, batch = MDs(kube, namespace), client.BatchV1Api(kube.api_client)
    with KopfRunner(args, timeout=60) as first:
        mds.create(md_manifest("adder", repo, 1))
        job_name = wait_for(lambda: ((mds.get("adder").get("status") or {}).get("rollout") or {}).get(
            "validationJob"), timeout=60, what="the validation Job")
    assert first.exit_code == 0, first.output
    job = batch.read_namespaced_job(job_name, namespace)
    assert job.spec.ttl_seconds_after_finished == 3600
    wait_for(lambda: batch.read_namespaced_job(job_name, namespace).status.succeeded, timeout=90,
             what="the validation Job to finish while the operator is down")
    assert mds.get("adder")["status"]["rollout"]["step"] == "Validating"
    batch.delete_namespaced_job(job_name, namespace, propagation_policy="Foreground")
    wait_for(lambda: job_name not in [j.metadata.name for j in batch.list_namespaced_job(namespace).items],
             timeout=60, what="the Job gone")
    with KopfRunner(args, timeout=120) as second:
        wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving after validating again")
    assert second.exit_code == 0, second.output
    assert [j.metadata.name for j in batch.list_namespaced_job(namespace).items] == [job_name]


def test_deletion_cleans_up_everything(kube, namespace, operator, wait_for, repo):
    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1))
    wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving")
    mds.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "adder")
    apps, batch = client.AppsV1Api(kube.api_client), client.BatchV1Api(kube.api_client)

    def gone():
        left = (apps.list_namespaced_deployment(namespace).items + kube.core.list_namespaced_service(namespace).items
                + client.NetworkingV1Api(kube.api_client).list_namespaced_network_policy(namespace).items
                + batch.list_namespaced_job(namespace).items + triton_pods(kube, namespace)
                + [c for c in kube.core.list_namespaced_config_map(namespace).items
                   if c.metadata.name.startswith("adder")])
        return not left or None

    wait_for(gone, timeout=90, what="Deployment, Service, Job, ConfigMap and pods garbage-collected")


def test_failed_first_version_frees_its_gpus(kube, namespace, operator, wait_for, repo):
    """With nothing good to roll back to, a crash-looping first version fails and its pods go."""
    from aiops.devenv.podbehaviour import CRASH_LOOP

    kube.agent.inject(_env_is("BROKEN", "1"), CRASH_LOOP)
    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1, runtime={"env": [{"name": "BROKEN", "value": "1"}]}))

    def failed():
        o = mds.get("adder")
        return o if (o.get("status") or {}).get("phase") == "Failed" else None

    obj = wait_for(failed, timeout=120, what="phase Failed")
    assert condition(obj, "Ready")["reason"] == "CrashLoop"
    apps = client.AppsV1Api(kube.api_client)
    assert apps.read_namespaced_deployment("adder-triton", namespace).spec.replicas == 0
    wait_for(lambda: not triton_pods(kube, namespace) or None, timeout=60, what="the failing pods gone")


def test_a_version_not_yet_registered_is_awaited_not_rejected(kube, namespace, operator, wait_for, tmp_path):
    """GitOps applies a TrainingJob and the ModelDeployment of its output together: until the
    version is in the repository the rollout waits (WaitingForModel), then goes on by itself.
    Its server, started beside the first validation, is scaled to 0 meanwhile: the TrainingJob
    may need the GPU."""
    repo = tmp_path / "models"
    repo.mkdir()
    mds = MDs(kube, namespace)
    # One GPU: free even while an earlier test's 2-GPU pod terminates (the node has 3).
    mds.create(md_manifest("later", repo, 1, resources={"gpus": 1, "memory": "2Gi"}))

    def waiting():
        ready = condition(mds.get("later"), "Ready")
        return ready if ready and ready["reason"] == "WaitingForModel" else None
    ready = wait_for(waiting, timeout=60, what="Ready=False WaitingForModel")
    assert "not in the repository yet" in ready["message"]
    assert not (mds.get("later")["status"].get("rejected"))
    apps = client.AppsV1Api(kube.api_client)
    wait_for(lambda: apps.read_namespaced_deployment("later-triton", namespace).spec.replicas == 0 or None,
             timeout=30, what="the early-started Deployment scaled to 0 while waiting")

    write_python_backend_model(repo, MODEL, 1, behaviour="double", scale=2.0)
    obj = wait_for(serving(mds, "later", 1), timeout=120, what="version 1 serving once it exists")
    assert obj["status"]["history"][0]["outcome"] == "Serving"
    assert apps.read_namespaced_deployment("later-triton", namespace).spec.replicas == 1


def test_a_deployment_of_the_same_name_that_is_not_ours_is_never_taken_over(kube, namespace, operator, wait_for,
                                                                               repo):
    """Someone else's Deployment named like the Triton one (with our labels even, so the watch
    sees it): the version is rejected with NameTaken, and that Deployment is left as it was."""
    apps = client.AppsV1Api(kube.api_client)
    labels = {"app": "theirs", "aiops.dev/modeldeployment": "taken", "app.kubernetes.io/managed-by": "aiops-operator"}
    apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "taken-triton", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "theirs"}},
                 "template": {"metadata": {"labels": {"app": "theirs"}},
                              "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}})
    mds = MDs(kube, namespace)
    mds.create(md_manifest("taken", repo, 1))

    def rejected():
        o = mds.get("taken")
        return o if (condition(o, "Ready") or {}).get("reason") == "NameTaken" else None

    obj = wait_for(rejected, timeout=120, what="Ready=False NameTaken")
    latest = obj["status"]["history"][0]  # Ready's message moves on to "rejected, not retried" next pass
    assert obj["status"]["phase"] == "Failed" and latest["reason"] == "NameTaken"
    assert "Deployment taken-triton already exists" in latest["message"], latest
    theirs = apps.read_namespaced_deployment("taken-triton", namespace)
    assert theirs.spec.template.spec.containers[0].image == "theirs:1" and not theirs.metadata.owner_references
    assert theirs.spec.replicas == 1, "scaled by the operator"


def test_a_status_write_from_a_pass_over_an_older_version_is_refused(kube, namespace, crds_installed):
    """Fencing: a pass writes status only onto the version of the object it read. One that read
    an older version (a deposed leader's pass finishing late, or a spec changed meanwhile) writes
    nothing and posts no Event; the pass over the current version writes."""
    mds = MDs(kube, namespace)
    read = mds.create(md_manifest("fenced", Path("/var/lib/aiops/models"), 1))
    mds.patch("fenced", {"spec": {"model": {"version": 2}}})

    async def write(obj, phase):
        session = ApiSession(kube.api_client.configuration)
        try:
            client_ = KubeClient(session)
            written = await client_.write_back(obj, "modeldeployments", {}, {"phase": phase},
                                               [("Normal", "Stale", "from the older version")])
            await client_.flush()
            return written
        finally:
            await session.close()

    assert asyncio.run(write(read, "Ready")) is None
    current = mds.get("fenced")
    assert (current.get("status") or {}).get("phase") is None
    assert not kube.core.list_namespaced_event(namespace, field_selector="reason=Stale").items
    written = asyncio.run(write(current, "Pending"))
    assert written["status"]["phase"] == "Pending" and mds.get("fenced")["status"]["phase"] == "Pending"


def test_the_same_event_again_is_counted_on_the_first_not_posted_anew(kube, namespace, crds_installed):
    """Events aggregate as client-go's recorder does: a repeat within the series window raises
    count and lastTimestamp on the Event already there; another message is an Event of its own."""
    mds = MDs(kube, namespace)
    md = mds.create(md_manifest("noisy", Path("/var/lib/aiops/models"), 1))

    async def post(messages):
        session = ApiSession(kube.api_client.configuration)
        try:
            client_ = KubeClient(session)
            for message in messages:
                await client_.event(md, "Warning", "Flapping", message)
        finally:
            await session.close()

    asyncio.run(post(["the same", "the same", "the same", "another"]))
    events = kube.core.list_namespaced_event(namespace, field_selector="reason=Flapping").items
    assert sorted((e.message, e.count) for e in events) == [("another", 1), ("the same", 3)]
    same = next(e for e in events if e.message == "the same")
    assert same.last_timestamp >= same.first_timestamp


def test_kubectl_scale_sets_the_triton_pods_and_get_shows_them(kube, namespace, operator, wait_for, repo):
    """The scale subresource: `kubectl scale` (and so a HorizontalPodAutoscaler) changes
    spec.replicas and reads back the pods and their selector; `kubectl get` shows them. A scale
    is no rollout: no validation Job, no new history entry, the new pod serves the same version."""
    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1, resources={"gpus": 1, "memory": "2Gi"}))
    before = wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving")
    jobs = client.BatchV1Api(kube.api_client)
    validations = sorted(j.metadata.name for j in jobs.list_namespaced_job(namespace).items)
    kube.kubectl("scale", "-n", namespace, "modeldeployment/adder", "--replicas=2")

    def two_ready():
        obj = mds.get("adder")
        st = obj.get("status") or {}
        return obj if st.get("readyReplicas") == 2 and st.get("phase") == "Ready" and not st.get("rollout") else None

    obj = wait_for(two_ready, timeout=180, what="two Triton pods ready")
    assert obj["spec"]["replicas"] == 2 and len(triton_pods(kube, namespace)) == 2
    assert obj["status"]["history"] == before["status"]["history"]
    assert obj["status"]["servingRevision"] == before["status"]["servingRevision"]
    assert sorted(j.metadata.name for j in jobs.list_namespaced_job(namespace).items) == validations
    reasons = [e.reason for e in kube.core.list_namespaced_event(namespace).items
               if e.involved_object.kind == "ModelDeployment"]
    assert reasons.count("RolloutStarted") == 1 and "Scaled" in reasons, reasons
    assert [infer(p.status.pod_ip) for p in triton_pods(kube, namespace)] == [[2.0, 4.0, 6.0, 8.0]] * 2
    raw = kube.kubectl("get", "--raw", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/modeldeployments/adder/scale")
    scale = json.loads(raw.stdout)
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (2, 2)
    selected = kube.core.list_namespaced_pod(namespace, label_selector=scale["status"]["selector"]).items
    assert sorted(p.metadata.name for p in selected) == sorted(p.metadata.name for p in triton_pods(kube, namespace))
    table = kube.kubectl("get", "modeldeployment", "adder", "-n", namespace, "-o", "wide").stdout.splitlines()
    header = table[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    row = {header[a:b].strip(): table[1][a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)}
    assert (row["REPLICAS"], row["AVAILABLE"], row["SERVING"]) == ("2", "2", "1")
    assert row["ENDPOINT"] == obj["status"]["endpoints"]["http"]
    kube.kubectl("scale", "-n", namespace, "modeldeployment/adder", "--replicas=1")
    wait_for(lambda: len(triton_pods(kube, namespace)) == 1 and mds.get("adder")["status"].get("readyReplicas") == 1
             or None, timeout=120, what="back to one Triton pod")
    assert mds.get("adder")["status"]["history"] == before["status"]["history"]


def test_a_serving_options_change_reaches_the_running_server(kube, namespace, operator, wait_for, repo):
    """spec.serving is part of what serves: changing it rolls out like any serving change, and the
    running Triton ends with the server's cache flag and the loaded configuration it asks for."""
    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1, resources={"gpus": 0, "memory": "2Gi"}))
    wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving")
    mds.patch("adder", {"spec": {"serving": {"instances": 2, "responseCache": {"enabled": True, "size": "8Mi"}}}})

    def applied():
        if not serving(mds, "adder", 1)():
            return None
        pods = triton_pods(kube, namespace)
        if len(pods) != 1 or not pods[0].status.pod_ip or not any(
                a.startswith("--cache-config") for a in pods[0].spec.containers[0].args):
            return None
        c = httpclient.InferenceServerClient(f"{pods[0].status.pod_ip}:8000")
        try:
            config = c.get_model_config(MODEL)
        except Exception:  # noqa: BLE001 - not loaded yet
            return None
        finally:
            c.close()
        return (pods[0], config) if (config.get("response_cache") or {}).get("enable") else None

    pod, config = wait_for(applied, timeout=180, what="the cache and two instances loaded")
    assert "--cache-config=local,size=8388608" in pod.spec.containers[0].args
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(2, "KIND_CPU")]
    ip = pod.status.pod_ip
    assert infer(ip) == infer(ip) == [2.0, 4.0, 6.0, 8.0]
    c = httpclient.InferenceServerClient(f"{ip}:8000")
    try:
        stats = c.get_inference_statistics(MODEL)["model_stats"][0]["inference_stats"]
    finally:
        c.close()
    assert int(stats["cache_hit"]["count"]) >= 1
