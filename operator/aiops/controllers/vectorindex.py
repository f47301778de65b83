"""VectorIndex handlers: thin. The VectorIndex (Kopf's watch), its Milvus StatefulSet and pods, its
ingest Jobs and the source ConfigMaps (the shared informers) only enqueue the VectorIndex's key;
`aiops.indexing.reconciler` does the work from the state of the world."""

from __future__ import annotations

import kopf

from aiops.api.registry import VECTOR_INDEX
from aiops.builders.milvus import VECTOR_INDEX_LABEL
from aiops.controllers.loop import ReconcileLoop, shared_nodes
from aiops.controllers.registration import register_kind
from aiops.controllers.settings import allowed_host_paths, credentials_binding, log_format, worker_image
from aiops.controllers.watches import (
    shared_network_policies,
    shared_operator_key,
    shared_session,
    shared_watches,
)
from aiops.indexing.reconciler import VectorIndexReconciler
from aiops.kube.client import KubeClient


def build(memo: kopf.Memo) -> ReconcileLoop:
    loop = ReconcileLoop("VectorIndex", VectorIndexReconciler(KubeClient(shared_session(memo)), worker_image(),
                                                               host_paths=allowed_host_paths(),
                                                               log_format=log_format(),
                                                               credentials_binding=credentials_binding(),
                                                               operator_key=shared_operator_key(memo),
                                                               policies=shared_network_policies(memo)),
                         shared_nodes(memo))

    def child_changed(kind: str, obj: dict) -> None:
        if owner := (obj["metadata"].get("labels") or {}).get(VECTOR_INDEX_LABEL):
            loop.enqueue(obj["metadata"]["namespace"], owner)

    def source_changed(kind: str, configmap: dict) -> None:
        """A document source changed: wake the VectorIndexes that read it (ingest.onSourceChange)."""
        namespace, name = configmap["metadata"]["namespace"], configmap["metadata"]["name"]
        for (ns, vi_name), vi in list(loop.objects.items()):
            source = (vi.get("spec") or {}).get("source") or {}
            if ns == namespace and (source.get("configMap") or {}).get("name") == name:
                loop.enqueue(ns, vi_name)

    for plural in ("jobs", "pods", "statefulsets"):  # ingest Jobs, Milvus and Job pods, Milvus
        shared_watches(memo).on(plural, child_changed)
    shared_watches(memo).on("configmaps", source_changed)
    return loop


register_kind(VECTOR_INDEX, "vector_indexes", build)
