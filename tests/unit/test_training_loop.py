"""The training loop of the built-in task on the real packaged MiniLM (CPU): gradient checkpointing
really recomputes, "auto" batch size halves on out-of-memory, and a killed run resumes from its
last checkpoint to the same final weights as an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from aiops.api.trainingjob import TrainingJobSpec
from aiops.progress import PREFIX
from aiops.training.dataset import prepare_dataset
from aiops.training.synthetic import topic_rows
from aiops.training.train import (
    Faults,
    TrainSettings,
    auto_start_batch,
    collate,
    prepare_model,
    resolve_precision,
    train_classifier,
)
from aiops.worker.train import dataset_split
from aiops.worker.train import main as worker_main

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
TRAINING = {"task": "text-classification", "epochs": 2, "batchSize": 8, "checkpointEverySteps": 2, "seed": 3}


def make_spec(**training) -> TrainingJobSpec:
    return TrainingJobSpec.from_wire({
        "dataset": {"source": {"configMap": {"name": "rows"}},
                    "schema": {"fields": [{"name": "text", "type": "string"}, {"name": "label", "type": "string"}]}},
        "training": {**TRAINING, **training},
        "output": {"modelName": "topics", "repository": {"hostPath": {"path": "/models"}}}})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, str]:
    """A stored dataset version: 24 rows, 19 for training (3 steps of 8, 8, 3 per epoch)."""
    root = tmp_path_factory.mktemp("ws")
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in topic_rows(24, seed=1)))
    result = prepare_dataset(make_spec(), str(root / "rows.jsonl"), root)
    assert result["ok"] and result["stats"]["trainRows"] == 19, result
    return root, result["datasetVersion"]


def test_policies_without_a_model():
    assert resolve_precision("auto", CPU) == "off" and resolve_precision("off", CPU) == "off"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert auto_start_batch(10_000) == 128 and auto_start_batch(19) == 4 and auto_start_batch(2) == 1


def test_gradient_checkpointing_recomputes_the_trainable_layers_and_saves_fewer_activations():
    model, tokenizer = prepare_model(TrainSettings("all-MiniLM-L6-v2", gradient_checkpointing=True), 3, CPU)
    layers = model.encoder.encoder.layer
    assert [layer.gradient_checkpointing for layer in layers] == [False] * 4 + [True] * 2  # the trainable ones
    calls = {"top": 0, "bottom": 0}
    # Hooks on a module inside each layer: transformers checkpoints a layer's forward, not its hooks.
    layers[-1].intermediate.register_forward_hook(lambda *a: calls.__setitem__("top", calls["top"] + 1))
    layers[0].intermediate.register_forward_hook(lambda *a: calls.__setitem__("bottom", calls["bottom"] + 1))
    texts = [r["text"] for r in topic_rows(16)]
    batch = collate(tokenizer(texts)["input_ids"], list(range(16)), tokenizer.pad_token_id, CPU)
    targets = torch.zeros(16, dtype=torch.long)

    def step() -> int:
        """Bytes autograd saved for the backward pass; runs forward and backward."""
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            loss = F.cross_entropy(model(**batch), targets)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return sum(saved)

    with_checkpointing = step()
    assert calls == {"top": 2, "bottom": 1}  # the trainable top layer ran again in backward; frozen ones never
    getattr(model.encoder, "activation_checkpointing_disable", model.encoder.gradient_checkpointing_disable)()
    calls.update(top=0, bottom=0)
    without = step()
    assert calls == {"top": 1, "bottom": 1}
    assert without > 2 * with_checkpointing, (without, with_checkpointing)


def test_auto_batch_size_halves_on_out_of_memory(workspace, tmp_path):
    root, version = workspace
    texts, targets, labels, _ = dataset_split(root, version, "train")
    faults = Faults(oom_above_batch=2)
    result = train_classifier(TrainSettings("all-MiniLM-L6-v2", epochs=1, batch_size="auto"), texts, targets,
                              labels, tmp_path / "run", version, CPU, faults)
    assert faults.oom_seen == [4] and result["oomRetries"] == 1
    assert result["batchSize"] == 2 and result["steps"] == 10  # 19 rows in batches of 2
    with pytest.raises(torch.OutOfMemoryError):  # a fixed batch size is not changed behind the spec's back
        train_classifier(TrainSettings("all-MiniLM-L6-v2", epochs=1, batch_size=4), texts, targets, labels,
                         tmp_path / "fixed", version, CPU, Faults(oom_above_batch=2))


def test_explicit_bf16_autocast_trains_on_cpu(workspace, tmp_path):
    root, version = workspace
    texts, targets, labels, _ = dataset_split(root, version, "train")
    result = train_classifier(TrainSettings("all-MiniLM-L6-v2", epochs=1, batch_size=8, mixed_precision="bf16"),
                              texts, targets, labels, tmp_path / "run", version, CPU)
    assert result["mixedPrecision"] == "bf16" and 0 < result["finalLoss"] < 5
    weights = load_file(str(tmp_path / "run" / "model" / "weights.safetensors"))
    assert weights["head.weight"].dtype == torch.float32  # autocast computes in bf16, keeps fp32 weights


def progress_lines(text: str) -> list[dict]:
    return [json.loads(line[len(PREFIX):]) for line in text.splitlines() if line.startswith(PREFIX)]


def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_result(workspace, tmp_path, capsys):
    root, version = workspace
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(make_spec().to_wire()))
    argv = ["train", "--spec", str(spec_file), "--workspace", str(root), "--dataset-version", version,
            "--run", "killed", "--result", str(tmp_path / "result.json")]
    env = {**os.environ, "AIOPS_TRAIN_FAULT_KILL_AFTER_STEPS": "3"}
    killed = subprocess.run([sys.executable, "-m", "aiops", "worker", "train", *argv], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = sorted(p.name for p in (root / "runs" / "killed" / "checkpoints").iterdir())
    assert checkpoints == ["step-000000002.pt"]  # every 2 steps; killed after step 3, before the epoch's end

    capsys.readouterr()
    assert worker_main(argv) == 0
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert resumed["resumedFromStep"] == 2 and resumed["steps"] == 6
    # Live progress carries on from the checkpoint, not from zero, and ends at 100%.
    killed_progress, resumed_progress = progress_lines(killed.stdout), progress_lines(capsys.readouterr().out)
    assert killed_progress[0]["steps"] == 1 and killed_progress[0]["epoch"] == 1
    assert resumed_progress[0]["steps"] == 3 and resumed_progress[0]["percent"] > killed_progress[0]["percent"]
    assert resumed_progress[-1] | {"loss": None} == {"epoch": 2, "epochs": 2, "steps": 6, "percent": 100.0,
                                                     "etaSeconds": 0, "loss": None,
                                                     "samplesPerSecond": resumed_progress[-1]["samplesPerSecond"]}

    texts, targets, labels, _ = dataset_split(root, version, "train")
    straight = train_classifier(TrainSettings.from_spec(make_spec().training), texts, targets, labels,
                                root / "runs" / "straight", version, CPU)
    assert straight["resumedFromStep"] == 0 and straight["steps"] == 6
    assert straight["finalLoss"] == pytest.approx(resumed["finalLoss"], rel=1e-5)
    a = load_file(str(root / "runs" / "killed" / "model" / "weights.safetensors"))
    b = load_file(str(root / "runs" / "straight" / "model" / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.equal(a["head.weight"], torch.zeros_like(a["head.weight"]))

    # A finished step run again answers from its record, without training.
    assert worker_main(argv) == 0
    again = json.loads((tmp_path / "result.json").read_text())
    assert again["reused"] and again["steps"] == 6
