"""Semantic validation: rules that relate fields to each other or to the cluster, which a CRD
schema cannot state on Kubernetes 1.20 (no CEL there).

The operator runs `semantic_problems` before acting; any problem becomes the condition
`Valid=False` with the problem's reason and message and an Event, and nothing else happens until
the spec is fixed. Pure functions: no I/O, the cluster facts come in as arguments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils.quantity import parse_quantity
from pydantic import ValidationError

from aiops.api.common import EnvVar, ModelRepository, SpecModel
from aiops.api.modeldeployment import ModelDeploymentSpec, SampleTensor
from aiops.api.registry import kind_info
from aiops.api.trainingjob import TrainingJobSpec
from aiops.api.vectorindex import VectorIndexSpec, known_embedding_dimension


@dataclass(frozen=True)
class Problem:
    """One violated rule: where, a CamelCase reason, and a message for `kubectl describe`."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class ClusterFacts:
    """What the rules may know about the cluster. `max_gpus_per_node` is the most any single node
    offers: one number for every GPU resource name, or a number per resource name (a name not in
    the map is treated as unknown). None: unknown, so the rule is skipped."""

    max_gpus_per_node: int | Mapping[str, int] | None = None

    def max_gpus(self, resource_name: str) -> int | None:
        if isinstance(self.max_gpus_per_node, Mapping):
            return self.max_gpus_per_node.get(resource_name)
        return self.max_gpus_per_node


@dataclass(frozen=True)
class SpecCheck:
    """The parsed spec (None when it does not fit the model) and its problems."""

    spec: SpecModel | None
    problems: list[Problem]

    @property
    def valid(self) -> bool:
        return not self.problems


def check_spec(
    kind: str, spec: Mapping[str, Any], *, max_gpus_per_node: int | Mapping[str, int] | None = None
) -> SpecCheck:
    """Parses `spec` (the wire form, camelCase) of `kind` and runs every rule on it.

    A spec that does not even fit the model (possible only when the installed CRD is older than
    the operator) yields its schema errors as problems with reason SchemaViolation: the operator
    reports them like any other problem instead of crashing."""
    info = kind_info(kind)
    try:
        model = info.spec_model.from_wire(spec)
    except ValidationError as error:
        return SpecCheck(None, [_schema_problem(e) for e in error.errors()])
    return SpecCheck(model, list(RULES[info.kind](model, ClusterFacts(max_gpus_per_node))))


def semantic_problems(
    kind: str, spec: Mapping[str, Any], *, max_gpus_per_node: int | Mapping[str, int] | None = None
) -> list[Problem]:
    """Every problem with `spec` of `kind`; empty when it is valid."""
    return check_spec(kind, spec, max_gpus_per_node=max_gpus_per_node).problems


def condition_summary(problems: list[Problem]) -> tuple[str, str]:
    """Reason and message for the `Valid` condition."""
    if not problems:
        return "SpecValid", "The spec passed all semantic checks."
    if len(problems) == 1:
        return problems[0].reason, str(problems[0])
    listed = "; ".join(str(p) for p in problems)
    return problems[0].reason, f"{len(problems)} problems in the spec: {listed}"


def _schema_problem(error: Mapping[str, Any]) -> Problem:
    path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    return Problem(
        path,
        "SchemaViolation",
        f"{error['msg']}. The installed CRD may be older than the operator: "
        "re-apply crds/ from the same release.",
    )


# ---- shared rules ------------------------------------------------------------------------------


def _gpus_fit_a_node(
    field: str, gpus: int, resource: str, facts: ClusterFacts
) -> Iterator[Problem]:
    largest = facts.max_gpus(resource)
    if largest is not None and gpus > largest:
        yield Problem(
            field,
            "GPUsExceedNodeCapacity",
            f"asks for {gpus} {resource} per pod, but the largest node offers {largest}, "
            f"so no node could ever run it; lower it to at most {largest} or add a node "
            "with more GPUs.",
        )


def _memory_rules(field: str, resources: Any) -> Iterator[Problem]:
    request, limit = resources.memory_request, resources.memory
    if request is None:
        return
    try:
        above = parse_quantity(str(request)) > parse_quantity(str(limit))
    except ValueError:  # what the schema's pattern lets through and Kubernetes would refuse itself
        return
    if above:
        yield Problem(
            f"{field}.memoryRequest",
            "MemoryRequestAboveLimit",
            f"requests {request} of memory but is limited to {limit}; Kubernetes refuses a "
            "request above the limit, so lower memoryRequest or raise memory.",
        )


def _env_rules(field: str, env: list[EnvVar]) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, var in enumerate(env):
        if var.value is not None and var.value_from is not None:
            yield Problem(
                f"{field}[{i}]",
                "EnvVarValueConflict",
                f"variable {var.name} sets both value and valueFrom; keep one.",
            )
        if var.name in seen:
            yield Problem(
                f"{field}[{i}].name",
                "DuplicateEnvVar",
                f"variable {var.name} is set twice; the later one would silently win, "
                "so remove one.",
            )
        seen.add(var.name)


def _repository_rules(field: str, repository: ModelRepository) -> Iterator[Problem]:
    pvc = repository.persistent_volume_claim
    if pvc is not None and pvc.sub_path and ".." in pvc.sub_path.split("/"):
        yield Problem(
            f"{field}.persistentVolumeClaim.subPath",
            "SubPathEscapesVolume",
            f"subPath {pvc.sub_path!r} contains '..', which Kubernetes refuses to mount; "
            "use a path inside the volume.",
        )


def _duplicates(values: Iterable[Any]) -> list[Any]:
    seen, repeated = set(), []
    for v in values:
        if v in seen and v not in repeated:
            repeated.append(v)
        seen.add(v)
    return repeated


# ---- ModelDeployment ---------------------------------------------------------------------------

# Flags the operator sets on tritonserver itself: repeating them would fight its model control.
RESERVED_TRITON_FLAGS = frozenset(
    {
        "--model-repository",
        "--model-store",
        "--model-control-mode",
        "--load-model",
        "--http-port",
        "--grpc-port",
        "--metrics-port",
        "--http-address",
        "--grpc-address",
    }
)


def _model_deployment_rules(md: ModelDeploymentSpec, facts: ClusterFacts) -> Iterator[Problem]:
    yield from _gpus_fit_a_node(
        "spec.resources.gpus", md.resources.gpus, md.resources.gpu_resource_name, facts
    )
    yield from _memory_rules("spec.resources", md.resources)
    yield from _repository_rules("spec.repository", md.repository)
    yield from _env_rules("spec.runtime.env", md.runtime.env)
    yield from _batching_rules(md)
    yield from _runtime_arg_rules(md)
    yield from _signature_rules(md)
    yield from _sample_rules(md)
    yield from _monitoring_rules(md)


def _batching_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    batching = md.batching
    for i, size in enumerate(batching.preferred_batch_sizes):
        if size > batching.max_batch_size:
            yield Problem(
                f"spec.batching.preferredBatchSizes[{i}]",
                "PreferredBatchSizeAboveMax",
                f"preferred batch size {size} is larger than maxBatchSize "
                f"{batching.max_batch_size}; Triton refuses such a model config. Lower it "
                "or raise maxBatchSize.",
            )
    for size in _duplicates(batching.preferred_batch_sizes):
        yield Problem(
            "spec.batching.preferredBatchSizes",
            "DuplicatePreferredBatchSize",
            f"preferred batch size {size} is listed more than once; list each size once.",
        )


def _runtime_arg_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    for i, arg in enumerate(md.runtime.args):
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_TRITON_FLAGS:
            yield Problem(
                f"spec.runtime.args[{i}]",
                "ReservedRuntimeArgument",
                f"{flag} is set by the operator (it mounts the repository and loads "
                "versions through explicit model control); remove it from args.",
            )


def _signature_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    for side in ("inputs", "outputs"):
        for name in _duplicates(t.name for t in getattr(md.model, side)):
            yield Problem(
                f"spec.model.{side}",
                "DuplicateTensorName",
                f"tensor {name} is declared more than once in model.{side}.",
            )


def _sample_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    declared_inputs = {t.name for t in md.model.inputs}
    declared_outputs = {t.name for t in md.model.outputs}
    for i, sample in enumerate(md.validation.samples):
        base = f"spec.validation.samples[{i}]"
        for side, tensors, declared in (
            ("inputs", sample.inputs, declared_inputs),
            ("expectedOutputs", sample.expected_outputs, declared_outputs),
        ):
            for j, tensor in enumerate(tensors):
                yield from _sample_tensor_rules(
                    f"{base}.{side}[{j}]", sample.name, tensor, declared
                )
    for name in _duplicates(s.name for s in md.validation.samples):
        yield Problem(
            "spec.validation.samples",
            "DuplicateSampleName",
            f"sample {name} appears more than once; give each sample its own name.",
        )
    has_samples = bool(md.validation.samples) or md.validation.validation_set is not None
    if md.validation.min_accuracy is not None and not has_samples:
        yield Problem(
            "spec.validation.minAccuracy",
            "MinAccuracyWithoutSamples",
            "minAccuracy is set but there are no samples and no validationSet to "
            "measure accuracy on; add samples or remove minAccuracy.",
        )


def _sample_tensor_rules(
    field: str, sample: str, tensor: SampleTensor, declared: set[str]
) -> Iterator[Problem]:
    elements = math.prod(tensor.shape)
    if elements != len(tensor.data):
        yield Problem(
            f"{field}.data",
            "SampleShapeMismatch",
            f"sample {sample}, tensor {tensor.name}: shape {tensor.shape} holds "
            f"{elements} values but data has {len(tensor.data)}.",
        )
    if declared and tensor.name not in declared:
        yield Problem(
            f"{field}.name",
            "UnknownSampleTensor",
            f"sample {sample} uses tensor {tensor.name}, which the model does not "
            f"declare (declared: {', '.join(sorted(declared))}).",
        )


def _monitoring_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    monitoring, validation = md.monitoring, md.validation
    if monitoring.action == "rollback" and not md.rollback.enabled:
        yield Problem(
            "spec.monitoring.action",
            "RollbackActionWithoutRollback",
            "monitoring.action is rollback but rollback.enabled is false; enable "
            "rollback or set the action to alert.",
        )
    if monitoring.window_seconds < monitoring.interval_seconds:
        yield Problem(
            "spec.monitoring.windowSeconds",
            "MonitoringWindowShorterThanInterval",
            f"a window of {monitoring.window_seconds}s is shorter than the collection "
            f"interval of {monitoring.interval_seconds}s, so windows would skip data; "
            "make the window at least the interval.",
        )
    accuracy = monitoring.thresholds.accuracy
    if accuracy is None:
        return
    if not validation.samples and validation.validation_set is None:
        yield Problem(
            "spec.monitoring.thresholds.accuracy",
            "AccuracyThresholdWithoutSamples",
            "live accuracy is scored on the validation samples, but there are none; add "
            "validation.samples or a validationSet, or remove the accuracy threshold.",
        )
    gate = 1.0 if validation.min_accuracy is None else validation.min_accuracy
    if accuracy.min > gate:
        yield Problem(
            "spec.monitoring.thresholds.accuracy.min",
            "AccuracyThresholdAboveValidationMinimum",
            f"monitoring demands accuracy {accuracy.min} but validation admits versions "
            f"from {gate}; a version that just passed validation could be flagged "
            "degraded at once. Make the monitoring minimum at most validation.minAccuracy.",
        )


# ---- VectorIndex -------------------------------------------------------------------------------

INT32_MAX = 2**31 - 1
# Build parameters Milvus 2.4 accepts per index type, with their valid integer ranges
# (None: not an integer range, e.g. a string or boolean option).
INDEX_PARAMS: dict[str, dict[str, tuple[int, int] | None]] = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": (1, 65536)},
    "IVF_SQ8": {"nlist": (1, 65536)},
    "IVF_PQ": {"nlist": (1, 65536), "m": (1, 65536), "nbits": (1, 64)},
    "HNSW": {"M": (2, 2048), "efConstruction": (1, INT32_MAX)},
    "SCANN": {"nlist": (1, 65536), "with_raw_data": None},
    "DISKANN": {},
    "AUTOINDEX": {},
    "GPU_IVF_FLAT": {"nlist": (1, 65536)},
    "GPU_IVF_PQ": {"nlist": (1, 65536), "m": (1, 65536), "nbits": (1, 64)},
    "GPU_CAGRA": {
        "intermediate_graph_degree": (1, 1024),
        "graph_degree": (1, 1024),
        "build_algo": None,
        "cache_dataset_on_device": None,
    },
    "GPU_BRUTE_FORCE": {},
}
CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
CRON_NAMES = {
    3: {m: i + 1 for i, m in enumerate(MONTHS)},
    4: {d: i for i, d in enumerate(WEEKDAYS)},
}


def _vector_index_rules(vi: VectorIndexSpec, facts: ClusterFacts) -> Iterator[Problem]:
    yield from _dimension_rules(vi)
    yield from _index_param_rules(vi)
    yield from _gpu_placement_rules(vi, facts)
    if vi.ingest.schedule is not None:
        yield from _cron_rules("spec.ingest.schedule", vi.ingest.schedule)
    if vi.source.persistent_volume_claim is not None:
        yield from _repository_rules(
            "spec.source",
            ModelRepository(persistent_volume_claim=vi.source.persistent_volume_claim),
        )


def _dimension_rules(vi: VectorIndexSpec) -> Iterator[Problem]:
    expected = known_embedding_dimension(vi.embedding.model)
    if expected is not None and expected != vi.collection.dimension:
        yield Problem(
            "spec.collection.dimension",
            "DimensionMismatch",
            f"embedding model {vi.embedding.model} produces {expected}-dimensional "
            f"vectors but the collection declares {vi.collection.dimension}; set "
            f"collection.dimension to {expected} or choose another model.",
        )


def _index_param_rules(vi: VectorIndexSpec) -> Iterator[Problem]:
    index = vi.index
    allowed = INDEX_PARAMS[index.type]
    for name, value in sorted(index.params.items()):
        field = f"spec.index.params.{name}"
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            yield Problem(
                field,
                "UnknownIndexParam",
                f"{index.type} has no build parameter {name!r} (it takes: {known}); a "
                "misspelt parameter would silently fall back to a default.",
            )
        elif (bounds := allowed[name]) is not None:
            low, high = bounds
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                yield Problem(
                    field,
                    "IndexParamOutOfRange",
                    f"{index.type} needs {name} to be an integer from {low} to {high}, "
                    f"not {value!r}.",
                )
    m = index.params.get("m")
    if (
        index.type in ("IVF_PQ", "GPU_IVF_PQ")
        and isinstance(m, int)
        and m > 0
        and vi.collection.dimension % m
    ):
        yield Problem(
            "spec.index.params.m",
            "PQSubvectorsDoNotDivideDimension",
            f"product quantization splits each vector into m={m} parts, which must "
            f"divide the dimension {vi.collection.dimension}.",
        )
    ef = index.search_params.get("ef")
    if (
        index.type == "HNSW"
        and isinstance(ef, int)
        and vi.optimization.recall.enabled
        and ef < vi.optimization.recall.k
    ):
        yield Problem(
            "spec.index.searchParams.ef",
            "SearchEfBelowK",
            f"HNSW search needs ef >= k, but ef is {ef} and the recall check asks for "
            f"k={vi.optimization.recall.k}; raise ef or lower optimization.recall.k.",
        )


def _gpu_placement_rules(vi: VectorIndexSpec, facts: ClusterFacts) -> Iterator[Problem]:
    managed = vi.milvus.managed
    if managed is not None:
        yield from _memory_rules("spec.milvus.managed.resources", managed.resources)
    yield from _memory_rules("spec.embedding.resources", vi.embedding.resources)
    if vi.index.type.startswith("GPU_") and managed is not None:
        if managed.resources.gpus == 0:
            yield Problem(
                "spec.milvus.managed.resources.gpus",
                "GPUIndexWithoutGPU",
                f"index type {vi.index.type} runs on a GPU, but the managed Milvus "
                "requests none; request a GPU or choose a CPU index such as HNSW.",
            )
        yield from _gpus_fit_a_node(
            "spec.milvus.managed.resources.gpus",
            managed.resources.gpus,
            managed.resources.gpu_resource_name,
            facts,
        )
        pool = managed.gpu_memory_pool
        if pool.initial_mib > pool.max_mib:
            yield Problem(
                "spec.milvus.managed.gpuMemoryPool.initialMib",
                "GPUMemoryPoolInitialAboveMax",
                f"the pool starts at {pool.initial_mib} MiB but may grow only to "
                f"{pool.max_mib} MiB; make initialMib at most maxMib.",
            )
    embedding = vi.embedding
    gpus = embedding.resources.gpus
    if embedding.device == "cuda" and gpus == 0:
        yield Problem(
            "spec.embedding.device",
            "CUDAWithoutGPU",
            "embedding.device is cuda but embedding.resources.gpus is 0; request a GPU "
            "or use device auto or cpu.",
        )
    if embedding.device == "cpu" and gpus > 0:
        yield Problem(
            "spec.embedding.resources.gpus",
            "GPURequestedForCPUEmbedding",
            f"embedding runs on cpu but would hold {gpus} shared GPU(s) that training "
            "needs; set embedding.resources.gpus to 0 or the device to auto or cuda.",
        )
    if embedding.device != "cpu":
        yield from _gpus_fit_a_node(
            "spec.embedding.resources.gpus", gpus, embedding.resources.gpu_resource_name, facts
        )


def _cron_rules(field: str, schedule: str) -> Iterator[Problem]:
    if schedule.startswith("@"):
        return
    for position, (text, (name, low, high)) in enumerate(zip(schedule.split(" "), CRON_FIELDS)):
        error = _cron_field_error(text, low, high, CRON_NAMES.get(position, {}))
        if error:
            yield Problem(
                field,
                "InvalidSchedule",
                f"the {name} field {text!r} of schedule {schedule!r} is invalid: {error} "
                f"(allowed {low}-{high}).",
            )


def _cron_field_error(text: str, low: int, high: int, names: Mapping[str, int]) -> str | None:
    for item in text.split(","):
        match = re.fullmatch(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?", item.lower())
        if not match:
            return f"{item!r} is not a value, range, * or step"
        span, step = match.groups()
        if step is not None and int(step) == 0:
            return "a step of 0"
        if span == "*":
            continue
        ends = [names.get(part, int(part) if part.isdigit() else None) for part in span.split("-")]
        if any(end is None or not low <= end <= high for end in ends):
            return f"{span!r} is out of range"
        if len(ends) == 2 and ends[0] > ends[1]:
            return f"the range {span!r} runs backwards"
    return None


# ---- TrainingJob -------------------------------------------------------------------------------


def _training_job_rules(tj: TrainingJobSpec, facts: ClusterFacts) -> Iterator[Problem]:
    yield from _gpus_fit_a_node(
        "spec.resources.gpus", tj.resources.gpus, tj.resources.gpu_resource_name, facts
    )
    yield from _memory_rules("spec.resources", tj.resources)
    yield from _repository_rules("spec.output.repository", tj.output.repository)
    if tj.dataset.source.persistent_volume_claim is not None:
        yield from _repository_rules(
            "spec.dataset.source",
            ModelRepository(persistent_volume_claim=tj.dataset.source.persistent_volume_claim),
        )
    if tj.output.repository.object_store is not None:
        yield Problem(
            "spec.output.repository.objectStore",
            "OutputRepositoryNotWritable",
            "the registration step writes the model version into a mounted repository; an "
            "object store cannot be mounted. Use a persistentVolumeClaim or hostPath repository "
            "(and sync it to object storage yourself if Triton reads from there).",
        )
    workspace = tj.workspace.persistent_volume_claim
    if workspace is not None:
        yield from _repository_rules(
            "spec.workspace", ModelRepository(persistent_volume_claim=workspace)
        )
    if tj.training.image is not None:
        yield from _env_rules("spec.training.image.env", tj.training.image.env)
        yield Problem(
            "spec.training.image",
            "CustomTrainingImageUnsupported",
            "this operator version trains only its built-in tasks (training.task); the steps "
            "after training need the model in the built-in worker's format. Use "
            "training.task: text-classification.",
        )
    yield from _dataset_schema_rules(tj)
    yield from _split_rules(tj)
    yield from _label_rules(tj)
    yield from _optimization_rules(tj)


def _dataset_schema_rules(tj: TrainingJobSpec) -> Iterator[Problem]:
    dataset = tj.dataset
    names = [f.name for f in dataset.schema_.fields]
    for name in _duplicates(names):
        yield Problem(
            "spec.dataset.schema.fields",
            "DuplicateSchemaField",
            f"field {name} is declared more than once.",
        )
    for role, name in (("textField", dataset.text_field), ("labelField", dataset.label_field)):
        if name not in names:
            yield Problem(
                f"spec.dataset.{role}",
                "FieldNotInSchema",
                f"{role} is {name!r}, but the schema declares only "
                f"{', '.join(names)}; declare it in dataset.schema.fields.",
            )
    for i, field in enumerate(dataset.schema_.fields):
        if field.allowed_values and field.type != "string":
            yield Problem(
                f"spec.dataset.schema.fields[{i}].allowedValues",
                "AllowedValuesOnNonStringField",
                f"allowedValues applies to string fields, but {field.name} is a {field.type}.",
            )
    for step in _duplicates(tj.preprocessing.steps):
        yield Problem(
            "spec.preprocessing.steps",
            "DuplicatePreprocessingStep",
            f"step {step} is listed more than once; list each step once.",
        )


def _split_rules(tj: TrainingJobSpec) -> Iterator[Problem]:
    split = tj.preprocessing.split
    total = split.train + split.validation + split.test
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        yield Problem(
            "spec.preprocessing.split",
            "SplitFractionsDoNotSumToOne",
            f"train {split.train} + validation {split.validation} + test {split.test} = "
            f"{total:g}, but the fractions must add up to 1.",
        )
    min_rows = tj.validation.min_rows
    if min_rows * split.validation < 1:
        # A tiny fraction would ask for an absurd number of rows: then suggest the fraction.
        needed = 1 / split.validation
        remedy = (
            f"raise minRows to at least {math.ceil(needed)}"
            if needed <= 10**9
            else "raise the validation fraction"
        )
        yield Problem(
            "spec.validation.minRows",
            "ValidationSplitEmpty",
            f"with minRows {min_rows} and a validation fraction of {split.validation}, "
            "the validation split can be empty, and the quality gate would have nothing "
            f"to measure; {remedy}.",
        )


def _label_rules(tj: TrainingJobSpec) -> Iterator[Problem]:
    rules = tj.validation
    labels = rules.allowed_labels
    if labels and rules.min_class_fraction * len(set(labels)) > 1 + 1e-9:
        yield Problem(
            "spec.validation.minClassFraction",
            "ClassBalanceUnsatisfiable",
            f"{len(set(labels))} labels cannot each have at least "
            f"{rules.min_class_fraction} of the rows; lower minClassFraction to at most "
            f"{1 / len(set(labels)):.3g}.",
        )
    label_field = next(
        (f for f in tj.dataset.schema_.fields if f.name == tj.dataset.label_field), None
    )
    if (
        labels
        and label_field is not None
        and label_field.allowed_values
        and set(labels) != set(label_field.allowed_values)
    ):
        yield Problem(
            "spec.validation.allowedLabels",
            "AllowedLabelsMismatch",
            f"validation.allowedLabels {sorted(set(labels))} differs from the label "
            f"field's allowedValues {sorted(set(label_field.allowed_values))}; make them "
            "the same or drop one.",
        )


def _optimization_rules(tj: TrainingJobSpec) -> Iterator[Problem]:
    opt = tj.optimization
    if opt.enabled and not opt.quantization.enabled and not opt.pruning.enabled:
        yield Problem(
            "spec.optimization",
            "NothingToOptimize",
            "optimization is enabled but both quantization and pruning are disabled; "
            "enable one or set optimization.enabled to false.",
        )
    if opt.enabled and opt.pruning.enabled and opt.pruning.target_sparsity == 0:
        yield Problem(
            "spec.optimization.pruning.targetSparsity",
            "PruningWithoutSparsity",
            "pruning is enabled with a target sparsity of 0, which prunes nothing; set a "
            "target above 0 or disable pruning.",
        )


RULES: dict[str, Callable[[Any, ClusterFacts], Iterator[Problem]]] = {
    "ModelDeployment": _model_deployment_rules,
    "VectorIndex": _vector_index_rules,
    "TrainingJob": _training_job_rules,
}
