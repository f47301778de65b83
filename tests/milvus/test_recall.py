"""recall@k of the served index against exact search, and the recall floor."""

from __future__ import annotations

import numpy as np
import pytest
from vectorhelpers import make_spec

from aiops.vectors import store
from aiops.vectors.recall import exact_top_k, improve_recall, measure_recall, recall_at_k

COLLECTION = "recall_probe"


@pytest.fixture(scope="module")
def filled(milvus, embedder, corpus):
    """1200 real-text vectors, stored once: more than the 1024 rows below which Milvus does not
    index a sealed segment (it would search it exactly, and every index would look perfect)."""
    spec, _ = make_spec(COLLECTION, index={"type": "FLAT"})
    if milvus.has_collection(COLLECTION):
        milvus.drop_collection(COLLECTION)
    store.ensure_collection(milvus, spec)
    store.ensure_index(milvus, spec)
    from aiops.vectors.documents import Document

    docs = [Document(d["id"], d["text"], d["metadata"], "h") for d in corpus[:1200]]
    store.upsert_rows(milvus, COLLECTION, store.document_rows(docs, embedder.encode([d.text for d in docs])))
    milvus.flush(COLLECTION)
    return spec


def test_flat_index_has_recall_one(milvus, filled):
    result = measure_recall(milvus, filled, k=10, sample_queries=50)
    assert (result.recall, result.queries, result.k) == (1.0, 50, 10) and float(result) == 1.0
    assert store.describe_index(milvus, filled) == {"type": "FLAT", "metric": "COSINE", "state": "Ready",
                                                    "params": {}, "rows": 1200, "indexedRows": 1200}


def test_hnsw_at_the_defaults_is_high_and_a_starved_search_is_low(milvus, filled):
    hnsw, _ = make_spec(COLLECTION, index={"type": "HNSW"})
    store.ensure_index(milvus, hnsw)
    assert measure_recall(milvus, hnsw, k=10, sample_queries=50) >= 0.95
    ivf, _ = make_spec(COLLECTION, index={"type": "IVF_FLAT", "params": {"nlist": 64}})
    store.ensure_index(milvus, ivf)
    starved = measure_recall(milvus, ivf, k=10, sample_queries=50, params={"nprobe": 1})
    assert starved < 0.9
    action = store.recall_action(ivf, starved, {"nprobe": 1})
    assert action.kind == "raise" and action.search_params["nprobe"] == 2
    assert measure_recall(milvus, ivf, k=10, sample_queries=50, params={"nprobe": 64}) == 1.0  # nprobe = nlist
    pinned, _ = make_spec(COLLECTION, index={"type": "IVF_FLAT", "params": {"nlist": 64},
                                             "searchParams": {"nprobe": 1}})
    done = improve_recall(milvus, pinned, starved)
    assert done.kind == "rebuild" and "rebuilt IVF_FLAT" in str(done)
    assert store.count_rows(milvus, COLLECTION) == 1200


def test_exact_top_k_streams_pages_and_leaves_the_query_out():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    ids = [f"v{i}" for i in range(300)]
    pages = [(ids[i:i + 64], vectors[i:i + 64]) for i in range(0, 300, 64)]
    got = exact_top_k(vectors[:5], ids[:5], pages, 4, "L2")
    for q in range(5):
        distances = ((vectors - vectors[q]) ** 2).sum(1)
        distances[q] = np.inf
        assert got[q] == [ids[i] for i in np.argsort(distances)[:4]]
    assert recall_at_k([["a", "b"]], [["a", "c"]], 2) == 0.5


def test_recall_floor_raises_an_operator_param_and_rebuilds_a_pinned_one():
    spec, _ = make_spec(COLLECTION, index={"type": "HNSW"})
    assert store.recall_action(spec, 0.99).kind == "none"
    raised = store.recall_action(spec, 0.8)
    assert raised.kind == "raise" and raised.search_params["ef"] == 128
    pinned, _ = make_spec(COLLECTION, index={"type": "HNSW", "searchParams": {"ef": 32}})
    assert store.recall_action(pinned, 0.8).kind == "rebuild"
    flat, _ = make_spec(COLLECTION, index={"type": "FLAT"})
    assert store.recall_action(flat, 0.5).kind == "rebuild"
    assert store.needs_rebuild(spec, 1600, 1000) is not None and store.needs_rebuild(spec, 1400, 1000) is None
