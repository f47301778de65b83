"""Export of a trained classifier in Triton's repository layout (a form Triton can serve).

Formats (spec.output.format):
- `python`: Triton's Python backend. `<version>/model.py` runs `model.onnx` with ONNX Runtime and
  the tokenizer, so clients send raw text. Input `TEXT` (TYPE_STRING, dims [1]); outputs `LABEL`
  (TYPE_STRING, dims [1]) and `PROBABILITIES` (TYPE_FP32, dims [num_labels], in the order of
  labels.txt). The only format the local tritonserver (nvidia-pytriton) can load.
- `torchscript`: `platform: "pytorch_libtorch"`, `<version>/model.pt`; inputs `INPUT__0` (token
  ids) and `INPUT__1` (attention mask), TYPE_INT64 dims [-1]; output `OUTPUT__0` (probabilities).
  Clients tokenize with `<version>/tokenizer.json`.
- `onnx`: `platform: "onnxruntime_onnx"`, `<version>/model.onnx`, tensors `input_ids`,
  `attention_mask` -> `probabilities`; needs the `onnx` package in the worker image.

`python` and `onnx` serve the same graph: the optimize step's `model.onnx` (int8, what the quality
gate measured; `aiops.training.onnxform`) for an optimized model, else the fp32 export. An
optimized model's TorchScript keeps its Linear and embedding weights int8 on disk (`Int8Linear`,
dequantized once on first use: fp32 speed and memory when served).
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
from aiops.training.onnxform import ONNX_FILE, export_fp32
from aiops.training.quantize import clear_caches, int8_kind, scripted

MAX_BATCH_SIZE = 32
TEXT, LABEL, PROBABILITIES = "TEXT", "LABEL", "PROBABILITIES"
EXAMPLE_TEXTS = ["an example sentence", "a second, somewhat longer example sentence for tracing"]


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

Runs the classifier graph (model.onnx, int8 for an optimized model) with ONNX Runtime, after the
tokenizer (tokenizer.json) beside this file. Reads the model configuration as Triton's onnxruntime
backend does: optimization.graph.level (-1 basic, 1 extended, 2 none, else all) and the parameter
intra_op_thread_count (0: ONNX Runtime's default).
"""
import ctypes
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
LEVELS = {-1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, 1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def session_options(config):
    options = ort.SessionOptions()
    level = int(config.get("optimization", {}).get("graph", {}).get("level", 0))
    options.graph_optimization_level = LEVELS.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    if int(parameters.get("intra_op_thread_count") or 0) > 0:
        options.intra_op_num_threads = int(parameters["intra_op_thread_count"])
    return options


class TritonPythonModel:
    def initialize(self, args):
        with open(os.path.join(HERE, "labels.json")) as f:
            info = json.load(f)
        self.labels = info["labels"]
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))}))
        self.session = ort.InferenceSession(os.path.join(HERE, "model.onnx"),
                                            session_options(json.loads(args["model_config"])), providers=providers)
        self.tokenizer = Tokenizer.from_file(os.path.join(HERE, "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=info["maxLength"])
        self.tokenizer.enable_padding(pad_id=info["padId"], pad_token=info["padToken"])
        try:  # the parsed graph is freed once the session holds its tensors: give it back to the OS
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass

    def execute(self, requests):
        texts, sizes = [], []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts.extend(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values)
            sizes.append(len(values))
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        probabilities = self.session.run(["probabilities"], feeds)[0].astype(np.float32)
        labels = np.array([self.labels[i].encode() for i in probabilities.argmax(-1)], dtype=object)
        responses, start = [], 0
        for size in sizes:
            end = start + size
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("LABEL", labels[start:end].reshape(size, 1)),
                pb_utils.Tensor("PROBABILITIES", probabilities[start:end])]))
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
    if fmt == "torchscript":
        trace(model, tokenizer, max_length).save(str(out / "model.pt"))
        return
    served = model_dir / ONNX_FILE
    if served.exists():  # the optimize step's graph, measured by the quality gate
        shutil.copyfile(served, out / ONNX_FILE)
    else:
        export_fp32(dequantized(model), tokenizer, max_length, out / ONNX_FILE)
    if fmt == "python":
        (out / "model.py").write_text(PYTHON_MODEL)
