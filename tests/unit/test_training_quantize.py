"""Per-channel int8 weights, L1 pruning and their sparse storage, on small modules (fast)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from aiops.training.quantize import (
    Int8Linear,
    clear_caches,
    install_packed,
    linear_sparsity,
    pack_state,
    prune_linear_l1,
    quantize_rows,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embeddings = nn.Embedding(50, 16)
        self.up = nn.Linear(16, 64)
        self.down = nn.Linear(64, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.embeddings(ids)))).mean(1)


def test_quantize_rows_is_close_and_keeps_the_zero_pattern():
    w = torch.randn(8, 32)
    w[w.abs() < 0.5] = 0
    w[0, 0] = 1e-6  # far below one step of its row's scale: must not become a zero
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (8,)
    assert torch.equal(q == 0, w == 0) and q[0, 0] == 1
    error = (q.float() * scale[:, None] - w).abs()
    error[0, 0] = 0  # the one weight moved up to +1 step on purpose
    assert (error <= scale[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_l1_pruning_hits_the_target_exactly(sparsity):
    model = Tiny()
    prune_linear_l1(model, sparsity)
    assert abs(linear_sparsity(model) - sparsity) <= 0.01
    assert not hasattr(model.up, "weight_orig")  # made permanent: no reparametrization left


@pytest.mark.parametrize("quantize, sparse", [(True, True), (True, False), (False, True)])
def test_packed_state_round_trips(tmp_path, quantize, sparse):
    model = Tiny().eval()
    if sparse:
        prune_linear_l1(model, 0.3)
    tensors, metadata = pack_state(model, quantize=quantize, sparse=sparse, embedding="embeddings")
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata)
    restored = install_packed(Tiny(), load_file(str(tmp_path / "m.safetensors")), metadata).eval()
    ids = torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        assert torch.allclose(restored(ids), model(ids), atol=0.05 if quantize else 1e-6)
    assert abs(linear_sparsity(restored) - (0.3 if sparse else 0.0)) <= 0.01
    layout = json.loads(metadata["layout"])
    assert layout["up.weight"] == {"kind": "linear", "shape": [64, 16], "sparse": sparse, "int8": quantize}
    if quantize and sparse:
        assert tensors["up.weight.values"].dtype == torch.int8
        assert tensors["up.weight.values"].numel() == round(0.7 * 64 * 16)
        assert tensors["up.weight.mask"].numel() == 64 * 16 // 8


def test_int8_linear_scripts_dequantizes_once_and_saves_only_int8(tmp_path):
    linear = nn.Linear(32, 16)
    q, scale = quantize_rows(linear.weight)
    module = torch.jit.script(Int8Linear(q, scale, linear.bias.detach()))
    x = torch.randn(2, 32)
    expected = nn.functional.linear(x, q.float() * scale[:, None], linear.bias)
    assert torch.allclose(module(x), expected, atol=1e-6)
    assert module.cache is not None
    clear_caches(module)
    module.save(str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    assert loaded.cache is None and loaded.weight_int8.dtype == torch.int8
    assert torch.allclose(loaded(x), expected, atol=1e-6)
