"""Semantic validation: every rule fires on a spec that breaks it (with its reason and field), and
none fires on the examples."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiops.api import validation
from aiops.api.validation import Problem, condition_summary, semantic_problems
from aiops.api.validation.base import host_path_allowed
from aiops.controllers.settings import DEFAULT_ALLOWED_HOST_PATHS, allowed_host_paths

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    doc["kind"]: doc["spec"]
    for path in sorted((REPO / "examples").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc and doc["apiVersion"] == "aiops.dev/v1alpha1"
}


def example_with(kind: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The kind's example with dotted paths ("a.b.0.c") set; None deletes the field."""
    spec = copy.deepcopy(EXAMPLES[kind])
    for dotted, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        target = spec
        for step in parents:
            target = target.setdefault(step, {}) if isinstance(step, str) else target[step]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return spec


ENV_BOTH = [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
ENV_TWICE = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
FIELDS = "dataset.schema.fields"

CASES = [
    # ModelDeployment
    ("ModelDeployment", {"resources.gpus": 4}, "GPUsExceedNodeCapacity", "spec.resources.gpus"),
    ("ModelDeployment", {"resources.memoryRequest": "65Gi"}, "MemoryRequestAboveLimit",
     "spec.resources.memoryRequest"),
    (
        "ModelDeployment",
        {"repository": {"persistentVolumeClaim": {"claimName": "m", "subPath": "a/../../etc"}}},
        "SubPathEscapesVolume",
        "spec.repository.persistentVolumeClaim.subPath",
    ),
    ("ModelDeployment", {"repository": {"hostPath": {"path": "/etc"}}}, "HostPathNotAllowed",
     "spec.repository.hostPath.path"),
    ("ModelDeployment", {"runtime.env": ENV_BOTH}, "EnvVarValueConflict", "spec.runtime.env[0]"),
    ("ModelDeployment", {"runtime.env": ENV_TWICE}, "DuplicateEnvVar", "spec.runtime.env[1].name"),
    ("ModelDeployment", {"runtime.env": [{"name": "AIOPS_MODEL_CONTROL_KEY", "value": "guess"}]}, "ReservedEnvVar",
     "spec.runtime.env[0].name"),
    ("ModelDeployment", {"validation.samples.0.expectedText": {"contains": ["four"]}},
     "ExpectationDoesNotFitSample", "spec.validation.samples[0].expectedText"),
    ("ModelDeployment", {"validation.samples": [{"name": "g", "generate": {"prompt": "Hi"},
                                                 "expectedText": {"regex": "(unclosed"}}]},
     "InvalidPattern", "spec.validation.samples[0].expectedText.regex"),
    ("ModelDeployment", {"llm": {"engine": "vllm"}, "resources.gpus": 0}, "LlmNeedsGpu", "spec.resources.gpus"),
    ("ModelDeployment", {"serving.responseCache": {"enabled": True, "size": "100Ki"}}, "ResponseCacheTooSmall",
     "spec.serving.responseCache.size"),
    ("ModelDeployment", {"serving.responseCache": {"enabled": True, "size": "80Gi"}}, "ResponseCacheAboveMemory",
     "spec.serving.responseCache.size"),
    ("ModelDeployment", {"serving.responseCache": {"enabled": True}, "runtime.args": ["--cache-config=local,size=9"]},
     "CacheConfiguredTwice", "spec.serving.responseCache"),
    ("ModelDeployment", {"llm": {"engine": "vllm", "tensorParallelSize": 4}}, "TensorParallelExceedsGpus",
     "spec.llm.tensorParallelSize"),
    (
        "ModelDeployment",
        {"batching.preferredBatchSizes": [8, 64]},
        "PreferredBatchSizeAboveMax",
        "spec.batching.preferredBatchSizes[1]",
    ),
    (
        "ModelDeployment",
        {"batching.preferredBatchSizes": [8, 8]},
        "DuplicatePreferredBatchSize",
        "spec.batching.preferredBatchSizes",
    ),
    (
        "ModelDeployment",
        {"runtime.args": ["--model-control-mode=poll"]},
        "ReservedRuntimeArgument",
        "spec.runtime.args[0]",
    ),
    (
        "ModelDeployment",
        {"model.outputs": [{"name": "LABEL", "dataType": "BYTES", "dims": [1]}] * 2},
        "DuplicateTensorName",
        "spec.model.outputs",
    ),
    (
        "ModelDeployment",
        {"validation.samples.0.inputs.0.shape": [1, 2]},
        "SampleShapeMismatch",
        "spec.validation.samples[0].inputs[0].data",
    ),
    (
        "ModelDeployment",
        {"validation.samples.1.expectedOutputs.0.name": "SCORES"},
        "UnknownSampleTensor",
        "spec.validation.samples[1].expectedOutputs[0].name",
    ),
    (
        "ModelDeployment",
        {"validation.samples.1.name": "billing"},
        "DuplicateSampleName",
        "spec.validation.samples",
    ),
    (
        "ModelDeployment",
        {"validation.samples": [], "monitoring.thresholds.accuracy": None},
        "MinAccuracyWithoutSamples",
        "spec.validation.minAccuracy",
    ),
    (
        "ModelDeployment",
        {"rollback.enabled": False},
        "RollbackActionWithoutRollback",
        "spec.monitoring.action",
    ),
    (
        "ModelDeployment",
        {"monitoring.windowSeconds": 20},
        "MonitoringWindowShorterThanInterval",
        "spec.monitoring.windowSeconds",
    ),
    (
        "ModelDeployment",
        {"validation.samples": [], "validation.minAccuracy": None},
        "AccuracyThresholdWithoutSamples",
        "spec.monitoring.thresholds.accuracy",
    ),
    (
        "ModelDeployment",
        {"monitoring.thresholds.accuracy.min": 0.95},
        "AccuracyThresholdAboveValidationMinimum",
        "spec.monitoring.thresholds.accuracy.min",
    ),
    # VectorIndex
    (
        "VectorIndex",
        {"collection.dimension": 768},
        "DimensionMismatch",
        "spec.collection.dimension",
    ),
    (
        "VectorIndex",
        {"index.params.efconstruction": 200},
        "UnknownIndexParam",
        "spec.index.params.efconstruction",
    ),
    ("VectorIndex", {"index.params.M": 4096}, "IndexParamOutOfRange", "spec.index.params.M"),
    ("VectorIndex", {"index.params.M": "16"}, "IndexParamOutOfRange", "spec.index.params.M"),
    (
        "VectorIndex",
        {"index": {"type": "IVF_PQ", "params": {"nlist": 128, "m": 7}}},
        "PQSubvectorsDoNotDivideDimension",
        "spec.index.params.m",
    ),
    ("VectorIndex", {"index.searchParams.ef": 5}, "SearchEfBelowK", "spec.index.searchParams.ef"),
    ("VectorIndex", {"embedding.resources.memoryRequest": "9Gi"}, "MemoryRequestAboveLimit",
     "spec.embedding.resources.memoryRequest"),
    (
        "VectorIndex",
        {"index": {"type": "GPU_CAGRA"}, "milvus.managed.resources.gpus": 0},
        "GPUIndexWithoutGPU",
        "spec.milvus.managed.resources.gpus",
    ),
    (
        "VectorIndex",
        {"index": {"type": "GPU_IVF_FLAT"}, "milvus.managed.resources.gpus": 2},
        "GPUsExceedNodeCapacity",
        "spec.milvus.managed.resources.gpus",
    ),
    (
        "VectorIndex",
        {
            "index": {"type": "GPU_IVF_FLAT"},
            "milvus.managed.gpuMemoryPool": {"initialMib": 9000, "maxMib": 8192},
        },
        "GPUMemoryPoolInitialAboveMax",
        "spec.milvus.managed.gpuMemoryPool.initialMib",
    ),
    (
        "VectorIndex",
        {"embedding.device": "cuda", "embedding.resources.gpus": 0},
        "CUDAWithoutGPU",
        "spec.embedding.device",
    ),
    (
        "VectorIndex",
        {"embedding.device": "cpu"},
        "GPURequestedForCPUEmbedding",
        "spec.embedding.resources.gpus",
    ),
    (
        "VectorIndex",
        {"embedding.resources.gpus": 3},
        "GPUsExceedNodeCapacity",
        "spec.embedding.resources.gpus",
    ),
    (
        "VectorIndex",
        {"ingest.schedule": "*/30 25 * * *"},
        "InvalidSchedule",
        "spec.ingest.schedule",
    ),
    (
        "VectorIndex",
        {"source": {"persistentVolumeClaim": {"claimName": "docs", "subPath": ".."}}},
        "SubPathEscapesVolume",
        "spec.source.persistentVolumeClaim.subPath",
    ),
    # TrainingJob
    ("TrainingJob", {"resources.gpus": 2}, "GPUsExceedNodeCapacity", "spec.resources.gpus"),
    ("TrainingJob", {"resources.memory": "8Gi", "resources.memoryRequest": "9Gi"}, "MemoryRequestAboveLimit",
     "spec.resources.memoryRequest"),
    (
        "TrainingJob",
        {"output.repository": {"persistentVolumeClaim": {"claimName": "m", "subPath": "../x"}}},
        "SubPathEscapesVolume",
        "spec.output.repository.persistentVolumeClaim.subPath",
    ),
    (
        "TrainingJob",
        {"dataset.source": {"persistentVolumeClaim": {"claimName": "d", "subPath": "a/.."}}},
        "SubPathEscapesVolume",
        "spec.dataset.source.persistentVolumeClaim.subPath",
    ),
    (
        "TrainingJob",
        {"training": {"image": {"image": "train:1", "env": ENV_BOTH}}},
        "EnvVarValueConflict",
        "spec.training.image.env[0]",
    ),
    (
        "TrainingJob",
        {"training": {"image": {"image": "train:1"}}},
        "CustomTrainingImageUnsupported",
        "spec.training.image",
    ),
    (
        "TrainingJob",
        {"output.repository": {"objectStore": {"uri": "s3://bucket/models"}}},
        "OutputRepositoryNotWritable",
        "spec.output.repository.objectStore",
    ),
    (
        "TrainingJob",
        {"workspace": {"persistentVolumeClaim": {"claimName": "w", "subPath": "../w"}}},
        "SubPathEscapesVolume",
        "spec.workspace.persistentVolumeClaim.subPath",
    ),
    (
        "TrainingJob",
        {
            FIELDS: [
                {"name": "text", "type": "string"},
                {"name": "text", "type": "string"},
                {"name": "label", "type": "string"},
            ]
        },
        "DuplicateSchemaField",
        "spec.dataset.schema.fields",
    ),
    (
        "TrainingJob",
        {"dataset.labelField": "category"},
        "FieldNotInSchema",
        "spec.dataset.labelField",
    ),
    (
        "TrainingJob",
        {
            FIELDS: [
                {"name": "text", "type": "string"},
                {"name": "label", "type": "integer", "allowedValues": ["1"]},
            ]
        },
        "AllowedValuesOnNonStringField",
        "spec.dataset.schema.fields[1].allowedValues",
    ),
    (
        "TrainingJob",
        {"preprocessing.steps": ["dropEmpty", "dropEmpty"]},
        "DuplicatePreprocessingStep",
        "spec.preprocessing.steps",
    ),
    (
        "TrainingJob",
        {"preprocessing.split.train": 0.7},
        "SplitFractionsDoNotSumToOne",
        "spec.preprocessing.split",
    ),
    ("TrainingJob", {"validation.minRows": 4}, "ValidationSplitEmpty", "spec.validation.minRows"),
    (
        "TrainingJob",
        {"validation.minClassFraction": 0.4},
        "ClassBalanceUnsatisfiable",
        "spec.validation.minClassFraction",
    ),
    (
        "TrainingJob",
        {"validation.allowedLabels": ["billing", "technical"]},
        "AllowedLabelsMismatch",
        "spec.validation.allowedLabels",
    ),
    (
        "TrainingJob",
        {"optimization.quantization.enabled": False, "optimization.pruning.enabled": False},
        "NothingToOptimize",
        "spec.optimization",
    ),
    (
        "TrainingJob",
        {"optimization.pruning.targetSparsity": 0.0},
        "PruningWithoutSparsity",
        "spec.optimization.pruning.targetSparsity",
    ),
]


@pytest.mark.parametrize(
    "kind, changes, reason, field", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES]
)
def test_rule_fires_with_its_reason_on_its_field(kind, changes, reason, field):
    problems = semantic_problems(
        kind, example_with(kind, changes), max_gpus_per_node=1 if "GPUs" in reason else 3,
        allowed_host_paths=DEFAULT_ALLOWED_HOST_PATHS,
    )
    assert (field, reason) in {(p.field, p.reason) for p in problems}, problems
    assert all(p.message and p.message[-1] in ".)" for p in problems)


def test_every_rule_in_the_module_has_a_case():
    source = "".join(f.read_text() for f in Path(validation.__file__).parent.glob("*.py"))
    reasons = set(re.findall(r'Problem\(\s*(?:f?"[^"]*"|\w+)\s*,\s*"(\w+)"', source))
    tested = {case[2] for case in CASES}
    assert reasons - {"SchemaViolation"} == tested


@pytest.mark.parametrize("kind", ["ModelDeployment", "VectorIndex", "TrainingJob"])
def test_examples_have_no_problems_on_the_seed_node(kind):
    gpus = {"nvidia.com/gpu": 3, "nvidia.com/gpu.shared": 2}
    assert semantic_problems(kind, EXAMPLES[kind], max_gpus_per_node=gpus,
                             allowed_host_paths=DEFAULT_ALLOWED_HOST_PATHS) == []
    assert semantic_problems(kind, EXAMPLES[kind]) == []


def test_the_llm_example_has_no_problems_on_the_seed_node():
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "llm" /
                           "modeldeployment-vllm.yaml").read_text())["spec"]
    gpus = {"nvidia.com/gpu": 3, "nvidia.com/gpu.shared": 2}
    assert semantic_problems("ModelDeployment", spec, max_gpus_per_node=gpus) == []


def test_gpu_capacity_per_resource_name_and_unknown_names_are_skipped():
    md = example_with("ModelDeployment", {"resources.gpus": 4})
    assert [
        p.reason for p in semantic_problems("mdep", md, max_gpus_per_node={"nvidia.com/gpu": 3})
    ] == ["GPUsExceedNodeCapacity"]
    assert semantic_problems("mdep", md, max_gpus_per_node={"nvidia.com/gpu.shared": 1}) == []
    assert semantic_problems("mdep", md, max_gpus_per_node=None) == []
    (problem,) = semantic_problems("mdep", md, max_gpus_per_node=3)
    assert "4 nvidia.com/gpu" in problem.message and "offers 3" in problem.message


def test_dimension_mismatch_names_the_model_and_the_right_dimension():
    spec = example_with("VectorIndex", {"embedding.model": "BAAI/bge-base-en-v1.5"})
    (problem,) = semantic_problems("vidx", spec)
    assert problem.reason == "DimensionMismatch"
    assert (
        "BAAI/bge-base-en-v1.5 produces 768" in problem.message
        and "declares 384" in problem.message
    )
    unknown_model = example_with("VectorIndex", {"embedding.model": "/models/in-house-encoder"})
    assert semantic_problems("vidx", unknown_model) == []


@pytest.mark.parametrize(
    "schedule",
    [
        "*/30 * * * *",
        "0 3 * * mon-fri",
        "15,45 8-18/2 1 jan,jul 0",
        "0 0 1 */3 *",
        "@daily",
        "59 23 31 12 7",
        "0 0 29 2 *",  # once in four years, but it fires
        "5-1 * * * *",  # croniter, which runs the schedule, wraps the range round the hour
        "0 0 L * *",  # croniter's last day of the month
    ],
)
def test_valid_schedules_pass(schedule):
    assert (
        semantic_problems("vidx", example_with("VectorIndex", {"ingest.schedule": schedule})) == []
    )


@pytest.mark.parametrize(
    "schedule, complaint",
    [
        ("60 * * * *", "minute field '60'"),
        ("* 24 * * *", "hour field '24'"),
        ("* * 0 * *", "day of month field '0'"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * fun", "day of week field 'fun'"),
        ("*/0 * * * *", "step '0'"),
        ("1;2 * * * *", "minute field '1;2'"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_invalid_schedules_say_which_field_is_wrong(schedule, complaint):
    (problem,) = semantic_problems(
        "vidx", example_with("VectorIndex", {"ingest.schedule": schedule})
    )
    assert problem.reason == "InvalidSchedule" and complaint in problem.message


def test_a_spec_the_model_rejects_is_reported_as_schema_violations_not_raised():
    spec = example_with("ModelDeployment", {"replicas": "two", "batching.maxBatchSize": 0})
    problems = semantic_problems("ModelDeployment", spec)
    assert {(p.field, p.reason) for p in problems} == {
        ("spec.replicas", "SchemaViolation"),
        ("spec.batching.maxBatchSize", "SchemaViolation"),
    }
    assert all("re-apply crds/" in p.message for p in problems)


def test_check_spec_returns_the_parsed_spec_with_its_problems():
    from aiops.api.validation import check_spec

    good = check_spec("VectorIndex", EXAMPLES["VectorIndex"])
    assert good.valid and good.spec.collection.dimension == 384
    bad = check_spec("vidx", example_with("VectorIndex", {"collection.dimension": 768}))
    assert not bad.valid and bad.spec is not None and bad.problems[0].reason == "DimensionMismatch"
    broken = check_spec("vidx", {"collection": "nope"})
    assert broken.spec is None and {p.reason for p in broken.problems} == {"SchemaViolation"}


def test_an_empty_validation_split_suggests_a_remedy_that_exists():
    (few_rows,) = semantic_problems("tjob", example_with("TrainingJob", {"validation.minRows": 4}))
    assert few_rows.message.endswith("raise minRows to at least 5.")
    tiny = {"preprocessing.split": {"train": 0.5, "validation": 5e-324, "test": 0.5}}
    (tiny_fraction,) = semantic_problems("tjob", example_with("TrainingJob", tiny))
    assert tiny_fraction.reason == "ValidationSplitEmpty"
    assert tiny_fraction.message.endswith("raise the validation fraction.")


def test_several_problems_are_all_reported():
    spec = example_with(
        "TrainingJob", {"preprocessing.split.train": 0.5, "validation.minClassFraction": 0.5}
    )
    reasons = [p.reason for p in semantic_problems("tjob", spec)]
    assert reasons == ["SplitFractionsDoNotSumToOne", "ClassBalanceUnsatisfiable"]


def test_condition_summary():
    assert condition_summary([]) == ("SpecValid", "The spec passed all semantic checks.")
    one = Problem("spec.x", "DimensionMismatch", "model gives 384, collection says 768.")
    assert condition_summary([one]) == (
        "DimensionMismatch",
        "spec.x: model gives 384, collection says 768.",
    )
    two = Problem("spec.y", "InvalidSchedule", "bad minute.")
    reason, message = condition_summary([one, two])
    assert reason == "DimensionMismatch"
    assert (
        message == "2 problems in the spec: spec.x: model gives 384, collection says 768.; "
        "spec.y: bad minute."
    )


def test_unknown_kind_is_an_error_that_lists_the_known_ones():
    with pytest.raises(KeyError, match="ModelDeployment, VectorIndex, TrainingJob"):
        semantic_problems("Gadget", {})


@pytest.mark.parametrize("path, allowed", [
    ("/var/lib/aiops", True),
    ("/var/lib/aiops/models/", True),
    ("/var/lib/aiops/./models", True),
    ("/var/lib/aiops/../../../etc", False),  # resolved before it is compared
    ("/var/lib/aiops-other", False),  # a directory whose name only starts the same
    ("/var/lib", False),
    ("/", False),
])
def test_host_paths_are_compared_resolved_and_by_whole_directories(path, allowed):
    assert host_path_allowed(path, DEFAULT_ALLOWED_HOST_PATHS) is allowed


@pytest.mark.parametrize("field, changes", [
    ("spec.workspace.hostPath.path", {"workspace": {"hostPath": {"path": "/root"}}}),
    ("spec.output.repository.hostPath.path", {"output.repository": {"hostPath": {"path": "/home/x/models"}}}),
])
def test_every_hostpath_of_a_training_job_is_held_to_the_list(field, changes):
    problems = semantic_problems("TrainingJob", example_with("TrainingJob", changes),
                                 allowed_host_paths=("/var/lib/aiops", "/srv/models"))
    [problem] = [p for p in problems if p.reason == "HostPathNotAllowed"]
    assert problem.field == field
    assert "/var/lib/aiops, /srv/models" in problem.message
    allowed = semantic_problems("TrainingJob", example_with("TrainingJob", changes), allowed_host_paths=None)
    assert "HostPathNotAllowed" not in {p.reason for p in allowed}  # None: not restricted


def test_an_empty_list_allows_no_hostpath_and_says_so():
    spec = example_with("ModelDeployment", {"repository": {"hostPath": {"path": "/var/lib/aiops/m"}}})
    [problem] = semantic_problems("ModelDeployment", spec, allowed_host_paths=())
    assert problem.reason == "HostPathNotAllowed" and "allows no hostPath" in problem.message


def test_the_allowed_host_paths_setting(monkeypatch):
    monkeypatch.delenv("AIOPS_ALLOWED_HOST_PATHS", raising=False)
    assert allowed_host_paths() == ("/var/lib/aiops",)
    monkeypatch.setenv("AIOPS_ALLOWED_HOST_PATHS", "")
    assert allowed_host_paths() == ()
    monkeypatch.setenv("AIOPS_ALLOWED_HOST_PATHS", "/var/lib/aiops, /srv/models")
    assert allowed_host_paths() == ("/var/lib/aiops", "/srv/models")
    monkeypatch.setenv("AIOPS_ALLOWED_HOST_PATHS", "/var/lib/aiops,models")
    with pytest.raises(ValueError, match="absolute paths, not models"):
        allowed_host_paths()
