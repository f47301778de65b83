"""Quality, size and speed of a classifier on a split: what the quality gate compares."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from aiops.training.model import tokenize
from aiops.training.quantize import linear_sparsity

LATENCY_RUNS_BATCH1 = 15
LATENCY_RUNS_BATCH32 = 5


@torch.no_grad()
def predict(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 32) -> list[int]:
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        out.extend(model(**tokenize(tokenizer, texts[i:i + batch_size], max_length)).argmax(-1).tolist())
    return out


def accuracy(model: Any, tokenizer: Any, texts: list[str], targets: list[int], max_length: int) -> float:
    predicted = predict(model, tokenizer, texts, max_length)
    return sum(p == t for p, t in zip(predicted, targets)) / len(targets) if targets else 0.0


def latency_ms(model: Any, tokenizer: Any, texts: list[str], batch_size: int, runs: int,
               max_length: int) -> float:
    """Median wall time of one forward pass over `batch_size` texts."""
    return statistics.median(latency_samples_ms(model, tokenizer, texts, batch_size, runs, max_length))


@torch.no_grad()
def latency_samples_ms(model: Any, tokenizer: Any, texts: list[str], batch_size: int, runs: int,
                       max_length: int) -> list[float]:
    """Wall times of `runs` forward passes over `batch_size` texts each (tokenized beforehand: the
    tokenizer is the same before and after optimization), after two warm-up passes (TorchScript
    modules optimise their graph on the second call)."""
    texts = texts or ["x"]
    pool = [texts[i % len(texts)] for i in range(batch_size * runs)]
    batches = [tokenize(tokenizer, pool[i * batch_size:(i + 1) * batch_size], max_length) for i in range(runs)]
    model(**batches[0])
    model(**batches[-1])
    times = []
    for batch in batches:
        started = time.perf_counter()
        model(**batch)
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure(model: Any, tokenizer: Any, texts: list[str], targets: list[int], weights_file: Path,
            max_length: int, sparsity: float | None = None) -> dict[str, Any]:
    """The metrics of one model (a torch module, or anything called like one: an ONNX Runtime
    session), in the result's wire names. `sparsity`: the Linear layers' share of zeros, where the
    model cannot tell (a graph)."""
    model.eval()
    return {"accuracy": round(accuracy(model, tokenizer, texts, targets, max_length), 6),
            "sizeBytes": weights_file.stat().st_size,
            "latencyMsBatch1": round(latency_ms(model, tokenizer, texts, 1, LATENCY_RUNS_BATCH1, max_length), 3),
            "latencyMsBatch32": round(latency_ms(model, tokenizer, texts, 32, LATENCY_RUNS_BATCH32, max_length), 3),
            "sparsity": round(linear_sparsity(model) if sparsity is None else sparsity, 6)}
