"""Helpers shared by the Milvus tests (a plain module: conftest files are not for importing)."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS_SIZE = 2000
MAX_TOKENS = 128  # keeps the CPU embedding of the corpus to seconds; the model allows 256


def write_jsonl(path: Path, documents: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in documents))
    return path


def make_spec(collection: str, **overrides):
    """A VectorIndex spec in wire form, as the operator would hand it to the worker."""
    from aiops.api.vectorindex import VectorIndexSpec

    wire = {"milvus": {"external": {"uri": "http://127.0.0.1:19530"}},
            "collection": {"name": collection, "dimension": 384, "metric": "COSINE"},
            "embedding": {"device": "cpu", "maxSequenceLength": MAX_TOKENS, "batchSize": 64},
            "source": {"configMap": {"name": "docs"}},
            **overrides}
    return VectorIndexSpec.from_wire(wire), wire
