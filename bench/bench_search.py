"""Search quality and speed per index type on real-text embeddings, on the real Milvus 2.3 server.

20,000 docstring passages (bench/vectorcorpus.py, MiniLM-L6 vectors, cached) are stored once;
200 other passages are the queries (not in the collection: a user's question is not a stored
document). Exact answers: brute force with numpy over the same 20k vectors. For each index type
the server builds: the build time, recall@10 and single-query QPS at the operator's default
parameters (aiops.vectors.store.DEFAULT_BUILD_PARAMS / DEFAULT_SEARCH_PARAMS), then a sweep of the
search parameter to find the smallest value that reaches recall@10 >= 0.95. Last, the operator's
own live measurement (recall.measure_recall: stored vectors as held-out queries) for HNSW, to show
it agrees with the offline figure.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pymilvus import MilvusClient  # noqa: E402

from aiops.api.vectorindex import VectorIndexSpec  # noqa: E402
from aiops.devenv.milvusserver import MilvusServer  # noqa: E402
from aiops.vectors import store  # noqa: E402
from aiops.vectors.documents import Document  # noqa: E402
from aiops.vectors.recall import measure_recall, recall_at_k  # noqa: E402
from report import figure  # noqa: E402
from vectorcorpus import embeddings, passages  # noqa: E402

ROWS = int(os.environ.get("AIOPS_BENCH_SEARCH_ROWS", "20000"))
ONLY = set(filter(None, os.environ.get("AIOPS_BENCH_SEARCH_TYPES", "").split(",")))  # e.g. HNSW,IVF_FLAT
BUILD_TIMEOUT = {"DISKANN": 60.0}  # the embedded 2.3.5 server retries a failing DISKANN build forever
QUERIES = 200
K = 10
NAME = "bench_search"
# CPU index types of Milvus 2.3 (GPU_* need the GPU build); each with the parameter to sweep.
TYPES: dict[str, tuple[str, list[int]] | None] = {
    "FLAT": None, "IVF_FLAT": ("nprobe", [4, 8, 16, 32, 64]), "IVF_SQ8": ("nprobe", [4, 8, 16, 32, 64]),
    "IVF_PQ": ("nprobe", [8, 16, 32, 64, 128]), "HNSW": ("ef", [16, 32, 64, 128, 256]),
    "SCANN": ("nprobe", [4, 8, 16, 32, 64]), "DISKANN": ("search_list", [20, 50, 100, 200]), "AUTOINDEX": None,
}


def spec_for(index_type: str) -> VectorIndexSpec:
    return VectorIndexSpec.from_wire({"collection": {"name": NAME, "dimension": 384, "metric": "COSINE"},
                                      "index": {"type": index_type}, "source": {"configMap": {"name": "docs"}}})


def exact(vectors: np.ndarray, ids: list[str], queries: np.ndarray) -> list[list[str]]:
    scores = queries @ vectors.T  # normalised vectors: cosine
    top = np.argsort(-scores, axis=1)[:, :K]
    return [[ids[i] for i in row] for row in top]


def search(client, queries: np.ndarray, params: dict) -> tuple[list[list[str]], float]:
    """Answers and QPS, one query per request (what an application's lookups look like)."""
    answers = []
    t0 = time.perf_counter()
    for query in queries:
        hits = client.search(NAME, data=[query.tolist()], limit=K, search_params={"params": params})[0]
        answers.append([hit["id"] for hit in hits])
    return answers, len(queries) / (time.perf_counter() - t0)


def main() -> None:
    docs = passages(ROWS + QUERIES)
    vectors = embeddings([d["text"] for d in docs])
    stored, stored_vectors = docs[:ROWS], vectors[:ROWS]
    ids = [d["id"] for d in stored]
    queries = vectors[ROWS:ROWS + QUERIES]
    truth = exact(stored_vectors, ids, queries)
    with tempfile.TemporaryDirectory() as tmp, MilvusServer(Path(tmp) / "milvus") as server:
        client = MilvusClient(uri=server.uri)
        spec = spec_for("FLAT")
        store.ensure_collection(client, spec)
        store.ensure_index(client, spec)
        rows = [Document(d["id"], d["text"], d["metadata"], "h") for d in stored]
        for start in range(0, ROWS, 2000):
            store.upsert_rows(client, NAME, store.document_rows(rows[start:start + 2000],
                                                                stored_vectors[start:start + 2000]))
        client.flush(NAME)
        figure("search.rows", ROWS, "rows", f"docstring passages, MiniLM-L6 384-d, {QUERIES} held-out queries")
        for index_type, sweep in TYPES.items():
            if not ONLY or index_type in ONLY:
                measure_type(client, index_type, sweep, queries, truth)
        hnsw = spec_for("HNSW")
        store.ensure_index(client, hnsw)
        t0 = time.perf_counter()
        live = measure_recall(client, hnsw, k=K, sample_queries=100)
        figure("search.HNSW.operator_measured_recall@10", live.recall, "",
               f"recall.measure_recall, 100 stored vectors held out, {time.perf_counter() - t0:.1f}s")
        client.close()


def measure_type(client, index_type: str, sweep, queries: np.ndarray, truth: list[list[str]]) -> None:
    spec = spec_for(index_type)
    t0 = time.perf_counter()
    state = store.ensure_index(client, spec, build_timeout=BUILD_TIMEOUT.get(index_type, 900.0))
    build = time.perf_counter() - t0
    if state.state != "Ready":
        figure(f"search.{index_type}", 0, "", f"not available on this server: {state.message[:90]}")
        return
    answers, qps = search(client, queries, state.search_params)
    params = ", ".join(f"{k}={v}" for k, v in {**state.params, **state.search_params}.items()) or "none"
    figure(f"search.{index_type}.recall@10", recall_at_k(answers, truth, K), "", f"defaults: {params}")
    figure(f"search.{index_type}.qps", qps, "q/s", f"one query per request; build {build:.1f}s")
    if sweep is None:
        return
    key, values = sweep
    for value in values:
        answers, qps = search(client, queries, {**state.search_params, key: value})
        recall = recall_at_k(answers, truth, K)
        if recall >= 0.95:
            figure(f"search.{index_type}.first_{key}_reaching_0.95", value, "",
                   f"recall@10 {recall:.3f} at {qps:.0f} q/s")
            return
    figure(f"search.{index_type}.first_{key}_reaching_0.95", 0, "", f"none of {values} (best {recall:.3f})")


if __name__ == "__main__":
    main()
