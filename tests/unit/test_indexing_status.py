"""How a VectorIndex sums up: phase and the Ready condition from MilvusReady/Ingested/IndexReady."""

from __future__ import annotations

import asyncio

import aiops.indexing.reconciler as reconciler
from aiops.api.vectorindex import VectorIndexSpec
from aiops.conditions import get_condition, set_condition
from aiops.indexing.reconciler import VectorIndexReconciler
from aiops.passes import Pass


def ctx(conditions: dict[str, bool], outcome: str | None = "Succeeded", index_state: str = "Ready") -> Pass:
    status: dict = {"collection": "docs", "documents": {"ingested": 7}, "index": {"type": "HNSW", "state": index_state}}
    for type_, ok in conditions.items():
        status["conditions"] = set_condition(status.get("conditions"), type_, ok, "Because" if not ok else "Fine",
                                             f"{type_} says so.")
    if outcome:
        status["lastIngest"] = {"outcome": outcome}
    return Pass({"metadata": {"name": "v", "namespace": "n", "generation": 1}, "status": status}, status)


def test_ready_names_the_first_thing_not_ready():
    c = ctx({"MilvusReady": False, "Ingested": True, "IndexReady": True})
    VectorIndexReconciler._ready(c)
    ready = get_condition(c.status["conditions"], "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "Because", "MilvusReady says so.")
    c = ctx({"MilvusReady": True, "Ingested": True, "IndexReady": True})
    VectorIndexReconciler._ready(c)
    ready = get_condition(c.status["conditions"], "Ready")
    assert ready["status"] == "True" and "7 documents in docs, HNSW index serving" in ready["message"]


def test_phase_keeps_serving_what_it_had_after_a_failed_update():
    assert VectorIndexReconciler._phase(ctx({"IndexReady": True})) == "Ready"
    assert VectorIndexReconciler._phase(ctx({"IndexReady": True}, outcome="Running")) == "Ingesting"
    assert VectorIndexReconciler._phase(ctx({"IndexReady": True}, outcome="Failed")) == "Degraded"
    assert VectorIndexReconciler._phase(ctx({"IndexReady": False})) == "Degraded"
    assert VectorIndexReconciler._phase(ctx({}, outcome="Failed", index_state="Absent")) == "Failed"


class Probe:
    def __init__(self):
        self.secured = []

    async def ping(self, uri, token, database, collection):
        return None  # reachable, the collection no one's

    async def secure(self, uri, password):
        self.secured.append(uri)
        return True


class Key:
    async def derive(self, purpose, namespace, name):
        return f"{purpose}-{namespace}-{name}"


class Kube:
    async def create_unread(self, obj):
        pass


def vi_pass(name: str, status: dict) -> Pass:
    return Pass({"apiVersion": "aiops.dev/v1alpha1", "kind": "VectorIndex", "status": status,
                 "metadata": {"name": name, "namespace": "n", "uid": f"uid-{name}", "generation": 1}}, status)


def test_an_index_moved_to_an_external_milvus_drops_the_managed_credentials_secret():
    spec = VectorIndexSpec.model_validate({
        "milvus": {"external": {"uri": "http://milvus.db.svc:19530"}},
        "collection": {"name": "docs", "dimension": 4}, "source": {"configMap": {"name": "docs"}}})
    c = vi_pass("v", {"credentialsSecret": "v-milvus-auth-0123abcd"})
    assert asyncio.run(VectorIndexReconciler(None, "img", probe=Probe())._milvus(c, spec)) == "http://milvus.db.svc:19530"
    assert "credentialsSecret" not in c.status


def test_secured_milvus_are_remembered_within_a_bound(monkeypatch):
    monkeypatch.setattr(reconciler, "SECURED_REMEMBERED", 2)
    probe = Probe()
    r = VectorIndexReconciler(Kube(), "img", probe=probe, operator_key=Key())
    for name in ("a", "b", "a", "c", "a"):
        asyncio.run(r._secure(vi_pass(name, {}), f"http://{name}"))
    # "a" stayed the most recent and was checked once; "b" made way for "c"
    assert probe.secured == ["http://a", "http://b", "http://c"] and len(r._secured) == 2
    asyncio.run(r._secure(vi_pass("b", {}), "http://b"))
    assert probe.secured[-1] == "http://b" and len(r._secured) == 2
