"""The operator's own look at the live Milvus index: is Milvus there, what index does it serve, what
recall does it reach against exact search, and a rebuild when recall falls below the floor.

pymilvus is synchronous; every call runs in a thread so the operator's event loop never waits on
Milvus. The measuring itself is `aiops.vectors` (shared with the ingest worker)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiops.api.vectorindex import VectorIndexSpec

log = logging.getLogger(__name__)
TIMEOUT = 10.0


class ProbeError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Upkeep:
    """What the index policy did after an ingest: compaction started, index rebuilt for growth."""

    rows: int
    deleted: int
    compaction_id: int | None = None
    rebuilt: str | None = None  # why, when it was rebuilt

    def actions(self) -> list[str]:
        done = []
        if self.compaction_id is not None:
            done.append(f"compaction {self.compaction_id} started ({self.deleted} deleted of "
                        f"{self.rows + self.deleted} entities)")
        if self.rebuilt:
            done.append(f"index rebuilt: {self.rebuilt}")
        return done


@dataclass
class IndexReport:
    recall: float
    queries: int
    index: dict[str, Any] = field(default_factory=dict)


def _client(uri: str, token: str | None, database: str = "default"):
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri=uri, token=token or "", db_name=database, timeout=TIMEOUT)
    except Exception as e:  # pymilvus raises its own hierarchy and plain gRPC errors alike
        raise ProbeError("MilvusUnreachable", f"cannot connect: {e}") from None


class IndexProbe:
    async def ping(self, uri: str, token: str | None, database: str = "default") -> None:
        def go():
            client = _client(uri, token, database)
            try:
                client.list_collections()
            except Exception as e:
                raise ProbeError("MilvusUnreachable", f"no answer: {e}") from None
            finally:
                client.close()

        await asyncio.to_thread(go)

    async def measure(self, uri: str, token: str | None, spec: VectorIndexSpec,
                      search_params: dict[str, Any] | None = None) -> IndexReport:
        """recall@k of the live index searched with `search_params` (what an earlier raise chose)."""
        from aiops.vectors.recall import measure_recall
        from aiops.vectors.store import describe_index

        def go() -> IndexReport:
            database = spec.milvus.external.database if spec.milvus.external else "default"
            client = _client(uri, token, database)
            try:
                if not client.has_collection(spec.collection.name):
                    raise ProbeError("CollectionMissing", f"collection {spec.collection.name} does not exist yet")
                check = spec.optimization.recall
                result = measure_recall(client, spec, k=check.k, sample_queries=check.sample_queries,
                                        params=search_params or None)
                return IndexReport(recall=result.recall, queries=result.queries, index=describe_index(client, spec))
            except ProbeError:
                raise
            except Exception as e:
                raise ProbeError("RecallCheckFailed", f"measuring recall failed: {e}") from None
            finally:
                client.close()

        return await asyncio.to_thread(go)

    async def upkeep(self, uri: str, token: str | None, spec: VectorIndexSpec,
                     rows_at_build: int | None) -> Upkeep:
        """The index policy (spec.optimization): compaction when deletes pass the ratio, a rebuild
        when the collection grew past the set fraction since the index was built."""
        from aiops.vectors.store import collection_stats, maybe_compact, needs_rebuild, rebuild_index

        def go() -> Upkeep:
            database = spec.milvus.external.database if spec.milvus.external else "default"
            client = _client(uri, token, database)
            try:
                if not client.has_collection(spec.collection.name):
                    raise ProbeError("CollectionMissing", f"collection {spec.collection.name} does not exist yet")
                stats = collection_stats(client, spec.collection.name, flush=True)
                done = Upkeep(rows=stats.rows, deleted=stats.deleted,
                              compaction_id=maybe_compact(client, spec, stats))
                reason = needs_rebuild(spec, stats.rows, rows_at_build)
                if reason:
                    state = rebuild_index(client, spec)
                    done.rebuilt = f"{reason}; {state.type} {state.state}"
                return done
            except ProbeError:
                raise
            except Exception as e:
                raise ProbeError("IndexUpkeepFailed", f"compaction/rebuild failed: {e}") from None
            finally:
                client.close()

        return await asyncio.to_thread(go)

    async def improve(self, uri: str, token: str | None, spec: VectorIndexSpec, recall: float,
                      search_params: dict[str, Any] | None = None) -> tuple[str, dict[str, Any] | None]:
        """Raises the search parameters the spec leaves to the operator, or rebuilds the index.
        Returns (what was done, the search parameters to use from now on, or None: unchanged)."""
        from aiops.vectors.recall import improve_recall

        def go() -> tuple[str, dict[str, Any] | None]:
            database = spec.milvus.external.database if spec.milvus.external else "default"
            client = _client(uri, token, database)
            try:
                action = improve_recall(client, spec, recall, search_params or None)
                return str(action), (action.search_params if action.kind == "raise" else None)
            except Exception as e:
                raise ProbeError("RebuildFailed", f"rebuilding the index failed: {e}") from None
            finally:
                client.close()

        return await asyncio.to_thread(go)
