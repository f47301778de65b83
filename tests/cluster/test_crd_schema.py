"""The generated CRDs on the real API server: invalid manifests are rejected with a message that
names the field, the examples are accepted, and the server applies the models' defaults."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from aiops.api import kind_info

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "aiops.dev", "v1alpha1"
EXAMPLES = {
    doc["kind"]: doc
    for path in sorted((REPO / "examples").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc and doc["apiVersion"] == f"{GROUP}/{VERSION}"
}
HOST_REPO = {"hostPath": {"path": "/var/lib/aiops/models"}}
MINIMAL = {
    "ModelDeployment": {"model": {"name": "m", "version": 1}, "repository": HOST_REPO},
    "VectorIndex": {
        "collection": {"name": "docs", "dimension": 384},
        "source": {"configMap": {"name": "docs"}},
    },
    "TrainingJob": {
        "dataset": {
            "source": {"configMap": {"name": "rows"}},
            "schema": {
                "fields": [{"name": "text", "type": "string"}, {"name": "label", "type": "string"}]
            },
        },
        "training": {"task": "text-classification"},
        "output": {"modelName": "m", "repository": HOST_REPO},
    },
}
DELETE = object()


@pytest.fixture(scope="module")
def crds(kube, crds_installed):
    """The CRDs, and kubectl able to validate against them: the API server publishes a new CRD's
    schema to /openapi/v2 a moment after it is Established."""
    deadline = time.monotonic() + 60
    for kind in ("modeldeployment", "vectorindex", "trainingjob"):
        while kube.kubectl("explain", f"{kind}.spec", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"kubectl explain {kind}.spec never worked"
            time.sleep(0.5)
    return crds_installed


def manifest(kind: str, base: dict | None = None, name: str = "subject") -> dict[str, Any]:
    """The kind's example (or a manifest with spec `base`), named `name`."""
    spec = copy.deepcopy(base if base is not None else EXAMPLES[kind]["spec"])
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def changed(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """body with dotted paths ("spec.a.0.b") set; DELETE removes the field."""
    body = copy.deepcopy(body)
    for dotted, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        target = body
        for step in parents:
            target = target[step]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return body


def custom(kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client)


def create(kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    plural = kind_info(body["kind"]).plural
    return custom(kube).create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def rejection(kube, namespace: str, body: dict[str, Any]) -> str:
    """The API server's message refusing body; fails if it was accepted."""
    try:
        create(kube, namespace, body)
    except client.ApiException as error:
        assert error.status == 422, error
        return json.loads(error.body)["message"]
    pytest.fail(f"the API server accepted {json.dumps(body['spec'])[:300]}")


# (kind, changes to the example, text the rejection must contain: the field, and the complaint).
# Kubernetes 1.20 names a field inside a list without the index (spec.preprocessing.steps).
INVALID = [
    # ModelDeployment: wrong types, ranges, patterns, enums, unions, required fields
    ("ModelDeployment", {"spec.replicas": "two"}, "spec.replicas", "must be of type integer"),
    ("ModelDeployment", {"spec.replicas": -1}, "spec.replicas", "greater than or equal to 0"),
    ("ModelDeployment", {"spec.replicas": 65}, "spec.replicas", "less than or equal to 64"),
    (
        "ModelDeployment",
        {"spec.model.version": 0},
        "spec.model.version",
        "greater than or equal to 1",
    ),
    (
        "ModelDeployment",
        {"spec.model.version": "3"},
        "spec.model.version",
        "must be of type integer",
    ),
    (
        "ModelDeployment",
        {"spec.model.name": "ticket classifier"},
        "spec.model.name",
        "should match",
    ),
    ("ModelDeployment", {"spec.model": DELETE}, "spec.model", "Required value"),
    ("ModelDeployment", {"spec.model.version": DELETE}, "spec.model.version", "Required value"),
    (
        "ModelDeployment",
        {"spec.repository.objectStore": {"uri": "s3://models/triton"}},
        "spec.repository",
        "must validate one and only one schema",
    ),
    (
        "ModelDeployment",
        {"spec.repository": {"hostPath": {"path": "models"}}},
        "spec.repository.hostPath.path",
        "should match",
    ),
    (
        "ModelDeployment",
        {"spec.repository": {"objectStore": {"uri": "ftp://host/models"}}},
        "spec.repository.objectStore.uri",
        "should match",
    ),
    (
        "ModelDeployment",
        {"spec.resources.gpus": 65},
        "spec.resources.gpus",
        "less than or equal to 64",
    ),
    ("ModelDeployment", {"spec.resources.memory": "64GB"}, "spec.resources.memory", "should match"),
    (
        "ModelDeployment",
        {"spec.resources.gpuResourceName": "nvidia.com/gpu/0"},
        "spec.resources.gpuResourceName",
        "should match",
    ),
    (
        "ModelDeployment",
        {"spec.monitoring.action": "page"},
        "spec.monitoring.action",
        "Unsupported value",
    ),
    (
        "ModelDeployment",
        {"spec.monitoring.thresholds.errorRate.max": 1.5},
        "spec.monitoring.thresholds.errorRate.max",
        "less than or equal to 1",
    ),
    (
        "ModelDeployment",
        {"spec.monitoring.thresholds.inferenceTime.maxMilliseconds": 0},
        "spec.monitoring.thresholds.inferenceTime.maxMilliseconds",
        "greater than 0",
    ),
    (
        "ModelDeployment",
        {"spec.batching.maxBatchSize": 0},
        "spec.batching.maxBatchSize",
        "greater than or equal to 1",
    ),
    (
        "ModelDeployment",
        {"spec.batching.preferredBatchSizes": [0, 8]},
        "spec.batching.preferredBatchSizes",
        "greater than or equal to 1",
    ),
    (
        "ModelDeployment",
        {"spec.runtime.imagePullPolicy": "Sometimes"},
        "spec.runtime.imagePullPolicy",
        "Unsupported value",
    ),
    (
        "ModelDeployment",
        {"spec.validation.samples.0.inputs.0.dataType": "FLOAT"},
        "spec.validation.samples.inputs.dataType",
        "Unsupported value",
    ),
    (
        "ModelDeployment",
        {"spec.healthCheck.periodSeconds": 0},
        "spec.healthCheck.periodSeconds",
        "greater than or equal to 1",
    ),
    ("ModelDeployment", {"metadata.name": "a" * 49}, "metadata.name", "at most 48 chars"),
    ("ModelDeployment", {"metadata.name": "1st-model"}, "metadata.name", "should match"),
    # VectorIndex
    (
        "VectorIndex",
        {"spec.collection.dimension": 1},
        "spec.collection.dimension",
        "greater than or equal to 2",
    ),
    (
        "VectorIndex",
        {"spec.collection.metric": "HAMMING"},
        "spec.collection.metric",
        "Unsupported value",
    ),
    ("VectorIndex", {"spec.collection.name": "ops-manual"}, "spec.collection.name", "should match"),
    ("VectorIndex", {"spec.collection.name": DELETE}, "spec.collection.name", "Required value"),
    ("VectorIndex", {"spec.index.type": "ANNOY"}, "spec.index.type", "Unsupported value"),
    (
        "VectorIndex",
        {"spec.embedding.batchSize": 0},
        "spec.embedding.batchSize",
        "greater than or equal to 1",
    ),
    ("VectorIndex", {"spec.embedding.device": "tpu"}, "spec.embedding.device", "Unsupported value"),
    (
        "VectorIndex",
        {"spec.source.configMap": DELETE},
        "spec.source",
        "must validate one and only one schema",
    ),
    (
        "VectorIndex",
        {"spec.milvus.external": {"uri": "http://milvus:19530"}},
        "spec.milvus",
        "must validate one and only one schema",
    ),
    (
        "VectorIndex",
        {"spec.milvus": {"external": {"uri": "milvus:19530"}}},
        "spec.milvus.external.uri",
        "should match",
    ),
    ("VectorIndex", {"spec.ingest.schedule": "every hour"}, "spec.ingest.schedule", "should match"),
    # A data key becomes a volume item path: one that could leave the volume never gets that far.
    ("VectorIndex", {"spec.source.configMap.key": "../etc"}, "spec.source.configMap.key", "should match"),
    ("TrainingJob", {"spec.dataset.source.configMap.key": ".."}, "spec.dataset.source.configMap.key",
     "should match"),
    (
        "VectorIndex",
        {"spec.optimization.recall.minRecall": 1.5},
        "spec.optimization.recall.minRecall",
        "less than or equal to 1",
    ),
    (
        "VectorIndex",
        {"spec.milvus.managed.resources.memory": -1},
        "spec.milvus.managed.resources.memory",
        "greater than or equal to 0",
    ),
    # TrainingJob
    (
        "TrainingJob",
        {"spec.preprocessing.split.train": 1.0},
        "spec.preprocessing.split.train",
        "less than 1",
    ),
    (
        "TrainingJob",
        {"spec.preprocessing.steps": ["shuffle"]},
        "spec.preprocessing.steps",
        "Unsupported value",
    ),
    ("TrainingJob", {"spec.training.batchSize": "big"}, "spec.training.batchSize", "should match"),
    (
        "TrainingJob",
        {"spec.training.batchSize": 0},
        "spec.training.batchSize",
        "greater than or equal to 1",
    ),
    (
        "TrainingJob",
        {"spec.training.epochs": 0},
        "spec.training.epochs",
        "greater than or equal to 1",
    ),
    (
        "TrainingJob",
        {"spec.training.mixedPrecision": "fp8"},
        "spec.training.mixedPrecision",
        "Unsupported value",
    ),
    (
        "TrainingJob",
        {"spec.training.image": {"image": "registry.local/train:1"}},
        "spec.training",
        "must validate one and only one schema",
    ),
    (
        "TrainingJob",
        {"spec.optimization.quantization.bits": 4},
        "spec.optimization.quantization.bits",
        "Unsupported value",
    ),
    (
        "TrainingJob",
        {"spec.optimization.pruning.targetSparsity": 1.0},
        "spec.optimization.pruning.targetSparsity",
        "less than 1",
    ),
    (
        "TrainingJob",
        {"spec.dataset.schema.fields": []},
        "spec.dataset.schema.fields",
        "should have at least 1 items",
    ),
    (
        "TrainingJob",
        {"spec.dataset.schema.fields.0.type": "text"},
        "spec.dataset.schema.fields.type",
        "Unsupported value",
    ),
    (
        "TrainingJob",
        {"spec.dataset.source": {"uri": "file:///data/tickets.jsonl"}},
        "spec.dataset.source.uri",
        "should match",
    ),
    ("TrainingJob", {"spec.output.modelName": DELETE}, "spec.output.modelName", "Required value"),
    ("TrainingJob", {"spec.output.format": "tensorrt"}, "spec.output.format", "Unsupported value"),
    (
        "TrainingJob",
        {"spec.output.version": 0},
        "spec.output.version",
        "greater than or equal to 1",
    ),
    (
        "TrainingJob",
        {"spec.validation.maxNullFraction": -0.1},
        "spec.validation.maxNullFraction",
        "greater than or equal to 0",
    ),
    ("TrainingJob", {"spec": DELETE}, "spec", "Required value"),
]


def test_there_are_at_least_30_invalid_cases_across_all_kinds():
    assert len(INVALID) >= 30
    assert {case[0] for case in INVALID} == {"ModelDeployment", "VectorIndex", "TrainingJob"}


@pytest.mark.parametrize(
    "kind, changes, field, complaint",
    INVALID,
    ids=[f"{c[0]}:{next(iter(c[1]))}={str(c[1][next(iter(c[1]))])[:20]}" for c in INVALID],
)
def test_api_server_rejects_invalid_manifest_naming_the_field(
    kube, crds, namespace, kind, changes, field, complaint
):
    message = rejection(kube, namespace, changed(manifest(kind), changes))
    assert field in message, message
    assert complaint in message, message
    plural = kind_info(kind).plural
    listed = custom(kube).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
    assert listed == []


@pytest.mark.parametrize(
    "kind, path, unknown",
    [
        ("ModelDeployment", "spec", "replica"),
        ("VectorIndex", "spec.collection", "dim"),
        ("TrainingJob", "spec.training", "gradientCheckpoint"),
    ],
)
def test_kubectl_apply_rejects_unknown_fields_naming_them(
    kube, crds, namespace, kind, path, unknown
):
    body = manifest(kind)
    target = body
    for step in path.split("."):
        target = target[step]
    target[unknown] = 3
    result = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False
    )
    assert result.returncode != 0, result.stdout
    assert f'unknown field "{unknown}"' in result.stderr and f"{kind}.{path}" in result.stderr, (
        result.stderr
    )


def test_api_server_prunes_unknown_fields_it_is_not_asked_to_reject(kube, crds, namespace):
    """Kubernetes 1.20 has no server-side field validation: a client that skips kubectl's checks
    gets unknown fields silently dropped, never stored (so the operator never sees them)."""
    body = changed(manifest("VectorIndex"), {"spec.collection.dim": 384, "spec.extra": {"a": 1}})
    stored = create(kube, namespace, body)
    assert "dim" not in stored["spec"]["collection"] and "extra" not in stored["spec"]


def test_kubectl_applies_the_checked_in_crds(kube, crds):
    result = kube.kubectl("apply", "-f", str(REPO / "crds"))
    for crd in ("modeldeployments", "vectorindexes", "trainingjobs"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}.aiops.dev" in result.stdout
    names = kube.kubectl(
        "get", "crd", "-l", "app.kubernetes.io/part-of=aiops-operator", "-o", "name"
    )
    assert len(names.stdout.split()) == 3


def test_the_examples_apply_and_list_with_their_columns(kube, crds, namespace):
    kube.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples"))
    table = kube.kubectl("get", "aiops", "-n", namespace).stdout
    for expected in (
        "ticket-classifier",
        "ops-manual",
        "ticket-classifier-v1",
        "SERVING",
        "DEGRADED",
        "GPUS",
        "COLLECTION",
        "DATASET",
    ):
        assert expected in table, table
    shorts = kube.kubectl("get", "mdep,vidx,tjob", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(shorts) == [
        "modeldeployment.aiops.dev/ticket-classifier",
        "trainingjob.aiops.dev/ticket-classifier-v1",
        "vectorindex.aiops.dev/ops-manual",
    ]
    row = kube.kubectl(
        "get", "mdep", "ticket-classifier", "-n", namespace, "--no-headers"
    ).stdout.split()
    assert row[:3] == ["ticket-classifier", "ticket-classifier", "1"] and "2" in row


def test_kubectl_explain_shows_the_descriptions(kube, crds):
    text = kube.kubectl("explain", "modeldeployment.spec").stdout
    assert "A model version to serve with Triton" in text
    assert "healthCheck" in text and "Health checks of a rolled-out version." in text
    batching = kube.kubectl("explain", "modeldeployment.spec.batching.preferredBatchSizes").stdout
    assert "each at most maxBatchSize" in batching


@pytest.mark.parametrize("kind", ["ModelDeployment", "VectorIndex", "TrainingJob"])
def test_the_server_applies_the_model_defaults(kube, crds, namespace, kind):
    """A minimal manifest comes back with the defaults filled in, and they are the model's."""
    info = kind_info(kind)
    stored = create(kube, namespace, manifest(kind, base=MINIMAL[kind], name="minimal"))["spec"]
    schema = crds_by_kind()[kind]["properties"]["spec"]["properties"]
    defaulted = {name for name, node in schema.items() if "default" in node}
    assert defaulted and defaulted <= set(stored), defaulted - set(stored)
    assert info.spec_model.from_wire(stored) == info.spec_model.from_wire(MINIMAL[kind])


def crds_by_kind() -> dict[str, dict[str, Any]]:
    from aiops.api.crds import build_crds

    return {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in build_crds()
    }


def test_seed_defaults_as_stored_by_the_server(kube, crds, namespace):
    md = create(
        kube, namespace, manifest("ModelDeployment", base=MINIMAL["ModelDeployment"], name="md")
    )
    assert md["spec"]["resources"] == {
        "gpus": 2,
        "gpuResourceName": "nvidia.com/gpu",
        "memory": "64Gi",
    }
    tj = create(kube, namespace, manifest("TrainingJob", base=MINIMAL["TrainingJob"], name="tj"))
    assert tj["spec"]["optimization"]["quantization"] == {"enabled": True, "bits": 8}
    assert tj["spec"]["optimization"]["pruning"] == {"enabled": True, "targetSparsity": 0.3}
    assert (
        tj["spec"]["resources"]["memory"] == "32Gi"
        and tj["spec"]["training"]["batchSize"] == "auto"
    )


def test_a_null_field_is_dropped_and_defaulted(kube, crds, namespace):
    body = manifest(
        "VectorIndex", base={**MINIMAL["VectorIndex"], "index": {"type": None}}, name="nulls"
    )
    assert create(kube, namespace, body)["spec"]["index"] == {"type": "HNSW"}


def test_status_subresource_takes_a_valid_status_and_rejects_a_malformed_condition(
    kube, crds, namespace
):
    api = custom(kube)
    create(kube, namespace, manifest("ModelDeployment", name="status"))
    status = {
        "phase": "Invalid",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Valid",
                "status": "False",
                "reason": "PreferredBatchSizeAboveMax",
                "message": "spec.batching.preferredBatchSizes[2]: 64 is above maxBatchSize 32.",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
                "observedGeneration": 1,
            }
        ],
    }
    patched = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "modeldeployments", "status", {"status": status}
    )
    assert patched["status"]["conditions"][0]["reason"] == "PreferredBatchSizeAboveMax"
    assert patched["metadata"]["generation"] == 1

    bad = copy.deepcopy(status)
    bad["conditions"][0]["reason"] = "preferred batch size above max"
    with pytest.raises(client.ApiException) as error:
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "modeldeployments", "status", {"status": bad}
        )
    assert (
        error.value.status == 422
        and "status.conditions.reason" in json.loads(error.value.body)["message"]
    )
