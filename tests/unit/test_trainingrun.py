"""The TrainingJob run without a cluster: the step Jobs built from a spec, and what step results do
to status."""

from __future__ import annotations

import copy

import pytest
import yaml

from aiops.api.trainingjob import TrainingJobSpec
from aiops.builders.jobs import MAX_ANNOTATED_SPEC, SPEC_ANNOTATION
from aiops.builders.training_job import (
    build_spec_configmap,
    build_step_job,
    build_workspace_claim,
    run_id,
    spec_hash,
)
from aiops.trainingrun.results import apply_failure, apply_result, fresh_steps, step_state, worker_step_done

EXAMPLE = next(d for d in yaml.safe_load_all(open("examples/trainingjob.yaml")) if d["kind"] == "TrainingJob")


def spec(**changes) -> TrainingJobSpec:
    wire = copy.deepcopy(EXAMPLE["spec"])
    wire.update(changes)
    return TrainingJobSpec.model_validate(wire)


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_spec_hash_is_stable_and_tracks_changes():
    assert spec_hash(spec()) == spec_hash(spec())
    assert spec_hash(spec()) != spec_hash(spec(backoffLimit=5))
    assert run_id("abc", "0123456789abcdef") == "abc-0123456789"


def test_training_step_asks_for_the_shared_gpu_and_memory_of_the_spec():
    job = build_step_job("tj", spec(), "train", "h1", "img:1", dataset_version="v1", run="r1")
    res = container(job)["resources"]
    assert res["limits"] == {"memory": "32Gi", "nvidia.com/gpu.shared": "1"}
    assert container(job)["command"] == ["aiops", "worker", "train", "train"]
    assert "--dataset-version=v1" in container(job)["args"] and "--run=r1" in container(job)["args"]
    assert job["spec"]["backoffLimit"] == 2  # the spec's retries: training resumes from checkpoints


def test_other_steps_run_on_cpu_and_only_register_mounts_the_repository():
    for step in ("data", "optimize", "register"):
        job = build_step_job("tj", spec(), step, "h1", "img:1", dataset_version="v1", run="r1")
        limits = container(job)["resources"]["limits"]
        assert not any("gpu" in k for k in limits), step
        mounted = {m["name"] for m in container(job)["volumeMounts"]}
        assert ("model-repository" in mounted) == (step == "register"), step
        assert ("source" in mounted) == (step == "data"), step
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["restartPolicy"] == "Never"
        assert container(job)["securityContext"]["readOnlyRootFilesystem"]


def test_configmap_source_mounts_only_the_key():
    job = build_step_job("tj", spec(), "data", "h1", "img:1")
    source = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "source")
    assert source["configMap"] == {"name": "support-tickets",
                                   "items": [{"key": "tickets.jsonl", "path": "tickets.jsonl"}]}
    assert "--source=/etc/aiops/source" in container(job)["args"]


def test_uri_source_is_passed_through_and_pvc_source_points_at_its_sub_path():
    uri = build_step_job("tj", spec(dataset={**EXAMPLE["spec"]["dataset"],
                                             "source": {"uri": "https://example.com/d.jsonl"}}), "data", "h", "i")
    assert "--source=https://example.com/d.jsonl" in container(uri)["args"]
    pvc = build_step_job("tj", spec(dataset={**EXAMPLE["spec"]["dataset"], "source": {
        "persistentVolumeClaim": {"claimName": "data", "subPath": "tickets/all.jsonl"}}}), "data", "h", "i")
    assert "--source=/etc/aiops/source/tickets/all.jsonl" in container(pvc)["args"]


def test_workspace_is_managed_by_default_and_user_storage_otherwise():
    wire = copy.deepcopy(EXAMPLE["spec"])
    wire.pop("workspace")
    claim = build_workspace_claim("tj", TrainingJobSpec.model_validate(wire))
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    own = spec(workspace={"persistentVolumeClaim": {"claimName": "mine", "subPath": "runs"}})
    assert build_workspace_claim("tj", own) is None
    job = build_step_job("tj", own, "train", "h", "i", dataset_version="v", run="r")
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "workspace")
    mount = next(m for m in container(job)["volumeMounts"] if m["name"] == "workspace")
    assert volume["persistentVolumeClaim"]["claimName"] == "mine" and mount["subPath"] == "runs"


def test_each_step_job_carries_the_spec_so_nothing_outlives_it():
    """The spec rides on every step Job's pod (downward API): when the Job's TTL deletes it, no
    per-run ConfigMap stays behind. A spec too big for an annotation goes in a ConfigMap."""
    assert build_spec_configmap("tj", spec(), "h1") is None
    pod = build_step_job("tj", spec(), "train", "h1", "i", dataset_version="v", run="r")["spec"]["template"]
    assert TrainingJobSpec.model_validate(yaml.safe_load(pod["metadata"]["annotations"][SPEC_ANNOTATION])) == spec()
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "spec"]
    assert volume["downwardAPI"]["items"][0]["path"] == "spec.json"

    fields = [{"name": f"f{i}", "type": "string", "allowedValues": [f"value-{i}-{j:04d}" for j in range(1000)]}
              for i in range(12)]
    big = spec(dataset={**EXAMPLE["spec"]["dataset"], "schema": {"fields": fields}})
    cm = build_spec_configmap("tj", big, "h2")
    assert cm["metadata"]["name"] == "tj-spec-h2" and len(cm["data"]["spec.json"]) > MAX_ANNOTATED_SPEC
    assert TrainingJobSpec.model_validate(yaml.safe_load(cm["data"]["spec.json"])) == big
    pod = build_step_job("tj", big, "data", "h2", "i")["spec"]["template"]
    assert {"name": "spec", "configMap": {"name": "tj-spec-h2"}} in pod["spec"]["volumes"]
    assert SPEC_ANNOTATION not in (pod["metadata"].get("annotations") or {})


def test_results_move_the_steps_and_fill_status():
    status = {"steps": fresh_steps()}
    apply_result(status, "data", {"ok": True, "datasetVersion": "abc", "stats": {"rows": 30, "trainRows": 24,
                                                                                  "validationRows": 6}}, "t", 1)
    assert status["datasetVersion"] == "abc" and worker_step_done(status, "data")
    apply_result(status, "train", {"ok": True, "epochs": 3, "batchSize": 16, "samplesPerSecond": 50.0,
                                   "finalLoss": 0.1, "device": "cpu"}, "t", 1)
    assert status["training"]["batchSize"] == 16
    events = apply_result(status, "optimize", {
        "ok": True, "passed": False, "qualityDrop": 0.1, "maxQualityDrop": 0.02,
        "metricsBefore": {"accuracy": 0.9, "sizeBytes": 4_000_000},
        "metricsAfter": {"accuracy": 0.8, "sizeBytes": 1_000_000, "sparsity": 0.3}}, "t", 1)
    assert step_state(status, "Optimization") == "Succeeded" and step_state(status, "Evaluation") == "Succeeded"
    assert events[0][:2] == ("Warning", "QualityGateFailed")
    optimized = next(c for c in status["conditions"] if c["type"] == "Optimized")
    assert optimized["status"] == "False" and "0.9000 -> 0.8000" in optimized["message"]
    assert status["metricsAfter"]["sparsity"] == 0.3
    apply_result(status, "register", {"ok": True, "model": {"name": "m", "version": 2, "format": "python",
                                                            "optimized": False}}, "t", 1)
    assert status["producedModel"] == {"name": "m", "version": 2, "format": "python", "optimized": False}


def test_data_failure_lists_the_violations_and_stores_nothing():
    status = {"steps": fresh_steps(), "datasetVersion": "stale"}
    errors = [{"row": i, "field": "label", "message": f"bad label {i}"} for i in range(1, 31)]
    apply_failure(status, "data", "DataValidationFailed", "30 violations", "t",
                  {"ok": False, "errors": errors}, 1)
    assert status["phase"] == "Failed" and len(status["validationErrors"]) == 20
    assert status["validationErrors"][0] == {"row": 1, "field": "label", "message": "bad label 1"}
    assert "datasetVersion" not in status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DataValidationFailed"


def test_quality_gate_failure_with_register_nothing_fails_in_evaluation_with_the_numbers():
    status = {"steps": fresh_steps()}
    apply_failure(status, "optimize", "QualityGateFailed", "drop 0.1 > 0.02", "t",
                  {"ok": False, "metricsBefore": {"accuracy": 0.9}, "metricsAfter": {"accuracy": 0.8},
                   "qualityDrop": 0.1}, 1)
    assert step_state(status, "Optimization") == "Succeeded" and step_state(status, "Evaluation") == "Failed"
    assert status["qualityDrop"] == 0.1 and status["metricsAfter"] == {"accuracy": 0.8}


def test_finished_step_jobs_are_left_to_kubernetes_ttl(monkeypatch):
    from aiops.controllers.settings import step_job_ttl

    assert "ttlSecondsAfterFinished" not in build_step_job("tj", spec(), "data", "h1", "img:1")["spec"]
    job = build_step_job("tj", spec(), "register", "h1", "img:1", dataset_version="v1", run="r1", ttl_seconds=900)
    assert job["spec"]["ttlSecondsAfterFinished"] == 900
    monkeypatch.delenv("AIOPS_STEP_JOB_TTL_SECONDS", raising=False)
    assert step_job_ttl() == 86400
    monkeypatch.setenv("AIOPS_STEP_JOB_TTL_SECONDS", "10")
    assert step_job_ttl() == 60  # never before the operator saw the Job end
    monkeypatch.setenv("AIOPS_STEP_JOB_TTL_SECONDS", "a day")
    with pytest.raises(ValueError, match="AIOPS_STEP_JOB_TTL_SECONDS must be a whole number"):
        step_job_ttl()
