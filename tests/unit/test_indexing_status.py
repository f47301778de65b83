"""How a VectorIndex sums up: phase and the Ready condition from MilvusReady/Ingested/IndexReady."""

from __future__ import annotations

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
