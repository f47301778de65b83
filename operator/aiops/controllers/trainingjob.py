"""TrainingJob handlers: thin. The TrainingJob itself (Kopf's watch) and its step Jobs and pods (the
shared informers) only enqueue the TrainingJob's key; `aiops.trainingrun.reconciler` does the work
from the state of the world."""

from __future__ import annotations

import kopf

from aiops.api.registry import TRAINING_JOB
from aiops.builders.training_job import TRAINING_JOB_LABEL
from aiops.controllers.loop import ReconcileLoop, shared_nodes
from aiops.controllers.registration import register_kind
from aiops.controllers.settings import allowed_host_paths, log_format, step_job_ttl, worker_image
from aiops.controllers.watches import shared_session, shared_watches
from aiops.kube.client import KubeClient
from aiops.trainingrun.reconciler import TrainingJobReconciler


def build(memo: kopf.Memo) -> ReconcileLoop:
    reconciler = TrainingJobReconciler(KubeClient(shared_session(memo)), worker_image(), step_job_ttl(),
                                       host_paths=allowed_host_paths(), log_format=log_format())
    loop = ReconcileLoop("TrainingJob", reconciler, shared_nodes(memo))

    def child_changed(kind: str, obj: dict) -> None:
        if owner := (obj["metadata"].get("labels") or {}).get(TRAINING_JOB_LABEL):
            loop.enqueue(obj["metadata"]["namespace"], owner)

    shared_watches(memo).on("jobs", child_changed)  # the steps
    shared_watches(memo).on("pods", child_changed)  # their pods
    return loop


register_kind(TRAINING_JOB, "training_jobs", build)
