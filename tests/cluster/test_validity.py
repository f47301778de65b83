"""Schema-valid but semantically invalid specs: Valid=False with reason, message and a Warning
Event, nothing created, the operator unharmed; fixing the spec recovers on its own."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from kubernetes import client

from aiops.api.common import GROUP, VERSION
from aiops.conditions import get_condition

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(kind_file: str) -> dict:
    """The aiops resource of an example file (which may also hold ConfigMaps and the like)."""
    docs = yaml.safe_load_all((EXAMPLES / kind_file).read_text())
    return next(d for d in docs if d and d["apiVersion"].startswith(GROUP))


def condition(obj: dict, type_: str) -> dict | None:
    return get_condition((obj.get("status") or {}).get("conditions"), type_)


class CR:
    def __init__(self, kube, namespace, plural):
        self.api = client.CustomObjectsApi(kube.api_client)
        self.ns, self.plural = namespace, plural

    def create(self, body):
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, self.plural, body)

    def get(self, name):
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, self.plural, name)

    def patch(self, name, body):
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, self.plural, name, body)


def valid_condition(cr: CR, name: str, status: str):
    def check():
        c = condition(cr.get(name), "Valid")
        return c if c and c["status"] == status else None
    return check


def warning_events(kube, namespace, name, reason):
    events = kube.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e for e in events if e.type == "Warning" and e.reason == reason]


def test_preferred_batch_above_max_is_invalid_until_fixed(kube, namespace, operator, wait_for):
    md = example("modeldeployment.yaml")
    md["spec"]["batching"].update(maxBatchSize=8, preferredBatchSizes=[4, 16])
    cr = CR(kube, namespace, "modeldeployments")
    cr.create(md)
    name = md["metadata"]["name"]

    cond = wait_for(valid_condition(cr, name, "False"), what="Valid=False")
    assert cond["reason"] == "PreferredBatchSizeAboveMax"
    assert "16" in cond["message"] and "8" in cond["message"]
    obj = cr.get(name)
    assert obj["status"]["phase"] == "Invalid"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    wait_for(lambda: warning_events(kube, namespace, name, "PreferredBatchSizeAboveMax"),
             what="a Warning Event naming the reason")
    apps = client.AppsV1Api(kube.api_client)
    assert apps.list_namespaced_deployment(namespace).items == []

    cr.patch(name, {"spec": {"batching": {"preferredBatchSizes": [4, 8]}}})
    cond = wait_for(valid_condition(cr, name, "True"), what="Valid=True after the fix")
    assert cond["reason"] == "SpecValid"
    assert cr.get(name)["status"]["phase"] != "Invalid"


def test_more_gpus_than_any_node_has(kube, namespace, operator, wait_for):
    md = example("modeldeployment.yaml")
    md["spec"]["resources"]["gpus"] = 4  # the simulated node has 2 whole GPUs
    cr = CR(kube, namespace, "modeldeployments")
    cr.create(md)
    cond = wait_for(valid_condition(cr, md["metadata"]["name"], "False"), what="Valid=False")
    assert cond["reason"] == "GPUsExceedNodeCapacity"
    assert "4" in cond["message"] and "offers 2" in cond["message"]


def test_vector_index_dimension_mismatch(kube, namespace, operator, wait_for):
    vi = example("vectorindex.yaml")
    vi["spec"]["collection"]["dimension"] = 768  # all-MiniLM-L6-v2 makes 384-d vectors
    cr = CR(kube, namespace, "vectorindexes")
    cr.create(vi)
    cond = wait_for(valid_condition(cr, vi["metadata"]["name"], "False"), what="Valid=False")
    assert cond["reason"] == "DimensionMismatch" and "384" in cond["message"]


def test_training_job_split_and_examples_valid(kube, namespace, operator, wait_for):
    tj = example("trainingjob.yaml")
    cr = CR(kube, namespace, "trainingjobs")
    cr.create(copy.deepcopy(tj))
    wait_for(valid_condition(cr, tj["metadata"]["name"], "True"), what="the example TrainingJob Valid")

    bad = copy.deepcopy(tj)
    bad["metadata"]["name"] = "bad-split"
    bad["spec"]["preprocessing"]["split"] = {"train": 0.7, "validation": 0.2, "test": 0.2}
    cr.create(bad)
    cond = wait_for(valid_condition(cr, "bad-split", "False"), what="Valid=False")
    assert cond["reason"] == "SplitFractionsDoNotSumToOne"
