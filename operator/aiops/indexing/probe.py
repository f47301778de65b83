"""The operator's own look at the live Milvus index: is Milvus there, what index does it serve, what
recall does it reach against exact search, and a rebuild when recall falls below the floor.

pymilvus is synchronous; every call runs in a thread so the operator's event loop never waits on
Milvus. The measuring itself is `aiops.vectors` (shared with the ingest worker)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiops.api.vectorindex import VectorIndexSpec
from aiops.conditions import ReasonedError

log = logging.getLogger(__name__)
TIMEOUT = 10.0
T = TypeVar("T")


class ProbeError(ReasonedError):
    """The recall probe of a live index failed."""


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


def _database(spec: VectorIndexSpec) -> str:
    return spec.milvus.external.database if spec.milvus.external else "default"


async def _with_client(uri: str, token: str | None, database: str, work: Callable[[Any], T],
                       failure: tuple[str, str], collection: str | None = None) -> T:
    """`work(client)` in a thread on a client of its own, always closed afterwards. A missing
    `collection` is CollectionMissing; any other error becomes ProbeError(reason, "text: error")."""
    def go() -> T:
        client = _client(uri, token, database)
        try:
            if collection and not client.has_collection(collection):
                raise ProbeError("CollectionMissing", f"collection {collection} does not exist yet")
            return work(client)
        except ProbeError:
            raise
        except Exception as e:
            raise ProbeError(failure[0], f"{failure[1]}: {e}") from None
        finally:
            client.close()

    return await asyncio.to_thread(go)


MILVUS_ROOT, MILVUS_DEFAULT_PASSWORD = "root", "Milvus"  # the superuser every new Milvus starts with


class IndexProbe:
    async def secure(self, uri: str, password: str) -> bool:
        """Milvus's root opens with `password` from now on: a Milvus that still has its built-in
        password gets `password` instead. True when it changed the password, False when it was
        set already; ProbeError when neither opens root (MilvusAuthFailed) or Milvus is away."""
        from pymilvus import MilvusClient

        def connect(secret: str):
            client = MilvusClient(uri=uri, token=f"{MILVUS_ROOT}:{secret}", timeout=TIMEOUT)
            try:
                client.list_collections()  # signed in, not only connected
            except Exception:
                client.close()
                raise
            return client

        def go() -> bool:
            try:
                connect(password).close()
                return False
            except Exception as e:  # pymilvus raises its own hierarchy and plain gRPC errors alike
                refused = e
            try:
                client = connect(MILVUS_DEFAULT_PASSWORD)
            except Exception as e:
                if "auth" not in f"{refused} {e}".lower():
                    raise ProbeError("MilvusUnreachable", f"cannot connect: {e}") from None
                raise ProbeError("MilvusAuthFailed", (
                    "Milvus's root user opens neither with the operator's password nor with Milvus's "
                    "built-in one (another operator's key secured this data, or someone changed the "
                    f"password): {refused}")) from None
            try:
                client.update_password(MILVUS_ROOT, MILVUS_DEFAULT_PASSWORD, password)
            finally:
                client.close()
            return True

        return await asyncio.to_thread(go)

    async def ping(self, uri: str, token: str | None, database: str = "default",
                   collection: str | None = None) -> str | None:
        """Milvus answers (else ProbeError); returns the VectorIndex ("namespace/name") recorded as
        `collection`'s owner, None when the collection is absent or nobody's."""
        from aiops.vectors.store import collection_owner

        def work(client) -> str | None:
            names = client.list_collections()
            return collection_owner(client.describe_collection(collection)) if collection in names else None

        return await _with_client(uri, token, database, work, ("MilvusUnreachable", "no answer"))

    async def measure(self, uri: str, token: str | None, spec: VectorIndexSpec,
                      search_params: dict[str, Any] | None = None) -> IndexReport:
        """recall@k of the live index searched with `search_params` (what an earlier raise chose)."""
        from aiops.vectors.recall import measure_recall
        from aiops.vectors.store import describe_index

        def work(client) -> IndexReport:
            check = spec.optimization.recall
            result = measure_recall(client, spec, k=check.k, sample_queries=check.sample_queries,
                                    params=search_params or None)
            return IndexReport(recall=result.recall, queries=result.queries, index=describe_index(client, spec))

        return await _with_client(uri, token, _database(spec), work, ("RecallCheckFailed", "measuring recall failed"),
                                  collection=spec.collection.name)

    async def upkeep(self, uri: str, token: str | None, spec: VectorIndexSpec,
                     rows_at_build: int | None) -> Upkeep:
        """The index policy (spec.optimization): compaction when deletes pass the ratio, a rebuild
        when the collection grew past the set fraction since the index was built."""
        from aiops.vectors.store import collection_stats, maybe_compact, needs_rebuild, rebuild_index

        def work(client) -> Upkeep:
            stats = collection_stats(client, spec.collection.name, flush=True)
            done = Upkeep(rows=stats.rows, deleted=stats.deleted, compaction_id=maybe_compact(client, spec, stats))
            reason = needs_rebuild(spec, stats.rows, rows_at_build)
            if reason:
                state = rebuild_index(client, spec)
                done.rebuilt = f"{reason}; {state.type} {state.state}"
            return done

        return await _with_client(uri, token, _database(spec), work, ("IndexUpkeepFailed", "compaction/rebuild failed"),
                                  collection=spec.collection.name)

    async def improve(self, uri: str, token: str | None, spec: VectorIndexSpec, recall: float,
                      search_params: dict[str, Any] | None = None) -> tuple[str, dict[str, Any] | None]:
        """Raises the search parameters the spec leaves to the operator, or rebuilds the index.
        Returns (what was done, the search parameters to use from now on, or None: unchanged)."""
        from aiops.vectors.recall import improve_recall

        def work(client) -> tuple[str, dict[str, Any] | None]:
            action = improve_recall(client, spec, recall, search_params or None)
            return str(action), (action.search_params if action.kind == "raise" else None)

        return await _with_client(uri, token, _database(spec), work, ("RebuildFailed", "rebuilding the index failed"))
