"""ModelDeployment: one model version served by Triton on dedicated GPUs: validated before it
serves, health-checked, rolled back on failure, and watched for degradation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from aiops.api.common import (
    DATA_KEY,
    DEFAULT_GPU_RESOURCE,
    DNS_SUBDOMAIN,
    MODEL_NAME,
    EnvVar,
    HistoryEntry,
    ImagePullPolicy,
    ModelRepository,
    OneOf,
    Quantity,
    SpecModel,
    StatusBase,
    StatusModel,
    cpu_field,
    gpu_resource_name_field,
    gpus_field,
    memory_field,
    memory_request_field,
)

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"

TritonDataType = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]
Percentile = Literal["p50", "p95", "p99"]
MonitoringAction = Literal["alert", "rollback"]
ModelDeploymentPhase = Literal[
    "Pending",
    "Invalid",
    "Validating",
    "Deploying",
    "HealthChecking",
    "Ready",
    "Degraded",
    "RollingBack",
    "Failed",
]


class TensorSpec(SpecModel):
    """A model input or output as config.pbtxt declares it."""

    name: str = Field(min_length=1, max_length=256, description="Tensor name.")
    data_type: TritonDataType = Field(description="Triton data type, without the TYPE_ prefix.")
    dims: list[int] = Field(
        max_length=16,
        description="Shape without the batch dimension; -1 marks a variable-size dimension.",
    )


class ModelRef(SpecModel):
    """Which model and version to serve, and what it must look like."""

    name: str = Field(
        pattern=MODEL_NAME,
        max_length=128,
        description="Model name: its directory in the repository.",
    )
    version: int = Field(
        ge=1,
        description="Version to serve: a numbered directory under the model's directory. Changing "
        "it rolls out that version; a version that failed before is not retried until the "
        "aiops.dev/retry annotation changes.",
    )
    backend: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        max_length=64,
        description="Expected Triton backend or platform (e.g. python, onnxruntime, "
        "pytorch_libtorch); validation rejects a config.pbtxt that says otherwise.",
    )
    inputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=64,
        description="Expected inputs; validation rejects a config.pbtxt that disagrees. "
        "Empty: any.",
    )
    outputs: list[TensorSpec] = Field(
        default_factory=list,
        max_length=64,
        description="Expected outputs; validation rejects a config.pbtxt that disagrees. "
        "Empty: any.",
    )


class TritonRuntime(SpecModel):
    """The Triton Inference Server container."""

    image: str = Field(
        default=TRITON_IMAGE, min_length=1, max_length=512, description="Triton server image."
    )
    image_pull_policy: ImagePullPolicy = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Extra tritonserver arguments (e.g. --log-verbose=1). The operator sets the "
        "repository, model-control mode and ports itself; do not repeat them here.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment variables."
    )


class ModelDeploymentResources(SpecModel):
    """Per-pod resources of the Triton server (seed: llm-server, GPUs 0 and 1, 64 GB)."""

    gpus: int = gpus_field(2, "GPUs per Triton pod (the reference node dedicates GPUs 0 and 1 to serving).")
    gpu_resource_name: str = gpu_resource_name_field(DEFAULT_GPU_RESOURCE)
    memory: Quantity = memory_field("64Gi")
    memory_request: Quantity | None = memory_request_field(None)
    cpu: Quantity | None = cpu_field()


class SampleTensor(SpecModel):
    """One tensor of a validation sample, with its data flattened in row-major order."""

    name: str = Field(min_length=1, max_length=256, description="Tensor name.")
    data_type: TritonDataType = Field(description="Triton data type, without the TYPE_ prefix.")
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1, max_length=16, description="Full shape of the request, batch dimension first."
    )
    data: list[Any] = Field(
        min_length=1,
        max_length=65536,
        description="Values, flattened; numbers for numeric types, strings for BYTES.",
    )


class ExpectedOutput(SampleTensor):
    """An output a sample must produce."""

    tolerance: float = Field(
        default=1e-3,
        ge=0,
        description="Largest absolute difference accepted per numeric element.",
    )


class GenerateRequest(SpecModel):
    """A request to Triton's generate endpoint, the text interface of LLM backends (vLLM,
    TensorRT-LLM, or a Python model with a text_input input and a text_output output)."""

    prompt: str = Field(min_length=1, max_length=32768, description="The prompt, sent as text_input.")
    max_tokens: int = Field(
        default=64, ge=1, le=32768, description="Most tokens to generate (the max_tokens sampling parameter)."
    )
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"temperature": 0},
        description="Further sampling parameters, sent as the request's parameters (vLLM's SamplingParams "
        "names: temperature, top_p, top_k, seed, stop, ...). The default, temperature 0, decodes greedily, so "
        "a check can expect the same text every time.",
    )
    stream: bool = Field(
        default=False,
        description="Request through generate_stream (the model's stream input set) and judge the chunks "
        "joined; the time to the first chunk is measured.",
    )


class TextExpectation(SpecModel):
    """What generated text must satisfy; every check that is set must hold. The text judged is the
    model's text_output with the prompt taken off where the backend repeats it."""

    exact: str | None = Field(
        default=None, max_length=32768, description="The whole text, surrounding whitespace aside."
    )
    contains: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=32, description="Strings that must each appear in the text."
    )
    regex: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="A Python regular expression that must match somewhere in the text.",
    )


class ValidationSample(OneOf):
    """One request and what it must answer: tensors through the infer endpoint (inputs,
    expectedOutputs), or a prompt through the generate endpoint (generate, expectedText)."""

    one_of: ClassVar[tuple[str, ...]] = ("inputs", "generate")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64, description="Sample name."
    )
    inputs: list[SampleTensor] | None = Field(
        default=None, min_length=1, max_length=32, description="Request inputs of an inference sample."
    )
    expected_outputs: list[ExpectedOutput] = Field(
        default_factory=list,
        max_length=32,
        description="Outputs an inference sample must return; empty means the request must only succeed.",
    )
    generate: GenerateRequest | None = Field(
        default=None, description="A generation sample: the prompt and how to sample the answer."
    )
    expected_text: TextExpectation | None = Field(
        default=None,
        description="What a generation sample's text must satisfy; unset means the request must only succeed.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Free-form notes kept with the sample (e.g. its source)."
    )


class ValidationSet(SpecModel):
    """A larger labelled set, as JSON Lines of {"inputs": [...], "expectedOutputs": [...]}."""

    config_map: str = Field(
        pattern=DNS_SUBDOMAIN, max_length=253, description="ConfigMap holding the set."
    )
    key: str = Field(
        default="samples.jsonl", pattern=DATA_KEY, max_length=253, description="Key in the ConfigMap."
    )


class PreDeployValidation(SpecModel):
    """Checks a version must pass before anything serves it."""

    samples: list[ValidationSample] = Field(
        default_factory=list, max_length=64, description="Inference requests with expected answers."
    )
    validation_set: ValidationSet | None = Field(
        default=None, description="A labelled set in a ConfigMap, scored for accuracy."
    )
    min_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of samples (and validation-set rows) that must match; unset: all must.",
    )
    timeout_seconds: int = Field(
        default=300, ge=1, le=86400, description="Time allowed for the validation Job."
    )
    start_server_early: bool = Field(
        default=True,
        description="For a first version: create the Triton Deployment while the validation Job "
        "runs, so image pull and server start overlap validation. Nothing is loaded into it (and "
        "its pods are not Ready) until the version passed. Its GPUs are held meanwhile; false keeps "
        "them free until then.",
    )


class PhaseDeadlines(SpecModel):
    """How long each rollout phase may take before the rollout fails naming the phase that stalled.
    (Validation has its own: validation.timeoutSeconds.)"""

    capacity_seconds: int = Field(
        default=600, ge=1, le=86400, description="Waiting for free GPUs before any pod is created."
    )
    schedule_seconds: int = Field(
        default=300, ge=1, le=86400, description="From Deployment change until every new pod is scheduled."
    )
    start_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="From scheduling until Triton answers in every new pod (image pull, start).",
    )
    load_seconds: int = Field(
        default=300, ge=1, le=86400, description="Loading the model version into Triton."
    )
    health_check_seconds: int = Field(
        default=300, ge=1, le=86400, description="From load until the health check passes."
    )


class HealthCheck(SpecModel):
    """How a rolled-out version is judged healthy."""

    period_seconds: int = Field(default=10, ge=1, le=3600, description="Seconds between checks.")
    timeout_seconds: int = Field(default=5, ge=1, le=600, description="Seconds one check may take.")
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="Consecutive failed checks that trigger a rollback."
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description="Time from rollout start to a healthy version before it counts as failed.",
    )
    phase_deadlines: PhaseDeadlines = Field(
        default_factory=PhaseDeadlines, description="Deadline of each rollout phase."
    )


class Rollback(SpecModel):
    """What happens when a version turns out bad."""

    enabled: bool = Field(default=True, description="Restore the last good version automatically.")
    history_limit: int = Field(
        default=10, ge=1, le=100, description="Versions kept in status.history."
    )


class InferenceTimeThreshold(SpecModel):
    """Latency limit."""

    percentile: Percentile = Field(default="p95", description="Latency percentile compared.")
    max_milliseconds: float = Field(
        gt=0, description="Largest acceptable latency at that percentile."
    )


class MaxPercentThreshold(SpecModel):
    """Upper limit on a utilisation."""

    max_percent: float = Field(ge=0, le=100, description="Largest acceptable value, in percent.")


class AccuracyThreshold(SpecModel):
    """Lower limit on live accuracy, scored from the validation samples."""

    min: float = Field(ge=0, le=1, description="Smallest acceptable accuracy, 0 to 1.")


class ErrorRateThreshold(SpecModel):
    """Upper limit on failed requests."""

    max: float = Field(ge=0, le=1, description="Largest acceptable fraction of failed requests.")


class MaxMillisecondsThreshold(SpecModel):
    """Upper limit on a mean time."""

    max_milliseconds: float = Field(gt=0, description="Largest acceptable mean over the window, in ms.")


class MonitoringThresholds(SpecModel):
    """Limits on the monitored metrics; an unset one is only compared with the baseline."""

    inference_time: InferenceTimeThreshold | None = Field(
        default=None, description="inference_time: request latency."
    )
    gpu_utilization: MaxPercentThreshold | None = Field(
        default=None, description="gpu_utilization: busy time of the GPUs."
    )
    memory_usage: MaxPercentThreshold | None = Field(
        default=None, description="memory_usage: GPU memory used, as a share of the device's."
    )
    accuracy: AccuracyThreshold | None = Field(
        default=None, description="accuracy: validation samples scored against the live endpoint."
    )
    error_rate: ErrorRateThreshold | None = Field(
        default=None, description="error_rate: failed requests over all requests."
    )
    time_to_first_token: MaxMillisecondsThreshold | None = Field(
        default=None, description="time_to_first_token: LLMs, from the engine's metrics (vLLM backend)."
    )
    time_per_output_token: MaxMillisecondsThreshold | None = Field(
        default=None, description="time_per_output_token: LLMs, from the engine's metrics (vLLM backend)."
    )


class Monitoring(SpecModel):
    """Performance monitoring of the serving version."""

    enabled: bool = Field(default=True, description="Collect and analyse metrics.")
    interval_seconds: int = Field(
        default=30, ge=5, le=3600, description="Seconds between collections."
    )
    window_seconds: int = Field(
        default=300, ge=10, le=86400, description="Sliding window each judgement is made over."
    )
    consecutive_windows: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Windows in a row that must breach before Degraded is set, and be clean before "
        "it is cleared (damps flapping).",
    )
    min_samples: int = Field(
        default=20,
        ge=1,
        le=1000000,
        description="Requests a window needs to be judged; thinner windows are topped up with "
        "synthetic probes from the validation samples.",
    )
    detect_baseline_shift: bool = Field(
        default=True,
        description="Also flag a statistically significant shift from the baseline taken when the "
        "version became Ready.",
    )
    thresholds: MonitoringThresholds = Field(
        default_factory=MonitoringThresholds, description="Limits per metric."
    )
    action: MonitoringAction = Field(
        default="alert",
        description="On degradation: alert (condition and Event) or roll back to the last "
        "good version.",
    )


LlmEngine = Literal["vllm", "tensorrtllm", "python"]
LLM_GPU_ENGINES = ("vllm", "tensorrtllm")


class LanguageModel(SpecModel):
    """A large language model behind one of Triton's LLM backends. Validation checks the
    repository against it (vLLM: the version's model.json engine arguments; TensorRT-LLM: one
    engine file per tensor-parallel rank), and its samples ask it through the generate endpoint."""

    engine: LlmEngine = Field(
        default="vllm",
        description="vllm: Triton's vLLM backend (the version directory holds model.json, the engine "
        "arguments). tensorrtllm: TensorRT-LLM engines (rank<N>.engine per GPU) behind the model's ensemble. "
        "python: a Python-backend model with the same text interface (text_input, stream, text_output), "
        "which runs without a GPU.",
    )
    tensor_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="GPUs one copy of the model is split over; unset: resources.gpus (the reference node's llm-server: "
        "2). The repository must be built for this many (model.json tensor_parallel_size, engine ranks).",
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="The share of each GPU's memory the engine may take (vLLM's gpu_memory_utilization, "
        "weights and KV cache); model.json may not ask for more. Unset: whatever model.json says.",
    )


class DynamicBatching(SpecModel):
    """Triton's dynamic batcher."""

    enabled: bool = Field(default=True, description="Let Triton combine requests into batches.")
    max_batch_size: int = Field(
        default=8, ge=1, le=4096, description="Largest batch Triton forms (config max_batch_size)."
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        max_length=16,
        description="Batch sizes the batcher aims for; each at most maxBatchSize.",
    )
    max_queue_delay_microseconds: int = Field(
        default=100,
        ge=0,
        le=10_000_000,
        description="How long a request may wait for a batch to fill.",
    )


GraphOptimization = Literal["all", "extended", "basic", "none"]


class ResponseCache(SpecModel):
    """Triton's response cache: an identical request is answered from memory, without running the
    model. For deterministic models only (a cached answer is the first one computed)."""

    enabled: bool = Field(default=False, description="Cache this model's responses.")
    size: Quantity = Field(
        default="64Mi",
        description="Memory of the server's cache (Triton's local cache, --cache-config local,size=...); it "
        "counts against resources.memory.",
    )


class ServingOptions(SpecModel):
    """How Triton runs the model: copies per GPU, threads, graph optimization, the response cache."""

    instances: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Copies of the model Triton runs side by side: per GPU (instance_group KIND_GPU), or per pod "
        "where resources.gpus is 0 (KIND_CPU). Unset: the model configuration's instance_group.",
    )
    threads_per_instance: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Threads one copy computes with (the parameter intra_op_thread_count, read by Triton's "
        "ONNX Runtime backend and by the Python models a TrainingJob registers). Unset: the runtime's default.",
    )
    graph_optimization: GraphOptimization | None = Field(
        default=None,
        description="Graph rewrites before the first inference (optimization.graph.level, read by Triton's ONNX "
        "Runtime backend and by the Python models a TrainingJob registers): all (the default), extended, "
        "basic, none.",
    )
    response_cache: ResponseCache = Field(
        default_factory=ResponseCache, description="Triton's response cache for this model."
    )


class ModelDeploymentSpec(SpecModel):
    """A model version to serve with Triton, and how to validate, check, roll back and watch it."""

    model: ModelRef = Field(description="The model and version to serve.")
    repository: ModelRepository = Field(description="Where the Triton model repository is.")
    runtime: TritonRuntime = Field(default_factory=TritonRuntime, description="The Triton server.")
    replicas: int = Field(
        default=1, ge=0, le=64, description="Triton pods; each gets resources.gpus GPUs. A change of replicas alone "
        "scales the serving pods without a rollout."
    )
    resources: ModelDeploymentResources = Field(
        default_factory=ModelDeploymentResources, description="GPUs and memory per Triton pod."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels a node must have to run the Triton pods."
    )
    validation: PreDeployValidation = Field(
        default_factory=PreDeployValidation, description="Checks before a version serves."
    )
    health_check: HealthCheck = Field(
        default_factory=HealthCheck, description="Health checks of a rolled-out version."
    )
    rollback: Rollback = Field(default_factory=Rollback, description="Rollback policy.")
    monitoring: Monitoring = Field(
        default_factory=Monitoring, description="Performance monitoring while the version serves."
    )
    batching: DynamicBatching = Field(
        default_factory=DynamicBatching, description="Dynamic batching settings passed to Triton."
    )
    serving: ServingOptions = Field(
        default_factory=ServingOptions,
        description="Model instances, threads, graph optimization and the response cache, passed to Triton.",
    )
    llm: LanguageModel | None = Field(
        default=None,
        description="The model is a large language model served by an LLM backend (vLLM, TensorRT-LLM); "
        "its samples are generation samples.",
    )


class Endpoints(StatusModel):
    """How clients reach the model."""

    http: str | None = Field(default=None, description="KServe v2 HTTP endpoint (host:port).")
    grpc: str | None = Field(default=None, description="KServe v2 gRPC endpoint (host:port).")
    metrics: str | None = Field(default=None, description="Triton's Prometheus metrics URL.")


class MetricsSnapshot(StatusModel):
    """The monitored metrics over one window; an unknown value is left out, never zero."""

    window_end: datetime | None = Field(default=None, description="End of the window.")
    requests: int | None = Field(default=None, ge=0, description="Requests seen in the window.")
    inference_time_p50_ms: float | None = Field(default=None, description="Median latency (ms).")
    inference_time_p95_ms: float | None = Field(
        default=None, description="95th percentile latency (ms)."
    )
    inference_time_p99_ms: float | None = Field(
        default=None, description="99th percentile latency (ms)."
    )
    gpu_utilization_percent: float | None = Field(default=None, description="GPU busy time (%).")
    memory_usage_percent: float | None = Field(default=None, description="GPU memory used (%).")
    accuracy: float | None = Field(default=None, description="Accuracy on the validation samples.")
    error_rate: float | None = Field(default=None, description="Failed over all requests.")
    failures: int | None = Field(default=None, ge=0, description="Failed requests in the window.")
    scored: int | None = Field(
        default=None, ge=0, description="Validation samples scored against the live endpoint in the window."
    )
    probes: int | None = Field(
        default=None, ge=0, description="Synthetic probe requests sent in the window because real traffic was thin."
    )
    latency_source: Literal["summary", "counters"] | None = Field(
        default=None,
        description="Where the percentiles come from: Triton's latency summaries (exact over Triton's own "
        "window; --metrics-config=summary_latencies=true) or its counters (percentiles of per-interval means).",
    )
    gpu_source: Literal["triton", "nvml", "triton+nvml"] | None = Field(
        default=None,
        description="Where the GPU figures come from: the serving pods' Triton metrics (nv_gpu_*), NVML read by "
        "device UUID where the operator sees the GPUs, or both. Absent: no GPU figure could be read.",
    )
    gpu_devices: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="UUIDs of the GPUs the serving pods hold (as the device plugin assigned them) that the GPU "
        "figures cover.",
    )
    time_to_first_token_ms: float | None = Field(
        default=None, description="LLMs: mean time to the first generated token over the window (ms)."
    )
    time_per_output_token_ms: float | None = Field(
        default=None, description="LLMs: mean time per generated token after the first (ms)."
    )
    tokens_per_second: float | None = Field(
        default=None, description="LLMs: tokens generated per second over the window, all pods."
    )
    queue_time_ms: float | None = Field(
        default=None, description="LLMs: mean time requests waited in the engine's queue (ms)."
    )
    kv_cache_usage_percent: float | None = Field(
        default=None, description="LLMs: KV-cache use of the fullest pod's engine (%)."
    )
    interval_time_to_first_token_ms: list[float] = Field(
        default_factory=list,
        max_length=64,
        description="LLMs: mean time to first token of each collection interval (ms), for the baseline test.",
    )
    interval_time_per_output_token_ms: list[float] = Field(
        default_factory=list,
        max_length=64,
        description="LLMs: mean time per output token of each collection interval (ms), for the baseline test.",
    )
    interval_latencies_ms: list[float] = Field(
        default_factory=list,
        max_length=64,
        description="Mean latency of each collection interval in the window (ms): the sample the baseline "
        "shift test compares.",
    )


class MonitoringStatus(StatusModel):
    """The monitor's verdict on the serving version, as the reconciler last wrote it."""

    version: int | None = Field(default=None, description="The version judged.")
    degraded: bool = Field(default=False, description="Whether the version is judged degraded.")
    reason: str | None = Field(default=None, description="CamelCase cause (e.g. InferenceTimeAboveThreshold).")
    message: str | None = Field(default=None, description="What was seen: metric, value, threshold and window.")
    metric: str | None = Field(default=None, description="The metric that decided (one of the monitored metrics).")
    value: float | None = Field(default=None, description="Its value over the window.")
    threshold: float | None = Field(default=None, description="The limit (or baseline) it was compared with.")
    window_seconds: int | None = Field(default=None, description="Length of the window judged.")
    breaching_windows: int | None = Field(default=None, ge=0, description="Consecutive windows with a finding.")
    clean_windows: int | None = Field(default=None, ge=0, description="Consecutive windows without one.")
    rollback_requested: bool = Field(
        default=False, description="Degraded and spec.monitoring.action is rollback."
    )
    last_evaluated: datetime | None = Field(default=None, description="When the last window was judged.")


RolloutStep = Literal["Validating", "WaitingForCapacity", "Deploying", "Loading", "HealthChecking"]


class RolloutProgress(StatusModel):
    """A rollout in flight, kept in status so an operator restart resumes it where it was."""

    version: int = Field(ge=1, description="Version being rolled out.")
    revision: str = Field(
        description="Hash of the spec fields that decide what serves; a new one restarts the rollout."
    )
    step: RolloutStep = Field(description="The step the rollout is in.")
    started_at: datetime = Field(description="When the rollout started.")
    step_started_at: datetime = Field(description="When the current step started.")
    template_changed: bool = Field(
        default=False, description="Whether the rollout also changes the Triton pods (not only the model version)."
    )
    health_failures: int = Field(default=0, ge=0, description="Consecutive failed health checks of the new version.")
    validation_job: str | None = Field(default=None, description="The validation Job this rollout created.")
    server_started_early: bool = Field(
        default=False, description="Whether the Triton Deployment was created beside the validation Job."
    )
    model_waits: int = Field(
        default=0, ge=0, description="Validations that found the version not yet in the repository."
    )
    next_validation_at: datetime | None = Field(
        default=None, description="While waiting for the version to appear: when validation runs again."
    )
    wait_reason: str | None = Field(
        default=None, max_length=64,
        description="While waiting: WaitingForModel (not in the repository yet), RepositoryNotFound, or "
        "InsufficientGPU/InsufficientMemory/InsufficientCPU (no node has room for a Triton pod).",
    )
    model_config_json: str | None = Field(
        default=None, description="config.pbtxt of the new version as JSON, from the validation Job."
    )
    swap: Literal["Beside", "Replace", "Surge"] | None = Field(
        default=None,
        description="How the new version takes over: Beside the serving one in the running pods; for an LLM "
        "whose two versions do not fit in GPU memory, Surge (new pods for it beside the old ones, where a node "
        "has room) or Replace (in the running pods, the serving one unloaded first).",
    )
    outage_seconds: float | None = Field(
        default=None, ge=0, description="Replace: how long no version answered, from the unload to the new load."
    )


class RejectedRevision(StatusModel):
    """A version (with the rest of its spec) that failed and is not deployed again."""

    version: int = Field(ge=1, description="The rejected version.")
    revision: str = Field(description="Hash of the rejected spec; a spec with another hash is tried afresh.")
    reason: str = Field(description="CamelCase cause.")
    time: datetime = Field(description="When it was rejected.")
    retry_token: str | None = Field(
        default=None, description="Value of the aiops.dev/retry annotation when it failed; changing it retries."
    )


class ModelDeploymentStatus(StatusBase):
    """What serves, what failed, and how it performs."""

    phase: ModelDeploymentPhase = Field(default="Pending", description="Where the rollout stands.")
    serving_version: int | None = Field(
        default=None, description="Version that serves traffic now."
    )
    last_good_version: int | None = Field(
        default=None,
        description="Newest version that passed its health check: the rollback target.",
    )
    rejected_versions: list[int] = Field(
        default_factory=list,
        description="Versions that failed; re-applying the same spec does not deploy them again.",
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, description="Recent versions and their outcomes, newest first."
    )
    replicas: int | None = Field(default=None, description="Triton pods that exist.")
    ready_replicas: int | None = Field(default=None, description="Triton pods that are ready.")
    selector: str | None = Field(
        default=None, description="Label selector of the Triton pods (for `kubectl scale` and autoscalers)."
    )
    endpoints: Endpoints | None = Field(default=None, description="Where to send requests.")
    phase_durations_seconds: dict[str, float] = Field(
        default_factory=dict,
        description="Measured duration of each rollout phase of the last rollout.",
    )
    metrics: MetricsSnapshot | None = Field(
        default=None, description="The latest monitoring window."
    )
    baseline: MetricsSnapshot | None = Field(
        default=None, description="Metrics when the serving version became Ready."
    )
    serving_revision: str | None = Field(default=None, description="Spec hash of what serves now.")
    serving_model_config_json: str | None = Field(
        default=None, description="The model configuration loaded for the serving version (JSON), reloaded into "
        "Triton pods that restart."
    )
    serving_deployment_revision: int | None = Field(
        default=None, description="Revision of the Triton Deployment when the serving version was promoted: "
        "the pod template a rollback returns to."
    )
    rollout: RolloutProgress | None = Field(default=None, description="The rollout in flight, if any.")
    rejected: list[RejectedRevision] = Field(
        default_factory=list, description="Specs that failed, newest last; capped by rollback.historyLimit."
    )
    monitoring: MonitoringStatus | None = Field(
        default=None, description="The monitor's latest judgement of the serving version."
    )
    previous_baseline: MetricsSnapshot | None = Field(
        default=None,
        description="The baseline of the version served before the current one, kept so a new version is "
        "compared like for like with what it replaced.",
    )
    previous_version: int | None = Field(
        default=None, description="The good version the serving one replaced: where a monitoring rollback returns."
    )
    previous_revision: str | None = Field(default=None, description="Spec hash of the previous version.")
    previous_model_config_json: str | None = Field(
        default=None, description="The model configuration (JSON) of the previous version, loaded again on rollback."
    )
    previous_deployment_revision: int | None = Field(
        default=None, description="Revision of the Triton Deployment while the previous version served."
    )
