"""A TrainingJob's figures as Prometheus series (aiops.metrics): how long its last run and each of
its steps took, the trained and optimized model's accuracy and size, the quality the optimization
cost, and the training throughput. Read from the status after each pass, so they hold across
operator restarts; a figure the status does not have has no series, never a 0."""

from __future__ import annotations

import datetime as dt
from typing import get_args

from aiops import metrics
from aiops.api.trainingjob import StepName

MODELS = (("metricsBefore", "trained"), ("metricsAfter", "optimized"))


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _seconds(start: str | None, end: str | None, now: dt.datetime | None = None) -> float | None:
    begun, ended = _time(start), _time(end) or now
    return (ended - begun).total_seconds() if begun and ended else None


def _set(gauge, value: float | None, **labels: str) -> None:
    if value is None:
        try:
            gauge.remove(*labels.values())
        except KeyError:
            pass
    else:
        gauge.labels(**labels).set(value)


def publish(namespace: str, name: str, status: dict, now: dt.datetime | None = None) -> None:
    """Sets (or clears) the TrainingJob's series from its status (wire form)."""
    key = {"namespace": namespace, "name": name}
    phase = status.get("phase")
    finished = phase in ("Registered", "Failed")
    _set(metrics.TRAINING_RUN_SECONDS, _seconds(status.get("startTime"), status.get("completionTime"),
                                                None if finished else (now or dt.datetime.now(dt.UTC))), **key)
    _set(metrics.TRAINING_SUCCEEDED, (1.0 if phase == "Registered" else 0.0) if finished else None, **key)
    steps = {s["name"]: s for s in status.get("steps") or []}
    for step in get_args(StepName):  # a step this run has not ended yet has no series
        times = steps.get(step) or {}
        _set(metrics.TRAINING_STEP_SECONDS, _seconds(times.get("startTime"), times.get("completionTime")),
             **key, step=step)
    for field, model in MODELS:
        figures = status.get(field) or {}
        _set(metrics.TRAINING_ACCURACY, figures.get("accuracy"), **key, model=model)
        _set(metrics.TRAINING_SIZE, figures.get("sizeBytes"), **key, model=model)
    _set(metrics.TRAINING_QUALITY_DROP, status.get("qualityDrop"), **key)
    _set(metrics.TRAINING_THROUGHPUT, (status.get("training") or {}).get("samplesPerSecond"), **key)
