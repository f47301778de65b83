"""recall@k of the index Milvus serves, against exact search over the same stored vectors.

Queries: a deterministic sample of stored vectors ("held out": each query's own row is removed
from both answers, else every query finds itself and recall is inflated by 1/k).

Exact search is done here with numpy over the vectors streamed out of Milvus, not with a FLAT
copy of the collection inside Milvus: a copy would double the collection's memory on the shared
server, need its own load, and be a second thing to keep in step. Streaming (query_iterator pages,
a running top-k per query) keeps the operator's memory at one page plus queries x k, and the cost
is sample x rows x dimension multiply-adds (100 x 1M x 384 = 38 GFLOP: seconds) plus reading the
vectors once per measurement (spec.optimization.recall.intervalSeconds, hourly by default).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiops.api.vectorindex import VectorIndexSpec
from aiops.vectors.store import (
    CONSISTENCY,
    VECTOR_FIELD,
    RecallAction,
    iterate_rows,
    rebuild_index,
    recall_action,
    search_params,
)


@dataclass(frozen=True)
class RecallResult:
    """recall@k over `queries` held-out stored vectors, searched with `search_params`; a float
    where a number is expected (`float(result)`, comparisons)."""

    recall: float
    k: int
    queries: int
    search_params: dict[str, Any]
    seconds: float

    def __float__(self) -> float:
        return self.recall

    def __format__(self, spec: str) -> str:
        return format(self.recall, spec)

    def __lt__(self, other) -> bool:
        return self.recall < float(other)

    def __ge__(self, other) -> bool:
        return self.recall >= float(other)

    def __eq__(self, other) -> bool:
        return self.recall == float(other) if isinstance(other, int | float) else super().__eq__(other)

    __hash__ = object.__hash__


def similarity(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Higher is nearer, for every metric (L2: negated squared distance)."""
    if metric == "L2":
        squared = np.sum(vectors ** 2, axis=1)[None, :] + np.sum(queries ** 2, axis=1)[:, None]
        return -(squared - 2 * queries @ vectors.T)
    if metric == "COSINE":
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return queries @ vectors.T


def exact_top_k(queries: np.ndarray, query_ids: list[str], pages, k: int, metric: str) -> list[list[str]]:
    """Exact k nearest ids per query over (ids, vectors) pages, excluding each query's own id."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float64)
    best_ids = np.full((len(queries), k), "", dtype=object)
    own = np.array(query_ids, dtype=object)[:, None]
    for ids, vectors in pages:
        scores = similarity(queries, vectors, metric).astype(np.float64)
        scores[own == np.array(ids, dtype=object)[None, :]] = -np.inf
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(np.array(ids, dtype=object), scores.shape)], axis=1)
        keep = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(all_scores, keep, axis=1)
        best_ids = np.take_along_axis(all_ids, keep, axis=1)
    return [[i for i, s in zip(row_ids, row_scores) if np.isfinite(s)]
            for row_ids, row_scores in zip(best_ids.tolist(), best_scores.tolist())]


def recall_at_k(approximate: list[list[str]], exact: list[list[str]], k: int) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k|."""
    scores = [len(set(a[:k]) & set(e[:k])) / len(e[:k]) for a, e in zip(approximate, exact) if e]
    return float(np.mean(scores)) if scores else 1.0


def sample_queries_from(pages, count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """A reservoir sample of stored (id, vector) pairs: uniform, one pass, deterministic per seed."""
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    seen = 0
    for page_ids, page_vectors in pages:
        for i, vector in zip(page_ids, page_vectors):
            if len(ids) < count:
                ids.append(i)
                vectors.append(vector)
            else:
                slot = int(rng.integers(0, seen + 1))
                if slot < count:
                    ids[slot], vectors[slot] = i, vector
            seen += 1
    return ids, np.array(vectors, dtype=np.float32).reshape(len(ids), -1)


def vector_pages(client, name: str):
    for page in iterate_rows(client, name, ["id", VECTOR_FIELD]):
        yield [row["id"] for row in page], np.asarray([row[VECTOR_FIELD] for row in page], dtype=np.float32)


def approximate_top_k(client, spec: VectorIndexSpec, queries: np.ndarray, query_ids: list[str], k: int,
                      params: dict[str, Any]) -> list[list[str]]:
    """The served index's answers (k + 1 asked, the query's own row dropped)."""
    out: list[list[str]] = []
    for start in range(0, len(queries), 100):
        batch = queries[start:start + 100]
        results = client.search(spec.collection.name, data=batch.tolist(), limit=k + 1, anns_field=VECTOR_FIELD,
                                search_params={"metric_type": spec.collection.metric, "params": params},
                                output_fields=["id"], consistency_level=CONSISTENCY)
        for own, hits in zip(query_ids[start:start + 100], results):
            out.append([hit["id"] for hit in hits if hit["id"] != own][:k])
    return out


def measure_recall(client, spec: VectorIndexSpec, k: int | None = None, sample_queries: int | None = None,
                   params: dict[str, Any] | None = None, seed: int = 0) -> RecallResult:
    """recall@k (k, sample size default to spec.optimization.recall) of the loaded collection,
    searched with store.search_params(spec, params), against exact search. Two passes over the
    stored vectors: one to sample queries, one for the exact answers. 1.0 for an empty collection.
    Returns a RecallResult, which is also usable as the float recall."""
    started = time.monotonic()
    policy = spec.optimization.recall
    k, count = k or policy.k, sample_queries or policy.sample_queries
    name, effective = spec.collection.name, search_params(spec, params)
    query_ids, queries = sample_queries_from(vector_pages(client, name), count, seed)
    if not query_ids:
        return RecallResult(1.0, k, 0, effective, time.monotonic() - started)
    exact = exact_top_k(queries, query_ids, vector_pages(client, name), k, spec.collection.metric)
    approximate = approximate_top_k(client, spec, queries, query_ids, k, effective)
    return RecallResult(recall_at_k(approximate, exact, k), k, len(query_ids), effective, time.monotonic() - started)


def improve_recall(client, spec: VectorIndexSpec, recall: float, current: dict[str, Any] | None = None) -> RecallAction:
    """Acts on the recall floor (store.recall_action): "rebuild" rebuilds the index here; "raise"
    returns the raised search params, which the caller keeps (status) and passes as `params` to
    measure_recall and to searches (Milvus stores no search params); "none" does nothing.
    str(action) says what happened, for an Event or a condition message."""
    action = recall_action(spec, float(recall), current)
    if action.kind == "rebuild":
        state = rebuild_index(client, spec)
        params = ", ".join(f"{k}={v}" for k, v in state.params.items()) or "defaults"
        return RecallAction("rebuild", action.search_params, f"{action.reason}: rebuilt {state.type} ({params}), "
                                                              f"index {state.state}")
    return action
