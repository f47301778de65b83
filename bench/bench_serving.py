"""The TrainingJob's classifier served through the real Triton, original against optimized, in one run.

A classifier is trained on the synthetic topic set and optimized (30% pruned, int8) by the
TrainingJob's own steps; both versions are written as `register` writes them (format python:
model.py running model.onnx under ONNX Runtime) and loaded into one local tritonserver with the
configuration a ModelDeployment loads (`triton_model_config`), one model name each. Measured:

- resident memory of each loaded model: the RSS of its Python-backend stub process after warm-up,
  less the RSS of a floor model whose model.py imports the same runtime (onnxruntime, tokenizers,
  numpy) and loads nothing. The whole stubs are printed too.
- latency at batch 1 (one client, p50/p99) and at batch 32;
- throughput at batch 1 under concurrent load, with and without dynamic batching;
- the response cache's gain on a request stream with repeats (and its hit rate);
- two instances of one thread against one of two threads, and latency at each graph optimization
  level (the ModelDeployment's spec.serving, loaded as the operator loads it);
- accuracy on the held-out split, through Triton.

Rounds alternate original and optimized so that both see the same machine load; figures are
medians over rounds, with their range. The client runs on the same CPUs as the server (2 cores
here): its cost per request is the same for both versions, so it narrows the ratios rather than
widening them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import figure  # noqa: E402
from topicrun import train_topics  # noqa: E402

ROUNDS = int(os.environ.get("AIOPS_BENCH_SERVING_ROUNDS", "3"))
ROWS = int(os.environ.get("AIOPS_BENCH_SERVING_ROWS", "300"))
SECONDS = float(os.environ.get("AIOPS_BENCH_SERVING_SECONDS", "4"))  # per throughput measurement
CONCURRENCY = 8
LATENCY_REQUESTS = 150
CACHE_DISTINCT = 40  # distinct texts in the cache's request stream
MODELS = ("original", "optimized")
GRAPH_LEVELS = ("none", "basic", "all")

FLOOR_MODEL = '''import numpy as np
import onnxruntime
import tokenizers
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.zeros((1, 1), np.float32))])
                for _ in requests]
'''
FLOOR_CONFIG = '''name: "floor"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1, 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1, 1 ] } ]
'''


def build_repository(root: Path) -> tuple[Path, list[str], list[int], list[str]]:
    """(repository, held-out texts, their label indices, labels): the trained and the optimized
    classifier as model directories `original` and `optimized`, and the floor model."""
    from aiops.api.trainingjob import Optimization
    from aiops.training.export import config_text, write_version
    from aiops.training.optimize import load_model_dir, optimize_run

    ws = root / "workspace"
    ws.mkdir()
    run = train_topics(ws, ROWS)
    val_texts, val_targets, _ = run.split("validation")
    gate = optimize_run(Optimization(), run.run_dir, val_texts, val_targets, "python")
    figure("serving.gate.quality_drop", gate["qualityDrop"], "", f"the optimize step's gate: {gate['message']}")
    repo = root / "models"
    for name, directory in (("original", run.run_dir / "model"), ("optimized", run.run_dir / "optimized")):
        model, tokenizer, info = load_model_dir(directory)
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(config_text(name, "python", len(info["labels"])))
        (repo / name / "labels.txt").write_text("".join(f"{label}\n" for label in info["labels"]))
        write_version(model, tokenizer, info, directory, "python", repo / name / "1")
        figure(f"serving.{name}.file_mib", (repo / name / "1" / "model.onnx").stat().st_size / 2**20, "MiB",
               "model.onnx on disk")
    (repo / "floor" / "1").mkdir(parents=True)
    (repo / "floor" / "config.pbtxt").write_text(FLOOR_CONFIG)
    (repo / "floor" / "1" / "model.py").write_text(FLOOR_MODEL)
    test_texts, test_targets, _ = run.split("test")
    return repo, test_texts or val_texts, test_targets or val_targets, info["labels"]


def stub_rss_mb(repository: Path, model: str) -> float:
    """Summed RSS of the Python-backend stubs serving `model` (one per instance)."""
    total = 0.0
    needle = str(repository / model / "1")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "triton_python_backend_stub" in cmdline and needle in cmdline:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            continue
    return total


def model_spec(cache: bool, batching: bool, instances: int = 1, threads: int = 2, graph: str = "all"):
    from aiops.api.modeldeployment import ModelDeploymentSpec

    return ModelDeploymentSpec.from_wire({
        "model": {"name": "x", "version": 1}, "repository": {"hostPath": {"path": "/models"}},
        "resources": {"gpus": 0},
        "batching": {"enabled": batching, "maxBatchSize": 32},
        "serving": {"instances": instances, "threadsPerInstance": threads, "graphOptimization": graph,
                    "responseCache": {"enabled": cache}}})


async def load(client, repository: Path, name: str, cache: bool, batching: bool, **options) -> None:
    from aiops.builders.triton import triton_model_config
    from aiops.triton.repository import parse_model_config

    base = parse_model_config((repository / name / "config.pbtxt").read_text())
    config = triton_model_config(base, model_spec(cache, batching, **options), [1])
    config["name"] = name
    await client.load_model(name, config=json.dumps(config))


def text_input(texts: list[str]):
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    return [tensor]


async def latencies_ms(client, name: str, texts: list[str], batch: int, count: int) -> list[float]:
    out = []
    for i in range(count):
        chosen = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
        started = time.perf_counter()
        await client.infer(name, text_input(chosen))
        out.append((time.perf_counter() - started) * 1000)
    return out


async def throughput(client, name: str, texts: list[str], batch: int, concurrency: int, seconds: float) -> float:
    """Texts answered per second by `concurrency` clients sending `batch` texts per request."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await client.infer(name, text_input([texts[(i + j) % len(texts)] for j in range(batch)]))
            done += batch
            i += concurrency * batch

    started = time.perf_counter()
    await asyncio.gather(*(worker(k * batch) for k in range(concurrency)))
    return done / (time.perf_counter() - started)


async def cache_stream(client, name: str, texts: list[str], count: int, concurrency: int, salt: str) -> float:
    """Requests per second over a stream drawn from CACHE_DISTINCT texts (Zipf-like repeats).
    `salt` makes the texts new to the server's cache, which outlives a model's reload."""
    rng = np.random.default_rng(3)
    pool = [f"{salt} {t}" for t in texts[:CACHE_DISTINCT]]
    weights = 1 / np.arange(1, len(pool) + 1)
    picks = rng.choice(len(pool), size=count, p=weights / weights.sum())
    queue = list(picks)

    async def worker() -> None:
        while queue:
            await client.infer(name, text_input([pool[queue.pop()]]))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def accuracy(client, name: str, texts: list[str], targets: list[int], labels: list[str]) -> float:
    right = 0
    for i in range(0, len(texts), 32):
        result = await client.infer(name, text_input(texts[i:i + 32]))
        answered = [a.decode() for a in result.as_numpy("LABEL").reshape(-1)]
        right += sum(a == labels[t] for a, t in zip(answered, targets[i:i + 32]))
    return right / len(texts)


async def cache_hits(client, name: str) -> tuple[int, int]:
    stats = await client.get_inference_statistics(name)
    s = stats["model_stats"][0]["inference_stats"]
    return int(s["cache_hit"]["count"]), int(s["cache_miss"]["count"])


async def measure(repository: Path, scratch: Path, texts: list[str], targets: list[int], labels: list[str]) -> None:
    import tritonclient.http.aio as aioclient

    from aiops.builders.triton import cache_args
    from aiops.worker.tritonprocess import LocalTriton

    rounds: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        rounds.setdefault(key, []).append(value)

    server_args = cache_args(model_spec(True, True))
    async with LocalTriton(repository, scratch, server_args, request_timeout=120) as server:
        client = aioclient.InferenceServerClient(server.url, conn_limit=CONCURRENCY * 2)
        try:
            await client.load_model("floor")
            await client.infer("floor", [_floor_input()])
            floor = stub_rss_mb(repository, "floor")
            figure("serving.floor.stub_rss_mib", floor, "MiB", "Python stub with onnxruntime+tokenizers, no model")
            for r in range(ROUNDS):
                for name in (MODELS if r % 2 == 0 else MODELS[::-1]):
                    await load(client, repository, name, cache=False, batching=True)
                    note(f"{name}.load_rss", stub_rss_mb(repository, name) - floor)
                    await latencies_ms(client, name, texts, 32, 5)  # warm-up: allocator and arena
                    await latencies_ms(client, name, texts, 1, 20)
                    rss = stub_rss_mb(repository, name)
                    note(f"{name}.stub_rss", rss)
                    note(f"{name}.model_rss", rss - floor)
                    lat1 = await latencies_ms(client, name, texts, 1, LATENCY_REQUESTS)
                    note(f"{name}.b1_p50", statistics.median(lat1))
                    note(f"{name}.b1_p99", float(np.percentile(lat1, 99)))
                    note(f"{name}.b32_p50", statistics.median(await latencies_ms(client, name, texts, 32, 15)))
                    note(f"{name}.tput_b1_batching", await throughput(client, name, texts, 1, CONCURRENCY, SECONDS))
                    note(f"{name}.tput_b32", await throughput(client, name, texts, 32, 2, SECONDS))
                    if r == 0:
                        note(f"{name}.accuracy", await accuracy(client, name, texts, targets, labels))
                    await load(client, repository, name, cache=False, batching=False)
                    note(f"{name}.tput_b1_plain", await throughput(client, name, texts, 1, CONCURRENCY, SECONDS))
                    stream = int(max(200, 150 * SECONDS))
                    note(f"{name}.stream_plain", await cache_stream(client, name, texts, stream, CONCURRENCY, f"{r}"))
                    await load(client, repository, name, cache=True, batching=True)
                    before = await cache_hits(client, name)
                    note(f"{name}.stream_cache", await cache_stream(client, name, texts, stream, CONCURRENCY, f"{r}"))
                    hits, misses = (a - b for a, b in zip(await cache_hits(client, name), before))
                    note(f"{name}.cache_hit_rate", hits / max(1, hits + misses))
                    await load(client, repository, name, cache=False, batching=True, instances=2, threads=1)
                    note(f"{name}.tput_b1_two_instances",
                         await throughput(client, name, texts, 1, CONCURRENCY, SECONDS))
                    for graph in GRAPH_LEVELS:
                        await load(client, repository, name, cache=False, batching=True, graph=graph)
                        await latencies_ms(client, name, texts, 1, 10)
                        note(f"{name}.b1_p50_graph_{graph}",
                             statistics.median(await latencies_ms(client, name, texts, 1, LATENCY_REQUESTS)))
                    await client.unload_model(name)
        finally:
            await client.close()
    report(rounds, len(texts))


def _floor_input():
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("IN", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1), np.float32))
    return tensor


def report(rounds: dict[str, list[float]], test_rows: int) -> None:
    def med(key: str) -> float:
        return statistics.median(rounds[key])

    def spread(key: str) -> str:
        values = rounds[key]
        return f"median of {len(values)}, range {min(values):.3g}-{max(values):.3g}"

    for name in MODELS:
        figure(f"serving.{name}.model_rss_mib", med(f"{name}.model_rss"), "MiB",
               f"stub {med(f'{name}.stub_rss'):.0f} MiB less the floor; {spread(f'{name}.model_rss')}")
        figure(f"serving.{name}.loaded_rss_mib", med(f"{name}.load_rss"), "MiB",
               f"right after load, before any request, less the floor; {spread(f'{name}.load_rss')}")
        figure(f"serving.{name}.latency_b1_p50", med(f"{name}.b1_p50"), "ms", spread(f"{name}.b1_p50"))
        figure(f"serving.{name}.latency_b1_p99", med(f"{name}.b1_p99"), "ms", spread(f"{name}.b1_p99"))
        figure(f"serving.{name}.latency_b32_p50", med(f"{name}.b32_p50"), "ms", spread(f"{name}.b32_p50"))
        figure(f"serving.{name}.throughput_b1", med(f"{name}.tput_b1_batching"), "1/s",
               f"{CONCURRENCY} clients, dynamic batching; {spread(f'{name}.tput_b1_batching')}")
        figure(f"serving.{name}.throughput_b1_no_batching", med(f"{name}.tput_b1_plain"), "1/s",
               f"{CONCURRENCY} clients; {spread(f'{name}.tput_b1_plain')}")
        figure(f"serving.{name}.throughput_b32", med(f"{name}.tput_b32"), "1/s",
               f"texts/s, 2 clients of 32; {spread(f'{name}.tput_b32')}")
        figure(f"serving.{name}.batching_gain", med(f"{name}.tput_b1_batching") / med(f"{name}.tput_b1_plain"), "x",
               "batch-1 throughput with / without dynamic batching")
        figure(f"serving.{name}.cache_gain", med(f"{name}.stream_cache") / med(f"{name}.stream_plain"), "x",
               f"requests/s with / without the response cache, {CACHE_DISTINCT} distinct texts, "
               f"hit rate {med(f'{name}.cache_hit_rate'):.2f}")
        figure(f"serving.{name}.instances_gain", med(f"{name}.tput_b1_two_instances") / med(f"{name}.tput_b1_batching"),
               "x", "batch-1 throughput, 2 instances x 1 thread / 1 instance x 2 threads, dynamic batching")
        for graph in GRAPH_LEVELS:
            figure(f"serving.{name}.latency_b1_p50_graph_{graph}", med(f"{name}.b1_p50_graph_{graph}"), "ms",
                   f"graphOptimization {graph}; {spread(f'{name}.b1_p50_graph_{graph}')}")
        figure(f"serving.{name}.accuracy", med(f"{name}.accuracy"), "", f"{test_rows} held-out rows, through Triton")
    figure("serving.ratio.model_rss", med("optimized.model_rss") / med("original.model_rss"), "x",
           "optimized / original after warm-up (weights + ONNX Runtime's arena), goal <= 0.4")
    figure("serving.ratio.loaded_rss", med("optimized.load_rss") / med("original.load_rss"), "x",
           "optimized / original right after load")
    figure("serving.ratio.stub_rss", med("optimized.stub_rss") / med("original.stub_rss"), "x",
           "whole stub processes, runtime included")
    figure("serving.ratio.throughput_b1", med("optimized.tput_b1_batching") / med("original.tput_b1_batching"), "x",
           "optimized / original, goal >= 1.5")
    figure("serving.ratio.throughput_b32", med("optimized.tput_b32") / med("original.tput_b32"), "x",
           "optimized / original, goal >= 1")
    figure("serving.ratio.latency_b1_p50", med("optimized.b1_p50") / med("original.b1_p50"), "x",
           "optimized / original")
    figure("serving.accuracy_drop", med("original.accuracy") - med("optimized.accuracy"), "",
           "original - optimized, held-out split through Triton (maxQualityDrop default 0.02)")


def main() -> None:
    from aiops.devenv.tritonruntime import put_triton_on_path

    why = put_triton_on_path()
    if why:
        raise SystemExit(f"no tritonserver: {why}")
    root = Path(tempfile.mkdtemp(prefix="aiops-bench-serving-"))
    try:
        repository, texts, targets, labels = build_repository(root)
        (root / "scratch").mkdir()
        asyncio.run(measure(repository, root / "scratch", texts, targets, labels))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
