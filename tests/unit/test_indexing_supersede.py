"""A new source version while the previous ingest still runs: the old run is stopped and the new
one starts only once its pod is gone, so the old run's late writes never land after the new
run's. The API behind a fake kube (the cluster tests run ingestion against the real one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from aiops.api.vectorindex import VectorIndexSpec
from aiops.builders.milvus import VECTOR_INDEX_LABEL
from aiops.indexing.reconciler import SUPERSEDED_POLL, VectorIndexReconciler
from aiops.passes import Pass

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vectorindex.yaml"
LABELS = {VECTOR_INDEX_LABEL: "ops-manual", "aiops.dev/role": "ingest"}


class Kube:
    def __init__(self, jobs, pods):
        self.jobs, self.pods = jobs, pods
        self.deleted, self.created = [], []

    async def read(self, kind, namespace, name):
        return {"metadata": {"name": name, "resourceVersion": "7"}}  # the source ConfigMap, changed

    async def read_job(self, namespace, name):
        return None, []

    async def list(self, kind, namespace, selector):
        if kind == "Pod":
            return self.pods
        assert (kind, selector) == ("Job", f"{VECTOR_INDEX_LABEL}=ops-manual,aiops.dev/role=ingest")
        return self.jobs

    async def delete(self, kind, namespace, name):
        assert kind == "Job"
        self.deleted.append(name)
        self.jobs = [j for j in self.jobs if j["metadata"]["name"] != name]

    async def create_or_read(self, obj):
        self.created.append(obj["metadata"]["name"])
        return {**obj, "metadata": {**obj["metadata"], "uid": "job-uid"}}

    async def create_if_missing(self, obj):
        self.created.append(obj["metadata"]["name"])

    async def event(self, *args):
        pass


def job(name, **status):
    return {"metadata": {"name": name, "labels": LABELS}, "status": status}


def pod(job_name, phase):
    return {"metadata": {"name": f"{job_name}-x", "labels": {**LABELS, "job-name": job_name}},
            "status": {"phase": phase}}


def test_a_new_source_version_waits_for_the_superseded_run_to_stop():
    _, wire = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    spec = VectorIndexSpec.from_wire(wire["spec"])
    vi = {**wire, "metadata": {**wire["metadata"], "namespace": "ns", "uid": "vi-uid", "generation": 1}}
    old, older = "ops-manual-ingest-old", "ops-manual-ingest-older"
    kube = Kube([job(old), job(older, completionTime="2026-12-01T00:00:00Z")], [pod(old, "Running")])
    reconciler = VectorIndexReconciler(kube, "worker:1")
    ctx = Pass(vi, {"lastIngest": {"job": old, "key": "old", "outcome": "Running"}})

    assert asyncio.run(reconciler._ingest(ctx, spec, "http://milvus:19530")) == SUPERSEDED_POLL
    assert kube.deleted == [old] and kube.created == [], "the finished run is history, the running one stops"
    waiting = next(c for c in ctx.status["conditions"] if c["type"] == "Ingested")
    assert (waiting["status"], waiting["reason"]) == ("False", "Superseding") and old in waiting["message"]

    # Its Job is gone but its pod still runs (termination grace): still nothing new.
    assert asyncio.run(reconciler._ingest(ctx, spec, "http://milvus:19530")) == SUPERSEDED_POLL
    assert kube.created == []
    kube.pods = [pod(old, "Failed")]  # stopped
    asyncio.run(reconciler._ingest(ctx, spec, "http://milvus:19530"))
    assert kube.created[0] == ctx.status["lastIngest"]["job"] and kube.created[0].startswith("ops-manual-ingest-")
    assert ctx.status["lastIngest"]["outcome"] == "Running" and kube.created[0] not in (old, older)
