"""The Milvus side of a VectorIndex: collection, index, rows, counts and compaction (pymilvus).

Every function takes a `pymilvus.MilvusClient` and is blocking: the operator calls them in a
worker thread (kopf#958), the ingest worker directly. Verified against the real Milvus 2.3.5
server with pymilvus 3.0.

Schema (one row per document): `id` VARCHAR(512) primary key (the document id, so an upsert
replaces and never duplicates), `vector` FLOAT_VECTOR(dimension), `content_hash` VARCHAR(64)
(what the vector was made from: documents with an unchanged hash are skipped), `text`
VARCHAR (truncated to TEXT_MAX_BYTES: search results show it, the source keeps the full text) and
`metadata` JSON. The collection's default consistency is Bounded (Milvus's own default): an
application's search does not wait for the newest writes (Strong waits for the next time tick, up
to ~200 ms per search here). This module's own reads (counts, stored hashes) ask for Strong: a
count right after an upsert must include it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiops.api.vectorindex import VectorIndexSpec
from aiops.conditions import ReasonedError

TEXT_MAX_BYTES = 8192
HASH_LENGTH = 64
VECTOR_FIELD = "vector"
OUTPUT_FIELDS = ("id", "content_hash", "text", "metadata")
QUERY_BATCH = 4096  # rows per query_iterator page (Milvus caps one query at 16384)
CONSISTENCY = "Strong"
OWNER_PROPERTY = "aiops.owner"  # the collection property naming its VectorIndex

# The operator's build parameters per index type when the spec leaves them unset, and the search
# parameters it uses. Chosen by bench/bench_search.py: recall@10 >= 0.95 on 20k MiniLM embeddings
# of real text (200 held-out passages as queries) for every CPU type but IVF_PQ. A fixed nlist of
# 128 suits collections of 10k-1M rows (Milvus advises ~4*sqrt(rows)); larger collections should
# set nlist and nprobe in the spec, and the recall check raises nprobe when recall falls.
DEFAULT_BUILD_PARAMS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": 128},
    "IVF_SQ8": {"nlist": 128},
    "IVF_PQ": {"nlist": 128, "m": 0, "nbits": 8},  # m = 0: dimension / 4 (set in build_params)
    "HNSW": {"M": 16, "efConstruction": 200},
    "SCANN": {"nlist": 128},
    "DISKANN": {},
    "AUTOINDEX": {},
    "GPU_IVF_FLAT": {"nlist": 128},
    "GPU_IVF_PQ": {"nlist": 128, "m": 0, "nbits": 8},
    "GPU_CAGRA": {"intermediate_graph_degree": 64, "graph_degree": 32},
    "GPU_BRUTE_FORCE": {},
}
DEFAULT_SEARCH_PARAMS: dict[str, dict[str, Any]] = {
    "FLAT": {},
    "IVF_FLAT": {"nprobe": 32},  # 20k rows, nlist 128: nprobe 16 gave recall@10 0.90, 32 gave 0.957
    "IVF_SQ8": {"nprobe": 32},  # 0.899 at 16, 0.955 at 32
    "IVF_PQ": {"nprobe": 32},  # PQ is lossy: ~0.83 at any nprobe with m = dimension/4 (no refine in 2.3)
    "HNSW": {"ef": 64},  # 0.989 (ef 32: 0.959)
    "SCANN": {"nprobe": 32, "reorder_k": 100},  # 0.901 at 16, 0.957 at 32
    "DISKANN": {"search_list": 100},
    "AUTOINDEX": {},
    "GPU_IVF_FLAT": {"nprobe": 32},
    "GPU_IVF_PQ": {"nprobe": 32},
    "GPU_CAGRA": {"itopk_size": 128},
    "GPU_BRUTE_FORCE": {},
}
# The search parameter the operator may raise when recall falls below the floor, and its ceiling.
RAISABLE_SEARCH_PARAM: dict[str, tuple[str, int]] = {
    "IVF_FLAT": ("nprobe", 1024), "IVF_SQ8": ("nprobe", 1024), "IVF_PQ": ("nprobe", 1024),
    "SCANN": ("nprobe", 1024), "HNSW": ("ef", 2048), "DISKANN": ("search_list", 2048),
    "GPU_IVF_FLAT": ("nprobe", 1024), "GPU_IVF_PQ": ("nprobe", 1024), "GPU_CAGRA": ("itopk_size", 1024),
}


class StoreError(ReasonedError):
    """A Milvus state the operator must report rather than repair (`reason` is CamelCase)."""


# ---- schema and collection ----------------------------------------------------------------------

def build_schema(dimension: int):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                        description="aiops VectorIndex: one row per document")
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=HASH_LENGTH)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
    schema.add_field("metadata", DataType.JSON)
    return schema


def stored_dimension(description: dict) -> int | None:
    for f in description.get("fields", []):
        if f.get("name") == VECTOR_FIELD:
            return int(f.get("params", {}).get("dim", 0)) or None
    return None


def collection_owner(description: dict) -> str | None:
    """The VectorIndex ("namespace/name") recorded on a collection; None: nobody (or released)."""
    return (description.get("properties") or {}).get(OWNER_PROPERTY) or None


def ensure_collection(client, spec: VectorIndexSpec, owner: str | None = None) -> bool:
    """Creates the collection when missing; returns True when it did. An existing one must have
    our vector field with the spec's dimension (raises StoreError("CollectionMismatch")): changing
    the dimension means new vectors for everything, which is a new collection, not an update.

    `owner` ("namespace/name" of the VectorIndex): recorded on the collection as a property, so
    that a second VectorIndex naming the same collection is refused (StoreError("CollectionOwned"))
    instead of deleting the first one's documents as "gone from its source". A collection with no
    owner recorded (made before, or released by setting the property empty) is claimed."""
    name = spec.collection.name
    properties = {OWNER_PROPERTY: owner} if owner else None
    if not client.has_collection(name):
        try:
            client.create_collection(name, schema=build_schema(spec.collection.dimension),
                                     consistency_level="Bounded", properties=properties)
            return True
        except Exception:  # noqa: BLE001 - another run made it first ("duplicate collection"): check it
            if not client.has_collection(name):
                raise
    description = client.describe_collection(name)
    names = {f.get("name") for f in description.get("fields", [])}
    dimension = stored_dimension(description)
    if not {"id", VECTOR_FIELD, "content_hash"} <= names or dimension != spec.collection.dimension:
        raise StoreError("CollectionMismatch",
                         f"collection {name} exists with fields {sorted(names)} and dimension {dimension}; "
                         f"the spec needs id/vector/content_hash and dimension {spec.collection.dimension}: "
                         "use a new collection name (or drop this one) to change the schema")
    recorded = collection_owner(description)
    if owner and recorded and recorded != owner:
        raise StoreError("CollectionOwned", owned_message(name, recorded))
    if owner and not recorded:
        client.alter_collection_properties(name, properties=properties)
    return False


def owned_message(collection: str, owner: str) -> str:
    return (f"collection {collection} belongs to VectorIndex {owner}: each would delete the other's documents "
            f"as gone from its source. Name another collection, or release this one first (set its "
            f"collection property {OWNER_PROPERTY} to an empty string)")


# ---- the index ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexState:
    """The index Milvus has after ensure_index (maps onto status.index).

    state: "Absent" | "Building" | "Ready" | "Failed" (aiops.api.vectorindex.IndexState);
    params: the build parameters in effect (spec over defaults); search_params: what searches use;
    rebuilt: this call dropped and rebuilt it; rows/indexed_rows: rows in the collection and rows
    the index covers (they differ while Milvus builds on new segments)."""

    type: str | None
    metric: str | None
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, Any] = field(default_factory=dict)
    rebuilt: bool = False
    created: bool = False
    rows: int = 0
    indexed_rows: int = 0
    message: str = ""


def build_params(spec: VectorIndexSpec) -> dict[str, Any]:
    """Spec params over the operator's defaults for the type."""
    params = {**DEFAULT_BUILD_PARAMS.get(spec.index.type, {}), **spec.index.params}
    if "m" in params and params["m"] == 0:  # PQ sub-quantizers: a divisor of the dimension
        params["m"] = next(m for m in (spec.collection.dimension // 4, 48, 32, 16, 8, 4, 2, 1)
                           if m and spec.collection.dimension % m == 0)
    return params


def search_params(spec: VectorIndexSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults < spec.index.searchParams < overrides (a raise the operator made after a recall check)."""
    return {**DEFAULT_SEARCH_PARAMS.get(spec.index.type, {}), **spec.index.search_params, **(overrides or {})}


def describe_vector_index(client, name: str) -> dict[str, Any] | None:
    indexes = client.list_indexes(name, field_name=VECTOR_FIELD)
    return client.describe_index(name, indexes[0]) if indexes else None


def index_matches(existing: dict[str, Any], index_type: str, metric: str, params: dict[str, Any]) -> bool:
    """Milvus returns every parameter as a string; compare them as such."""
    if existing.get("index_type") != index_type or existing.get("metric_type") != metric:
        return False
    return all(str(existing.get(key)) == str(value) for key, value in params.items())


def _build_state(info: dict[str, Any] | None) -> str:
    if info is None:
        return "Absent"
    state = str(info.get("state", "Finished"))
    if state == "Failed":
        return "Failed"
    return "Ready" if state == "Finished" else "Building"


def ensure_index(client, spec: VectorIndexSpec, build_timeout: float | None = 1800.0) -> IndexState:
    """Creates the vector index per spec, or rebuilds it when type, metric or parameters differ,
    and loads the collection. A rebuild releases, drops and recreates the index on the same
    segments: no row is lost, but searches fail until it is loaded again (Milvus 2.3 allows one
    index per vector field; a zero-downtime swap would need a second collection and an alias).
    Waits for the build up to build_timeout seconds: Milvus retries a failing build forever (the
    embedded 2.3.5 server's DISKANN fails with bad_function_call), so an unbounded wait would hang
    the caller; after the timeout the state is "Failed" and the collection is not loaded."""
    name, metric = spec.collection.name, spec.collection.metric
    params = build_params(spec)
    existing = describe_vector_index(client, name)
    created = rebuilt = False
    if existing is not None and not index_matches(existing, spec.index.type, metric, params):
        client.release_collection(name)
        client.drop_index(name, existing.get("index_name", VECTOR_FIELD))
        existing, rebuilt = None, True
    if existing is None:
        index_params = client.prepare_index_params()
        index_params.add_index(field_name=VECTOR_FIELD, index_name=VECTOR_FIELD, index_type=spec.index.type,
                               metric_type=metric, params=params)
        try:
            # An int: pymilvus 3.0's wait loop only honours a timeout that isinstance(int).
            client.create_index(name, index_params, timeout=int(build_timeout) if build_timeout else None)
        except Exception as exc:  # noqa: BLE001 - Milvus says why (unsupported type, bad params, timeout)
            return IndexState(spec.index.type, metric, "Failed", params, search_params(spec),
                              message=f"create_index: {exc}"[:500])
        created = not rebuilt
    client.load_collection(name)
    info = describe_vector_index(client, name) or {}
    return IndexState(spec.index.type, metric, _build_state(info), params, search_params(spec), rebuilt, created,
                      int(info.get("total_rows", 0)), int(info.get("indexed_rows", 0)))


def describe_index(client, spec: VectorIndexSpec) -> dict[str, Any]:
    """The served index for status.index: {"type", "metric", "state", "params", "rows",
    "indexedRows"} ("state": Absent/Building/Ready/Failed); {"state": "Absent"} without one."""
    info = describe_vector_index(client, spec.collection.name)
    if info is None:
        return {"state": "Absent"}
    skip = {"index_type", "metric_type", "field_name", "index_name", "total_rows", "indexed_rows",
            "pending_index_rows", "state"}
    return {"type": info.get("index_type"), "metric": info.get("metric_type"), "state": _build_state(info),
            "params": {k: v for k, v in info.items() if k not in skip},
            "rows": int(info.get("total_rows", 0)), "indexedRows": int(info.get("indexed_rows", 0))}


# ---- rows ------------------------------------------------------------------------------------

def truncate_utf8(text: str, limit: int = TEXT_MAX_BYTES) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")


def document_rows(documents, vectors) -> list[dict[str, Any]]:
    """Rows for upsert from aiops.vectors.documents.Document objects and their vectors."""
    return [{"id": d.id, VECTOR_FIELD: v.tolist() if hasattr(v, "tolist") else list(v),
             "content_hash": d.content_hash, "text": truncate_utf8(d.text), "metadata": d.metadata}
            for d, v in zip(documents, vectors)]


def upsert_rows(client, name: str, rows: list[dict[str, Any]]) -> int:
    """Insert or replace by id: the idempotent write (a plain insert of an existing id would add a
    second row in real Milvus)."""
    if not rows:
        return 0
    result = client.upsert(name, rows)
    return int(result.get("upsert_count", len(rows))) if isinstance(result, dict) else len(rows)


def delete_ids(client, name: str, ids: list[str], batch: int = 1000) -> int:
    for start in range(0, len(ids), batch):
        client.delete(name, ids=ids[start:start + batch])
    return len(ids)


def iterate_rows(client, name: str, fields: list[str], batch_size: int = QUERY_BATCH) -> Iterator[list[dict]]:
    """Every row, a page at a time (a plain query stops at 16384 rows)."""
    iterator = client.query_iterator(name, batch_size=batch_size, filter="", output_fields=fields,
                                     consistency_level=CONSISTENCY)
    try:
        while page := iterator.next():
            yield page
    finally:
        iterator.close()


def stored_hashes(client, name: str) -> dict[str, str]:
    """id -> content_hash of every stored row."""
    return {row["id"]: row["content_hash"] for page in iterate_rows(client, name, ["id", "content_hash"])
            for row in page}


# ---- counts, compaction, rebuild -------------------------------------------------------------------

@dataclass(frozen=True)
class CollectionStats:
    """rows: live rows (count(*), what searches see); entities: rows Milvus keeps in segments,
    deleted and replaced ones included until compaction; deleted: their difference."""

    rows: int
    entities: int
    indexed_rows: int
    index_state: str

    @property
    def deleted(self) -> int:
        return max(self.entities - self.rows, 0)

    @property
    def deleted_ratio(self) -> float:
        return self.deleted / self.entities if self.entities else 0.0


def count_rows(client, name: str) -> int:
    """count(*) with Strong consistency: the number of distinct live rows. num_entities alone
    counts deleted and upserted-over rows too."""
    result = client.query(name, filter="", output_fields=["count(*)"], consistency_level=CONSISTENCY)
    return int(result[0]["count(*)"])


def collection_stats(client, name: str, flush: bool = False) -> CollectionStats:
    """Counts for status and the optimisation policy. Milvus counts entities of sealed segments
    only after a flush; pass flush=True for exact `entities` (costs a seal of growing segments)."""
    if flush:
        client.flush(name)
    rows = count_rows(client, name)
    entities = int(client.get_collection_stats(name).get("row_count", 0))
    info = describe_vector_index(client, name) or {}
    return CollectionStats(rows, max(entities, rows), int(info.get("indexed_rows", 0)), _build_state(info or None))


def maybe_compact(client, spec: VectorIndexSpec, stats: CollectionStats) -> int | None:
    """Starts a compaction when spec.optimization.compaction is on and deleted/all >= its ratio;
    returns the compaction id (poll client.get_compaction_state(id)) or None."""
    policy = spec.optimization.compaction
    if not policy.enabled or stats.entities == 0 or stats.deleted_ratio < policy.deleted_ratio:
        return None
    return int(client.compact(spec.collection.name))


def needs_rebuild(spec: VectorIndexSpec, rows_now: int, rows_at_build: int | None) -> str | None:
    """Why the index should be rebuilt for growth (spec.optimization.rebuild), or None.
    rows_at_build: status.index.rows of the last build. IVF centroids and PQ codebooks are trained
    on the rows present at build time; after large growth they describe the data badly."""
    policy = spec.optimization.rebuild
    if not policy.enabled or rows_at_build is None:
        return None
    growth = (rows_now - rows_at_build) / max(rows_at_build, 1)
    if growth >= policy.growth_ratio:
        return f"collection grew {growth:.0%} since the index was built ({rows_at_build} -> {rows_now} rows)"
    return None


def rebuild_index(client, spec: VectorIndexSpec, build_timeout: float | None = 1800.0) -> IndexState:
    """Drops and rebuilds the index with the spec's params (after growth, or below the recall floor)."""
    name = spec.collection.name
    existing = describe_vector_index(client, name)
    if existing is not None:
        client.release_collection(name)
        client.drop_index(name, existing.get("index_name", VECTOR_FIELD))
    state = ensure_index(client, spec, build_timeout)
    return IndexState(**{**state.__dict__, "rebuilt": True, "created": False})


# ---- the recall floor ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecallAction:
    """What to do after a recall measurement: kind "none" | "raise" | "rebuild".
    raise: search with `search_params` from now on (keep them, e.g. in status, and pass them to
    recall.measure_recall and to searches); rebuild: call rebuild_index."""

    kind: str
    search_params: dict[str, Any]
    reason: str

    def __str__(self) -> str:
        return self.reason


def recall_action(spec: VectorIndexSpec, recall: float, current: dict[str, Any] | None = None) -> RecallAction:
    """The recall floor (spec.optimization.recall.minRecall). Below it: raise the index's search
    parameter (double it, up to a ceiling) when the spec leaves that parameter to the operator;
    when the user pinned it in spec.index.searchParams, or it is at its ceiling, or the type has
    none (FLAT/AUTOINDEX), rebuild instead."""
    recall, effective = float(recall), search_params(spec, current)
    floor = spec.optimization.recall.min_recall
    if recall >= floor:
        return RecallAction("none", effective, f"recall {recall:.3f} >= {floor}")
    raisable = RAISABLE_SEARCH_PARAM.get(spec.index.type)
    if raisable and raisable[0] not in spec.index.search_params:
        key, ceiling = raisable
        value = int(effective.get(key, 0) or 8)
        if value < ceiling:
            raised = {**effective, key: min(value * 2, ceiling)}
            if key == "nprobe" and "nlist" in build_params(spec):
                raised[key] = min(raised[key], int(build_params(spec)["nlist"]))
            if raised[key] > value:
                return RecallAction("raise", raised, f"recall {recall:.3f} < {floor}: {key} {value} -> {raised[key]}")
    return RecallAction("rebuild", effective, f"recall {recall:.3f} < {floor}: rebuild the index")

