"""The pydantic models: seed defaults, strictness like the API server's, wire names, unions,
status round trips, and the examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from aiops.api import (
    Condition,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    TrainingJobSpec,
    TrainingJobStatus,
    VectorIndexSpec,
    VectorIndexStatus,
    kind_info,
)
from aiops.api.common import DEFAULT_GPU_RESOURCE, DEFAULT_SHARED_GPU_RESOURCE, quantity_str
from aiops.api.vectorindex import known_embedding_dimension

REPO = Path(__file__).resolve().parents[2]
HOST_REPO = {"hostPath": {"path": "/var/lib/aiops/models"}}
MINIMAL_MD = {"model": {"name": "m", "version": 1}, "repository": HOST_REPO}
MINIMAL_VI = {
    "collection": {"name": "docs", "dimension": 384},
    "source": {"configMap": {"name": "docs"}},
}
MINIMAL_TJ = {
    "dataset": {
        "source": {"configMap": {"name": "rows"}},
        "schema": {
            "fields": [{"name": "text", "type": "string"}, {"name": "label", "type": "string"}]
        },
    },
    "training": {"task": "text-classification"},
    "output": {"modelName": "m", "repository": HOST_REPO},
}


def load_examples() -> dict[str, tuple[dict, list[dict]]]:
    """kind -> (the aiops object, the other documents of its file)."""
    found = {}
    for path in sorted((REPO / "examples").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        ours = [d for d in docs if d["apiVersion"] == "aiops.dev/v1alpha1"]
        if not ours:  # what the examples share (storage.yaml: the claims)
            continue
        (main,) = ours
        found[main["kind"]] = (main, [d for d in docs if d is not main])
    return found


EXAMPLES = load_examples()


# ---- seed defaults -----------------------------------------------------------------------------


def test_model_deployment_defaults_follow_the_seed_llm_server():
    md = ModelDeploymentSpec.from_wire(MINIMAL_MD)
    assert (md.resources.gpus, md.resources.gpu_resource_name, md.resources.memory) == (
        2,
        DEFAULT_GPU_RESOURCE,
        "64Gi",
    )
    assert md.replicas == 1
    assert md.rollback.enabled and md.rollback.history_limit == 10
    assert (
        md.health_check.period_seconds,
        md.health_check.failure_threshold,
        md.health_check.progress_deadline_seconds,
    ) == (10, 3, 600)
    assert md.monitoring.action == "alert" and md.batching.enabled
    assert md.batching.preferred_batch_sizes == [] and md.validation.min_accuracy is None


def test_vector_index_defaults_to_a_managed_milvus_on_the_shared_gpu():
    vi = VectorIndexSpec.from_wire(MINIMAL_VI)
    managed = vi.milvus.managed
    assert managed is not None and vi.milvus.external is None
    assert (
        managed.resources.gpus,
        managed.resources.gpu_resource_name,
        managed.resources.memory,
    ) == (1, DEFAULT_SHARED_GPU_RESOURCE, "32Gi")
    assert vi.embedding.resources.gpu_resource_name == DEFAULT_SHARED_GPU_RESOURCE
    assert vi.embedding.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert (vi.collection.metric, vi.index.type) == ("COSINE", "HNSW")


def test_training_job_defaults_follow_seed_sections_3_1_and_4_1():
    tj = TrainingJobSpec.from_wire(MINIMAL_TJ)
    assert (tj.resources.gpus, tj.resources.gpu_resource_name, tj.resources.memory) == (
        1,
        DEFAULT_SHARED_GPU_RESOURCE,
        "32Gi",
    )
    assert tj.optimization.quantization.bits == 8
    assert tj.optimization.pruning.target_sparsity == 0.3
    assert tj.training.batch_size == "auto"
    split = tj.preprocessing.split
    assert (split.train, split.validation, split.test) == (0.8, 0.2, 0.0)
    assert tj.preprocessing.steps == [
        "normalizeWhitespace",
        "dropEmpty",
        "dropInvalid",
        "deduplicate",
    ]


def test_the_schema_defaults_are_the_model_defaults():
    """What the API server fills in must be what the operator assumes for a missing field."""
    from aiops.api.schema import structural_schema

    for spec_cls, minimal in (
        (ModelDeploymentSpec, MINIMAL_MD),
        (VectorIndexSpec, MINIMAL_VI),
        (TrainingJobSpec, MINIMAL_TJ),
    ):
        server_view = apply_schema_defaults(
            structural_schema(spec_cls), json.loads(json.dumps(minimal))
        )
        assert spec_cls.from_wire(server_view) == spec_cls.from_wire(minimal), spec_cls.__name__


def apply_schema_defaults(node: dict, value: dict) -> dict:
    """The API server's defaulting: a missing field with a default gets it, recursively."""
    for name, sub in node.get("properties", {}).items():
        if name not in value and "default" in sub:
            value[name] = json.loads(json.dumps(sub["default"]))
        if isinstance(value.get(name), dict):
            apply_schema_defaults(sub, value[name])
        elif isinstance(value.get(name), list) and "properties" in sub.get("items", {}):
            for item in value[name]:
                apply_schema_defaults(sub["items"], item)
    return value


# ---- strictness and wire names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, where",
    [
        ({"replicas": "2"}, "replicas"),
        ({"replicas": 1.0}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"replicas": 65}, "replicas"),
        ({"resources": {"gpus": -1}}, "resources.gpus"),
        ({"resources": {"memory": "64GB"}}, "resources.memory"),
        ({"resources": {"memory": -1}}, "resources.memory"),
        ({"monitoring": {"action": "page"}}, "monitoring.action"),
        ({"batching": {"preferredBatchSizes": [0]}}, "batching.preferredBatchSizes.0"),
        ({"model": {"name": "m", "version": 0}}, "model.version"),
        ({"model": {"name": "bad name", "version": 1}}, "model.name"),
        ({"healthCheck": {"periodSecond": 5}}, "healthCheck.periodSecond"),
        ({"health_check": {}}, "health_check"),
        ({"validation": {"validationSet": {"configMap": "rows", "key": "../x"}}}, "validation.validationSet.key"),
        ({"validation": {"validationSet": {"configMap": "rows", "key": ".."}}}, "validation.validationSet.key"),
    ],
)
def test_model_deployment_rejects_what_the_api_server_rejects(change, where):
    with pytest.raises(ValidationError) as error:
        ModelDeploymentSpec.from_wire({**MINIMAL_MD, **change})
    locations = {".".join(str(p) for p in e["loc"]) for e in error.value.errors()}
    assert any(loc.startswith(where) for loc in locations), locations


@pytest.mark.parametrize(
    "repository, members",
    [
        ({}, 0),
        ({"hostPath": {"path": "/m"}, "objectStore": {"uri": "s3://bucket/m"}}, 2),
    ],
)
def test_a_repository_is_exactly_one_of_pvc_host_path_or_object_store(repository, members):
    with pytest.raises(
        ValidationError,
        match=f"exactly one of persistentVolumeClaim, hostPath, objectStore \\(got {members}\\)",
    ):
        ModelDeploymentSpec.from_wire({**MINIMAL_MD, "repository": repository})


@pytest.mark.parametrize(
    "repository",
    [
        {"persistentVolumeClaim": {"claimName": "models", "subPath": "triton"}},
        {"hostPath": {"path": "/var/lib/aiops/models"}},
        {"objectStore": {"uri": "s3://minio.local:9000/models", "credentialsSecret": "minio"}},
    ],
)
def test_each_repository_kind_is_accepted(repository):
    md = ModelDeploymentSpec.from_wire({**MINIMAL_MD, "repository": repository})
    assert md.to_wire()["repository"] == repository


def test_quantities_accept_strings_and_integers_and_render_as_strings():
    for memory in ("64Gi", "500M", "1.5Gi", "1e9", 68719476736):
        md = ModelDeploymentSpec.from_wire({**MINIMAL_MD, "resources": {"memory": memory}})
        assert quantity_str(md.resources.memory) == str(memory)


def test_python_names_build_models_and_the_wire_form_is_camel_case():
    from aiops.api.modeldeployment import DynamicBatching

    batching = DynamicBatching(max_batch_size=16, preferred_batch_sizes=[4, 8])
    assert batching.to_wire() == {
        "enabled": True,
        "maxBatchSize": 16,
        "preferredBatchSizes": [4, 8],
        "maxQueueDelayMicroseconds": 100,
    }
    md = ModelDeploymentSpec.from_wire(MINIMAL_MD)
    assert ModelDeploymentSpec.from_wire(md.to_wire()) == md


def test_training_batch_size_is_a_positive_integer_or_auto():
    for ok in (1, 64, "auto"):
        spec = {**MINIMAL_TJ, "training": {"task": "text-classification", "batchSize": ok}}
        assert TrainingJobSpec.from_wire(spec).training.batch_size == ok
    for bad in (0, "16", "AUTO", 2.5):
        with pytest.raises(ValidationError):
            TrainingJobSpec.from_wire(
                {**MINIMAL_TJ, "training": {"task": "text-classification", "batchSize": bad}}
            )


def test_training_is_a_built_in_task_or_an_image_not_both():
    image = {"image": "registry.local/train:1", "command": ["python", "train.py"]}
    assert TrainingJobSpec.from_wire({**MINIMAL_TJ, "training": {"image": image}}).training.image
    with pytest.raises(ValidationError, match="set exactly one of task, image"):
        TrainingJobSpec.from_wire(
            {**MINIMAL_TJ, "training": {"task": "text-classification", "image": image}}
        )
    with pytest.raises(ValidationError, match="set exactly one of task, image"):
        TrainingJobSpec.from_wire({**MINIMAL_TJ, "training": {"epochs": 3}})


def test_external_milvus_takes_credentials_from_a_secret_reference():
    spec = {
        **MINIMAL_VI,
        "milvus": {
            "external": {
                "uri": "http://milvus.search.svc:19530",
                "credentials": {"secretName": "milvus-auth"},
            }
        },
    }
    external = VectorIndexSpec.from_wire(spec).milvus.external
    assert external.credentials.secret_name == "milvus-auth"
    assert (external.credentials.username_key, external.credentials.password_key) == (
        "username",
        "password",
    )
    with pytest.raises(ValidationError):  # no place for a password in the spec itself
        VectorIndexSpec.from_wire(
            {
                **MINIMAL_VI,
                "milvus": {
                    "external": {
                        "uri": "http://milvus:19530",
                        "credentials": {"secretName": "s", "password": "hunter2"},
                    }
                },
            }
        )


def test_known_embedding_dimensions_by_full_or_short_name():
    assert known_embedding_dimension("sentence-transformers/all-MiniLM-L6-v2") == 384
    assert known_embedding_dimension("all-MiniLM-L6-v2") == 384
    assert known_embedding_dimension("/models/all-mpnet-base-v2") == 768
    assert known_embedding_dimension("my-own-model") is None


# ---- status ------------------------------------------------------------------------------------

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_model_deployment_status_round_trips_in_wire_form():
    status = ModelDeploymentStatus.model_validate(
        {
            "phase": "Ready",
            "observedGeneration": 4,
            "servingVersion": 3,
            "lastGoodVersion": 3,
            "rejectedVersions": [4],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "HealthCheckPassed",
                    "message": "Version 3 answered its samples.",
                    "lastTransitionTime": NOW.isoformat(),
                    "observedGeneration": 4,
                }
            ],
            "history": [
                {
                    "version": 4,
                    "time": NOW.isoformat(),
                    "outcome": "Failed",
                    "reason": "SampleMismatch",
                    "message": "billing -> technical",
                },
                {"version": 3, "time": NOW.isoformat(), "outcome": "Serving"},
            ],
            "phaseDurationsSeconds": {"Validating": 4.2},
        }
    )
    wire = status.to_wire()
    assert wire["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert wire["history"][0]["outcome"] == "Failed" and wire["servingVersion"] == 3
    assert ModelDeploymentStatus.model_validate(wire) == status


def test_condition_rejects_a_reason_that_is_not_camel_case_and_an_unknown_status():
    base = {
        "type": "Valid",
        "status": "False",
        "reason": "DimensionMismatch",
        "message": "m",
        "lastTransitionTime": NOW,
    }
    assert Condition.model_validate(base).reason == "DimensionMismatch"
    with pytest.raises(ValidationError):
        Condition.model_validate({**base, "reason": "dimension mismatch"})
    with pytest.raises(ValidationError):
        Condition.model_validate({**base, "status": "Maybe"})


def test_vector_index_and_training_job_status_carry_their_facts():
    vi = VectorIndexStatus.model_validate(
        {
            "phase": "Ready",
            "documents": {"total": 8, "ingested": 8},
            "index": {"type": "HNSW", "state": "Ready", "recallAtK": 0.97},
        }
    )
    assert vi.documents.pending == 0 and vi.index.recall_at_k == 0.97
    tj = TrainingJobStatus.model_validate(
        {
            "phase": "Registered",
            "datasetVersion": "sha256-1a2b-20260102T030405Z",
            "metricsBefore": {"accuracy": 0.93, "sizeBytes": 90_000_000},
            "metricsAfter": {"accuracy": 0.92, "sizeBytes": 25_000_000, "sparsity": 0.3},
            "qualityDrop": 0.01,
            "producedModel": {"name": "ticket-classifier", "version": 1, "optimized": True},
            "validationErrors": [{"row": 7, "field": "label", "message": "unknown label 'sales'"}],
        }
    )
    assert tj.produced_model.version == 1 and tj.metrics_after.sparsity == 0.3
    assert tj.to_wire()["validationErrors"][0]["row"] == 7


# ---- the examples ------------------------------------------------------------------------------


def test_there_is_one_example_per_kind():
    assert sorted(EXAMPLES) == ["ModelDeployment", "TrainingJob", "VectorIndex"]


@pytest.mark.parametrize("kind", ["ModelDeployment", "VectorIndex", "TrainingJob"])
def test_examples_validate_against_their_models(kind):
    manifest, _ = EXAMPLES[kind]
    info = kind_info(kind)
    spec = info.spec_model.from_wire(manifest["spec"])
    assert spec.to_wire() == info.spec_model.from_wire(spec.to_wire()).to_wire()
    assert len(manifest["metadata"]["name"]) <= 48


def test_examples_fit_the_seed_node_two_gpus_for_triton_one_shared():
    md = ModelDeploymentSpec.from_wire(EXAMPLES["ModelDeployment"][0]["spec"])
    vi = VectorIndexSpec.from_wire(EXAMPLES["VectorIndex"][0]["spec"])
    tj = TrainingJobSpec.from_wire(EXAMPLES["TrainingJob"][0]["spec"])
    assert (md.resources.gpus, md.resources.gpu_resource_name, md.resources.memory) == (
        2,
        "nvidia.com/gpu",
        "64Gi",
    )
    assert (vi.milvus.managed.resources.gpus, vi.milvus.managed.resources.memory) == (1, "32Gi")
    assert (tj.resources.gpus, tj.resources.memory) == (1, "32Gi")
    shared = {
        vi.milvus.managed.resources.gpu_resource_name,
        vi.embedding.resources.gpu_resource_name,
        tj.resources.gpu_resource_name,
    }
    assert shared == {DEFAULT_SHARED_GPU_RESOURCE}
    # The training job registers what the deployment serves, in the same repository.
    assert (tj.output.model_name, tj.output.version) == (md.model.name, md.model.version)
    assert tj.output.repository == md.repository


def test_example_document_and_dataset_configmaps_hold_what_the_specs_expect():
    vi, vi_others = EXAMPLES["VectorIndex"]
    (docs,) = [
        d for d in vi_others if d["metadata"]["name"] == vi["spec"]["source"]["configMap"]["name"]
    ]
    rows = [json.loads(line) for text in docs["data"].values() for line in text.splitlines()]
    assert rows and all({"id", "text", "metadata"} <= set(r) for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)

    tj_manifest, tj_others = EXAMPLES["TrainingJob"]
    tj = TrainingJobSpec.from_wire(tj_manifest["spec"])
    (data,) = [d for d in tj_others if d["metadata"]["name"] == tj.dataset.source.config_map.name]
    rows = [
        json.loads(line) for line in data["data"][tj.dataset.source.config_map.key].splitlines()
    ]
    assert len(rows) >= tj.validation.min_rows
    labels = [r[tj.dataset.label_field] for r in rows]
    assert set(labels) == set(tj.validation.allowed_labels)
    assert (
        min(labels.count(label) for label in set(labels)) / len(rows)
        >= tj.validation.min_class_fraction
    )
