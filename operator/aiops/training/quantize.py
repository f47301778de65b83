"""8-bit weights and L1 pruning, stored so that the savings are real on disk.

Why our own per-channel int8 rather than torchao's `quantize_(Int8WeightOnlyConfig())`: torchao's
tensor subclasses can be neither saved as plain tensors nor traced to TorchScript for Triton, and
their CPU kernel (`_weight_int8pack_mm`) ran ~45x slower than the fp32 matmul on this AVX2 CPU.
(torch.ao.quantization is deprecated.) So: symmetric per-output-channel int8 weights, kept int8 on
disk and in the exported TorchScript, dequantized once per layer on first use (`Int8Linear`), so
inference runs at fp32 speed with a quarter of the weight bytes stored.

Pruned weights are stored sparsely: int8 values of the non-zeros plus a 1-bit mask per weight
(0.7 + 0.125 bytes per weight at 30% sparsity, against 4 for fp32). The word embedding table, the
largest tensor of MiniLM, is quantized per row and not pruned.
"""


import json
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

SPARSE_FORMAT = "aiops-int8-sparse-v1"


def dequantize(weight_int8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 weights from int8 rows and one scale per row (TorchScript compiles it with the callers)."""
    return weight_int8.to(torch.float32) * scale.unsqueeze(1)


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights and per-output-channel scales; scriptable."""

    cache: Optional[torch.Tensor]  # noqa: UP045 (TorchScript reads this annotation)

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor]):  # noqa: UP045
        super().__init__()
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias if bias is not None else torch.zeros(weight_int8.shape[0]))
        self.cache = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.cache
        if w is None:
            w = dequantize(self.weight_int8, self.scale)
            self.cache = w
        return F.linear(x, w.to(x.dtype), self.bias.to(x.dtype))


class Int8Embedding(nn.Module):
    """An embedding table with int8 rows and per-row scales; scriptable."""

    cache: Optional[torch.Tensor]  # noqa: UP045

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, padding_idx: int = -1):
        super().__init__()
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.padding_idx = padding_idx
        self.cache = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.cache
        if w is None:
            w = dequantize(self.weight_int8, self.scale)
            self.cache = w
        return F.embedding(ids, w)


def int8_kind(module: nn.Module) -> str | None:
    """'Int8Linear' or 'Int8Embedding' for ours, eager or scripted; else None."""
    name = getattr(module, "original_name", None) if isinstance(module, torch.jit.ScriptModule) \
        else type(module).__name__
    return name if name in ("Int8Linear", "Int8Embedding") else None


def scripted(model: nn.Module) -> nn.Module:
    """`model` with its int8 modules scripted, so that tracing keeps their lazy dequantization as
    code instead of freezing whichever branch the trace took. Eager modules stay eager elsewhere:
    TorchScript's executor re-profiles on new shapes, which made in-process latency noisy."""
    for name, m in list(model.named_modules()):
        if int8_kind(m) and not isinstance(m, torch.jit.ScriptModule):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, torch.jit.script(m))
    return model


def clear_caches(module: nn.Module) -> None:
    """Drops dequantized weights (before saving a traced model: only int8 goes to disk)."""
    for m in module.modules():
        if hasattr(m, "weight_int8"):
            m.cache = None


def linear_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) or int8_kind(m) == "Int8Linear"]


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    modules = dict(model.named_modules())
    out = []
    for name in linear_names(model):
        m = modules[name]
        out.append(m.weight_int8 if hasattr(m, "weight_int8") else m.weight)
    return out


def linear_sparsity(model: nn.Module) -> float:
    """Share of exactly-zero weights over all Linear layers."""
    weights = linear_weights(model)
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def prune_linear_l1(model: nn.Module, sparsity: float) -> None:
    """Zeroes the `sparsity` share of smallest-magnitude weights of every Linear layer (so the
    overall share is the target too), made permanent."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            prune.l1_unstructured(m, "weight", amount=sparsity)
            prune.remove(m, "weight")


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row. A non-zero weight never rounds to zero (it becomes +-1), so the
    pruning mask, and the measured sparsity, survive quantization exactly."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scale.unsqueeze(1)).clamp(-127, 127)
    q = torch.where((q == 0) & (w != 0), torch.sign(w), q)
    return q.to(torch.int8), scale


def pack_state(model: nn.Module, quantize: bool, sparse: bool,
               embedding: str = "encoder.embeddings.word_embeddings") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, layout) for the optimized model file: Linear weights as [sparse] int8, the word
    embedding as int8 rows, everything else as it is."""
    linears = {f"{n}.weight" for n in linear_names(model)}
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        if name in linears:
            values, scale = quantize_rows(t) if quantize else (t.float(), None)
            if sparse:
                mask = (t != 0).flatten()
                tensors[f"{name}.mask"] = torch.from_numpy(np.packbits(mask.numpy()))
                values = values.flatten()[mask]
            tensors[f"{name}.values"] = values.contiguous()
            if scale is not None:
                tensors[f"{name}.scale"] = scale
            layout[name] = {"kind": "linear", "shape": list(t.shape), "sparse": sparse, "int8": quantize}
        elif name == f"{embedding}.weight" and quantize:
            values, scale = quantize_rows(t)
            tensors[f"{name}.values"], tensors[f"{name}.scale"] = values, scale
            layout[name] = {"kind": "embedding", "shape": list(t.shape), "sparse": False, "int8": True}
        else:
            tensors[name] = t.contiguous()
    return tensors, {"format": SPARSE_FORMAT, "layout": json.dumps(layout)}


def unpack_weight(tensors: dict[str, torch.Tensor], name: str, entry: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dense values, scale or None) of one packed weight."""
    shape = entry["shape"]
    values = tensors[f"{name}.values"]
    if entry["sparse"]:
        numel = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(tensors[f"{name}.mask"].numpy(), count=numel).astype(bool))
        dense = torch.zeros(numel, dtype=values.dtype)
        dense[mask] = values
        values = dense
    return values.reshape(shape), tensors.get(f"{name}.scale")


def install_packed(model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> nn.Module:
    """Loads packed tensors into `model` (built with the same architecture): int8 weights become
    Int8Linear/Int8Embedding modules, fp32 sparse ones plain dense weights."""
    if metadata.get("format") != SPARSE_FORMAT:
        raise ValueError(f"not an optimized model file (format {metadata.get('format')!r})")
    layout = json.loads(metadata["layout"])
    plain = {k: v for k, v in tensors.items() if not any(k.startswith(n + ".") for n in layout)}
    modules = dict(model.named_modules())
    for name, entry in layout.items():
        owner = name.rsplit(".", 1)[0]
        values, scale = unpack_weight(tensors, name, entry)
        old = modules[owner]
        if not entry["int8"]:
            plain[name] = values
            continue
        if entry["kind"] == "linear":
            bias = plain.pop(f"{owner}.bias", None)
            new = Int8Linear(values, scale, bias)
        else:
            new = Int8Embedding(values, scale, old.padding_idx if old.padding_idx is not None else -1)
        parent_name, _, child = owner.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
    missing, unexpected = model.load_state_dict(plain, strict=False)
    left = [k for k in missing if not any(k.startswith(n.rsplit(".", 1)[0] + ".") for n in layout
                                          if layout[n]["int8"])]
    if left or unexpected:
        raise ValueError(f"optimized model file does not fit the model: missing {left[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return model
