"""The TrainingJob task on CPU with the real packaged MiniLM: what optimization buys and what
gradient checkpointing costs, each measured in one run.

1. Optimized vs original: a classifier trained on the synthetic topic set, then pruned
   to 30% and quantized to int8 (`aiops.training.optimize`). Size on disk (the served graphs, and
   the registry's packed Linear layers alone), latency at batch 1 and 32 of the served graphs under
   ONNX Runtime in this process (medians over alternating rounds, so both models see the same
   machine load), validation accuracy delta. bench_serving.py measures them through Triton.
2. Training: throughput with and without gradient checkpointing, and the peak memory of
   each, in fresh subprocesses (max RSS over the RSS after loading; tracemalloc does not see
   torch's allocator; torch.cuda.max_memory_allocated is used instead where CUDA exists), plus the
   exact bytes autograd saved for backward per step. All six encoder layers train here with
   128-token rows, so activations, what checkpointing trades, dominate. Also bf16 autocast against
   fp32 on this CPU: the measurement behind mixedPrecision "auto" being off on CPU.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import figure  # noqa: E402
from topicrun import train_topics  # noqa: E402

ROUNDS = 3
THROUGHPUT_STEPS = 4
TRAINING_ROUNDS = 2
THROUGHPUT_BATCH = 16


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child_training(checkpointing: bool, bf16: bool) -> None:
    """One subprocess: train THROUGHPUT_STEPS steps and print {samples_per_s, peak_mb, saved_mb};
    the first step (warm-up, and where saved bytes are counted) is not timed."""
    import torch
    import torch.nn.functional as F

    from aiops.training.synthetic import topic_rows
    from aiops.training.train import TrainSettings, build_optimizer, collate, prepare_model

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = TrainSettings("all-MiniLM-L6-v2", gradient_checkpointing=checkpointing, trainable_layers=6)
    model, tokenizer = prepare_model(settings, 3, device)
    optimizer = build_optimizer(model, 1e-3)
    rows = topic_rows(THROUGHPUT_BATCH * THROUGHPUT_STEPS, seed=9)
    long_texts = [" ".join([r["text"]] * 12) for r in rows]  # truncated at 128 tokens
    encoded = tokenizer(long_texts, truncation=True, max_length=128)["input_ids"]
    targets = torch.tensor([0, 1, 2] * (len(rows) // 3 + 1))[: len(rows)].to(device)
    batches = [list(range(i, i + THROUGHPUT_BATCH)) for i in range(0, len(rows), THROUGHPUT_BATCH)]
    base_rss = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    saved: list[int] = []
    started = 0.0
    for n, idx in enumerate(batches):
        if n == 1:
            started = time.perf_counter()
        batch = collate(encoded, idx, tokenizer.pad_token_id, device)
        count = (lambda t: saved.append(t.numel() * t.element_size()) or t) if n == 0 else (lambda t: t)
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(**batch).float(), targets[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - started
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    print(json.dumps({"samples_per_s": (len(rows) - THROUGHPUT_BATCH) / elapsed, "peak_mb": peak,
                      "saved_mb": sum(saved) / 2**20, "device": device.type}))


def training_figures() -> None:
    runs: dict[str, list[dict]] = {}
    for round_ in range(TRAINING_ROUNDS):  # alternated, best throughput kept: the CPU is shared
        for mode in ("plain", "checkpointing", "bf16") if round_ == 0 else ("plain", "checkpointing"):
            out = subprocess.run([sys.executable, __file__, "--child-training", mode],
                                 capture_output=True, text=True, check=True)
            runs.setdefault(mode, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {mode: {**r[0], "samples_per_s": max(x["samples_per_s"] for x in r),
                      "peak_mb": max(x["peak_mb"] for x in r)} for mode, r in runs.items()}
    note = (f"batch {THROUGHPUT_BATCH}, 128 tokens, 6 layers trainable, {results['plain']['device']}, "
            f"best of {TRAINING_ROUNDS}")
    for label in ("plain", "checkpointing"):
        r = results[label]
        figure(f"training.{label}.samples_per_s", r["samples_per_s"], "1/s", note)
        figure(f"training.{label}.peak_memory", r["peak_mb"], "MiB",
               "max RSS over RSS after load" if r["device"] == "cpu" else "torch.cuda.max_memory_allocated")
        figure(f"training.{label}.saved_activations", r["saved_mb"], "MiB", "bytes autograd saved, one step")
    figure("training.checkpointing.throughput_ratio",
           results["checkpointing"]["samples_per_s"] / results["plain"]["samples_per_s"], "x", "with / without")
    figure("training.bf16_autocast.throughput_ratio",
           results["bf16"]["samples_per_s"] / results["plain"]["samples_per_s"], "x",
           "bf16 autocast / fp32 here; auto stays off on CPU: set bf16 where this is > 1")


def optimization_figures() -> None:
    from safetensors.torch import save_file

    from aiops.api.trainingjob import Optimization
    from aiops.training.evaluate import latency_samples_ms
    from aiops.training.model import load_classifier
    from aiops.training.onnxform import ONNX_FILE, OnnxClassifier, write_served
    from aiops.training.optimize import optimize_run
    from aiops.training.quantize import linear_names, pack_state, prune_linear_l1

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        run = train_topics(ws, 150)
        figure("training.default.samples_per_s", run.train["samplesPerSecond"], "1/s",
               f"{run.train_rows} rows x 2 epochs, batch 16, top 2 layers trainable, {run.train['device']}")
        val_texts, val_targets, _ = run.split("validation")
        result = optimize_run(Optimization(), ws / "run", val_texts, val_targets)
        before, after = result["metricsBefore"], result["metricsAfter"]
        figure("optimize.size_ratio", before["sizeBytes"] / after["sizeBytes"], "x",
               f"{before['sizeBytes'] / 2**20:.1f} -> {after['sizeBytes'] / 2**20:.1f} MiB, served model.onnx")
        model, tokenizer, _ = load_classifier(ws / "run" / "model")
        linear = {f"{n}.weight" for n in linear_names(model)}
        save_file({k: v for k, v in model.state_dict().items() if k in linear}, str(ws / "dense.safetensors"))
        prune_linear_l1(model, 0.3)
        packed, _ = pack_state(model, quantize=True, sparse=True)
        save_file({k: v for k, v in packed.items() if k.rsplit(".", 1)[0] in linear}, str(ws / "sparse.safetensors"))
        figure("optimize.linear_size_ratio",
               (ws / "dense.safetensors").stat().st_size / (ws / "sparse.safetensors").stat().st_size, "x",
               "Linear weights: fp32 dense vs int8 non-zeros + bitmask")
        figure("optimize.sparsity", after["sparsity"], "", "measured share of zero Linear weights (target 0.3)")
        figure("optimize.accuracy_before", before["accuracy"], "", f"{len(val_texts)} validation rows")
        figure("optimize.accuracy_delta", after["accuracy"] - before["accuracy"], "", "after - before")
        trained, tokenizer, _ = load_classifier(ws / "run" / "model")
        write_served(trained, tokenizer, 128, False, ws / "original.onnx")
        original, optimized = OnnxClassifier(ws / "original.onnx"), OnnxClassifier(ws / "run" / "optimized" / ONNX_FILE)
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(ROUNDS):
            for name, m in (("original", original), ("optimized", optimized)):
                for batch in (1, 32):
                    times.setdefault((name, batch), []).extend(
                        latency_samples_ms(m, tokenizer, val_texts, batch, 3 if batch > 1 else 10, 128))
        for batch in (1, 32):
            for name in ("original", "optimized"):
                figure(f"optimize.latency_batch{batch}.{name}", statistics.median(times[(name, batch)]), "ms",
                       f"median; best {min(times[(name, batch)]):.3g} ms")
            figure(f"optimize.latency_batch{batch}.ratio",
                   min(times[("optimized", batch)]) / min(times[("original", batch)]), "x",
                   "best optimized / best original (the CPU is shared); ONNX Runtime, int8 kernels vs fp32")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child-training":
        child_training(checkpointing=sys.argv[2] == "checkpointing", bf16=sys.argv[2] == "bf16")
    else:
        optimization_figures()
        training_figures()
