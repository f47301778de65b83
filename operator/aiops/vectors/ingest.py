"""One ingest run: read the source, embed what is new or changed, upsert it by id,
remove what left the source, flush and load.

Why a run can be killed anywhere and re-run: every write is keyed by document id (upsert
replaces, delete is by id), and what counts as done is read back from Milvus (the stored content
hashes), never from a local checkpoint. A killed run leaves some batches stored; the next run
finds their hashes and embeds only the rest. Milvus acknowledges an upsert after writing it to its
log (rocksmq), so an acknowledged batch survives a server kill as well.

Embedding and storing overlap: batch i+1 is embedded while batch i is upserted in a second
thread (one in flight), so Milvus's time hides behind the model's.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiops.api.vectorindex import VectorIndexSpec
from aiops.vectors import store
from aiops.vectors.documents import BadDocument, Document, read_documents, source_checksum, source_files

log = logging.getLogger(__name__)

KILL_AFTER_ENV = "AIOPS_EMBED_KILL_AFTER_BATCHES"  # tests: SIGKILL this process after N stored batches
MAX_FAILURES_REPORTED = 5


@dataclass
class IngestResult:
    """What the worker reports (camelCase keys in to_json; kept well under the 4 KB termination
    message)."""

    total: int = 0
    embedded: int = 0
    skipped: int = 0
    deleted: int = 0
    deletions_held: int = 0  # ids missing from the source, kept because a bad line may hold them
    failed: int = 0
    duration_seconds: float = 0.0
    documents_per_second: float = 0.0
    source_checksum: str = ""
    collection: str = ""
    rows: int = 0
    failures: list[BadDocument] = field(default_factory=list)
    index: store.IndexState | None = None

    def to_json(self) -> dict:
        out = {"ok": True, "total": self.total, "embedded": self.embedded, "skipped": self.skipped,
               "deleted": self.deleted, "deletionsHeld": self.deletions_held, "failed": self.failed,
               "durationSeconds": round(self.duration_seconds, 3),
               "documentsPerSecond": round(self.documents_per_second, 2), "sourceChecksum": self.source_checksum,
               "collection": self.collection, "rows": self.rows}
        if self.failures:
            out["failures"] = [{"where": f.where[:80], "id": (f.id or "")[:80], "reason": f.reason[:120]}
                               for f in self.failures[:MAX_FAILURES_REPORTED]]
        if self.index is not None:
            out["index"] = {"type": self.index.type, "state": self.index.state, "rebuilt": self.index.rebuilt,
                            "params": {k: v for k, v in list(self.index.params.items())[:8]}}
        return out


class SourceEmpty(RuntimeError):
    """The source has no documents at all while the collection holds some: an emptied ConfigMap
    key, a volume mounted empty and a source deliberately cleared read the same, so deleting
    everything waits for `source.allowEmpty: true`."""


class NothingValid(RuntimeError):
    """The source has lines, and none of them is a valid document: storing nothing and deleting
    everything would be the wrong reading of a broken file."""


def plan(documents: list[Document], stored: dict[str, str], delete_missing: bool,
         keep_ids: set[str]) -> tuple[list[Document], list[str]]:
    """(documents to embed, ids to delete). keep_ids: ids of bad lines, whose old vectors stay
    until the line is fixed rather than vanish because of a typo."""
    todo = [d for d in documents if stored.get(d.id) != d.content_hash]
    if not delete_missing:
        return todo, []
    present = {d.id for d in documents} | keep_ids
    return todo, sorted(i for i in stored if i not in present)


def kill_after_batches() -> int | None:
    value = os.environ.get(KILL_AFTER_ENV)
    return int(value) if value else None


def embed_and_upsert(client, name: str, todo: list[Document], embedder,
                     on_batch: Callable[[int, int], None] | None = None) -> int:
    """Embeds in batches (shortest first) and upserts each while the next is embedded."""
    kill_after = kill_after_batches()
    done = batches = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upsert") as pool:
        pending: Future | None = None
        for indices, vectors in embedder.encode_batches([d.text for d in todo]):
            rows = store.document_rows([todo[i] for i in indices], vectors)
            if pending is not None:
                done += pending.result()
                batches += 1
                if on_batch:
                    on_batch(done, len(todo))
            pending = pool.submit(store.upsert_rows, client, name, rows)
            if kill_after is not None and batches >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # a fault for the tests: dies with an upsert in flight
        if pending is not None:
            done += pending.result()
            if on_batch:
                on_batch(done, len(todo))
    return done


def run_ingest(client, spec: VectorIndexSpec, source: Path, embedder=None,
               on_batch: Callable[[int, int], None] | None = None, owner: str | None = None) -> IngestResult:
    """The whole run; raises store.StoreError, SourceEmpty, NothingValid, documents.SourceError,
    embedder.ModelNotFound for the worker to report. `embedder`: an aiops.vectors.embedder.Embedder
    (made from the spec when None; pass one to reuse a loaded model). `owner`: the VectorIndex
    ("namespace/name") the collection must belong to (store.ensure_collection)."""
    started = time.monotonic()
    key = spec.source.config_map.key if spec.source.config_map else None
    files = source_files(source, key)
    checksum = source_checksum(files, Path(source) if Path(source).is_dir() else None)
    parsed = read_documents(files, spec.source, spec.embedding)
    if parsed.bad and not parsed.documents:
        raise NothingValid(f"none of {len(parsed.bad)} lines is a valid document; first: "
                           f"{parsed.bad[0].where}: {parsed.bad[0].reason}")
    name = spec.collection.name
    store.ensure_collection(client, spec, owner)
    index = store.ensure_index(client, spec)
    if index.state == "Failed":
        raise store.StoreError("IndexFailed", index.message)
    stored = store.stored_hashes(client, name)
    if stored and not parsed.documents and not parsed.bad and spec.source.delete_missing \
            and not spec.source.allow_empty:
        raise SourceEmpty(f"the source has no documents while {len(stored)} are stored; deleting them all "
                          "needs source.allowEmpty: true (an emptied ConfigMap key or a volume mounted empty "
                          "reads the same as a cleared source)")
    todo, gone = plan(parsed.documents, stored, spec.source.delete_missing,
                      {b.id for b in parsed.bad if b.id is not None})
    held = 0
    anonymous = [b for b in parsed.bad if b.id is None]  # an unreadable file, a line that is not JSON
    if gone and anonymous:
        held, gone = len(gone), []
        log.warning("ingest %s: %d deletions held until every line reads: %s (%s) may hold those documents",
                    name, held, anonymous[0].where, anonymous[0].reason)
    log.info("ingest %s: %d documents, %d stored, %d to embed, %d to delete, %d bad",
             name, len(parsed.documents), len(stored), len(todo), len(gone), len(parsed.bad))
    embed_started = time.monotonic()
    embedded = 0
    if todo:
        if embedder is None:
            from aiops.vectors.embedder import Embedder

            e = spec.embedding
            embedder = Embedder(e.model, e.device, e.normalize, e.max_sequence_length, e.batch_size)
        if embedder.dimension != spec.collection.dimension:
            raise store.StoreError("DimensionMismatch", f"model {spec.embedding.model} makes {embedder.dimension}-d "
                                   f"vectors; the collection has {spec.collection.dimension}")
        embed_started = time.monotonic()
        embedded = embed_and_upsert(client, name, todo, embedder, on_batch)
    embed_seconds = time.monotonic() - embed_started
    deleted = store.delete_ids(client, name, gone)
    client.flush(name)
    client.load_collection(name)
    return IngestResult(total=len(parsed.documents) + len(parsed.bad), embedded=embedded,
                        skipped=len(parsed.documents) - len(todo), deleted=deleted, deletions_held=held,
                        failed=len(parsed.bad),
                        duration_seconds=time.monotonic() - started,
                        documents_per_second=embedded / embed_seconds if embedded and embed_seconds > 0 else 0.0,
                        source_checksum=checksum, collection=name, rows=store.count_rows(client, name),
                        failures=parsed.bad, index=index)
