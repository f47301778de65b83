"""TrainingJob end to end on the real control plane: the step Jobs run the real worker (torch on
CPU, the packaged MiniLM) on the simulated GPU node, results come back through the API, and the
registered model version is then served by a ModelDeployment in the real tritonserver."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from prometheus_client import REGISTRY

from aiops.api.common import GROUP, VERSION
from aiops.conditions import get_condition

pytestmark = pytest.mark.timeout(420)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


class CRs:
    def __init__(self, kube, namespace, plural):
        self.api = client.CustomObjectsApi(kube.api_client)
        self.ns, self.plural = namespace, plural

    def create(self, body):
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, self.plural, body)

    def get(self, name):
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, self.plural, name)


def condition(obj: dict, type_: str) -> dict | None:
    return get_condition((obj.get("status") or {}).get("conditions"), type_)


def phase_is(crs: CRs, name: str, *phases: str):
    def check():
        obj = crs.get(name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None
    return check


def training_job(tmp_path: Path, name: str = "tickets", **spec) -> tuple[dict, dict]:
    """The example's ConfigMap and TrainingJob, with storage in tmp_path and a short training."""
    cm, tj = copy.deepcopy(example_docs("trainingjob.yaml"))
    tj["metadata"]["name"] = name
    tj["spec"]["output"]["repository"] = {"hostPath": {"path": str(tmp_path / "models")}}
    tj["spec"]["workspace"] = {"hostPath": {"path": str(tmp_path / "workspace")}}
    tj["spec"]["training"]["epochs"] = 4
    # CPU here: the simulated node's shared GPU is a scheduling resource, not a device.
    tj["spec"]["training"]["mixedPrecision"] = "off"
    tj["spec"]["resources"]["memory"] = "4Gi"
    tj["spec"]["resources"].pop("memoryRequest", None)  # equal to memory
    tj["spec"]["optimization"]["maxQualityDrop"] = 1.0  # the gate's own tests are in tests/unit
    tj["spec"].update(spec)
    return cm, tj


def test_data_to_registered_model_that_a_model_deployment_serves(kube, namespace, crds_installed, wait_for,
                                                                    tmp_path):
    """Also: the operator is stopped while the training step runs and started again; the run
    carries on from the state of the world, with exactly one Job per step."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "aiops.controllers"]
    cm, tj = training_job(tmp_path)
    kube.core.create_namespaced_config_map(namespace, cm)
    tjs = CRs(kube, namespace, "trainingjobs")
    batch = client.BatchV1Api(kube.api_client)

    # The training step's Job asks for the shared GPU and the reference memory, and gets scheduled.
    def train_job():
        jobs = batch.list_namespaced_job(
            namespace, label_selector="aiops.dev/trainingjob=tickets,aiops.dev/step=train").items
        return jobs[0] if jobs else None
    with KopfRunner(args, timeout=60) as first:
        tjs.create(tj)
        job = wait_for(train_job, timeout=120, what="the training Job")
    assert first.exit_code == 0, first.output
    limits = job.spec.template.spec.containers[0].resources.limits
    assert limits["nvidia.com/gpu.shared"] == "1"

    with KopfRunner(args, timeout=60) as second:
        obj = wait_for(phase_is(tjs, "tickets", "Registered", "Failed"), timeout=360, what="the run to end")
        steps = sorted(j.metadata.labels["aiops.dev/step"] for j in batch.list_namespaced_job(
            namespace, label_selector="aiops.dev/trainingjob=tickets").items)
        assert steps == ["data", "optimize", "register", "train"]
        _serve_the_produced_model(kube, namespace, wait_for, tmp_path, obj)
    assert second.exit_code == 0, second.output


def _serve_the_produced_model(kube, namespace, wait_for, tmp_path, obj):
    """The run's status tells the whole story, and a ModelDeployment serves what it registered."""
    st = obj["status"]
    assert st["phase"] == "Registered", st
    assert [s["state"] for s in st["steps"]] == ["Succeeded"] * 5
    assert st["datasetVersion"] and st["datasetStats"]["rows"] == 30
    assert st["training"]["epochs"] == 4
    assert st["metricsBefore"]["accuracy"] is not None
    assert st["metricsAfter"]["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert st["producedModel"]["name"] == "ticket-classifier" and st["producedModel"]["version"] == 1
    for type_ in ("Valid", "DataValidated", "Trained", "Registered", "Ready"):
        assert condition(obj, type_)["status"] == "True", type_
    # The same figures on the operator's /metrics (the operator runs in this process).
    labels = {"namespace": namespace, "name": "tickets"}
    assert REGISTRY.get_sample_value("aiops_trainingjob_succeeded", labels) == 1
    assert REGISTRY.get_sample_value("aiops_trainingjob_model_size_bytes", {**labels, "model": "optimized"}) == \
        st["metricsAfter"]["sizeBytes"]
    assert REGISTRY.get_sample_value("aiops_trainingjob_step_duration_seconds", {**labels, "step": "Training"}) > 0
    version_dir = tmp_path / "models" / "ticket-classifier" / "1"
    assert (tmp_path / "models" / "ticket-classifier" / "config.pbtxt").is_file() and version_dir.is_dir()
    assert len(list((tmp_path / "workspace" / "datasets").iterdir())) == 1

    # The produced version is what a ModelDeployment serves (examples/modeldeployment.yaml).
    md = next(d for d in example_docs("modeldeployment.yaml") if d["kind"] == "ModelDeployment")
    md["spec"]["repository"] = {"hostPath": {"path": str(tmp_path / "models")}}
    md["spec"]["resources"].update(memory="4Gi", memoryRequest="4Gi", cpu="1")
    md["spec"]["monitoring"] = {"enabled": False}
    mds = CRs(kube, namespace, "modeldeployments")
    mds.create(md)
    served = wait_for(phase_is(mds, md["metadata"]["name"], "Ready", "Failed"), timeout=180,
                      what="the ModelDeployment of the trained model")
    assert served["status"]["phase"] == "Ready", served["status"]
    assert served["status"]["servingVersion"] == 1


def test_invalid_data_fails_with_row_numbers_and_stores_nothing(kube, namespace, operator, wait_for, tmp_path):
    cm, tj = training_job(tmp_path, name="dirty")
    rows = cm["data"]["tickets.jsonl"].splitlines()
    rows[3] = '{"text": "a ticket about nothing in particular", "label": "spam"}'
    rows[7] = '{"text": 42, "label": "billing"}'
    cm["data"]["tickets.jsonl"] = "\n".join(rows) + "\n"
    # Without dropInvalid, invalid rows are violations to report, not rows to drop.
    tj["spec"]["preprocessing"]["steps"] = ["normalizeWhitespace", "dropEmpty", "deduplicate"]
    kube.core.create_namespaced_config_map(namespace, cm)
    tjs = CRs(kube, namespace, "trainingjobs")
    tjs.create(tj)
    obj = wait_for(phase_is(tjs, "dirty", "Failed", "Registered"), timeout=120, what="the data step to fail")
    st = obj["status"]
    assert st["phase"] == "Failed", st
    assert condition(obj, "DataValidated")["status"] == "False"
    assert condition(obj, "DataValidated")["reason"] == "DataValidationFailed"
    rows_named = {e.get("row") for e in st["validationErrors"]}
    assert {4, 8} <= rows_named, st["validationErrors"]
    assert st["steps"][0]["state"] == "Failed" and all(s["state"] == "Pending" for s in st["steps"][1:])
    assert "datasetVersion" not in st
    datasets = tmp_path / "workspace" / "datasets"
    assert not datasets.exists() or not [p for p in datasets.iterdir() if not p.name.startswith(".")]
    # Events are posted right after the status write: wait for them rather than race them.
    def warned():
        events = kube.core.list_namespaced_event(namespace, field_selector="involvedObject.name=dirty").items
        return any(e.type == "Warning" and e.reason == "DataValidationFailed" for e in events)
    wait_for(warned, what="a Warning Event DataValidationFailed")
    jobs = client.BatchV1Api(kube.api_client).list_namespaced_job(
        namespace, label_selector="aiops.dev/trainingjob=dirty").items
    assert [j.metadata.labels["aiops.dev/step"] for j in jobs] == ["data"]
    # The run is its Jobs alone (the spec rides on their pods): their TTL leaves nothing behind.
    assert kube.core.list_namespaced_config_map(namespace, label_selector="aiops.dev/trainingjob=dirty").items == []


def test_a_step_pod_the_scheduler_cannot_place_shows_in_ready(kube, namespace, operator, wait_for, tmp_path,
                                                              memory_hog):
    """The node's memory taken by another pod: the data step's pod stays Pending, and the
    TrainingJob's Ready says so in the scheduler's words (and once as an Event) until it is placed."""
    cm, tj = training_job(tmp_path, name="squeezed")
    kube.core.create_namespaced_config_map(namespace, cm)
    tjs = CRs(kube, namespace, "trainingjobs")
    tjs.create(tj)

    def waiting():
        obj = tjs.get("squeezed")
        return obj if (condition(obj, "Ready") or {}).get("reason") == "InsufficientMemory" else None

    obj = wait_for(waiting, timeout=60, what="Ready=False InsufficientMemory from the scheduler")
    assert "waits for the scheduler" in condition(obj, "Ready")["message"]
    assert "Insufficient memory" in condition(obj, "Ready")["message"]
    assert obj["status"]["steps"][0]["message"].startswith("waiting for the scheduler")
    events = kube.core.list_namespaced_event(namespace, field_selector="reason=InsufficientMemory").items
    assert len(events) == 1
    memory_hog()  # frees the memory

    def placed():
        obj = tjs.get("squeezed")
        return obj if (condition(obj, "Ready") or {}).get("reason") != "InsufficientMemory" else None

    obj = wait_for(placed, timeout=90, what="the step placed once the memory was freed")
    assert obj["status"]["phase"] != "Failed", obj["status"]


def test_a_workspace_claim_of_the_name_that_is_not_ours_is_never_mounted(kube, namespace, operator, wait_for,
                                                                         tmp_path):
    """Someone else's PVC named like the TrainingJob's managed workspace: mounting it read-write
    would let the TrainingJob's author write into that volume. The run waits with Applied=False,
    NameTaken, and no step Job is made; the claim is left as it was."""
    from aiops.builders.training_job import workspace_claim_name

    cm, tj = training_job(tmp_path, name="borrow", workspace={"managed": {"size": "1Gi"}})
    theirs = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
              "metadata": {"name": workspace_claim_name("borrow"), "labels": {"app": "theirs"}},
              "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    kube.core.create_namespaced_persistent_volume_claim(namespace, theirs)
    kube.core.create_namespaced_config_map(namespace, cm)
    tjs = CRs(kube, namespace, "trainingjobs")
    tjs.create(tj)

    def refused():
        applied = condition(tjs.get("borrow"), "Applied")
        return applied if applied and applied["status"] == "False" else None

    applied = wait_for(refused, timeout=60, what="Applied=False")
    assert applied["reason"] == "NameTaken"
    assert applied["message"].startswith(f"PersistentVolumeClaim {workspace_claim_name('borrow')} already exists "
                                         "and does not belong to this TrainingJob")
    wait_for(lambda: [e for e in kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=borrow,reason=NameTaken").items if e.type == "Warning"],
        what="a Warning Event NameTaken")
    assert client.BatchV1Api(kube.api_client).list_namespaced_job(namespace).items == []
    claim = kube.core.read_namespaced_persistent_volume_claim(workspace_claim_name("borrow"), namespace)
    assert claim.metadata.owner_references is None and claim.metadata.labels == {"app": "theirs"}


def test_training_progress_moves_in_status_while_the_step_runs(kube, namespace, operator, wait_for, tmp_path):
    """epoch, steps, loss, percent and ETA read from the running pod every few seconds."""
    cm, tj = training_job(tmp_path, name="progress")
    tj["spec"]["training"]["epochs"] = 40
    kube.core.create_namespaced_config_map(namespace, cm)
    tjs = CRs(kube, namespace, "trainingjobs")
    tjs.create(tj)
    seen, deadline = [], time.monotonic() + 400
    while time.monotonic() < deadline:
        st = tjs.get("progress").get("status") or {}
        if st.get("phase") in ("Registered", "Failed"):
            break
        progress = st.get("progress")
        if st.get("phase") == "Training" and progress and progress not in seen:
            seen.append(progress)
        time.sleep(0.3)
    assert st.get("phase") == "Registered", st
    moving = [p for p in seen if p["percent"] < 100]
    assert len({p["steps"] for p in moving}) >= 3, seen
    assert [p["percent"] for p in moving] == sorted(p["percent"] for p in moving)
    assert all(p["epochs"] == 40 and 1 <= p["epoch"] <= 40 and p["updatedAt"] for p in moving)
    assert any("etaSeconds" in p and "loss" in p and "samplesPerSecond" in p for p in moving), seen
    assert st["progress"]["percent"] == 100 and st["progress"]["epoch"] == 40
    table = kube.kubectl("get", "trainingjob", "progress", "-n", namespace).stdout.splitlines()
    assert "PROGRESS" in table[0] and table[1].split()[table[0].split().index("PROGRESS")] == "100"
