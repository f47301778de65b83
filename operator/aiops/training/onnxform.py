"""The served form of a classifier: an ONNX graph that ONNX Runtime runs, int8 for an optimized one.

Why ONNX Runtime's dynamic int8 quantization for the optimized model: it is the only option that
ran faster *and* kept int8 weights resident on this CPU, measured on the packaged MiniLM classifier
(2 cores, batch 1 / batch 32, resident memory of the loaded model after warm-up):
- torch fp32 TorchScript: 8.7 / 67 ms, +131 MB
- ONNX Runtime fp32:      2.8 / 46 ms, +137 MB
- torch dynamic int8:     2.1 / 42 ms, +97 MB  (torch.ao.quantization, deprecated)
- ONNX Runtime int8:      1.1 / 20 ms, +49 MB  <- the optimized model
The quantized graph keeps its MatMul weights and its embedding tables int8
(`MatMulInteger`/`DynamicQuantizeLinear`, `DequantizeLinear` on gathered rows), per output channel,
with 7-bit weights (`reduce_range`: the same speed here, and CPUs without VNNI do not saturate their
16-bit accumulation and answer differently from the machine that measured the accuracy).
ONNX Runtime's pre-processing (`quant_pre_process`) fails on this graph's symbolic shapes, and is
not used.

ONNX Runtime stores and multiplies dense tensors: the zeros of a 30%-pruned model take the same
bytes and time as any weight in the served graph. What pruning saves is in the registry's packed
file (`aiops.training.quantize`, int8 non-zeros + a bitmask), on disk only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ONNX_FILE = "model.onnx"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "probabilities"
OPSET = 17


class ExportError(Exception):
    pass


def export_fp32(model: torch.nn.Module, tokenizer: Any, max_length: int, path: Path) -> None:
    """`model` (a TextClassifier with plain Linear/Embedding modules) as ONNX: token ids and mask in
    (dynamic batch and length), probabilities out."""
    from aiops.training.export import EXAMPLE_TEXTS
    from aiops.training.model import Probabilities, tokenize

    example = tokenize(tokenizer, EXAMPLE_TEXTS, max_length)
    try:
        torch.onnx.export(Probabilities(model).eval(), (example["input_ids"], example["attention_mask"]),
                          str(path), dynamo=False, input_names=list(INPUTS), output_names=[OUTPUT],
                          opset_version=OPSET,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, OUTPUT: {0: "batch"}})
    except Exception as e:  # OnnxExporterError when `onnx` is missing, or an unsupported op
        raise ExportError(f"ONNX export failed: {e}; use format torchscript, or add the `onnx` "
                          "package to the worker image") from None


def quantize_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime's dynamic quantization of `src`: int8 weights per output channel (7 bits),
    activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


def write_served(model: torch.nn.Module, tokenizer: Any, max_length: int, int8: bool, out: Path) -> None:
    """`out` (a model.onnx path): the fp32 graph, or its int8 quantization. Written beside and
    renamed into place."""
    work = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out.parent))
    try:
        export_fp32(model, tokenizer, max_length, work / "fp32.onnx")
        if int8:
            quantize_int8(work / "fp32.onnx", work / "int8.onnx")
        os.replace(work / ("int8.onnx" if int8 else "fp32.onnx"), out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class OnnxClassifier:
    """An ONNX classifier file under ONNX Runtime, called like the torch model (ids, mask ->
    probabilities): what the quality gate measures is the file Triton loads."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def eval(self) -> OnnxClassifier:
        return self

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": np.asarray(input_ids, dtype=np.int64),
                 "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        return torch.from_numpy(self.session.run([OUTPUT], feeds)[0])


def int8_initializers(path: Path) -> tuple[int, int]:
    """(bytes of int8 initializers, bytes of all initializers) of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    int8 = total = 0
    for tensor in onnx.load(str(path)).graph.initializer:
        size = numpy_helper.to_array(tensor).nbytes
        total += size
        if tensor.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            int8 += size
    return int8, total
