"""The three kinds as the API server knows them: names, short names, printer columns, models."""

from __future__ import annotations

from dataclasses import dataclass

from aiops.api.common import GROUP, SpecModel, StatusModel
from aiops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from aiops.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from aiops.api.vectorindex import VectorIndexSpec, VectorIndexStatus

CATEGORIES = ("aiops",)
# Children take their names from the object plus a suffix (e.g. "-triton", "-milvus-0",
# "-ingest-1a2b3c"), and Services need RFC 1035 labels (at most 63 characters, starting with a
# letter): so object names start with a letter and leave room for the suffix.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 48


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict:
        column = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


def condition_column(condition: str) -> PrinterColumn:
    return PrinterColumn(
        condition,
        "string",
        f'.status.conditions[?(@.type=="{condition}")].status',
        f"Status of the {condition} condition.",
    )


PHASE = PrinterColumn("Phase", "string", ".status.phase", "Where the object stands.")
AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[SpecModel]
    status_model: type[StatusModel]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = CATEGORIES
    # The scale subresource (`kubectl scale`, HorizontalPodAutoscaler): its paths, or None.
    scale: dict[str, str] | None = None

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


MODEL_DEPLOYMENT = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    singular="modeldeployment",
    short_names=("mdep",),
    spec_model=ModelDeploymentSpec,
    status_model=ModelDeploymentStatus,
    printer_columns=(
        PrinterColumn("Model", "string", ".spec.model.name", "Model name."),
        PrinterColumn(
            "Version", "integer", ".spec.model.version", "Version asked for in the spec."
        ),
        PrinterColumn("Serving", "integer", ".status.servingVersion", "Version serving traffic."),
        PrinterColumn("Replicas", "integer", ".spec.replicas", "Triton pods asked for."),
        PrinterColumn("Available", "integer", ".status.readyReplicas", "Triton pods ready."),
        PHASE,
        condition_column("Ready"),
        condition_column("Degraded"),
        PrinterColumn("GPUs", "integer", ".spec.resources.gpus", "GPUs per Triton pod."),
        PrinterColumn("Endpoint", "string", ".status.endpoints.http", "HTTP inference endpoint.", 1),
        AGE,
    ),
    scale={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
           "labelSelectorPath": ".status.selector"},
)

VECTOR_INDEX = KindInfo(
    kind="VectorIndex",
    plural="vectorindexes",
    singular="vectorindex",
    short_names=("vidx",),
    spec_model=VectorIndexSpec,
    status_model=VectorIndexStatus,
    printer_columns=(
        PrinterColumn("Collection", "string", ".spec.collection.name", "Milvus collection."),
        PrinterColumn("Index", "string", ".spec.index.type", "Index type."),
        PrinterColumn("Docs", "integer", ".status.documents.ingested", "Documents ingested."),
        PrinterColumn("Recall", "number", ".status.index.recallAtK", "Recall@k last measured on the live index."),
        PrinterColumn("Progress", "number", ".status.progress.percent", "Running ingest, percent done.", 1),
        PHASE,
        condition_column("Ready"),
        AGE,
    ),
)

TRAINING_JOB = KindInfo(
    kind="TrainingJob",
    plural="trainingjobs",
    singular="trainingjob",
    short_names=("tjob",),
    spec_model=TrainingJobSpec,
    status_model=TrainingJobStatus,
    printer_columns=(
        PrinterColumn("Dataset", "string", ".status.datasetVersion", "Dataset version trained on."),
        PHASE,
        PrinterColumn("Progress", "number", ".status.progress.percent", "Training, percent of all epochs done."),
        PrinterColumn("Loss", "number", ".status.progress.loss", "Mean loss of the epoch in progress.", 1),
        PrinterColumn("Model", "string", ".status.producedModel.name", "Model registered."),
        PrinterColumn("Version", "integer", ".status.producedModel.version", "Version registered."),
        PrinterColumn("Drop", "number", ".status.qualityDrop", "Accuracy lost by optimization.", 1),
        AGE,
    ),
)

KINDS: tuple[KindInfo, ...] = (MODEL_DEPLOYMENT, VECTOR_INDEX, TRAINING_JOB)


def kind_info(kind: str) -> KindInfo:
    """Looks a kind up by its kind, plural, singular or short name."""
    for info in KINDS:
        if kind in (info.kind, info.plural, info.singular, *info.short_names):
            return info
    raise KeyError(f"unknown kind {kind!r}; known: {', '.join(i.kind for i in KINDS)}")
