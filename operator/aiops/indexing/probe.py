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

    async def measure(self, uri: str, token: str | None, spec: VectorIndexSpec) -> IndexReport:
        from aiops.vectors.recall import measure_recall
        from aiops.vectors.store import describe_index

        def go() -> IndexReport:
            database = spec.milvus.external.database if spec.milvus.external else "default"
            client = _client(uri, token, database)
            try:
                if not client.has_collection(spec.collection.name):
                    raise ProbeError("CollectionMissing", f"collection {spec.collection.name} does not exist yet")
                check = spec.optimization.recall
                result = measure_recall(client, spec, k=check.k, sample_queries=check.sample_queries)
                return IndexReport(recall=result.recall, queries=result.queries, index=describe_index(client, spec))
            except ProbeError:
                raise
            except Exception as e:
                raise ProbeError("RecallCheckFailed", f"measuring recall failed: {e}") from None
            finally:
                client.close()

        return await asyncio.to_thread(go)

    async def improve(self, uri: str, token: str | None, spec: VectorIndexSpec, recall: float) -> str:
        """Rebuilds the index (with search params raised where the spec allows); says what it did."""
        from aiops.vectors.recall import improve_recall

        def go() -> str:
            database = spec.milvus.external.database if spec.milvus.external else "default"
            client = _client(uri, token, database)
            try:
                return improve_recall(client, spec, recall)
            except Exception as e:
                raise ProbeError("RebuildFailed", f"rebuilding the index failed: {e}") from None
            finally:
                client.close()

        return await asyncio.to_thread(go)
