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


def test_a_list_that_lacks_an_older_job_drops_it_and_names_its_owner():
    """Kopf sends no DELETED for a Job deleted while its watch listed again; the periodic LIST does."""
    def labelled(name, version, owner="md"):
        body = job()
        body["metadata"].update(name=name, resourceVersion=str(version),
                                labels={"aiops.dev/modeldeployment": owner})
        return body

    watch = JobWatch()
    for body in (labelled("gone", 10), labelled("kept", 11), labelled("newer", 40, owner="other")):
        watch.observe_job(body, deleted=False)
    watch.observe_pod({**pod("Succeeded", message="{}"), "metadata": {
        **pod("Succeeded")["metadata"], "labels": {"job-name": "gone"}}}, deleted=False)
    # Listed at 30: "gone" was deleted meanwhile; "newer" came after the list.
    assert watch.drop_vanished("ns", [labelled("kept", 11)], 30) == {"md"}
    assert watch.get("ns", "gone") is None and watch.get("ns", "kept") and watch.get("ns", "newer")
    assert watch.drop_vanished("other-ns", [], 99) == set()  # another namespace is not judged
    assert watch.namespaces() == {"ns"}
