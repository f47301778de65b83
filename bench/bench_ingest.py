"""End-to-end ingest throughput (embedding + upsert into a real Milvus) against the bare model.

The same passages, the same process, one after another: the bare model's encode
(SentenceTransformer.encode, what a user would call), the worker's own embedder alone, then a
full `run_ingest` into a fresh collection on the real Milvus 2.3 server (read, hash, embed, upsert
overlapped with embedding, flush, load). The ratio compares the embed+upsert phase's docs/s to the
bare encode's (goal >= 0.85); the bare figure is the mean of a run before and one after, because
the machine is shared and its speed drifts.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pymilvus import MilvusClient  # noqa: E402

from aiops.api.vectorindex import VectorIndexSpec  # noqa: E402
from aiops.devenv.milvusserver import MilvusServer  # noqa: E402
from aiops.vectors.embedder import Embedder, resolve_model_path  # noqa: E402
from aiops.vectors.ingest import run_ingest  # noqa: E402
from report import figure  # noqa: E402
from vectorcorpus import MODEL, passages  # noqa: E402

DOCUMENTS = int(os.environ.get("AIOPS_BENCH_INGEST_DOCS", "1000"))
BATCH = 64


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    from sentence_transformers import SentenceTransformer

    docs = passages(DOCUMENTS)
    texts = [d["text"] for d in docs]
    spec = VectorIndexSpec.from_wire({
        "collection": {"name": "bench_ingest", "dimension": 384},
        "embedding": {"model": MODEL, "batchSize": BATCH, "device": "auto"},
        "source": {"configMap": {"name": "docs"}}})
    bare = SentenceTransformer(resolve_model_path(MODEL), device="cpu")
    embedder = Embedder(MODEL, device="auto", batch_size=BATCH)
    bare.encode(texts[:BATCH], batch_size=BATCH)  # warm both up
    embedder.encode(texts[:BATCH])
    with tempfile.TemporaryDirectory() as tmp, MilvusServer(Path(tmp) / "milvus") as server:
        source = Path(tmp) / "source"
        source.mkdir()
        (source / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        client = MilvusClient(uri=server.uri)
        bare_before = timed(lambda: bare.encode(texts, batch_size=BATCH, normalize_embeddings=True))
        own = timed(lambda: embedder.encode(texts))
        t0 = time.perf_counter()
        result = run_ingest(client, spec, source, embedder=embedder)
        full = time.perf_counter() - t0
        bare_after = timed(lambda: bare.encode(texts, batch_size=BATCH, normalize_embeddings=True))
        noop = timed(lambda: run_ingest(client, spec, source, embedder=embedder))
        client.close()
    assert result.embedded == result.rows == DOCUMENTS, result.to_json()
    bare_dps = DOCUMENTS / ((bare_before + bare_after) / 2)
    figure("ingest.bare_encode", bare_dps, "docs/s",
           f"SentenceTransformer.encode, {DOCUMENTS} passages, batch {BATCH}, CPU; "
           f"before {DOCUMENTS / bare_before:.0f}, after {DOCUMENTS / bare_after:.0f}")
    figure("ingest.embedder_encode", DOCUMENTS / own, "docs/s", "the worker's embedder alone (length-sorted batches)")
    figure("ingest.end_to_end", result.documents_per_second, "docs/s",
           "embed + upsert into real Milvus 2.3, overlapped")
    figure("ingest.ratio_to_bare", result.documents_per_second / bare_dps, "x", "goal >= 0.85")
    figure("ingest.full_run", DOCUMENTS / full, "docs/s",
           f"whole run {full:.1f}s: read, hash, collection+index, embed+upsert, flush, load")
    figure("ingest.rerun_unchanged", noop, "s", f"{DOCUMENTS} documents, all skipped by content hash")


if __name__ == "__main__":
    main()
