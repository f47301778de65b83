"""The ModelDeployment's rules: batching, Triton's arguments, the model's signature, the
validation samples and the monitoring thresholds."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity

from aiops.api.modeldeployment import LLM_GPU_ENGINES, ModelDeploymentSpec, SampleTensor, ValidationSample
from aiops.api.validation.base import ClusterFacts, Problem, duplicates, env_rules, repository_rules, resources_rules
from aiops.builders.triton import MODEL_CONTROL_ENV

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
        # Model control is restricted to the operator's key.
        "--http-restricted-api",
        "--grpc-restricted-protocol",
    }
)


def rules(md: ModelDeploymentSpec, facts: ClusterFacts) -> Iterator[Problem]:
    yield from resources_rules(md.resources, facts)
    yield from repository_rules("spec.repository", md.repository, facts)
    yield from env_rules("spec.runtime.env", md.runtime.env)
    yield from _batching_rules(md)
    yield from _serving_rules(md)
    yield from _runtime_arg_rules(md)
    yield from _runtime_env_rules(md)
    yield from _signature_rules(md)
    yield from _sample_rules(md)
    yield from _monitoring_rules(md)
    yield from _llm_rules(md)


def _llm_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    if md.llm is None:
        return
    gpus = md.resources.gpus
    if md.llm.engine in LLM_GPU_ENGINES and gpus == 0:
        yield Problem("spec.resources.gpus", "LlmNeedsGpu",
                      f"llm.engine {md.llm.engine} runs on GPUs but resources.gpus is 0; give each Triton pod "
                      "the GPUs the model is split over.")
    tp = md.llm.tensor_parallel_size
    if tp is not None and md.llm.engine in LLM_GPU_ENGINES and tp > gpus:
        yield Problem("spec.llm.tensorParallelSize", "TensorParallelExceedsGpus",
                      f"llm.tensorParallelSize {tp} splits the model over more GPUs than each Triton pod has "
                      f"(resources.gpus {gpus}); raise resources.gpus or lower tensorParallelSize.")


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
    for size in duplicates(batching.preferred_batch_sizes):
        yield Problem(
            "spec.batching.preferredBatchSizes",
            "DuplicatePreferredBatchSize",
            f"preferred batch size {size} is listed more than once; list each size once.",
        )


MIN_CACHE_BYTES = 1 << 20


def _serving_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    cache = md.serving.response_cache
    if not cache.enabled:
        return
    size, limit = _bytes(cache.size), _bytes(md.resources.memory)
    if size is None or size < MIN_CACHE_BYTES:
        yield Problem("spec.serving.responseCache.size", "ResponseCacheTooSmall",
                      f"a response cache of {cache.size} holds no response; give it at least 1Mi (it counts "
                      "against resources.memory), or disable it.")
    elif limit is not None and size > limit:
        yield Problem("spec.serving.responseCache.size", "ResponseCacheAboveMemory",
                      f"a response cache of {cache.size} does not fit the pod's memory limit "
                      f"{md.resources.memory}; lower it or raise resources.memory.")
    if any(a.split("=", 1)[0] == "--cache-config" for a in md.runtime.args):
        yield Problem("spec.serving.responseCache", "CacheConfiguredTwice",
                      "runtime.args has its own --cache-config while serving.responseCache is enabled; "
                      "keep one of them.")


def _bytes(quantity: int | str) -> Decimal | None:
    """None for what the schema's pattern lets through and Kubernetes would refuse itself."""
    try:
        return parse_quantity(str(quantity))
    except ValueError:
        return None


def _runtime_env_rules(md: ModelDeploymentSpec) -> Iterator[Problem]:
    for i, var in enumerate(md.runtime.env):
        if var.name == MODEL_CONTROL_ENV:
            yield Problem(f"spec.runtime.env[{i}].name", "ReservedEnvVar",
                          f"{var.name} carries the key that restricts Triton's model control to the operator; "
                          "it is set by the operator: use another name.")


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
        for name in duplicates(t.name for t in getattr(md.model, side)):
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
        yield from _generation_sample_rules(base, sample)
        for side, tensors, declared in (
            ("inputs", sample.inputs or [], declared_inputs),
            ("expectedOutputs", sample.expected_outputs, declared_outputs),
        ):
            for j, tensor in enumerate(tensors):
                yield from _sample_tensor_rules(
                    f"{base}.{side}[{j}]", sample.name, tensor, declared
                )
    for name in duplicates(s.name for s in md.validation.samples):
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


def _generation_sample_rules(base: str, sample: ValidationSample) -> Iterator[Problem]:
    """Each kind of sample with its own kind of expectation; a pattern that compiles."""
    if sample.generate is not None and sample.expected_outputs:
        yield Problem(f"{base}.expectedOutputs", "ExpectationDoesNotFitSample",
                      f"sample {sample.name} is a generation sample: state what its text must hold in "
                      "expectedText, not expectedOutputs.")
    if sample.inputs is not None and sample.expected_text is not None:
        yield Problem(f"{base}.expectedText", "ExpectationDoesNotFitSample",
                      f"sample {sample.name} is an inference sample: state its answer in expectedOutputs; "
                      "expectedText is for generation samples.")
    if sample.expected_text is not None and sample.expected_text.regex is not None:
        try:
            re.compile(sample.expected_text.regex)
        except re.error as e:
            yield Problem(f"{base}.expectedText.regex", "InvalidPattern",
                          f"sample {sample.name}: the regular expression does not compile ({e}).")


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

