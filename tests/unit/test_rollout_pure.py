"""The pure parts of the rollout: pod problems, verdicts from Jobs, rejection bookkeeping, revisions."""

import json

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.rollout.history import add_history, reject, rejection
from aiops.rollout.pods import pod_problem, pod_running_ip, pod_started, unschedulable, unschedulable_reason
from aiops.rollout.revision import adopt_earlier_revisions, digest, earlier_revision, spec_revision
from aiops.rollout.verdict import job_outcome


def pod(phase="Running", waiting=None, running=True, scheduled=True, restarts=0):
    state = {"waiting": {"reason": waiting}} if waiting else ({"running": {}} if running else {})
    conds = [] if scheduled else [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                   "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]
    return {"metadata": {"name": "p"}, "status": {
        "phase": phase, "podIP": "127.100.0.9", "conditions": conds,
        "containerStatuses": [{"name": "triton", "state": state, "restartCount": restarts,
                               "lastState": {"terminated": {"exitCode": 1}} if restarts else {}}]}}


def test_pod_problems():
    assert pod_problem(pod()) is None
    crash = pod_problem(pod(waiting="CrashLoopBackOff", restarts=3))
    assert crash.reason == "CrashLoop" and "3 restarts" in crash.message and "exit code 1" in crash.message
    assert pod_problem(pod(waiting="ImagePullBackOff")).reason == "ImagePullBackOff"
    unsched = pod_problem(pod(phase="Pending", running=False, scheduled=False))
    assert unsched.reason == "Unschedulable" and "Insufficient" in unsched.message and not unsched.fatal
    assert crash.fatal
    assert pod_problem(pod(waiting="ContainerCreating")) is None


def test_unschedulable_reasons_in_the_capacity_check_s_words():
    assert unschedulable(pod(phase="Pending", running=False, scheduled=False)) and not unschedulable(pod())
    assert unschedulable_reason("0/1 nodes are available: 1 Insufficient memory.") == "InsufficientMemory"
    assert unschedulable_reason("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.") \
        == "InsufficientMemory"
    assert unschedulable_reason("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.shared.") == "InsufficientGPU"
    assert unschedulable_reason("0/1 nodes are available: 1 Insufficient cpu.") == "InsufficientCPU"
    assert unschedulable_reason("0/2 nodes are available: 2 node(s) didn't match node selector.") == "Unschedulable"


def test_running_ip_only_for_running_containers():
    assert pod_running_ip(pod()) == "127.100.0.9"
    assert pod_running_ip(pod(waiting="CrashLoopBackOff")) is None
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_running_ip(deleting) is None


def test_started_follows_the_kubelets_flag_and_trusts_clusters_without_it():
    loading = pod()
    loading["status"]["containerStatuses"][0]["started"] = False  # startupProbe not passed yet
    assert pod_running_ip(loading) and not pod_started(loading)
    loading["status"]["containerStatuses"][0]["started"] = True
    assert pod_started(loading)
    assert pod_started(pod())  # no `started` reported: the reconciler asks Triton itself


def job(cond, message=None, exit_code=0):
    j = {"status": {"conditions": [{"type": cond, "status": "True", "reason": "BackoffLimitExceeded"}]}}
    pods = [{"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"containerStatuses": [
        {"state": {"terminated": {"exitCode": exit_code, "message": message}}}]}}]
    return j, pods


def test_job_outcome_reads_the_verdict():
    verdict = {"valid": False, "reason": "SampleMismatch", "message": "sample 'a' wrong"}
    out = job_outcome(*job("Failed", json.dumps(verdict), 3))
    assert out.finished and not out.succeeded and out.exit_code == 3
    assert out.verdict["reason"] == "SampleMismatch"
    logs = "starting triton\nloaded\n" + json.dumps({"valid": True, "reason": "Validated"})
    assert job_outcome(*job("Complete", logs)).verdict["valid"] is True
    broken = job_outcome(*job("Failed", "Traceback: boom", 1))
    assert broken.verdict == {} and "boom" in broken.detail
    assert not job_outcome({"status": {}}, []).finished


def test_job_outcome_from_pods_before_the_job_controller_writes_status():
    verdict = json.dumps({"valid": True, "reason": "Validated"})
    pending = {"spec": {"backoffLimit": 0}, "status": {}}
    running = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}}
    assert not job_outcome(pending, [running]).finished
    _, pods = job("Complete", verdict)
    pods[0]["status"]["phase"] = "Succeeded"
    out = job_outcome(pending, pods)
    assert out.finished and out.succeeded and out.verdict["valid"] is True
    pods[0]["status"]["phase"] = "Failed"
    assert job_outcome(pending, pods).finished and not job_outcome(pending, pods).succeeded
    retried = {"spec": {"backoffLimit": 2}, "status": {}}
    assert not job_outcome(retried, pods).finished  # the Job controller starts another pod
    parallel = {"spec": {"completions": 3}, "status": {}}
    pods[0]["status"]["phase"] = "Succeeded"
    assert not job_outcome(parallel, pods).finished  # not ours to judge: wait for the controller


def test_rejection_holds_until_retry_token_changes():
    status = {}
    reject(status, 3, "rev3", "SampleMismatch", "t", "", 10)
    assert rejection(status, "rev3", "") is not None
    assert "retryToken" not in status["rejected"][0]  # "" would reach the API server as null
    assert rejection(status, "rev3", "try-again") is None
    assert rejection(status, "other", "") is None
    reject(status, 3, "rev3", "HealthCheckFailed", "t2", "try-again", 10)
    assert len(status["rejected"]) == 1 and status["rejectedVersions"] == [3]
    for v in range(20):
        reject(status, v + 10, f"r{v}", "X", "t", "", 5)
    assert len(status["rejected"]) == 5


def test_history_is_newest_first_and_capped():
    status = {}
    for v in range(1, 6):
        add_history(status, v, "Serving", "HealthCheckPassed", "ok", f"t{v}", 3)
    assert [h["version"] for h in status["history"]] == [5, 4, 3]


def test_revision_ignores_monitoring_and_rollback_settings():
    base = {"model": {"name": "m", "version": 1}, "repository": {"hostPath": {"path": "/m"}}}
    a = ModelDeploymentSpec.from_wire(base)
    b = ModelDeploymentSpec.from_wire({**base, "monitoring": {"enabled": False}, "rollback": {"historyLimit": 3}})
    c = ModelDeploymentSpec.from_wire({**base, "model": {"name": "m", "version": 2}})
    assert spec_revision(a) == spec_revision(b) != spec_revision(c)
    late = ModelDeploymentSpec.from_wire({**base, "validation": {"startServerEarly": False}})
    assert spec_revision(late) == spec_revision(a)  # how a rollout proceeds, not what serves


def test_serving_options_are_part_of_the_revision_and_their_defaults_change_nothing():
    base = {"model": {"name": "m", "version": 1}, "repository": {"hostPath": {"path": "/m"}}}
    a = ModelDeploymentSpec.from_wire(base)
    wire = {k: v for k, v in a.to_wire().items() if k != "serving"}
    # The digest objects rolled out before serving options existed hold (replicas included then).
    assert earlier_revision(a) == digest({k: v for k, v in wire.items() if k not in ("monitoring", "rollback")}
                                         | {"validation": {k: v for k, v in wire["validation"].items()
                                                           if k != "startServerEarly"}})
    explicit = ModelDeploymentSpec.from_wire({**base, "serving": {"responseCache": {"enabled": False}}})
    assert spec_revision(explicit) == spec_revision(a)
    for serving in ({"instances": 2}, {"graphOptimization": "basic"}, {"responseCache": {"enabled": True}}):
        assert spec_revision(ModelDeploymentSpec.from_wire({**base, "serving": serving})) != spec_revision(a)


def test_replicas_are_a_scale_not_a_new_revision_and_earlier_revisions_are_adopted():
    base = {"model": {"name": "m", "version": 1}, "repository": {"hostPath": {"path": "/m"}}}
    one, three = (ModelDeploymentSpec.from_wire({**base, "replicas": n}) for n in (1, 3))
    assert spec_revision(one) == spec_revision(three)
    assert earlier_revision(one) != earlier_revision(three) != spec_revision(three)
    other = ModelDeploymentSpec.from_wire({**base, "model": {"name": "m", "version": 2}, "replicas": 3})
    # A status written when replicas counted: what serves, what served before and the rejections
    # that name this very spec take its current revision; others are left as they are.
    status = {"servingRevision": earlier_revision(three), "previousRevision": earlier_revision(other),
              "rejected": [{"version": 1, "revision": earlier_revision(three)},
                           {"version": 2, "revision": earlier_revision(other)}],
              "rollout": {"revision": earlier_revision(three)}}
    adopt_earlier_revisions(status, spec_revision(three), earlier_revision(three))
    assert status == {"servingRevision": spec_revision(three), "previousRevision": earlier_revision(other),
                      "rejected": [{"version": 1, "revision": spec_revision(three)},
                                   {"version": 2, "revision": earlier_revision(other)}],
                      "rollout": {"revision": earlier_revision(three)}}  # it names its validation Job


def test_every_rollout_key_the_reconciler_writes_is_in_the_status_schema():
    """The API server prunes status fields its schema lacks: a key missing from RolloutProgress
    is silently lost on the next status write (serverStartedEarly once was)."""
    import inspect
    import re

    from aiops.api.modeldeployment import RolloutProgress
    from aiops.rollout import reconciler

    source = inspect.getsource(reconciler)
    used = set(re.findall(r'rollout\["(\w+)"\]', source)) | set(re.findall(r'rollout\.(?:pop|get)\("(\w+)"', source))
    first = re.search(r'status\["rollout"\] = \{(.*?)\}', source, re.S).group(1)  # _start_rollout's keys
    used |= set(re.findall(r'"(\w+)":', first))
    known = {field.alias or name for name, field in RolloutProgress.model_fields.items()}
    assert used and used <= known, sorted(used - known)


def test_validation_job_names_change_with_the_retry_annotation_only():
    from aiops.builders.validation_job import validation_attempt, validation_job_name

    plain = validation_job_name("md", 1, validation_attempt("abcdef123456", ""))
    assert plain == "md-validate-v1-abcdef"  # unchanged without a retry: no new Job after an upgrade
    retried = {validation_job_name("md", 1, validation_attempt("abcdef123456", t)) for t in ("1", "2")}
    assert len(retried) == 2 and plain not in retried


def test_validation_spec_travels_in_a_pod_annotation_unless_too_big():
    """A version's validation costs one object: the worker's spec file is the pod's annotation
    through a downwardAPI volume. A spec past the annotation budget goes in a ConfigMap."""
    from aiops.builders.jobs import MAX_ANNOTATED_SPEC, SPEC_ANNOTATION
    from aiops.builders.validation_job import build_validation_objects

    base = {"model": {"name": "m", "version": 3}, "repository": {"hostPath": {"path": "/m"}}}
    spec = ModelDeploymentSpec.from_wire(base)
    [job] = build_validation_objects("md", spec, 3, "abcdef123456", "img")
    pod = job["spec"]["template"]
    text = pod["metadata"]["annotations"][SPEC_ANNOTATION]
    assert ModelDeploymentSpec.from_wire(json.loads(text)) == spec
    assert json.loads(text) == base  # defaults left out: the text rides on every event of the Job and its pod
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "spec"]
    [item] = volume["downwardAPI"]["items"]
    assert item == {"path": "spec.json", "fieldRef": {"fieldPath": f"metadata.annotations['{SPEC_ANNOTATION}']"}}
    assert "--spec=/etc/aiops/spec/spec.json" in pod["spec"]["containers"][0]["args"]

    tensor = {"dataType": "FP32", "shape": [1, 4000], "data": [0.5] * 4000}
    samples = [{"name": f"s{i}", "inputs": [{"name": "INPUT0", **tensor}],
                "expectedOutputs": [{"name": "OUTPUT0", **tensor}]} for i in range(12)]
    big = ModelDeploymentSpec.from_wire({**base, "validation": {"samples": samples}})
    configmap, job = build_validation_objects("md", big, 3, "abcdef123456", "img")
    assert len(configmap["data"]["spec.json"]) > MAX_ANNOTATED_SPEC
    assert ModelDeploymentSpec.from_wire(json.loads(configmap["data"]["spec.json"])) == big
    pod = job["spec"]["template"]
    assert SPEC_ANNOTATION not in (pod["metadata"].get("annotations") or {})
    assert {"name": "spec", "configMap": {"name": configmap["metadata"]["name"]}} in pod["spec"]["volumes"]
    assert configmap["metadata"]["name"] == job["metadata"]["name"]


def test_finished_validation_jobs_are_left_to_kubernetes_ttl(monkeypatch):
    import pytest

    from aiops.builders.validation_job import build_validation_objects
    from aiops.controllers.settings import validation_job_ttl

    spec = ModelDeploymentSpec.from_wire({"model": {"name": "m", "version": 1},
                                          "repository": {"hostPath": {"path": "/m"}}})
    [job] = build_validation_objects("md", spec, 1, "abcdef123456", "img", ttl_seconds=600)
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    monkeypatch.delenv("AIOPS_VALIDATION_JOB_TTL_SECONDS", raising=False)
    assert validation_job_ttl() == 3600
    monkeypatch.setenv("AIOPS_VALIDATION_JOB_TTL_SECONDS", "5")
    assert validation_job_ttl() == 60  # never before the operator saw the Job end
    monkeypatch.setenv("AIOPS_VALIDATION_JOB_TTL_SECONDS", "an hour")
    with pytest.raises(ValueError, match="whole number of seconds"):
        validation_job_ttl()
