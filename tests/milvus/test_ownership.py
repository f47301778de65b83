"""One collection, one VectorIndex: the collection records its owner, a second VectorIndex naming it
is refused before it can delete the first one's documents as "gone from its source" — by the
ingest worker on the real Milvus, and by the operator (Valid=False) before any Job starts."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from vectorhelpers import make_spec, write_jsonl

from aiops.indexing.probe import IndexProbe
from aiops.indexing.reconciler import VectorIndexReconciler
from aiops.passes import Pass
from aiops.vectors import store
from aiops.vectors.ingest import run_ingest


def fresh(milvus, name: str):
    if milvus.has_collection(name):
        milvus.drop_collection(name)
    return make_spec(name)


def test_a_second_vectorindex_cannot_ingest_into_a_collection_it_does_not_own(milvus, embedder, corpus, tmp_path):
    spec, _ = fresh(milvus, "owned_docs")
    first = write_jsonl(tmp_path / "a" / "docs.jsonl", corpus[:12]).parent
    other = write_jsonl(tmp_path / "b" / "docs.jsonl", corpus[100:103]).parent
    assert run_ingest(milvus, spec, first, embedder=embedder, owner="team-a/manuals").embedded == 12
    assert store.collection_owner(milvus.describe_collection("owned_docs")) == "team-a/manuals"

    with pytest.raises(store.StoreError, match="belongs to VectorIndex team-a/manuals") as refused:
        run_ingest(milvus, spec, other, embedder=embedder, owner="team-b/faq")
    assert refused.value.reason == "CollectionOwned"
    assert store.count_rows(milvus, "owned_docs") == 12, "the owner's documents are all still there"
    # The owner itself (also when re-created under the same name) carries on.
    assert run_ingest(milvus, spec, first, embedder=embedder, owner="team-a/manuals").skipped == 12

    # Released by an admin (the property set empty): the next VectorIndex claims it.
    milvus.alter_collection_properties("owned_docs", properties={store.OWNER_PROPERTY: ""})
    assert run_ingest(milvus, spec, other, embedder=embedder, owner="team-b/faq").deleted == 12
    assert store.collection_owner(milvus.describe_collection("owned_docs")) == "team-b/faq"
    milvus.drop_collection("owned_docs")


def test_a_collection_made_before_owners_were_recorded_is_claimed_by_the_first_ingest(milvus):
    spec, _ = fresh(milvus, "unowned_docs")
    assert store.ensure_collection(milvus, spec) is True  # no owner: as tools and older versions made it
    assert store.collection_owner(milvus.describe_collection("unowned_docs")) is None
    assert store.ensure_collection(milvus, spec, "team-a/manuals") is False
    assert store.collection_owner(milvus.describe_collection("unowned_docs")) == "team-a/manuals"
    milvus.drop_collection("unowned_docs")


def test_two_first_ingests_at_once_leave_exactly_one_owner(milvus):
    spec, _ = fresh(milvus, "raced_docs")
    owners = [f"team-{i}/docs" for i in range(4)]

    def claim(owner):
        try:
            return store.ensure_collection(milvus, spec, owner) is not None
        except store.StoreError as e:
            assert e.reason == "CollectionOwned"
            return False

    with ThreadPoolExecutor(len(owners)) as pool:
        won = list(pool.map(claim, owners))
    recorded = store.collection_owner(milvus.describe_collection("raced_docs"))
    assert won.count(True) == 1 and recorded == owners[won.index(True)]
    milvus.drop_collection("raced_docs")


class NoKube:
    """The external-Milvus path without credentials reads nothing from the API server."""

    async def event(self, *args):
        pass


def test_the_operator_marks_the_second_vectorindex_invalid_and_starts_nothing(milvus, milvus_server):
    spec, wire = fresh(milvus, "claimed_docs")
    store.ensure_collection(milvus, spec, "team-a/manuals")
    wire["milvus"] = {"external": {"uri": milvus_server.uri}}
    reconciler = VectorIndexReconciler(NoKube(), "worker:1", probe=IndexProbe())

    def look(namespace, name):
        vi = {"metadata": {"namespace": namespace, "name": name, "uid": "u", "generation": 1}, "spec": wire}
        ctx = Pass(vi, {})
        spec_now = make_spec("claimed_docs", milvus=wire["milvus"])[0]
        return asyncio.run(reconciler._milvus(ctx, spec_now)), ctx

    uri, ctx = look("team-b", "faq")
    valid = next(c for c in ctx.status["conditions"] if c["type"] == "Valid")
    assert uri is None and (valid["status"], valid["reason"]) == ("False", "CollectionOwned")
    assert "team-a/manuals" in valid["message"] and [e[1] for e in ctx.events] == ["CollectionOwned"]

    uri, ctx = look("team-a", "manuals")
    assert uri == milvus_server.uri and not any(c["type"] == "Valid" for c in ctx.status["conditions"])
    milvus.drop_collection("claimed_docs")


def test_a_refused_vectorindex_stays_invalid_quietly_and_carries_on_once_released(milvus, milvus_server):
    """Whole passes: Valid=False, phase Invalid, one Event however many passes; released → valid."""
    spec, wire = fresh(milvus, "handed_over")
    store.ensure_collection(milvus, spec, "team-a/manuals")
    wire["milvus"] = {"external": {"uri": milvus_server.uri}}
    wire["embedding"] = {**wire["embedding"], "resources": {"gpus": 0}}  # CPU embedding holds no GPU
    vi = {"apiVersion": "aiops.dev/v1alpha1", "kind": "VectorIndex", "spec": wire,
          "metadata": {"namespace": "team-b", "name": "faq", "uid": "u", "generation": 1}}
    reconciler = VectorIndexReconciler(NoKube(), "worker:1", probe=IndexProbe())
    ctx = Pass(vi, {})
    asyncio.run(reconciler._reconcile(ctx, []))
    for _ in range(2):
        again = Pass(vi, ctx.status)
        asyncio.run(reconciler._reconcile(again, []))
        assert again.events == [] and again.status["phase"] == "Invalid", again.status
    ready = {c["type"]: c for c in again.status["conditions"]}
    assert (ready["Valid"]["reason"], ready["Ready"]["reason"]) == ("CollectionOwned", "CollectionOwned")
    assert ready["Valid"]["lastTransitionTime"] == {c["type"]: c for c in ctx.status["conditions"]}[
        "Valid"]["lastTransitionTime"]

    milvus.alter_collection_properties("handed_over", properties={store.OWNER_PROPERTY: ""})
    released = Pass(vi, again.status)
    reconciler.kube = Released()
    asyncio.run(reconciler._reconcile(released, []))
    valid = {c["type"]: c for c in released.status["conditions"]}["Valid"]
    assert (valid["status"], valid["reason"]) == ("True", "SpecValid") and released.status["phase"] != "Invalid"
    assert "SpecValid" in [e[1] for e in released.events]
    milvus.drop_collection("handed_over")


class Released(NoKube):
    """After the release the pass goes on to ingestion: the source ConfigMap is not there yet."""

    async def read(self, kind, namespace, name):
        return None
