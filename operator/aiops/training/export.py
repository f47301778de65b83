"""Export of a trained classifier in Triton's repository layout (a form Triton can serve).

Formats (spec.output.format):
- `python`: Triton's Python backend. `<version>/model.py` loads `model.pt` (TorchScript) and the
  tokenizer, so clients send raw text. Input `TEXT` (TYPE_STRING, dims [1]); outputs `LABEL`
  (TYPE_STRING, dims [1]) and `PROBABILITIES` (TYPE_FP32, dims [num_labels], in the order of
  labels.txt). The only format the local tritonserver (nvidia-pytriton) can load.
- `torchscript`: `platform: "pytorch_libtorch"`, `<version>/model.pt`; inputs `INPUT__0` (token
  ids) and `INPUT__1` (attention mask), TYPE_INT64 dims [-1]; output `OUTPUT__0` (probabilities).
  Clients tokenize with `<version>/tokenizer.json`.
- `onnx`: `platform: "onnxruntime_onnx"`, `<version>/model.onnx`, tensors `input_ids`,
  `attention_mask` -> `probabilities`; needs the `onnx` package in the worker image.

An optimized model's TorchScript keeps its Linear and embedding weights int8 (`Int8Linear`,
dequantized once on first use); ONNX gets the dequantized fp32 weights (same values, no size gain).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aiops.training.model import Probabilities, TextClassifier, tokenize
from aiops.training.quantize import clear_caches, int8_kind, scripted

MAX_BATCH_SIZE = 32
TEXT, LABEL, PROBABILITIES = "TEXT", "LABEL", "PROBABILITIES"
EXAMPLE_TEXTS = ["an example sentence", "a second, somewhat longer example sentence for tracing"]


class ExportError(Exception):
    pass


def trace(model: TextClassifier, tokenizer: Any, max_length: int) -> torch.jit.ScriptModule:
    """TorchScript of token ids + mask -> probabilities; traced shapes generalise (checked by tests)."""
    wrapper = Probabilities(scripted(model)).eval()
    clear_caches(wrapper)
    example = tokenize(tokenizer, EXAMPLE_TEXTS, max_length)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks in transformers' mask code warn that they are traced as constants; the tests
        # run the traced model on other batch sizes and lengths to show they do not matter here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, (example["input_ids"], example["attention_mask"]), check_trace=False)
    clear_caches(traced)  # int8 weights only on disk: the fp32 copies are rebuilt on first use
    return traced


def dequantized(model: nn.Module) -> nn.Module:
    """The same model with plain Linear/Embedding modules (for exporters that cannot run ours)."""
    for name, m in list(model.named_modules()):
        if not hasattr(m, "weight_int8"):
            continue
        w = m.weight_int8.float() * m.scale.unsqueeze(1)
        if int8_kind(m) == "Int8Linear":
            new = nn.Linear(w.shape[1], w.shape[0])
            new.weight.data, new.bias.data = w, m.bias.clone()
        else:
            new = nn.Embedding(w.shape[0], w.shape[1], padding_idx=m.padding_idx if m.padding_idx >= 0 else None)
            new.weight.data = w
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def export_onnx(model: TextClassifier, tokenizer: Any, max_length: int, path: Path) -> None:
    example = tokenize(tokenizer, EXAMPLE_TEXTS, max_length)
    try:
        torch.onnx.export(Probabilities(dequantized(model)).eval(), (example["input_ids"], example["attention_mask"]),
                          str(path), dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["probabilities"], opset_version=17,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "probabilities": {0: "batch"}})
    except Exception as e:  # OnnxExporterError when `onnx` is missing, or an unsupported op
        raise ExportError(f"ONNX export failed: {e}; use format torchscript or python, or add the `onnx` "
                          "package to the worker image") from None


def config_text(name: str, fmt: str, num_labels: int) -> str:
    """config.pbtxt for the format; comments say what each tensor is."""
    if fmt == "python":
        head = f'name: "{name}"\nbackend: "python"\n'
        inputs = f'input [\n  {{ name: "{TEXT}" data_type: TYPE_STRING dims: [ 1 ] }}  # UTF-8 text\n]\n'
        outputs = (f'output [\n  {{ name: "{LABEL}" data_type: TYPE_STRING dims: [ 1 ] }},  # most likely label\n'
                   f'  {{ name: "{PROBABILITIES}" data_type: TYPE_FP32 dims: [ {num_labels} ] '
                   'label_filename: "labels.txt" }  # per label, in labels.txt order\n]\n')
    else:
        onnx = fmt == "onnx"
        ids, mask, probs = ("input_ids", "attention_mask", "probabilities") if onnx else \
            ("INPUT__0", "INPUT__1", "OUTPUT__0")
        head = f'name: "{name}"\nplatform: "{"onnxruntime_onnx" if onnx else "pytorch_libtorch"}"\n'
        inputs = (f'input [\n  {{ name: "{ids}" data_type: TYPE_INT64 dims: [ -1 ] }},  # token ids (tokenizer.json)\n'
                  f'  {{ name: "{mask}" data_type: TYPE_INT64 dims: [ -1 ] }}  # 1 for tokens, 0 for padding\n]\n')
        outputs = (f'output [\n  {{ name: "{probs}" data_type: TYPE_FP32 dims: [ {num_labels} ] '
                   'label_filename: "labels.txt" }  # per label, in labels.txt order\n]\n')
    return (f"# Written by aiops worker train register: a text classifier ({fmt}).\n{head}"
            f"max_batch_size: {MAX_BATCH_SIZE}\n{inputs}{outputs}"
            "dynamic_batching { max_queue_delay_microseconds: 2000 }\n")


PYTHON_MODEL = '''"""Triton Python backend model written by aiops: text in, label and probabilities out.

Loads the TorchScript classifier (model.pt) and the tokenizer (tokenizer.json) beside this file.
"""
import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(HERE, "labels.json")) as f:
            info = json.load(f)
        self.labels = info["labels"]
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu")
        self.model = torch.jit.load(os.path.join(HERE, "model.pt"), map_location=self.device).eval()
        self.tokenizer = Tokenizer.from_file(os.path.join(HERE, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=info["maxLength"])
        self.tokenizer.enable_padding(pad_id=info["padId"], pad_token=info["padToken"])

    def execute(self, requests):
        texts, sizes = [], []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts.extend(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
            sizes.append(len(values))
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=self.device)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long, device=self.device)
        with torch.no_grad():
            probabilities = self.model(ids, mask).float().cpu().numpy()
        labels = np.array([self.labels[i].encode() for i in probabilities.argmax(-1)], dtype=object)
        responses, start = [], 0
        for size in sizes:
            end = start + size
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("LABEL", labels[start:end].reshape(size, 1)),
                pb_utils.Tensor("PROBABILITIES", probabilities[start:end].astype(np.float32))]))
            start = end
        return responses
'''


def write_version(model: TextClassifier, tokenizer: Any, info: dict[str, Any], model_dir: Path, fmt: str,
                  out: Path) -> None:
    """The files of one version directory `out` (which must exist and be empty)."""
    max_length = info["maxLength"]
    shutil.copyfile(model_dir / "tokenizer" / "tokenizer.json", out / "tokenizer.json")
    (out / "labels.json").write_text(json.dumps({
        "labels": info["labels"], "maxLength": max_length, "padId": tokenizer.pad_token_id,
        "padToken": tokenizer.pad_token}, indent=2))
    if fmt == "onnx":
        export_onnx(model, tokenizer, max_length, out / "model.onnx")
        return
    trace(model, tokenizer, max_length).save(str(out / "model.pt"))
    if fmt == "python":
        (out / "model.py").write_text(PYTHON_MODEL)
