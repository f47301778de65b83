"""TrainingJob: versioned training data, training on the shared GPU with GPU memory techniques
(mixed precision, gradient checkpointing, batch size tuning), 8-bit quantization and pruning
behind a quality gate, and the result registered as a model version a ModelDeployment can serve."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictInt, WithJsonSchema

from aiops.api.common import (
    DATA_KEY,
    DEFAULT_SHARED_GPU_RESOURCE,
    DNS_SUBDOMAIN,
    MODEL_NAME,
    EnvVar,
    HostPath,
    ImagePullPolicy,
    ModelRepository,
    OneOf,
    PersistentVolumeClaimPath,
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
from aiops.api.vectorindex import DEFAULT_EMBEDDING_MODEL

FieldType = Literal["string", "integer", "number", "boolean"]
PreprocessingStep = Literal[
    "normalizeWhitespace", "lowercase", "dropEmpty", "dropInvalid", "deduplicate"
]
BuiltinTask = Literal["text-classification"]
MixedPrecision = Literal["auto", "fp16", "bf16", "off"]
ExportFormat = Literal["torchscript", "onnx", "python"]
TrainingJobPhase = Literal[
    "Pending",
    "Invalid",
    "DataValidation",
    "Training",
    "Optimization",
    "Evaluation",
    "Registering",
    "Registered",
    "Failed",
]
StepName = Literal["DataValidation", "Training", "Optimization", "Evaluation", "Registration"]
StepState = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]

BatchSize = Annotated[
    Annotated[StrictInt, Field(ge=1)] | Literal["auto"],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 1,
            "pattern": "^auto$",
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A batch size, or "auto": start large and halve on out-of-memory (batch size tuning)."""


class ConfigMapData(SpecModel):
    """Data in a ConfigMap: every key (or one key) holds rows."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name of the ConfigMap.")
    key: str | None = Field(
        default=None, pattern=DATA_KEY, max_length=253, description="Only this key; unset: all keys."
    )


class DataSource(OneOf):
    """Where the raw data is collected from."""

    one_of: ClassVar[tuple[str, ...]] = ("config_map", "persistent_volume_claim", "uri")
    config_map: ConfigMapData | None = Field(
        default=None, description="Rows in a ConfigMap (small sets)."
    )
    persistent_volume_claim: PersistentVolumeClaimPath | None = Field(
        default=None, description="A file, or a directory of files, in a PVC."
    )
    uri: str | None = Field(
        default=None,
        pattern=r"^(https?|s3|gs)://[!-~]+$",
        max_length=2048,
        description="A file to download (http(s)://, s3:// or gs://).",
    )


class DatasetField(SpecModel):
    """One column every row is checked against."""

    name: str = Field(min_length=1, max_length=128, description="Field name in each row.")
    type: FieldType = Field(description="JSON type the value must have.")
    required: bool = Field(default=True, description="Rows without it (or with null) are invalid.")
    allowed_values: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="For strings: the only values allowed; empty: any.",
    )


class DatasetSchema(SpecModel):
    """The shape of a row."""

    fields: list[DatasetField] = Field(
        min_length=1, max_length=256, description="The fields of a row."
    )


class Dataset(SpecModel):
    """The training data and its shape."""

    source: DataSource = Field(description="Where the raw data is.")
    format: Literal["jsonl", "csv"] = Field(default="jsonl", description="File format of the rows.")
    schema_: DatasetSchema = Field(alias="schema", description="What a valid row looks like.")
    text_field: str = Field(
        default="text", min_length=1, max_length=128, description="The input text field."
    )
    label_field: str = Field(
        default="label", min_length=1, max_length=128, description="The label field."
    )


class Split(SpecModel):
    """Train/validation/test split, reproducible through its random seed."""

    train: float = Field(default=0.8, gt=0, lt=1, description="Fraction of rows for training.")
    validation: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Fraction held out to measure quality before/after optimization.",
    )
    test: float = Field(default=0.0, ge=0, lt=1, description="Fraction held out for a final test.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Shuffle seed.")


class Preprocessing(SpecModel):
    """What happens to raw rows before validation."""

    steps: list[PreprocessingStep] = Field(
        default_factory=lambda: ["normalizeWhitespace", "dropEmpty", "dropInvalid", "deduplicate"],
        max_length=16,
        description="Steps, applied in order.",
    )
    split: Split = Field(default_factory=Split, description="How processed rows are split.")


class DataValidationRules(SpecModel):
    """Checks on the processed data; a failure lists every violation and stores nothing."""

    min_rows: int = Field(default=10, ge=1, le=10**9, description="Fewest rows accepted.")
    max_null_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Largest share of rows with a required field missing."
    )
    max_duplicate_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Largest share of duplicate rows before de-duplication.",
    )
    allowed_labels: list[str] = Field(
        default_factory=list, max_length=1000, description="The only labels accepted; empty: any."
    )
    min_class_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Smallest share of rows any label may have (class balance).",
    )


class TrainingImage(SpecModel):
    """A training container of your own instead of a built-in task."""

    image: str = Field(min_length=1, max_length=512, description="Container image.")
    image_pull_policy: ImagePullPolicy = Field(
        default="IfNotPresent", description="When to pull it."
    )
    command: list[str] = Field(
        default_factory=list, max_length=64, description="Entrypoint; empty: the image's."
    )
    args: list[str] = Field(default_factory=list, max_length=256, description="Arguments.")
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Environment variables."
    )


class Training(OneOf):
    """How the model is trained, with the GPU memory techniques."""

    one_of: ClassVar[tuple[str, ...]] = ("task", "image")
    task: BuiltinTask | None = Field(
        default=None,
        description="Built-in task run by the project's worker; text-classification trains a "
        "classifier head on the base embedding model.",
    )
    image: TrainingImage | None = Field(default=None, description="Your own training container.")
    base_model: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        min_length=1,
        max_length=512,
        description="Model to start from.",
    )
    epochs: int = Field(default=3, ge=1, le=10000, description="Passes over the training split.")
    batch_size: BatchSize = Field(
        default="auto",
        description='Rows per step, or "auto": halve on out-of-memory until it fits.',
    )
    learning_rate: float = Field(default=1e-3, gt=0, le=1, description="Optimizer learning rate.")
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, more time.",
    )
    mixed_precision: MixedPrecision = Field(
        default="auto", description="auto: bf16 or fp16 where the device supports it, else off."
    )
    checkpoint_every_steps: int = Field(
        default=200,
        ge=1,
        le=10**7,
        description="Steps between checkpoints; a restarted Job resumes from the last.",
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Random seed.")


class TrainingResources(SpecModel):
    """Resources of the training Job (seed: training-server, GPU 2 shared, 32 GB)."""

    gpus: int = gpus_field(
        1, "Shared GPUs for the training Job (the reference node's GPU 2); 0 trains on CPU."
    )
    gpu_resource_name: str = gpu_resource_name_field(DEFAULT_SHARED_GPU_RESOURCE)
    memory: Quantity = memory_field("32Gi")
    memory_request: Quantity | None = memory_request_field(None)
    cpu: Quantity | None = cpu_field()


class Quantization(SpecModel):
    """Lowering the precision of the weights."""

    enabled: bool = Field(default=True, description="Quantize the trained model.")
    bits: Literal[8] = Field(
        default=8, description="Weight precision in bits (8-bit integer weights)."
    )


class Pruning(SpecModel):
    """Zeroing the smallest weights."""

    enabled: bool = Field(default=True, description="Prune the trained model.")
    target_sparsity: float = Field(
        default=0.3, ge=0, lt=1, description="Share of weights in Linear layers set to zero."
    )


class Optimization(SpecModel):
    """Optimization behind a quality gate."""

    enabled: bool = Field(default=True, description="Optimize after training.")
    quantization: Quantization = Field(default_factory=Quantization, description="Quantization.")
    pruning: Pruning = Field(default_factory=Pruning, description="Pruning.")
    max_quality_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Largest accepted accuracy drop on the validation split.",
    )
    on_quality_drop_exceeded: Literal["keepUnoptimized", "registerNothing"] = Field(
        default="keepUnoptimized",
        description="When the gate fails: register the unoptimized model, or register nothing. "
        "Either way the job reports the numbers and the condition Optimized=False.",
    )


class Output(SpecModel):
    """Where the result is registered: a model version a ModelDeployment can serve."""

    model_name: str = Field(
        pattern=MODEL_NAME, max_length=128, description="Model name in the repository."
    )
    version: int | None = Field(
        default=None, ge=1, description="Version to register; unset: one above the highest present."
    )
    repository: ModelRepository = Field(description="The Triton model repository to write to.")
    format: ExportFormat = Field(
        default="torchscript",
        description="torchscript or onnx for Triton's backends; python: a Python-backend model.py "
        "that loads the TorchScript file.",
    )


class ManagedWorkspace(SpecModel):
    """A PVC the operator creates for the run and deletes with the TrainingJob."""

    size: Quantity = Field(default="10Gi", description="Size of the claim.")
    storage_class_name: str | None = Field(
        default=None, max_length=253, description="Storage class; unset: the cluster default."
    )


class Workspace(OneOf):
    """Where dataset versions, checkpoints and the trained models live between the steps' Jobs.
    It must outlive a pod: a retried training Job resumes from its checkpoints here."""

    one_of: ClassVar[tuple[str, ...]] = ("persistent_volume_claim", "host_path", "managed")
    persistent_volume_claim: PersistentVolumeClaimPath | None = Field(
        default=None, description="A PVC of your own: dataset versions outlive the TrainingJob."
    )
    host_path: HostPath | None = Field(
        default=None, description="A directory on the node (single-node installs)."
    )
    managed: ManagedWorkspace | None = Field(
        default=None, description="A PVC created for this TrainingJob and deleted with it."
    )


class TrainingJobSpec(SpecModel):
    """Data, training, optimization and output of one training run."""

    dataset: Dataset = Field(description="The training data.")
    preprocessing: Preprocessing = Field(
        default_factory=Preprocessing, description="Preprocessing."
    )
    validation: DataValidationRules = Field(
        default_factory=DataValidationRules, description="Rules the processed data must meet."
    )
    training: Training = Field(description="How to train.")
    resources: TrainingResources = Field(
        default_factory=TrainingResources, description="GPUs and memory of the training Job."
    )
    optimization: Optimization = Field(default_factory=Optimization, description="Optimization.")
    output: Output = Field(description="Where the result goes.")
    workspace: Workspace = Field(
        default_factory=lambda: Workspace(managed=ManagedWorkspace()),
        description="Storage for dataset versions, checkpoints and models between the steps.",
    )
    backoff_limit: int = Field(
        default=2, ge=0, le=20, description="Retries of a failed training Job."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=60, le=30 * 86400, description="Time limit for the whole Job; unset: none."
    )


class DataError(StatusModel):
    """One violation found in the data."""

    row: int | None = Field(default=None, description="Row number (1-based) in the source, if any.")
    field: str | None = Field(default=None, description="Field, if any.")
    message: str = Field(description="What is wrong.")


class DatasetStats(StatusModel):
    """The stored dataset version."""

    rows: int = Field(ge=0, description="Rows after preprocessing.")
    train_rows: int = Field(default=0, ge=0, description="Rows in the training split.")
    validation_rows: int = Field(default=0, ge=0, description="Rows in the validation split.")
    test_rows: int = Field(default=0, ge=0, description="Rows in the test split.")
    checksum: str | None = Field(default=None, description="SHA-256 of the processed data.")
    created_at: datetime | None = Field(default=None, description="When the version was stored.")


class ModelMetrics(StatusModel):
    """Quality, size and speed of a model on the validation split."""

    accuracy: float | None = Field(default=None, description="Accuracy on the validation split.")
    size_bytes: int | None = Field(default=None, ge=0, description="Stored size.")
    latency_ms_batch1: float | None = Field(
        default=None, description="Latency of a batch of 1 (ms)."
    )
    latency_ms_batch32: float | None = Field(
        default=None, description="Latency of a batch of 32 (ms)."
    )
    sparsity: float | None = Field(
        default=None, description="Measured share of zero weights in Linear layers."
    )


class ProducedModel(StatusModel):
    """The registered model version."""

    name: str = Field(description="Model name.")
    version: int = Field(ge=1, description="Version registered.")
    format: str | None = Field(default=None, description="Export format.")
    optimized: bool = Field(
        default=False, description="Whether the optimized model passed the gate and was registered."
    )


class TrainingStats(StatusModel):
    """What the training step reported."""

    epochs: int | None = Field(default=None, description="Epochs completed.")
    steps: int | None = Field(default=None, description="Optimizer steps completed.")
    batch_size: int | None = Field(default=None, description="Batch size in effect (after auto-tuning).")
    samples_per_second: float | None = Field(default=None, description="Training throughput.")
    final_loss: float | None = Field(default=None, description="Loss at the end.")
    resumed_from_step: int | None = Field(default=None, description="Checkpoint step resumed from, if any.")
    device: str | None = Field(default=None, description="cpu or cuda.")
    mixed_precision: str | None = Field(default=None, description="Precision used: off, fp16 or bf16.")


class TrainingProgress(StatusModel):
    """The training step while it runs, from its pod every few seconds."""

    epoch: int | None = Field(default=None, description="Epoch in progress (1-based).")
    epochs: int | None = Field(default=None, description="Epochs to train.")
    steps: int | None = Field(default=None, description="Optimizer steps done.")
    loss: float | None = Field(default=None, description="Mean loss of the epoch so far.")
    samples_per_second: float | None = Field(default=None, description="Training throughput since the pod started.")
    percent: float | None = Field(default=None, description="Share of all epochs done, 0-100.")
    eta_seconds: float | None = Field(default=None, description="Time left at the pod's pace so far.")
    updated_at: datetime | None = Field(default=None, description="When the operator read it.")


class StepStatus(StatusModel):
    """Progress of one step."""

    name: StepName = Field(description="The step.")
    state: StepState = Field(default="Pending", description="Its state.")
    start_time: datetime | None = Field(default=None, description="When it started.")
    completion_time: datetime | None = Field(default=None, description="When it ended.")
    message: str | None = Field(default=None, description="Details.")


class TrainingJobStatus(StatusBase):
    """Dataset version, steps, metrics before and after optimization, and the produced model."""

    phase: TrainingJobPhase = Field(
        default="Pending", description="The step running, or the outcome."
    )
    steps: list[StepStatus] = Field(default_factory=list, description="Progress per step.")
    job: str | None = Field(default=None, description="Name of the Job of the running step.")
    run: str | None = Field(
        default=None, description="Identity of this run (spec and data): its checkpoints and models."
    )
    spec_hash: str | None = Field(
        default=None, description="Hash of the spec this run carries out; a new spec starts a new run."
    )
    training: TrainingStats | None = Field(default=None, description="How training went.")
    progress: TrainingProgress | None = Field(
        default=None, description="The training step's progress, live while it runs (kept when it ends)."
    )
    dataset_version: str | None = Field(
        default=None, description="Content-addressed version of the processed data."
    )
    dataset_stats: DatasetStats | None = Field(
        default=None, description="Rows and checksum of that version."
    )
    validation_errors: list[DataError] = Field(
        default_factory=list,
        max_length=20,
        description="The first 20 data violations, when validation failed.",
    )
    metrics_before: ModelMetrics | None = Field(
        default=None, description="The trained model, unoptimized."
    )
    metrics_after: ModelMetrics | None = Field(default=None, description="The optimized model.")
    quality_drop: float | None = Field(default=None, description="Accuracy lost by optimization.")
    produced_model: ProducedModel | None = Field(default=None, description="What was registered.")
    start_time: datetime | None = Field(default=None, description="When the run started.")
    completion_time: datetime | None = Field(default=None, description="When it ended.")
