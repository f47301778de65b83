"""What each step's result (the worker's JSON, see `aiops worker train`) means for the TrainingJob's
status. Pure functions over the status dict, so the mapping is tested without a cluster."""

from __future__ import annotations

from typing import Any

from aiops.conditions import set_condition

# Worker step -> the status steps it carries out, and the phase shown while it runs.
STEP_NAMES: dict[str, tuple[str, ...]] = {
    "data": ("DataValidation",),
    "train": ("Training",),
    "optimize": ("Optimization", "Evaluation"),
    "register": ("Registration",),
}
STEP_PHASE = {"data": "DataValidation", "train": "Training", "optimize": "Optimization", "register": "Registering"}
ALL_STEPS = tuple(name for names in STEP_NAMES.values() for name in names)
METRIC_KEYS = {"accuracy": "accuracy", "sizeBytes": "sizeBytes", "latencyMsBatch1": "latencyMsBatch1",
               "latencyMsBatch32": "latencyMsBatch32", "sparsity": "sparsity"}
TRAINING_KEYS = ("epochs", "steps", "batchSize", "samplesPerSecond", "finalLoss", "resumedFromStep", "device",
                 "mixedPrecision")


def fresh_steps() -> list[dict[str, Any]]:
    return [{"name": name, "state": "Pending"} for name in ALL_STEPS]


def set_step(status: dict, name: str, state: str, now: str, message: str | None = None) -> None:
    steps = status.setdefault("steps", fresh_steps())
    for step in steps:
        if step["name"] == name:
            if state == "Running" and step.get("state") != "Running":
                step["startTime"] = now
            if state in ("Succeeded", "Failed", "Skipped"):
                step.setdefault("startTime", now)
                step["completionTime"] = now
            step["state"] = state
            if message is not None:
                step["message"] = message[:1024]
            return


def step_state(status: dict, name: str) -> str:
    return next((s.get("state", "Pending") for s in status.get("steps") or [] if s["name"] == name), "Pending")


def worker_step_done(status: dict, worker_step: str) -> bool:
    return all(step_state(status, name) in ("Succeeded", "Skipped") for name in STEP_NAMES[worker_step])


def _metrics(raw: Any) -> dict | None:
    if not isinstance(raw, dict):
        return None
    out = {k: raw[src] for k, src in METRIC_KEYS.items() if raw.get(src) is not None}
    return out or None


def apply_result(status: dict, worker_step: str, result: dict, now: str, generation: int | None) -> list[tuple]:
    """Records a successful step's result in `status`; returns the Events to post."""
    def condition(type_: str, ok: bool, reason: str, message: str) -> None:
        status["conditions"] = set_condition(status.get("conditions"), type_, ok, reason, message, generation)

    events: list[tuple] = []
    if worker_step == "data":
        status["datasetVersion"] = result.get("datasetVersion")
        stats = result.get("stats") or {}
        status["datasetStats"] = {k: stats[k] for k in ("rows", "trainRows", "validationRows", "testRows",
                                                       "checksum", "createdAt") if stats.get(k) is not None}
        status["validationErrors"] = []
        message = (f"dataset version {status['datasetVersion']}: {stats.get('rows', '?')} rows "
                   f"({stats.get('trainRows', '?')} train, {stats.get('validationRows', '?')} validation)")
        set_step(status, "DataValidation", "Succeeded", now, message)
        condition("DataValidated", True, "DatasetStored", message[0].upper() + message[1:] + ".")
        events.append(("Normal", "DatasetStored", message))
    elif worker_step == "train":
        status["training"] = {k: result[k] for k in TRAINING_KEYS if result.get(k) is not None}
        message = (f"{result.get('epochs', '?')} epochs, batch size {result.get('batchSize', '?')}, "
                   f"{result.get('samplesPerSecond', 0):.1f} samples/s on {result.get('device', '?')}, "
                   f"final loss {result.get('finalLoss', float('nan')):.4f}")
        if result.get("resumedFromStep"):
            message += f", resumed from step {result['resumedFromStep']}"
        set_step(status, "Training", "Succeeded", now, message)
        condition("Trained", True, "TrainingSucceeded", f"Trained: {message}.")
        events.append(("Normal", "TrainingSucceeded", message))
    elif worker_step == "optimize":
        events += _apply_optimization(status, result, now, condition)
    elif worker_step == "register":
        model = result.get("model") or {}
        status["producedModel"] = {k: model[k] for k in ("name", "version", "format", "optimized") if k in model}
        message = (f"registered {model.get('name')} version {model.get('version')} "
                   f"({'optimized' if model.get('optimized') else 'unoptimized'}, {model.get('format')})")
        set_step(status, "Registration", "Succeeded", now, message)
        condition("Registered", True, "ModelRegistered", message[0].upper() + message[1:] + ".")
        events.append(("Normal", "ModelRegistered", message))
    return events


def _gate_message(result: dict) -> str:
    before = (result.get("metricsBefore") or {}).get("accuracy")
    after = (result.get("metricsAfter") or {}).get("accuracy")
    drop = result.get("qualityDrop")
    limit = result.get("maxQualityDrop")
    if before is None or after is None:
        return "no accuracy measured"
    text = f"accuracy {before:.4f} -> {after:.4f} (drop {drop if drop is not None else before - after:.4f}"
    return text + (f", limit {limit:g})" if limit is not None else ")")


def record_metrics(status: dict, result: dict) -> None:
    """Before/after figures: reported whether or not the gate passed."""
    if _metrics(result.get("metricsBefore")):
        status["metricsBefore"] = _metrics(result.get("metricsBefore"))
    if _metrics(result.get("metricsAfter")):
        status["metricsAfter"] = _metrics(result.get("metricsAfter"))
    if result.get("qualityDrop") is not None:
        status["qualityDrop"] = result["qualityDrop"]


def _apply_optimization(status: dict, result: dict, now: str, condition) -> list[tuple]:
    record_metrics(status, result)
    passed = result.get("passed")
    if passed == "skipped" or result.get("skipped"):
        set_step(status, "Optimization", "Skipped", now, "optimization is disabled")
        set_step(status, "Evaluation", "Succeeded", now, _gate_message(result))
        condition("Optimized", False, "OptimizationDisabled", "Optimization is disabled in the spec.")
        return []
    set_step(status, "Optimization", "Succeeded", now, _size_message(result))
    gate = _gate_message(result)
    if passed:
        set_step(status, "Evaluation", "Succeeded", now, f"quality gate passed: {gate}")
        condition("Optimized", True, "QualityGatePassed", f"Quality gate passed: {gate}; {_size_message(result)}.")
        return [("Normal", "QualityGatePassed", f"{gate}; {_size_message(result)}")]
    set_step(status, "Evaluation", "Succeeded", now, f"quality gate failed: {gate}; the unoptimized model is kept")
    condition("Optimized", False, "QualityGateFailed",
              f"The optimized model lost too much quality ({gate}); the unoptimized model is registered.")
    return [("Warning", "QualityGateFailed", f"{gate}; registering the unoptimized model")]


def _size_message(result: dict) -> str:
    before = (result.get("metricsBefore") or {}).get("sizeBytes")
    after = (result.get("metricsAfter") or {}).get("sizeBytes")
    sparsity = (result.get("metricsAfter") or {}).get("sparsity")
    parts = []
    if before and after:
        parts.append(f"size {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB ({before / after:.1f}x smaller)")
    if sparsity is not None:
        parts.append(f"sparsity {sparsity:.2f}")
    return ", ".join(parts) or "optimized"


def apply_failure(status: dict, worker_step: str, reason: str, message: str, now: str, result: dict,
                  generation: int | None) -> None:
    """Records a failed step: the step, the phase, the conditions that say why."""
    names = STEP_NAMES[worker_step]
    failed = "Evaluation" if worker_step == "optimize" and reason == "QualityGateFailed" else names[0]
    if worker_step == "optimize":
        record_metrics(status, result)
        if failed == "Evaluation":
            set_step(status, "Optimization", "Succeeded", now, _size_message(result))
    set_step(status, failed, "Failed", now, f"{reason}: {message}")
    if worker_step == "data":
        status["validationErrors"] = [
            {k: e[k] for k in ("row", "field", "message") if e.get(k) is not None}
            for e in (result.get("errors") or [])[:20] if isinstance(e, dict) and e.get("message")]
        if result.get("datasetVersion") is None:
            status.pop("datasetVersion", None)
    status["phase"] = "Failed"
    status["completionTime"] = now
    condition_type = {"data": "DataValidated", "train": "Trained", "optimize": "Optimized",
                      "register": "Registered"}[worker_step]
    status["conditions"] = set_condition(status.get("conditions"), condition_type, False, reason, message,
                                         generation)
    status["conditions"] = set_condition(status.get("conditions"), "Ready", False, reason,
                                         f"Step {failed} failed: {message}", generation)
