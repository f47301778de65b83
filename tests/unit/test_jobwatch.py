"""The validation Jobs as the watch saw them: slim copies from which the reconciler reads the
verdict without asking the API server, and knows when it must ask."""

import json

from aiops.rollout.jobwatch import JobWatch
from aiops.rollout.verdict import job_outcome

VERDICT = {"valid": True, "reason": "Validated", "message": "ok", "config": {"name": "adder"}}


def job(uid="job-uid", conditions=()):
    return {"metadata": {"name": "md-validate-v1", "namespace": "ns", "uid": uid},
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 0, "template": {"spec": {}}},
            "status": {"conditions": [{"type": t, "status": "True", "reason": "R", "message": "M",
                                       "lastTransitionTime": "2026-11-25T00:00:00Z"} for t in conditions]}}


def pod(phase, owner="job-uid", message=None, name="md-validate-v1-abc"):
    statuses = [{"name": "validate", "state": {"terminated": {"exitCode": 0, "message": message}}
                 if message is not None else {"running": {}}}]
    return {"metadata": {"name": name, "namespace": "ns", "labels": {"job-name": "md-validate-v1"},
                         "creationTimestamp": "2026-11-25T00:00:00Z", "ownerReferences": [{"uid": owner}]},
            "spec": {"containers": [{"name": "validate", "image": "worker"}]},
            "status": {"phase": phase, "podIP": "10.0.0.1", "containerStatuses": statuses}}


def test_unseen_job_is_none_and_it_finishes_by_its_pod_or_its_condition():
    watch = JobWatch()
    assert watch.get("ns", "md-validate-v1") is None  # never seen: the reconciler asks the API server
    watch.observe_job(job(), deleted=False)
    watch.observe_pod(pod("Running"), deleted=False)
    assert not job_outcome(*watch.get("ns", "md-validate-v1")).finished
    watch.observe_pod(pod("Succeeded", message=json.dumps(VERDICT)), deleted=False)
    assert job_outcome(*watch.get("ns", "md-validate-v1")).finished  # before the Job controller says so
    watch.observe_pod(pod("Running"), deleted=False)
    watch.observe_job(job(conditions=("Failed",)), deleted=False)
    assert job_outcome(*watch.get("ns", "md-validate-v1")).finished
    watch.observe_job(job(), deleted=True)
    assert watch.get("ns", "md-validate-v1") is None


def test_finished_pod_carries_the_verdict_from_its_termination_message():
    watch = JobWatch()
    watch.observe_job(job(), deleted=False)
    watch.observe_pod(pod("Succeeded", message=json.dumps(VERDICT)), deleted=False)
    outcome = job_outcome(*watch.get("ns", "md-validate-v1"))
    assert (outcome.finished, outcome.succeeded, outcome.exit_code) == (True, True, 0)
    assert (outcome.verdict["valid"], outcome.verdict["config"]) == (True, VERDICT["config"])


def test_job_finished_before_its_pods_last_event_has_no_exit_code_so_the_api_is_asked():
    watch = JobWatch()
    watch.observe_job(job(conditions=("Complete",)), deleted=False)
    watch.observe_pod(pod("Running"), deleted=False)
    outcome = job_outcome(*watch.get("ns", "md-validate-v1"))
    assert outcome.finished and outcome.exit_code is None


def test_pods_of_a_deleted_predecessor_do_not_count_and_deletion_forgets():
    watch = JobWatch()
    watch.observe_job(job(uid="new"), deleted=False)
    watch.observe_pod(pod("Succeeded", owner="old", message=json.dumps(VERDICT), name="old-pod"), deleted=False)
    assert not job_outcome(*watch.get("ns", "md-validate-v1")).finished
    watch.observe_job(job(uid="new"), deleted=True)
    assert watch.get("ns", "md-validate-v1") is None


def test_forgetting_a_deleted_job_drops_it_before_its_deletion_event():
    watch = JobWatch()
    watch.observe_job(job(), deleted=False)
    watch.observe_pod(pod("Succeeded", message=json.dumps(VERDICT)), deleted=False)
    watch.forget("ns", "md-validate-v1")
    assert watch.get("ns", "md-validate-v1") is None


def test_a_deletion_announced_by_a_relist_carries_only_metadata_and_is_enough():
    """After a re-list, the informer announces what vanished with the metadata it kept (no spec,
    no status): the Job and its pods are forgotten all the same."""
    watch = JobWatch()
    watch.observe_job(job(), deleted=False)
    finished = pod("Succeeded", message=json.dumps(VERDICT))
    finished["metadata"]["labels"] = {"job-name": "md-validate-v1"}
    watch.observe_pod(finished, deleted=False)
    known = {k: finished["metadata"].get(k) for k in ("namespace", "name", "uid", "resourceVersion", "labels")}
    watch.observe_pod({"metadata": known}, deleted=True)
    assert watch.get("ns", "md-validate-v1")[1] == []
    watch.observe_job({"metadata": {"namespace": "ns", "name": "md-validate-v1", "labels": {}}}, deleted=True)
    assert watch.get("ns", "md-validate-v1") is None
