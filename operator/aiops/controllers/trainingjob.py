"""TrainingJob handlers: thin. The TrainingJob itself (Kopf's watch) and its step Jobs and pods (the
shared informers) only enqueue the TrainingJob's key; `aiops.trainingrun.reconciler` does the work
from the state of the world."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from aiops.api.common import GROUP, VERSION
from aiops.api.registry import TRAINING_JOB
from aiops.builders.training_job import TRAINING_JOB_LABEL
from aiops.controllers.loop import ReconcileLoop, shared_nodes
from aiops.controllers.settings import worker_image
from aiops.controllers.watches import shared_watches
from aiops.kube import api_client
from aiops.rollout.kubeio import KubeIO
from aiops.trainingrun.reconciler import TrainingJobReconciler


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    reconciler = TrainingJobReconciler(KubeIO(api_client()), worker_image())
    memo.training_jobs = ReconcileLoop("TrainingJob", reconciler, shared_nodes(memo))
    loop = memo.training_jobs

    def child_changed(kind: str, obj: dict) -> None:
        if owner := (obj["metadata"].get("labels") or {}).get(TRAINING_JOB_LABEL):
            loop.enqueue(obj["metadata"]["namespace"], owner)

    shared_watches(memo).on("jobs", child_changed)  # the steps
    shared_watches(memo).on("pods", child_changed)  # their pods
    memo.training_jobs.start()
    memo.training_jobs.start_checks(TRAINING_JOB.plural)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.training_jobs.stop()


@kopf.on.event(GROUP, VERSION, TRAINING_JOB.plural)
async def training_job_changed(event: dict, memo: kopf.Memo, **_: Any) -> None:
    memo.training_jobs.observe(copy.deepcopy(event["object"]), event.get("type") == "DELETED")
