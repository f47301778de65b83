"""A TrainingJob's figures as Prometheus series, read from its status; and every per-object series
going with its object."""

from __future__ import annotations

import datetime as dt

from prometheus_client import REGISTRY

from aiops import metrics
from aiops.trainingrun.figures import publish

KEY = {"namespace": "ml", "name": "tickets"}
FINISHED = {
    "phase": "Registered", "startTime": "2026-12-01T10:00:00Z", "completionTime": "2026-12-01T10:05:30Z",
    "steps": [{"name": "DataValidation", "state": "Succeeded", "startTime": "2026-12-01T10:00:00Z",
               "completionTime": "2026-12-01T10:00:20Z"},
              {"name": "Training", "state": "Succeeded", "startTime": "2026-12-01T10:00:20Z",
               "completionTime": "2026-12-01T10:04:00Z"},
              {"name": "Optimization", "state": "Pending"}],
    "metricsBefore": {"accuracy": 0.93, "sizeBytes": 4_000_000},
    "metricsAfter": {"accuracy": 0.92, "sizeBytes": 1_100_000},
    "qualityDrop": 0.01, "training": {"samplesPerSecond": 850.5},
}


def value(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {**KEY, **labels})


def test_a_finished_run_shows_its_durations_quality_and_sizes():
    publish("ml", "tickets", FINISHED)
    assert value("aiops_trainingjob_run_duration_seconds") == 330
    assert value("aiops_trainingjob_step_duration_seconds", step="Training") == 220
    assert value("aiops_trainingjob_step_duration_seconds", step="Optimization") is None  # never ran
    assert value("aiops_trainingjob_model_accuracy_ratio", model="optimized") == 0.92
    assert value("aiops_trainingjob_model_size_bytes", model="trained") == 4_000_000
    assert value("aiops_trainingjob_quality_drop_ratio") == 0.01
    assert value("aiops_trainingjob_samples_per_second") == 850.5
    assert value("aiops_trainingjob_succeeded") == 1
    metrics.forget("TrainingJob", "ml", "tickets")


def test_a_new_run_clears_the_last_ones_figures_until_it_has_its_own():
    publish("ml", "tickets", FINISHED)
    running = {"phase": "Training", "startTime": "2026-12-01T11:00:00Z",
               "steps": [{"name": "DataValidation", "startTime": "2026-12-01T11:00:00Z",
                          "completionTime": "2026-12-01T11:00:10Z"}]}
    publish("ml", "tickets", running, now=dt.datetime(2026, 12, 1, 11, 1, tzinfo=dt.UTC))
    assert value("aiops_trainingjob_run_duration_seconds") == 60  # so far
    assert value("aiops_trainingjob_succeeded") is None
    assert value("aiops_trainingjob_model_accuracy_ratio", model="optimized") is None
    assert value("aiops_trainingjob_step_duration_seconds", step="DataValidation") == 10
    assert value("aiops_trainingjob_step_duration_seconds", step="Training") is None
    metrics.forget("TrainingJob", "ml", "tickets")


def test_a_deleted_object_takes_its_series_with_it_and_no_other():
    publish("ml", "tickets", FINISHED)
    publish("ml", "other", FINISHED)
    metrics.VECTOR_RECALL.labels(namespace="ml", name="tickets").set(0.97)
    metrics.forget("TrainingJob", "ml", "tickets")
    assert value("aiops_trainingjob_model_size_bytes", model="optimized") is None
    assert value("aiops_trainingjob_step_duration_seconds", step="Training") is None
    assert REGISTRY.get_sample_value("aiops_trainingjob_succeeded", {"namespace": "ml", "name": "other"}) == 1
    assert value("aiops_vectorindex_recall_ratio") == 0.97  # another kind's object of the same name
    metrics.forget("VectorIndex", "ml", "tickets")
    assert value("aiops_vectorindex_recall_ratio") is None
    metrics.forget("TrainingJob", "ml", "other")
