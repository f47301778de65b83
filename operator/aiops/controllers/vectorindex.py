"""VectorIndex handlers: thin. The VectorIndex, its Milvus StatefulSet and pods, its ingest Jobs
and the source ConfigMaps only enqueue the VectorIndex's key; `aiops.indexing.reconciler` does the
work from the state of the world."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from aiops.api.common import GROUP, VERSION
from aiops.api.registry import VECTOR_INDEX
from aiops.builders.milvus import VECTOR_INDEX_LABEL
from aiops.controllers.loop import ReconcileLoop, shared_nodes
from aiops.controllers.settings import worker_image
from aiops.indexing.reconciler import VectorIndexReconciler
from aiops.kube import api_client
from aiops.rollout.kubeio import KubeIO


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    reconciler = VectorIndexReconciler(KubeIO(api_client()), worker_image())
    memo.vector_indexes = ReconcileLoop("VectorIndex", reconciler, shared_nodes(memo))
    memo.vector_indexes.start()
    memo.vector_indexes.start_checks(VECTOR_INDEX.plural)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.vector_indexes.stop()


@kopf.on.event(GROUP, VERSION, VECTOR_INDEX.plural)
async def vector_index_changed(event: dict, memo: kopf.Memo, **_: Any) -> None:
    memo.vector_indexes.observe(copy.deepcopy(event["object"]), event.get("type") == "DELETED")


def _enqueue_owner(body: kopf.Body, memo: kopf.Memo) -> None:
    memo.vector_indexes.enqueue(body.metadata.namespace, body.metadata.labels[VECTOR_INDEX_LABEL])


@kopf.on.event("batch", "v1", "jobs", labels={VECTOR_INDEX_LABEL: kopf.PRESENT})
async def ingest_job_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _enqueue_owner(body, memo)


@kopf.on.event("", "v1", "pods", labels={VECTOR_INDEX_LABEL: kopf.PRESENT})
async def child_pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _enqueue_owner(body, memo)


@kopf.on.event("apps", "v1", "statefulsets", labels={VECTOR_INDEX_LABEL: kopf.PRESENT})
async def milvus_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _enqueue_owner(body, memo)


@kopf.on.event("", "v1", "configmaps")
async def source_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A document source changed: wake the VectorIndexes that read it (ingest.onSourceChange)."""
    namespace, name = body.metadata.namespace, body.metadata.name
    for (ns, vi_name), vi in list(memo.vector_indexes.objects.items()):
        if ns == namespace and ((vi.get("spec") or {}).get("source") or {}).get("configMap", {}).get("name") == name:
            memo.vector_indexes.enqueue(ns, vi_name)
