"""The built-in TrainingJob task on the synthetic topic set, trained as the worker trains it: the
model the TrainingJob benches optimize and serve."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TopicRun:
    workspace: Path
    version: str  # the dataset version
    train: dict[str, Any]  # the train step's result
    train_rows: int

    @property
    def run_dir(self) -> Path:
        return self.workspace / "run"

    def split(self, name: str) -> tuple[list[str], list[int], list[str]]:
        """(texts, label indices, labels) of a split: train, validation or test."""
        from aiops.worker.train import dataset_split

        texts, targets, labels, _ = dataset_split(self.workspace, self.version, name)
        return texts, targets, labels


def train_topics(workspace: Path, rows: int, epochs: int = 2) -> TopicRun:
    """`rows` synthetic topic rows stored as a dataset version in `workspace` and a classifier
    trained on their train split into `workspace/run` (batch 16, the task's defaults otherwise)."""
    from aiops.api.trainingjob import TrainingJobSpec
    from aiops.training.dataset import prepare_dataset
    from aiops.training.synthetic import topic_rows
    from aiops.training.train import TrainSettings, train_classifier
    from aiops.worker.train import dataset_split

    (workspace / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in topic_rows(rows, seed=11)))
    spec = TrainingJobSpec.from_wire({
        "dataset": {"source": {"configMap": {"name": "rows"}}, "schema": {"fields": [
            {"name": "text", "type": "string"}, {"name": "label", "type": "string"}]}},
        "training": {"task": "text-classification", "epochs": epochs, "batchSize": 16},
        "output": {"modelName": "topics", "repository": {"hostPath": {"path": "/models"}}}})
    version = prepare_dataset(spec, str(workspace / "rows.jsonl"), workspace)["datasetVersion"]
    texts, targets, labels, _ = dataset_split(workspace, version, "train")
    train = train_classifier(TrainSettings.from_spec(spec.training), texts, targets, labels,
                             workspace / "run", version)
    return TopicRun(workspace, version, train, len(texts))
