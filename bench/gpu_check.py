"""What the project's GPU paths do on a real NVIDIA GPU, in one run of a few minutes.

    bench/gpu_check.sh [--device cuda|cpu] [--quick] [--budget-s S]

1. NVML through the monitoring adapter (`aiops.monitoring.gpu.NvmlReader` on nvidia-ml-py): per
   device its name, UUID, and utilisation and memory read by UUID as monitoring reads a serving
   pod's devices; a UUID the machine lacks reads as nothing.
2. Embeddings: the worker's embedder with the packaged MiniLM on the device against the CPU on
   the same passages: documents/s of each and the cosine of the two vectors of each passage.
3. Training: the TrainingJob's built-in task on the device, mixed precision "auto" (bf16 where
   the GPU has it): time, samples/s, peak torch.cuda.max_memory_allocated, validation accuracy;
   then one epoch on the CPU for the throughput ratio, when the time budget leaves room.
4. The optimized model: the optimize step (pruned + int8) as the worker runs it, then both models
   loaded as `optimize` loads them, on the device: latency p50 at batch 1 and 32 and the accuracy
   drop; and the TorchScript that `register` exports, loaded as Triton's Python backend loads it
   (map_location to the device), against the eager model; the served ONNX graphs (fp32 and the
   int8 one the gate measured) under ONNX Runtime on the device, where its provider is there.
5. 2:4 structured sparsity (CUDA, compute capability 8.0+): a Linear weight pruned 2 of every 4
   through torch's semi-structured sparse kernels against the same dense fp16 matmul, at MiniLM's
   feed-forward size and at an LLM's (4096 x 4096): speed-up and the largest difference.

Each figure is printed as it is measured, then a summary table to paste into the README.
Exit codes: 0 every check passed; 1 a check failed (named in the summary); 2 no usable NVIDIA GPU
(the one line on stderr says why). `--device cpu` runs every step on the CPU with small sizes, so
the code paths run on machines without a GPU; `--quick` makes them smaller still (the unit test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model only: never the network
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import figure as print_figure  # noqa: E402

COSINE_FLOOR = 0.999
SERVED_TOLERANCE = 1e-3  # probabilities, TorchScript vs eager, both fp32
EMBED_BATCH = 64


@dataclass(frozen=True)
class Sizes:
    documents: int  # passages embedded on each device
    rows: int  # synthetic topic rows, 80% train / 20% validation (at most 630 distinct)
    epochs: int
    batch_size: int | str
    reference_epochs: int  # the CPU training reference (throughput only); 0 skips it
    runs_batch1: int
    runs_batch32: int


SIZES = {
    "cuda": Sizes(documents=4000, rows=600, epochs=3, batch_size="auto", reference_epochs=1,
                  runs_batch1=100, runs_batch32=30),
    "cpu": Sizes(documents=256, rows=150, epochs=1, batch_size=16, reference_epochs=1, runs_batch1=10, runs_batch32=3),
    "quick": Sizes(documents=48, rows=45, epochs=1, batch_size=16, reference_epochs=1, runs_batch1=3, runs_batch32=2),
}


@dataclass
class CheckRun:
    """What a run measured: figures by name, checks by name (passed, detail), and the exit code."""

    figures: dict[str, Any] = field(default_factory=dict)
    units: dict[str, tuple[str, str]] = field(default_factory=dict)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    exit_code: int = 0

    def figure(self, name: str, value: Any, unit: str = "", note: str = "") -> None:
        print_figure(name, value, unit, note)
        self.figures[name] = value
        self.units[name] = (unit, note)

    def check(self, name: str, passed: bool, detail: str) -> None:
        print(f"check {name}: {'ok' if passed else 'FAILED'} ({detail})", flush=True)
        self.checks[name] = (passed, detail)

    @property
    def failed(self) -> list[str]:
        return [name for name, (passed, _) in self.checks.items() if not passed]


# ---- 1. NVML -------------------------------------------------------------------------------------

def nvml_probe(nvml) -> tuple[int, str | None]:
    """(device count, why NVML is unusable or None)."""
    try:
        nvml.nvmlInit()
        return nvml.nvmlDeviceGetCount(), None
    except Exception as e:  # NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        return 0, f"{type(e).__name__}: {e}"


def nvml_section(run: CheckRun, nvml, required: bool) -> None:
    from aiops.monitoring.gpu import NvmlReader

    count, error = nvml_probe(nvml)
    run.figure("nvml.devices", count, "", error or "nvidia-ml-py through aiops.monitoring.gpu.NvmlReader")
    if required:
        run.check("nvml.available", count > 0, error or f"{count} device(s)")
    reader = NvmlReader(nvml)
    for i in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        name, uuid = str(nvml.nvmlDeviceGetName(handle)), str(nvml.nvmlDeviceGetUUID(handle))
        run.figure(f"nvml.gpu{i}.name", name, "", uuid)
        reading = reader.read([uuid]).get(uuid)
        if reading is None or reading.utilization is None or reading.memory_used_bytes is None:
            run.check(f"nvml.gpu{i}.reader", False, f"NvmlReader.read([{uuid}]) answered {reading}")
            continue
        run.figure(f"nvml.gpu{i}.utilization", 100.0 * reading.utilization, "%", "NvmlReader.read([uuid])")
        run.figure(f"nvml.gpu{i}.memory_used", reading.memory_used_bytes / 2**30, "GiB",
                   f"of {reading.memory_total_bytes / 2**30:.1f} GiB "
                   f"({100.0 * reading.memory_used_bytes / reading.memory_total_bytes:.1f}%)")
        run.check(f"nvml.gpu{i}.not_found_is_absent", reader.read(["GPU-00000000-0000-0000-0000-000000000000"]) == {},
                  "a UUID this machine does not have reads as nothing, never another device")
        by_uuid = nvml.nvmlDeviceGetHandleByUUID(uuid)
        index_back, uuid_back = nvml.nvmlDeviceGetIndex(by_uuid), str(nvml.nvmlDeviceGetUUID(by_uuid))
        run.check(f"nvml.gpu{i}.by_uuid", (index_back, uuid_back) == (i, uuid),
                  f"nvmlDeviceGetHandleByUUID({uuid}) is index {index_back}, UUID {uuid_back}")


# ---- 2. embeddings --------------------------------------------------------------------------------

def timed_encode(embedder, texts: list[str]) -> tuple[Any, float]:
    embedder.encode(texts[:EMBED_BATCH])  # warm-up: CUDA context, kernels, allocator
    started = time.perf_counter()
    vectors = embedder.encode(texts)  # returns host arrays: the device work is finished
    return vectors, time.perf_counter() - started


def embedding_section(run: CheckRun, device: str, sizes: Sizes) -> None:
    import numpy as np

    from aiops.vectors.embedder import Embedder
    from vectorcorpus import MODEL, passages

    texts = [p["text"] for p in passages(sizes.documents)]
    on_device, device_s = timed_encode(Embedder(MODEL, device=device, batch_size=EMBED_BATCH), texts)
    on_cpu, cpu_s = timed_encode(Embedder(MODEL, device="cpu", batch_size=EMBED_BATCH), texts)
    note = f"{len(texts)} passages, batch {EMBED_BATCH}, aiops.vectors.embedder"
    run.figure(f"embed.{device}.docs_per_s", len(texts) / device_s, "docs/s",
               note + (", fp16 autocast" if device == "cuda" else ""))
    run.figure("embed.cpu_reference.docs_per_s", len(texts) / cpu_s, "docs/s", note + ", fp32")
    run.figure("embed.speedup", cpu_s / device_s, "x", f"{device} / cpu docs/s")
    norms = np.linalg.norm(on_device, axis=1) * np.linalg.norm(on_cpu, axis=1)
    cosine = float(((on_device * on_cpu).sum(axis=1) / norms).min())
    run.figure("embed.min_cosine", cosine, "", f"{device} vs cpu vectors, worst of {len(texts)}")
    run.check("embed.vectors_agree", cosine >= COSINE_FLOOR, f"min cosine {cosine:.6f}, floor {COSINE_FLOOR}")


# ---- 3. training ----------------------------------------------------------------------------------

@dataclass
class TrainedRun:
    run_dir: Path
    val_texts: list[str]
    val_targets: list[int]


def training_spec(sizes: Sizes):
    from aiops.api.trainingjob import TrainingJobSpec

    return TrainingJobSpec.from_wire({
        "dataset": {"source": {"configMap": {"name": "rows"}}, "schema": {"fields": [
            {"name": "text", "type": "string"}, {"name": "label", "type": "string"}]}},
        "training": {"task": "text-classification", "epochs": sizes.epochs, "batchSize": sizes.batch_size,
                     "mixedPrecision": "auto"},
        "output": {"modelName": "topics", "repository": {"hostPath": {"path": "/models"}}}})


def device_batches(tokenizer, texts: list[str], batch_size: int, max_length: int, device) -> list[dict]:
    from aiops.training.model import tokenize

    return [{k: v.to(device) for k, v in tokenize(tokenizer, texts[i:i + batch_size], max_length).items()}
            for i in range(0, len(texts), batch_size)]


def device_accuracy(model, tokenizer, texts: list[str], targets: list[int], max_length: int, device) -> float:
    """evaluate.accuracy, with the batches on the model's device (evaluate's stay on the CPU)."""
    import torch

    with torch.no_grad():
        predicted = [p for batch in device_batches(tokenizer, texts, 32, max_length, device)
                     for p in model(**batch).argmax(-1).tolist()]
    return sum(p == t for p, t in zip(predicted, targets)) / len(targets)


def training_section(run: CheckRun, device, sizes: Sizes, work: Path, deadline: float) -> TrainedRun:
    import torch

    from aiops.training.dataset import prepare_dataset
    from aiops.training.model import load_classifier
    from aiops.training.synthetic import topic_rows
    from aiops.training.train import TrainSettings, train_classifier
    from aiops.worker.train import dataset_split

    spec = training_spec(sizes)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in topic_rows(sizes.rows, seed=11)))
    version = prepare_dataset(spec, str(work / "rows.jsonl"), work)["datasetVersion"]
    texts, targets, labels, _ = dataset_split(work, version, "train")
    val_texts, val_targets, _, _ = dataset_split(work, version, "validation")
    settings = TrainSettings.from_spec(spec.training)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = train_classifier(settings, texts, targets, labels, work / "runs" / "device", version, device=device)
    elapsed = time.perf_counter() - started
    note = f"{len(texts)} rows x {sizes.epochs} epoch(s), batch {result['batchSize']}, {result['mixedPrecision']}"
    run.figure(f"train.{device.type}.seconds", elapsed, "s", note + ", model load and save included")
    run.figure(f"train.{device.type}.samples_per_s", result["samplesPerSecond"], "1/s", "training loop only")
    if device.type == "cuda":
        run.figure("train.peak_memory", torch.cuda.max_memory_allocated() / 2**20, "MiB",
                   "torch.cuda.max_memory_allocated")
    else:
        run.figure("train.peak_memory", "n/a", "", "torch.cuda.max_memory_allocated: CUDA only")
    model, tokenizer, info = load_classifier(work / "runs" / "device" / "model")
    accuracy = device_accuracy(model.to(device), tokenizer, val_texts, val_targets, info["maxLength"], device)
    run.figure("train.accuracy", accuracy, "", f"{len(val_texts)} validation rows, on {device.type}")
    run.check("train.device", result["device"] == device.type, f"trained on {result['device']}")
    if sizes.reference_epochs:
        cpu_reference(run, replace(settings, epochs=sizes.reference_epochs, batch_size=result["batchSize"]),
                      (texts, targets, labels, version), work, result, deadline)
    else:
        run.figure("train.cpu_reference.samples_per_s", "skipped", "", "not run in this mode")
    return TrainedRun(work / "runs" / "device", val_texts, val_targets)


def cpu_reference(run: CheckRun, settings, data: tuple, work: Path, on_device: dict, deadline: float) -> None:
    """The same rows and batch size on the CPU for the throughput ratio, skipped when less than
    two minutes of the budget are left (the CPU can be tens of times slower than the GPU)."""
    import torch

    from aiops.training.train import train_classifier

    left = deadline - time.monotonic()
    if left < 120:
        run.figure("train.cpu_reference.samples_per_s", "skipped", "", f"{left:.0f}s of the time budget left")
        return
    texts, targets, labels, version = data
    result = train_classifier(settings, texts, targets, labels, work / "runs" / "cpu", version,
                              device=torch.device("cpu"))
    run.figure("train.cpu_reference.samples_per_s", result["samplesPerSecond"], "1/s",
               f"{settings.epochs} epoch(s), batch {result['batchSize']}, {result['mixedPrecision']}")
    run.figure("train.speedup", on_device["samplesPerSecond"] / result["samplesPerSecond"], "x",
               f"{on_device['device']} ({on_device['mixedPrecision']}) / cpu samples/s")


# ---- 4. the optimized model -----------------------------------------------------------------------

def device_latencies_ms(model, batches: list[dict], device) -> list[float]:
    """Wall times of one forward pass per batch, after two warm-up passes (Int8Linear dequantizes
    on its first call); synchronized, so the GPU's queued work is inside the time."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    with torch.no_grad():
        model(**batches[0])
        model(**batches[-1])
        for batch in batches:
            sync()
            started = time.perf_counter()
            model(**batch)
            sync()
            times.append((time.perf_counter() - started) * 1000)
    return times


def latency_batches(tokenizer, texts: list[str], batch_size: int, runs: int, max_length: int, device) -> list[dict]:
    pool = [texts[i % len(texts)] for i in range(batch_size * runs)]
    return device_batches(tokenizer, pool, batch_size, max_length, device)


def optimized_section(run: CheckRun, device, sizes: Sizes, trained: TrainedRun) -> None:
    from aiops.api.trainingjob import Optimization
    from aiops.training.optimize import load_model_dir, optimize_run
    from aiops.training.quantize import clear_caches

    gate = optimize_run(Optimization(), trained.run_dir, trained.val_texts, trained.val_targets)
    run.figure("optimize.size_ratio", gate["sizeRatio"], "x", "on disk, whole model: pruned 30% + int8")
    run.figure("optimize.gate_quality_drop", gate["qualityDrop"], "", "the optimize step's own gate (on CPU)")
    models = {}
    for name in ("original", "optimized"):
        model, tokenizer, info = load_model_dir(trained.run_dir / ("model" if name == "original" else name))
        models[name] = model.to(device).eval()
        clear_caches(models[name])  # dequantized copies are rebuilt on the device
    max_length = info["maxLength"]
    accuracy = {name: device_accuracy(m, tokenizer, trained.val_texts, trained.val_targets, max_length, device)
                for name, m in models.items()}
    run.figure(f"optimize.{device.type}.accuracy_original", accuracy["original"], "",
               f"{len(trained.val_texts)} validation rows")
    run.figure(f"optimize.{device.type}.accuracy_drop", accuracy["original"] - accuracy["optimized"], "",
               "original - optimized, both on the device")
    for batch_size, runs in ((1, sizes.runs_batch1), (32, sizes.runs_batch32)):
        batches = latency_batches(tokenizer, trained.val_texts, batch_size, runs, max_length, device)
        p50 = {name: statistics.median(device_latencies_ms(m, batches, device)) for name, m in models.items()}
        for name in models:
            run.figure(f"optimize.{device.type}.latency_batch{batch_size}.{name}", p50[name], "ms",
                       f"p50 of {runs}, fp32")
        run.figure(f"optimize.{device.type}.latency_batch{batch_size}.ratio", p50["optimized"] / p50["original"],
                   "x", "optimized / original")
    served_section(run, device, trained, models["optimized"], tokenizer, max_length)
    onnx_section(run, device, sizes, trained, models["original"], tokenizer, max_length)


def onnx_section(run: CheckRun, device, sizes: Sizes, trained: TrainedRun, original, tokenizer,
                 max_length: int) -> None:
    """The graphs Triton serves for the python and onnx formats (fp32 and the int8 one the gate
    measured) under ONNX Runtime on the device: on CUDA that needs onnxruntime-gpu's provider."""
    import onnxruntime as ort

    from aiops.training.onnxform import ONNX_FILE, write_served

    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    available = ort.get_available_providers()
    run.check(f"optimize.onnx.{device.type}_provider", provider in available,
              f"{provider} {'is' if provider in available else 'is not'} in {available}"
              + ("" if provider in available else ": the Triton image needs onnxruntime-gpu for this"))
    if provider not in available:
        return
    write_served(original.cpu(), tokenizer, max_length, False, trained.run_dir / "original.onnx")
    graphs = {"original": trained.run_dir / "original.onnx", "optimized": trained.run_dir / "optimized" / ONNX_FILE}
    sessions = {name: ort.InferenceSession(str(path), providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])))
                for name, path in graphs.items()}
    for batch_size, runs in ((1, sizes.runs_batch1), (32, sizes.runs_batch32)):
        batches = latency_batches(tokenizer, trained.val_texts, batch_size, runs, max_length, torch_cpu())
        p50 = {}
        for name, session in sessions.items():
            feeds = [{k: v.numpy() for k, v in b.items()} for b in batches]
            session.run(None, feeds[0])
            times = []
            for feed in feeds:
                started = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - started) * 1000)
            p50[name] = statistics.median(times)
            run.figure(f"optimize.onnx.{device.type}.latency_batch{batch_size}.{name}", p50[name], "ms",
                       f"p50 of {runs}, ONNX Runtime {provider}")
        run.figure(f"optimize.onnx.{device.type}.latency_batch{batch_size}.ratio", p50["optimized"] / p50["original"],
                   "x", "int8 / fp32 graph")


def torch_cpu():
    import torch

    return torch.device("cpu")


def served_section(run: CheckRun, device, trained: TrainedRun, eager, tokenizer, max_length: int) -> None:
    """The optimized model as `register` exports it (TorchScript) and as the Triton Python backend
    loads it (torch.jit.load with map_location), against the eager model on the same batch."""
    import torch

    from aiops.training.export import trace
    from aiops.training.optimize import load_model_dir

    fresh, _, _ = load_model_dir(trained.run_dir / "optimized")  # trace() scripts the int8 modules in place
    path = trained.run_dir / "served-model.pt"
    try:
        trace(fresh, tokenizer, max_length).save(str(path))
        served = torch.jit.load(str(path), map_location=device).eval()
        batch = device_batches(tokenizer, trained.val_texts, 32, max_length, device)[0]
        with torch.no_grad():
            got = served(batch["input_ids"], batch["attention_mask"]).float()
            expected = torch.softmax(eager(**batch).float(), dim=-1)
    except Exception as e:  # noqa: BLE001 - a traced graph pinned to the CPU fails here: report it
        run.check("optimize.served_form", False, first_line(e))
        return
    diff = float((got - expected).abs().max())
    same_labels = bool((got.argmax(-1) == expected.argmax(-1)).all())
    run.figure(f"optimize.{device.type}.served_max_abs_diff", diff, "", "TorchScript vs eager probabilities")
    run.check("optimize.served_form", diff <= SERVED_TOLERANCE and same_labels,
              f"max abs diff {diff:.2e} (tolerance {SERVED_TOLERANCE}), same labels: {same_labels}")


def semi_structured_section(run: CheckRun, device, sizes: Sizes) -> None:
    import torch
    import torch.nn.functional as F

    if device.type != "cuda":
        print_figure("sparsity.2to4", 0, "", "skipped: 2:4 kernels exist for CUDA only")
        return
    capability = torch.cuda.get_device_capability(device)
    run.check("sparsity.2to4.supported", capability >= (8, 0), f"compute capability {capability} (8.0+ needed)")
    if capability < (8, 0):
        return
    from torch.sparse import to_sparse_semi_structured

    for label, (rows, cols, tokens) in {"minilm": (1536, 384, 32 * 128), "llm": (4096, 4096, 4096)}.items():
        weight = torch.randn(rows, cols, dtype=torch.float16, device=device)
        groups = weight.abs().reshape(rows, cols // 4, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, groups.topk(2, dim=2).indices, True)
        weight = weight * keep.reshape(rows, cols)
        x = torch.randn(tokens, cols, dtype=torch.float16, device=device)
        sparse = to_sparse_semi_structured(weight)
        times = {}
        for name, w in (("dense", weight), ("sparse", sparse)):
            for _ in range(3):
                F.linear(x, w)
            torch.cuda.synchronize(device)
            samples = []
            for _ in range(max(10, sizes.runs_batch32 * 5)):
                started = time.perf_counter()
                F.linear(x, w)
                torch.cuda.synchronize(device)
                samples.append((time.perf_counter() - started) * 1000)
            times[name] = statistics.median(samples)
        diff = float((F.linear(x, sparse) - F.linear(x, weight)).abs().max())
        run.figure(f"sparsity.2to4.{label}.speedup", times["dense"] / times["sparse"], "x",
                   f"{rows}x{cols} weight, {tokens} tokens, fp16: dense {times['dense']:.3f} ms")
        run.check(f"sparsity.2to4.{label}.same_result", diff <= 0.05 * cols ** 0.5, f"max abs diff {diff:.3g}")


# ---- the run --------------------------------------------------------------------------------------

def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"


def guarded(run: CheckRun, section: str, step, *args):
    """One section's result; a section that raises is a failed check and the next one still runs
    (a lent GPU machine's minutes are too few to lose the rest of the figures to one error)."""
    try:
        return step(*args)
    except Exception as e:  # noqa: BLE001 - reported as a failed check, with the traceback above it
        traceback.print_exc()
        run.check(f"{section}.ran", False, first_line(e))
        return None


def no_gpu_reason(nvml) -> str | None:
    """None when torch can use a CUDA device; else why not, NVML's view included."""
    import torch

    count, error = nvml_probe(nvml)
    if torch.cuda.is_available():
        return None
    build = f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None \
        else f"torch {torch.__version__} built for CUDA {torch.version.cuda}"
    seen = error if error else f"{count} device(s) visible"
    return f"NVML: {seen}; torch.cuda.is_available() is False ({build})"


def summary(run: CheckRun, device: str, elapsed: float) -> None:
    print(f"\n## GPU check summary ({device}, {elapsed:.0f} s)\n\n| figure | value | unit | note |\n|---|---|---|---|")
    for name, value in run.figures.items():
        unit, note = run.units[name]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"| {name} | {shown} | {unit} | {note} |")
    print("\n| check | result | detail |\n|---|---|---|")
    for name, (passed, detail) in run.checks.items():
        print(f"| {name} | {'ok' if passed else 'FAILED'} | {detail} |")
    print(f"\n{len(run.checks) - len(run.failed)} of {len(run.checks)} checks passed"
          + (f"; failed: {', '.join(run.failed)}" if run.failed else ""), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default; exit 2 without a GPU) or cpu: every step on the CPU, small sizes")
    parser.add_argument("--quick", action="store_true", help="the smallest sizes (the unit test's run)")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="time budget; the CPU training reference is skipped when it runs short")
    return parser.parse_args(argv)


def main(argv: list[str]) -> CheckRun:
    import pynvml  # nvidia-ml-py

    args = parse_args(argv)
    run = CheckRun()
    if args.device == "cuda":
        reason = no_gpu_reason(pynvml)
        if reason:
            print(f"gpu_check: no NVIDIA GPU found: {reason}. `--device cpu` runs the steps on the CPU.",
                  file=sys.stderr, flush=True)
            run.exit_code = 2
            return run
    import torch

    torch.manual_seed(0)
    started = time.monotonic()
    device = torch.device(args.device)
    sizes = SIZES["quick" if args.quick else args.device]
    guarded(run, "nvml", nvml_section, run, pynvml, args.device == "cuda")
    guarded(run, "embed", embedding_section, run, args.device, sizes)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        trained = guarded(run, "train", training_section, run, device, sizes, Path(tmp), started + args.budget_s)
        if trained is not None:
            guarded(run, "optimize", optimized_section, run, device, sizes, trained)
    guarded(run, "sparsity", semi_structured_section, run, device, sizes)
    summary(run, args.device, time.monotonic() - started)
    run.exit_code = 1 if run.failed else 0
    return run


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]).exit_code)
