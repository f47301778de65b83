"""The TrainingJob's rules: dataset schema, split, labels, optimization and what the built-in
worker can train and register."""

from __future__ import annotations

import math
from collections.abc import Iterator

from aiops.api.common import ModelRepository
from aiops.api.trainingjob import TrainingJobSpec
from aiops.api.validation.base import (
    ClusterFacts,
    Problem,
    duplicates,
    env_rules,
    host_path_rules,
    repository_rules,
    resources_rules,
)


def rules(tj: TrainingJobSpec, facts: ClusterFacts) -> Iterator[Problem]:
    yield from resources_rules(tj.resources, facts)
    yield from repository_rules("spec.output.repository", tj.output.repository, facts)
    if tj.dataset.source.persistent_volume_claim is not None:
        yield from repository_rules(
            "spec.dataset.source",
            ModelRepository(persistent_volume_claim=tj.dataset.source.persistent_volume_claim),
            facts,
        )
    if tj.output.repository.object_store is not None:
        yield Problem(
            "spec.output.repository.objectStore",
            "OutputRepositoryNotWritable",
            "the registration step writes the model version into a mounted repository; an "
            "object store cannot be mounted. Use a persistentVolumeClaim or hostPath repository "
            "(and sync it to object storage yourself if Triton reads from there).",
        )
    yield from host_path_rules("spec.workspace", tj.workspace.host_path, facts)
    workspace = tj.workspace.persistent_volume_claim
    if workspace is not None:
        yield from repository_rules(
            "spec.workspace", ModelRepository(persistent_volume_claim=workspace), facts
        )
    if tj.training.image is not None:
        yield from env_rules("spec.training.image.env", tj.training.image.env)
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
    for name in duplicates(names):
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
    for step in duplicates(tj.preprocessing.steps):
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

