"""The `optimize` step: prune and quantize the trained classifier, measure both models
on the validation split, and gate on the accuracy drop.

The optimized model goes to `<run>/optimized/` whatever the gate says (the numbers are worth
keeping); `<run>/optimize-result.json` records the verdict that `register` follows. The gate
measures what will serve: for the `python` and `onnx` formats the ONNX graph that `register`
copies into the repository (`optimized/model.onnx`, int8 under ONNX Runtime) against the trained
model's fp32 graph under the same runtime; for `torchscript`, the int8 torch modules it traces.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from safetensors import safe_open

from aiops.api.trainingjob import Optimization
from aiops.training.evaluate import measure
from aiops.training.model import TextClassifier, empty_classifier, load_classifier, read_info, save_classifier
from aiops.training.onnxform import ONNX_FILE, OnnxClassifier, write_served
from aiops.training.quantize import install_packed, linear_sparsity, pack_state, prune_linear_l1

OPTIMIZED_WEIGHTS = "weights.int8.safetensors"
RESULT_FILE = "optimize-result.json"


def load_optimized(model_dir: Path) -> tuple[TextClassifier, Any, dict[str, Any]]:
    model, tokenizer, info = empty_classifier(model_dir)
    with safe_open(str(model_dir / info["weights"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        metadata = f.metadata() or {}
    return install_packed(model, tensors, metadata).eval(), tokenizer, info


def load_model_dir(model_dir: Path) -> tuple[TextClassifier, Any, dict[str, Any]]:
    """Either kind of saved classifier."""
    optimized = "optimization" in read_info(model_dir)
    return load_optimized(model_dir) if optimized else load_classifier(model_dir)


def gate_message(before: float, after: float, drop: float, limit: float) -> str:
    return (f"validation accuracy {before:.4f} before and {after:.4f} after optimization: a drop of "
            f"{drop:.4f}, {'within' if drop <= limit else 'above'} maxQualityDrop {limit}")


def optimize_run(opt: Optimization, run_dir: Path, texts: list[str], targets: list[int],
                 fmt: str = "python") -> dict[str, Any]:
    """The step's result; also written to `run_dir/optimize-result.json`."""
    model_dir = run_dir / "model"
    model, tokenizer, info = load_classifier(model_dir)
    max_length = info["maxLength"]
    quantize, prune = opt.quantization.enabled, opt.pruning.enabled
    if not opt.enabled or not (quantize or prune):
        before = measure(model, tokenizer, texts, targets, model_dir / info["weights"], max_length)
        result = {"ok": True, "passed": False, "skipped": True, "metricsBefore": before, "metricsAfter": None,
                  "qualityDrop": None, "message": "optimization disabled: the unoptimized model is the result"}
        return _recorded(run_dir, result)
    served_onnx = fmt != "torchscript"
    if served_onnx:
        with tempfile.TemporaryDirectory(dir=run_dir) as work:
            original = Path(work) / ONNX_FILE
            write_served(model, tokenizer, max_length, False, original)
            before = measure(OnnxClassifier(original), tokenizer, texts, targets, original, max_length, 0.0)
    else:
        before = measure(model, tokenizer, texts, targets, model_dir / info["weights"], max_length)
    if prune:
        prune_linear_l1(model, opt.pruning.target_sparsity)
    sparsity = linear_sparsity(model)
    tensors, metadata = pack_state(model, quantize=quantize, sparse=prune)
    settings = {"int8": quantize, "targetSparsity": opt.pruning.target_sparsity if prune else 0.0}
    extra = (lambda d: write_served(model, tokenizer, max_length, quantize, d / ONNX_FILE)) if served_onnx else None
    save_classifier(model, tokenizer, {**info, "optimization": settings}, run_dir / "optimized", tensors,
                    OPTIMIZED_WEIGHTS, metadata, extra)
    if served_onnx:
        served = run_dir / "optimized" / ONNX_FILE
        after = measure(OnnxClassifier(served), tokenizer, texts, targets, served, max_length, sparsity)
    else:
        optimized, _, _ = load_optimized(run_dir / "optimized")
        after = measure(optimized, tokenizer, texts, targets, run_dir / "optimized" / OPTIMIZED_WEIGHTS, max_length)
    drop = round(before["accuracy"] - after["accuracy"], 6)
    passed = drop <= opt.max_quality_drop
    message = gate_message(before["accuracy"], after["accuracy"], drop, opt.max_quality_drop)
    result = {"ok": True, "passed": passed, "metricsBefore": before, "metricsAfter": after, "qualityDrop": drop,
              "maxQualityDrop": opt.max_quality_drop, "sizeRatio": round(before["sizeBytes"] / after["sizeBytes"], 3),
              "servedForm": "onnxruntime" if served_onnx else "torchscript", "message": message}
    if not passed:
        if opt.on_quality_drop_exceeded == "registerNothing":
            result |= {"ok": False, "reason": "QualityGateFailed", "message": f"{message}; registering nothing"}
        else:
            result["message"] = f"{message}; the unoptimized model will be registered"
    return _recorded(run_dir, result)


def _recorded(run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def recorded_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT_FILE
    return json.loads(path.read_text()) if path.exists() else None
