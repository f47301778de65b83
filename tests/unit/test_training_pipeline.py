"""The whole built-in TrainingJob task through `aiops worker train` (data -> train -> optimize ->
register) on the real packaged MiniLM, CPU: convergence, int8 + 30% pruning sizes and sparsity, the
quality gate under both policies, idempotent registration, and the exported Python-backend model
answering in the real local tritonserver."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from safetensors.torch import load_file, save_file

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.triton import cache_args, triton_model_config
from aiops.training.datastore import SPLITS
from aiops.training.evaluate import predict
from aiops.training.export import trace
from aiops.training.model import Probabilities, load_classifier, tokenize
from aiops.training.onnxform import ONNX_FILE, OnnxClassifier, int8_initializers
from aiops.training.optimize import load_optimized
from aiops.training.quantize import linear_names, pack_state, prune_linear_l1
from aiops.training.register import file_sha256
from aiops.training.synthetic import topic_rows
from aiops.triton.repository import check_model_version, parse_model_config
from aiops.worker.train import dataset_split
from aiops.worker.train import main as worker_main
from aiops.worker.tritonprocess import LocalTriton

# How far the served int8 graph's probabilities may stray from the trained model's, at most (measured
# 0.022); on average they may stray a fifth of it (measured 0.0056).
MAX_DIFFERENCE = 0.06
FIELDS = [{"name": "text", "type": "string"}, {"name": "label", "type": "string"}]


def wire_spec(**sections) -> dict:
    spec = {"dataset": {"source": {"configMap": {"name": "rows"}}, "schema": {"fields": FIELDS}},
            "training": {"task": "text-classification", "epochs": 3, "batchSize": 8, "seed": 5},
            "output": {"modelName": "topics", "format": "python", "repository": {"hostPath": {"path": "/models"}}}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


class Pipeline:
    def __init__(self, root: Path):
        self.root, self.workspace, self.repo = root, root / "w", root / "models"

    def step(self, step: str, spec: dict, **options: str) -> tuple[int, dict]:
        spec_file = self.root / f"spec-{step}.json"
        spec_file.write_text(json.dumps(spec))
        result = self.root / f"result-{step}.json"
        argv = [step, "--spec", str(spec_file), "--workspace", str(self.workspace), "--result", str(result)]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", value]
        code = worker_main(argv)
        assert len(result.read_bytes()) < 3000
        return code, json.loads(result.read_text())

    def run_dir(self, run: str) -> Path:
        return self.workspace / "runs" / run


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    p = Pipeline(tmp_path_factory.mktemp("pipeline"))
    (p.root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in topic_rows(60, seed=5)))
    code, p.data = p.step("data", wire_spec(), source=str(p.root / "rows.jsonl"))
    assert code == 0, p.data
    p.version = p.data["datasetVersion"]
    code, p.train = p.step("train", wire_spec(), dataset_version=p.version, run="run1")
    assert code == 0, p.train
    code, p.optimize = p.step("optimize", wire_spec(), dataset_version=p.version, run="run1")
    assert code == 0, p.optimize
    code, p.register = p.step("register", wire_spec(), repository=str(p.repo), run="run1")
    assert code == 0, p.register
    return p


def test_training_converges(pipeline):
    t = pipeline.train
    assert t["ok"] and t["epochs"] == 3 and t["steps"] == 3 * 6 and t["batchSize"] == 8  # 48 rows
    assert t["device"] == "cpu" and t["mixedPrecision"] == "off" and t["resumedFromStep"] == 0
    assert t["finalLoss"] < 0.3 and t["samplesPerSecond"] > 0  # from ln(3) = 1.1 at chance
    assert pipeline.optimize["metricsBefore"]["accuracy"] >= 0.9
    assert (pipeline.run_dir("run1") / "model" / "weights.safetensors").exists()


def test_optimized_model_is_int8_pruned_and_smaller(pipeline, tmp_path):
    o = pipeline.optimize
    before, after = o["metricsBefore"], o["metricsAfter"]
    assert o["passed"] and o["qualityDrop"] == pytest.approx(before["accuracy"] - after["accuracy"], abs=1e-6)
    assert before["sparsity"] == 0 and abs(after["sparsity"] - 0.30) <= 0.01
    assert before["sizeBytes"] / after["sizeBytes"] >= 3
    assert all(after[k] > 0 for k in ("latencyMsBatch1", "latencyMsBatch32"))
    # Linear layers alone, on disk: fp32 dense against int8 values of the non-zeros plus a bitmask.
    model, _, _ = load_classifier(pipeline.run_dir("run1") / "model")
    linear = {f"{n}.weight" for n in linear_names(model)}
    save_file({k: v for k, v in model.state_dict().items() if k in linear}, str(tmp_path / "dense.safetensors"))
    prune_linear_l1(model, 0.3)
    packed, _ = pack_state(model, quantize=True, sparse=True)
    save_file({k: v for k, v in packed.items() if k.rsplit(".", 1)[0] in linear}, str(tmp_path / "sparse.safetensors"))
    ratio = (tmp_path / "dense.safetensors").stat().st_size / (tmp_path / "sparse.safetensors").stat().st_size
    assert ratio >= 3, ratio
    # The stored file really is sparse int8 and loads back to the same zeros.
    stored = load_file(str(pipeline.run_dir("run1") / "optimized" / "weights.int8.safetensors"))
    assert stored["head.weight.values"].dtype == torch.int8 and "head.weight.mask" in stored
    optimized, _, _ = load_optimized(pipeline.run_dir("run1") / "optimized")
    assert optimized.encoder.encoder.layer[0].attention.self.query.weight_int8.dtype == torch.int8


@pytest.mark.parametrize("policy", ["registerNothing", "keepUnoptimized"])
def test_quality_gate_fails_when_the_limit_is_below_the_real_drop(pipeline, policy):
    run = f"gate-{policy}"
    shutil.copytree(pipeline.run_dir("run1") / "model", pipeline.run_dir(run) / "model")
    # 90% sparsity really costs accuracy; a limit of 0 is below any real drop.
    spec = wire_spec(optimization={"pruning": {"targetSparsity": 0.9}, "maxQualityDrop": 0.0,
                                   "onQualityDropExceeded": policy})
    code, result = pipeline.step("optimize", spec, dataset_version=pipeline.version, run=run)
    assert result["passed"] is False and result["qualityDrop"] > 0
    assert result["qualityDrop"] == pytest.approx(
        result["metricsBefore"]["accuracy"] - result["metricsAfter"]["accuracy"], abs=1e-6)
    assert abs(result["metricsAfter"]["sparsity"] - 0.9) <= 0.01
    code_reg, registered = pipeline.step("register", spec, repository=str(pipeline.root / f"repo-{policy}"), run=run)
    if policy == "registerNothing":
        assert code == 1 and result["ok"] is False and result["reason"] == "QualityGateFailed"
        assert "maxQualityDrop 0.0" in result["message"]
        assert code_reg == 1 and registered["reason"] == "QualityGateFailed"
        assert not (pipeline.root / f"repo-{policy}").exists()
    else:
        assert code == 0 and result["ok"] is True and "unoptimized model will be registered" in result["message"]
        assert code_reg == 0 and registered["model"]["optimized"] is False


def test_disabled_optimization_is_skipped(pipeline):
    run = "no-optimization"
    shutil.copytree(pipeline.run_dir("run1") / "model", pipeline.run_dir(run) / "model")
    code, result = pipeline.step("optimize", wire_spec(optimization={"enabled": False}),
                                 dataset_version=pipeline.version, run=run)
    assert code == 0 and result["skipped"] and result["passed"] is False and result["metricsAfter"] is None


def test_register_is_idempotent_and_never_overwrites(pipeline):
    first = pipeline.register
    assert first["model"] == {"name": "topics", "version": 1, "format": "python", "optimized": True}
    version_dir = Path(first["path"])
    mtime = (version_dir / "model.onnx").stat().st_mtime_ns
    code, again = pipeline.step("register", wire_spec(), repository=str(pipeline.repo), run="run1")
    assert code == 0 and again["model"] == first["model"] and again["reused"]
    assert (version_dir / "model.onnx").stat().st_mtime_ns == mtime
    (pipeline.run_dir("run1") / "registered.json").unlink()  # a lost record: the marker still tells
    code, again = pipeline.step("register", wire_spec(), repository=str(pipeline.repo), run="run1")
    assert code == 0 and again["model"]["version"] == 1
    assert sorted(p.name for p in (pipeline.repo / "topics").iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    # Another run asking for version 1 explicitly is refused; left to choose, it gets version 2.
    shutil.copytree(pipeline.run_dir("run1") / "model", pipeline.run_dir("run2") / "model", dirs_exist_ok=True)
    code, clash = pipeline.step("register", wire_spec(output={"version": 1}), repository=str(pipeline.repo),
                                run="run2")
    assert code == 1 and clash["reason"] == "VersionExists"
    code, second = pipeline.step("register", wire_spec(), repository=str(pipeline.repo), run="run2")
    assert code == 0 and second["model"]["version"] == 2 and second["model"]["optimized"] is False


def test_registered_version_passes_the_model_deployment_static_checks(pipeline):
    spec = ModelDeploymentSpec.from_wire({
        "model": {"name": "topics", "version": 1, "backend": "python",
                  "outputs": [{"name": "PROBABILITIES", "dataType": "FP32", "dims": [3]}]},
        "repository": {"hostPath": {"path": str(pipeline.repo)}}})
    config, problems = check_model_version(pipeline.repo, spec)
    assert problems == [] and config["max_batch_size"] == 32
    assert (pipeline.repo / "topics" / "labels.txt").read_text().split() == ["food", "sports", "weather"]


def test_torchscript_export_loads_and_generalises_across_shapes(pipeline):
    spec = wire_spec(output={"modelName": "topics-ts", "format": "torchscript"})
    code, result = pipeline.step("register", spec, repository=str(pipeline.repo), run="run1")
    assert code == 0, result
    config = parse_model_config((pipeline.repo / "topics-ts" / "config.pbtxt").read_text())
    assert config["platform"] == "pytorch_libtorch"
    assert [i["name"] for i in config["input"]] == ["INPUT__0", "INPUT__1"]
    model_file = Path(result["path"]) / "model.pt"
    fp32_bytes = (pipeline.run_dir("run1") / "model" / "weights.safetensors").stat().st_size
    assert model_file.stat().st_size < fp32_bytes / 2.5  # int8 weights inside the TorchScript too
    loaded = torch.jit.load(str(model_file))
    optimized, tokenizer, _ = load_optimized(pipeline.run_dir("run1") / "optimized")
    reference = Probabilities(optimized).eval()
    texts, _, _, _ = dataset_split(pipeline.workspace, pipeline.version, "validation")
    with torch.no_grad():
        for batch in (texts[:1], texts[:5], [texts[0] + " and then some more words " * 6]):
            enc = tokenize(tokenizer, batch, 128)
            assert torch.allclose(loaded(enc["input_ids"], enc["attention_mask"]), reference(**enc), atol=1e-5)


def test_onnx_export_writes_a_valid_model(pipeline):
    """torch's exporter writes model.onnx (onnx and onnxscript are in the `worker` extra); the file
    passes onnx's checker and the config names the ONNX Runtime platform."""
    import onnx

    spec = wire_spec(output={"modelName": "topics-onnx", "format": "onnx"})
    code, result = pipeline.step("register", spec, repository=str(pipeline.repo), run="run1")
    assert code == 0, result
    onnx.checker.check_model(str(Path(result["path"]) / "model.onnx"))
    config = parse_model_config((pipeline.repo / "topics-onnx" / "config.pbtxt").read_text())
    assert config["platform"] == "onnxruntime_onnx"


def test_the_served_graph_is_the_int8_one_the_gate_measured(pipeline):
    """The registered model.onnx is byte for byte the optimize step's graph, its weights are int8
    initializers, and its accuracy under ONNX Runtime is the gate's `metricsAfter`."""
    served = pipeline.run_dir("run1") / "optimized" / ONNX_FILE
    version = Path(pipeline.register["path"])
    assert file_sha256(version / ONNX_FILE) == file_sha256(served)
    assert not (version / "model.pt").exists()
    int8, total = int8_initializers(served)
    assert int8 / total >= 0.9, (int8, total)
    texts, targets, _, _ = dataset_split(pipeline.workspace, pipeline.version, "validation")
    _, tokenizer, _ = load_optimized(pipeline.run_dir("run1") / "optimized")
    predicted = predict(OnnxClassifier(served), tokenizer, texts, 128)
    measured = sum(p == t for p, t in zip(predicted, targets)) / len(targets)
    assert round(measured, 6) == pipeline.optimize["metricsAfter"]["accuracy"]
    assert pipeline.optimize["servedForm"] == "onnxruntime"


def test_the_int8_graph_answers_like_the_trained_model_text_by_text(pipeline):
    """The synthetic task's held-out accuracy saturates for both models, so the gate alone would
    miss a quantization error that keeps the labels of an easy split: the served int8 graph (30%
    pruned) is compared with the trained fp32 model on every stored text, probability by probability."""
    model, tokenizer, _ = load_classifier(pipeline.run_dir("run1") / "model")
    served = OnnxClassifier(pipeline.run_dir("run1") / "optimized" / ONNX_FILE)
    texts = [t for split in SPLITS for t in dataset_split(pipeline.workspace, pipeline.version, split)[0]]
    enc = tokenize(tokenizer, texts, 128)
    with torch.no_grad():
        reference = Probabilities(model).eval()(**enc)
    answered = served(**enc)
    assert torch.equal(answered.argmax(dim=1), reference.argmax(dim=1))
    difference = (answered - reference).abs()
    assert difference.max() < MAX_DIFFERENCE and difference.mean() < MAX_DIFFERENCE / 5, difference.max()


def test_python_model_answers_in_the_real_triton(pipeline, tmp_path):
    texts, targets, labels, _ = dataset_split(pipeline.workspace, pipeline.version, "validation")
    _, tokenizer, _ = load_optimized(pipeline.run_dir("run1") / "optimized")
    served = OnnxClassifier(pipeline.run_dir("run1") / "optimized" / ONNX_FILE)
    expected = predict(served, tokenizer, texts, 128)
    expected_probs = served(**tokenize(tokenizer, texts, 128)).numpy()

    repo = tmp_path / "models"  # version 1 alone: Triton serves only the latest version by default
    shutil.copytree(pipeline.repo / "topics", repo / "topics", ignore=lambda d, names: [n for n in names if n == "2"])

    async def ask() -> tuple[np.ndarray, np.ndarray]:
        async with LocalTriton(repo, tmp_path) as server:
            client = aioclient.InferenceServerClient(server.url)
            try:
                await asyncio.wait_for(client.load_model("topics"), 180)
                inp = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
                inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
                result = await client.infer("topics", [inp], model_version="1")
                return result.as_numpy("LABEL"), result.as_numpy("PROBABILITIES")
            finally:
                await client.close()

    answered, probabilities = asyncio.run(ask())
    assert [a.decode() for a in answered.reshape(-1)] == [labels[i] for i in expected]
    assert np.allclose(probabilities, expected_probs, atol=1e-4)
    assert sum(p == t for p, t in zip(expected, targets)) / len(targets) >= 0.9


def test_traced_model_matches_eager_on_other_batch_shapes(pipeline):
    model, tokenizer, _ = load_classifier(pipeline.run_dir("run1") / "model")
    traced = trace(model, tokenizer, 128)
    enc = tokenize(tokenizer, ["one", "two words", "a much longer sentence than the ones used for tracing it"], 128)
    with torch.no_grad():
        assert torch.allclose(traced(enc["input_ids"], enc["attention_mask"]), Probabilities(model)(**enc), atol=1e-5)


def test_serving_options_apply_in_the_real_triton(pipeline, tmp_path):
    """A ModelDeployment's serving options, loaded as the operator loads them: two instances (two
    Python stubs), one thread each, basic graph optimization, and the response cache answering a
    repeated request without running the model."""
    repo = tmp_path / "models"
    shutil.copytree(pipeline.repo / "topics", repo / "topics", ignore=lambda d, names: [n for n in names if n == "2"])
    spec = ModelDeploymentSpec.from_wire({
        "model": {"name": "topics", "version": 1}, "repository": {"hostPath": {"path": str(repo)}},
        "resources": {"gpus": 0},
        "serving": {"instances": 2, "threadsPerInstance": 1, "graphOptimization": "basic",
                    "responseCache": {"enabled": True, "size": "8Mi"}}})
    config = triton_model_config(parse_model_config((repo / "topics" / "config.pbtxt").read_text()), spec, [1])

    async def ask() -> tuple[dict, dict, list[np.ndarray], int]:
        async with LocalTriton(repo, tmp_path, cache_args(spec)) as server:
            client = aioclient.InferenceServerClient(server.url)
            try:
                await asyncio.wait_for(client.load_model("topics", config=json.dumps(config)), 180)
                stubs = sum(1 for pid in filter(str.isdigit, os.listdir("/proc"))
                            if b"triton_python_backend_stub" in _cmdline(pid) and str(repo).encode() in _cmdline(pid))
                inp = httpclient.InferInput("TEXT", [1, 1], "BYTES")
                inp.set_data_from_numpy(np.array([[b"the striker scored twice in the final"]], dtype=object))
                answers = [(await client.infer("topics", [inp])).as_numpy("PROBABILITIES") for _ in range(3)]
                loaded = await client.get_model_config("topics")
                stats = (await client.get_inference_statistics("topics"))["model_stats"][0]["inference_stats"]
                return loaded, stats, answers, stubs
            finally:
                await client.close()

    loaded, stats, answers, stubs = asyncio.run(ask())
    assert [g["count"] for g in loaded["instance_group"]] == [2] and stubs == 2
    assert loaded["instance_group"][0]["kind"] == "KIND_CPU"
    assert loaded["parameters"]["intra_op_thread_count"] == {"string_value": "1"}
    assert loaded["optimization"]["graph"]["level"] == -1
    assert loaded["response_cache"]["enable"] is True
    assert int(stats["cache_miss"]["count"]) == 1 and int(stats["cache_hit"]["count"]) == 2
    assert all(np.array_equal(a, answers[0]) for a in answers)


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
