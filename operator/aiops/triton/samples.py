"""Validation samples as tensors, and the comparison of a model's answers with what they expect.

Shared by the pre-deploy validation worker and the operator's health check, so a version is held
to the same standard before and after it is deployed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from aiops.api.modeldeployment import ExpectedOutput, GenerateRequest, SampleTensor, TextExpectation, ValidationSample

NUMPY_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def to_numpy(tensor: SampleTensor) -> np.ndarray:
    """The sample's data in its declared type and shape (BYTES as an object array of bytes)."""
    if tensor.data_type == "BF16":
        raise ValueError(f"tensor {tensor.name!r}: BF16 samples cannot be sent from numpy; use FP32")
    if tensor.data_type == "BYTES":
        flat = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in tensor.data], dtype=np.object_)
    else:
        flat = np.asarray(tensor.data, dtype=NUMPY_TYPES[tensor.data_type])
    expected = int(np.prod(tensor.shape))
    if flat.size != expected:
        raise ValueError(f"tensor {tensor.name!r}: {flat.size} values do not fill shape {tensor.shape}")
    return flat.reshape(tensor.shape)


def output_mismatch(expected: ExpectedOutput, actual: np.ndarray | None) -> str | None:
    """None when `actual` is what `expected` asks for; else a short explanation."""
    if actual is None:
        return f"output {expected.name!r} missing from the response"
    if list(actual.shape) != list(expected.shape):
        return f"output {expected.name!r} has shape {list(actual.shape)}, expected {list(expected.shape)}"
    want = to_numpy(expected)
    if expected.data_type == "BYTES":
        got = [v.decode() if isinstance(v, bytes) else str(v) for v in actual.reshape(-1)]
        wanted = [v.decode() for v in want.reshape(-1)]
        if got != wanted:
            return f"output {expected.name!r} is {got[:4]}, expected {wanted[:4]}"
        return None
    diff = np.abs(actual.astype(np.float64) - want.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    if not np.isfinite(worst) or worst > expected.tolerance:
        return (f"output {expected.name!r} differs by up to {worst:.6g} "
                f"(tolerance {expected.tolerance:g})")
    return None


@dataclass(frozen=True)
class SampleResult:
    sample: str
    passed: bool
    detail: str = ""
    latency_ms: float | None = None
    first_chunk_ms: float | None = None  # generation samples: time to the first streamed chunk
    chunks: int | None = None  # generation samples: responses the answer came in


def text_answer(request: GenerateRequest, text: str) -> str:
    """The generated text alone: vLLM's non-streamed answer repeats the prompt first (unless
    exclude_input_in_output), a stream never does."""
    if not request.stream and text.startswith(request.prompt):
        return text[len(request.prompt):]
    return text


def text_mismatch(expected: TextExpectation, text: str) -> str | None:
    """None when `text` satisfies every check of `expected`; else what it fails, with the text."""
    shown = text if len(text) <= 200 else text[:200] + "..."
    if expected.exact is not None and text.strip() != expected.exact.strip():
        return f"generated {shown!r}, expected exactly {expected.exact.strip()!r}"
    missing = [c for c in expected.contains if c not in text]
    if missing:
        return f"generated {shown!r}, which lacks {', '.join(map(repr, missing))}"
    if expected.regex is not None and re.search(expected.regex, text) is None:
        return f"generated {shown!r}, which does not match {expected.regex!r}"
    return None


def judge_text(sample: ValidationSample, text: str) -> SampleResult:
    problem = text_mismatch(sample.expected_text, text) if sample.expected_text is not None else None
    return SampleResult(sample.name, problem is None, problem or "")


def judge(sample: ValidationSample, outputs: Mapping[str, np.ndarray]) -> SampleResult:
    """Compares every expected output of one sample; the first mismatch is the detail."""
    for expected in sample.expected_outputs:
        problem = output_mismatch(expected, outputs.get(expected.name))
        if problem:
            return SampleResult(sample.name, False, problem)
    return SampleResult(sample.name, True)


def accuracy(results: list[SampleResult]) -> float | None:
    return sum(r.passed for r in results) / len(results) if results else None


def meets_accuracy(results: list[SampleResult], min_accuracy: float | None) -> bool:
    """Unset minimum: every sample must pass."""
    if not results:
        return True
    score = accuracy(results)
    return score == 1.0 if min_accuracy is None else score >= min_accuracy
