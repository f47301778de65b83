"""TrainingJob handlers: thin. The TrainingJob itself and its step Jobs and pods only enqueue the
TrainingJob's key; `aiops.trainingrun.reconciler` does the work from the state of the world."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from aiops.api.common import GROUP, VERSION
from aiops.api.registry import TRAINING_JOB
from aiops.builders.training_job import TRAINING_JOB_LABEL
from aiops.controllers.loop import ReconcileLoop, shared_nodes
from aiops.controllers.settings import worker_image
from aiops.kube import api_client
from aiops.rollout.kubeio import KubeIO
from aiops.trainingrun.reconciler import TrainingJobReconciler


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    reconciler = TrainingJobReconciler(KubeIO(api_client()), worker_image())
    memo.training_jobs = ReconcileLoop("TrainingJob", reconciler, shared_nodes(memo))
    memo.training_jobs.start()
    memo.training_jobs.start_checks(TRAINING_JOB.plural)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.training_jobs.stop()


@kopf.on.event(GROUP, VERSION, TRAINING_JOB.plural)
async def training_job_changed(event: dict, memo: kopf.Memo, **_: Any) -> None:
    memo.training_jobs.observe(copy.deepcopy(event["object"]), event.get("type") == "DELETED")


@kopf.on.event("batch", "v1", "jobs", labels={TRAINING_JOB_LABEL: kopf.PRESENT})
async def step_job_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.training_jobs.enqueue(body.metadata.namespace, body.metadata.labels[TRAINING_JOB_LABEL])


@kopf.on.event("", "v1", "pods", labels={TRAINING_JOB_LABEL: kopf.PRESENT})
async def step_pod_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.training_jobs.enqueue(body.metadata.namespace, body.metadata.labels[TRAINING_JOB_LABEL])
