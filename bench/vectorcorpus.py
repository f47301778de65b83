"""The benchmarks' real-text corpus and its MiniLM embeddings, cached under ~/.cache/aiops/.

Passages: aiops.vectors.corpus (docstring paragraphs of the stdlib and installed packages).
Embedding 20k passages takes minutes on 2 CPU cores; the vectors are cached per corpus content
and model settings, so reruns start at once."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from aiops.vectors.corpus import load_corpus

CACHE = Path(os.environ.get("AIOPS_CACHE_DIR", Path.home() / ".cache" / "aiops"))
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def passages(count: int) -> list[dict]:
    return load_corpus(count, CACHE)


def embeddings(texts: list[str], max_sequence_length: int | None = None, batch_size: int = 64,
               chunk: int = 2000) -> np.ndarray:
    """Normalised MiniLM vectors of texts, cached by their content and the settings, chunk by
    chunk: an interrupted run keeps what it finished (20k passages can take many minutes on a
    shared 2-core machine)."""
    def key_of(items: list[str]) -> str:
        return hashlib.sha256("\0".join([MODEL, str(max_sequence_length), *items]).encode()).hexdigest()[:16]

    whole = CACHE / "embeddings" / f"minilm-{len(texts)}-{key_of(texts)}.npy"
    if whole.exists():
        return np.load(whole)
    embedder = None
    parts = []
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        path = CACHE / "embeddings" / "chunks" / f"minilm-{len(part)}-{key_of(part)}.npy"
        if not path.exists():
            if embedder is None:
                from aiops.vectors.embedder import Embedder

                embedder = Embedder(MODEL, device="auto", max_sequence_length=max_sequence_length,
                                    batch_size=batch_size)
            t0 = time.perf_counter()
            vectors = embedder.encode(part)
            print(f"# embedded passages {start}-{start + len(part)} in {time.perf_counter() - t0:.0f}s", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path.with_suffix(".tmp.npy"), vectors)
            path.with_suffix(".tmp.npy").rename(path)
        parts.append(np.load(path))
    return np.concatenate(parts)


if __name__ == "__main__":
    docs = passages(20200)
    embeddings([d["text"] for d in docs])
