"""Ingest into a real Milvus server with the real model: idempotent, incremental, deletions.

The tests in this module run in order against one collection, as a VectorIndex lives: first
ingest, re-ingest, one document changed, documents deleted, bad lines, searches, an index change.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from vectorhelpers import CORPUS_SIZE, make_spec, write_jsonl

from aiops.vectors import store
from aiops.vectors.ingest import run_ingest

COLLECTION = "ingest_story"


@pytest.fixture(scope="module")
def source(tmp_path_factory, corpus):
    return write_jsonl(tmp_path_factory.mktemp("source") / "docs.jsonl", corpus)


@pytest.fixture(scope="module")
def spec():
    return make_spec(COLLECTION)[0]


@pytest.fixture(scope="module")
def first_run(milvus, embedder, spec, source):
    if milvus.has_collection(COLLECTION):
        milvus.drop_collection(COLLECTION)
    return run_ingest(milvus, spec, source.parent, embedder=embedder)


def test_first_ingest_stores_every_document_once(first_run, milvus):
    counts = (first_run.total, first_run.embedded, first_run.skipped, first_run.failed)
    assert counts == (CORPUS_SIZE, CORPUS_SIZE, 0, 0)
    assert first_run.rows == CORPUS_SIZE
    assert store.count_rows(milvus, COLLECTION) == CORPUS_SIZE
    assert first_run.documents_per_second > 0 and first_run.source_checksum.startswith("sha256:")
    assert first_run.index.state == "Ready" and first_run.index.type == "HNSW"


def test_reingest_embeds_nothing_and_adds_no_rows(first_run, milvus, embedder, spec, source):
    again = run_ingest(milvus, spec, source.parent, embedder=embedder)
    assert (again.embedded, again.skipped, again.deleted) == (0, CORPUS_SIZE, 0)
    assert again.source_checksum == first_run.source_checksum
    assert store.count_rows(milvus, COLLECTION) == CORPUS_SIZE
    stats = store.collection_stats(milvus, COLLECTION, flush=True)
    assert stats.entities == CORPUS_SIZE  # nothing rewritten either


def test_changing_one_document_re_embeds_only_it(first_run, milvus, embedder, spec, source, corpus):
    changed = [dict(d) for d in corpus]
    changed[7] = {**changed[7], "text": "Milvus keeps one row per document id after an upsert."}
    write_jsonl(source, changed)
    result = run_ingest(milvus, spec, source.parent, embedder=embedder)
    assert (result.embedded, result.skipped, result.deleted) == (1, CORPUS_SIZE - 1, 0)
    assert result.source_checksum != first_run.source_checksum
    assert store.count_rows(milvus, COLLECTION) == CORPUS_SIZE
    row = milvus.get(COLLECTION, ids=[changed[7]["id"]], output_fields=["text"])
    assert row[0]["text"] == changed[7]["text"]
    stats = store.collection_stats(milvus, COLLECTION, flush=True)
    # The upsert replaced one row; Milvus keeps the old one until a compaction (auto-compaction
    # is off for these tests, see conftest.py).
    assert stats.rows == CORPUS_SIZE and stats.deleted == 1


def test_documents_removed_from_the_source_are_deleted(milvus, embedder, spec, source, corpus):
    kept = corpus[:-25]
    write_jsonl(source, kept)
    result = run_ingest(milvus, spec, source.parent, embedder=embedder)
    assert (result.embedded, result.deleted) == (1, 25)  # doc 7 changes back to its original text
    assert store.count_rows(milvus, COLLECTION) == CORPUS_SIZE - 25
    assert milvus.get(COLLECTION, ids=[corpus[-1]["id"]]) == []


def test_bad_lines_are_counted_and_do_not_stop_the_run(milvus, embedder, spec, source, corpus):
    kept = corpus[:-25]
    duplicate = json.dumps({"id": kept[0]["id"], "text": "dup"})
    lines = source.read_text() + '{"id": "no-text"}\nnot json\n' + duplicate + "\n"
    source.write_text(lines)
    result = run_ingest(milvus, spec, source.parent, embedder=embedder)
    assert (result.embedded, result.deleted, result.failed) == (0, 0, 3)
    assert {f.reason.split(" ")[0] for f in result.failures} == {"missing", "not", "duplicate"}
    assert store.count_rows(milvus, COLLECTION) == CORPUS_SIZE - 25
    write_jsonl(source, kept)


def test_a_line_without_an_id_holds_deletions_and_an_empty_source_deletes_nothing(milvus, embedder, corpus,
                                                                                   tmp_path):
    """Deletion never rests on a source that cannot be fully read: while a line that is not JSON
    (whose id is unknown) or an unreadable file is there, missing documents keep their vectors;
    a source with no documents at all deletes nothing unless the spec allows it."""
    from aiops.vectors.ingest import SourceEmpty

    name = "ingest_guarded"
    if milvus.has_collection(name):
        milvus.drop_collection(name)
    spec = make_spec(name)[0]
    source = write_jsonl(tmp_path / "docs.jsonl", corpus[:20])
    assert run_ingest(milvus, spec, source.parent, embedder=embedder).embedded == 20

    write_jsonl(source, corpus[:15])
    source.write_text(source.read_text() + '{"id": "' + corpus[17]["id"] + '", "text": broken\n')  # doc 17's line
    held = run_ingest(milvus, spec, source.parent, embedder=embedder)
    assert (held.deleted, held.deletions_held, held.failed) == (0, 5, 1)
    assert held.to_json()["deletionsHeld"] == 5 and store.count_rows(milvus, name) == 20
    write_jsonl(source, corpus[:15])  # the line is fixed (doc 17 really left): now they go
    assert run_ingest(milvus, spec, source.parent, embedder=embedder).deleted == 5

    source.write_text("")
    with pytest.raises(SourceEmpty, match="15 are stored"):
        run_ingest(milvus, spec, source.parent, embedder=embedder)
    assert store.count_rows(milvus, name) == 15
    allowed = make_spec(name, source={"configMap": {"name": "docs"}, "allowEmpty": True})[0]
    assert run_ingest(milvus, allowed, source.parent, embedder=embedder).deleted == 15
    assert store.count_rows(milvus, name) == 0
    milvus.drop_collection(name)


def test_search_finds_the_expected_neighbours(milvus, embedder, corpus):
    """A document's own text finds it first; a query in other words finds the passage that says it."""
    probes = [corpus[i] for i in range(0, CORPUS_SIZE - 25, 97)]
    vectors = embedder.encode([p["text"] for p in probes])
    hits = milvus.search(COLLECTION, data=vectors.tolist(), limit=3, search_params={"params": {"ef": 64}},
                         output_fields=["text"])
    assert [h[0]["id"] for h in hits] == [p["id"] for p in probes]
    assert all(h[0]["distance"] > 0.99 for h in hits)
    # Semantic: a question in different words; the answer must mention what was asked about.
    query = embedder.encode(["How do I compute the base-2 logarithm of a number?"])
    top = milvus.search(COLLECTION, data=query.tolist(), limit=5, output_fields=["text"])[0]
    assert any("log" in hit["entity"]["text"].lower() for hit in top), [h["entity"]["text"][:80] for h in top]


def test_index_change_rebuilds_without_losing_rows(milvus):
    spec, _ = make_spec(COLLECTION, index={"type": "IVF_FLAT", "params": {"nlist": 64}})
    state = store.ensure_index(milvus, spec)
    assert state.rebuilt and state.state == "Ready" and state.params == {"nlist": 64}
    assert store.describe_vector_index(milvus, COLLECTION)["index_type"] == "IVF_FLAT"
    assert store.count_rows(milvus, COLLECTION) == CORPUS_SIZE - 25
    again = store.ensure_index(milvus, spec)
    assert not again.rebuilt and not again.created  # same params: left alone
    assert milvus.search(COLLECTION, data=[np.ones(384).tolist()], limit=1)[0]


def test_compaction_follows_the_deleted_ratio(milvus):
    stats = store.collection_stats(milvus, COLLECTION, flush=True)
    assert stats.rows == CORPUS_SIZE - 25 and stats.deleted >= 25
    lax, _ = make_spec(COLLECTION, optimization={"compaction": {"deletedRatio": 0.5}})
    strict, _ = make_spec(COLLECTION, optimization={"compaction": {"deletedRatio": 0.001}})
    assert store.maybe_compact(milvus, lax, stats) is None
    compaction = store.maybe_compact(milvus, strict, stats)
    assert isinstance(compaction, int)
    assert store.count_rows(milvus, COLLECTION) == CORPUS_SIZE - 25


def test_the_operators_upkeep_rebuilds_after_growth_and_leaves_a_steady_index_alone(milvus_server):
    """indexing/probe.py's upkeep, as the VectorIndex reconciler runs it after an ingest: the
    growth policy compares today's rows with the rows at the last build."""
    from aiops.indexing.probe import IndexProbe

    rows = CORPUS_SIZE - 25
    grown, _ = make_spec(COLLECTION, optimization={"rebuild": {"growthRatio": 0.5},
                                                   "compaction": {"deletedRatio": 0.99}})
    done = asyncio.run(IndexProbe().upkeep(milvus_server.uri, None, grown, rows_at_build=rows // 2))
    assert done.rows == rows and done.rebuilt and "grew" in done.rebuilt and done.compaction_id is None
    assert any(a.startswith("index rebuilt") for a in done.actions())
    assert store.count_rows(store_client(milvus_server), COLLECTION) == rows  # a rebuild loses nothing
    steady = asyncio.run(IndexProbe().upkeep(milvus_server.uri, None, grown, rows_at_build=rows))
    assert steady.rebuilt is None and steady.actions() == []


def store_client(server):
    from pymilvus import MilvusClient

    return MilvusClient(uri=server.uri)


def test_plain_insert_of_an_existing_id_duplicates_on_this_server(milvus, embedder):
    """Why the tests need the real server: an insert (not upsert) of a stored id adds a row."""
    spec, _ = make_spec("dup_probe")
    if milvus.has_collection("dup_probe"):
        milvus.drop_collection("dup_probe")
    store.ensure_collection(milvus, spec)
    store.ensure_index(milvus, spec)
    row = {"id": "a", "vector": embedder.encode(["x"])[0].tolist(), "content_hash": "h", "text": "x", "metadata": {}}
    milvus.insert("dup_probe", [row])
    milvus.insert("dup_probe", [row])
    assert store.count_rows(milvus, "dup_probe") == 2
    store.upsert_rows(milvus, "dup_probe", [row])
    assert store.count_rows(milvus, "dup_probe") == 1
    milvus.drop_collection("dup_probe")
