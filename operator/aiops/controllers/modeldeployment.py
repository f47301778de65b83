"""ModelDeployment handlers: thin. Every event that can matter to a ModelDeployment — the object
itself, its Triton pods, Deployment and validation Job, and nodes coming and going — only puts
the object's key on a work queue; `aiops.rollout.reconciler` does the work from the current state
of the world. The operator therefore converges after missed events and restarts, and Kopf's
per-object progress annotations are not needed (no extra writes per event). The Triton
Deployments and pods the watch delivers are also kept in two Kopf indices, which the reconciler
reads instead of asking the API server on every pass (aiops.rollout.childcache)."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from aiops.api.common import GROUP, VERSION
from aiops.builders.triton import KIND_LABEL
from aiops.controllers.loop import RESYNC_SECONDS, ReconcileLoop, shared_nodes
from aiops.controllers.settings import validation_job_ttl, worker_image
from aiops.kube import api_client
from aiops.monitoring.verdict import VerdictRegistry
from aiops.rollout.childcache import IndexedChildren
from aiops.rollout.kubeio import KubeIO
from aiops.rollout.reconciler import ModelDeploymentReconciler

log = logging.getLogger(__name__)
PLURAL = "modeldeployments"
WORKERS = 16  # reconciles in flight; most of a reconcile is waiting on the API server
URGENT_WORKERS = 8  # more, for new and edited objects only: never stuck behind re-checks
# A new rollout makes its Job and Deployment (and a ConfigMap for a large spec) at once: room for 3 calls per
# worker (16 threads let only 4 first passes create at a time: apply -> Deployment p50 312 ms
# at 100 objects, 146 ms with 48, bench_reconcile).
IO_THREADS = 3 * (WORKERS + URGENT_WORKERS)


def waiting_for_capacity(loop: ReconcileLoop) -> list[tuple[str, str]]:
    return [k for k, md in loop.objects.items()
            if ((md.get("status") or {}).get("rollout") or {}).get("step") == "WaitingForCapacity"]


TRITON = {KIND_LABEL: kopf.PRESENT, "app.kubernetes.io/name": "triton"}


@kopf.index("apps", "v1", "deployments", labels=TRITON)
def triton_deployments(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    return {(namespace, name): dict(body)}


@kopf.index("", "v1", "pods", labels=TRITON)
def triton_pods(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return {(namespace, labels[KIND_LABEL]): dict(body)}


@kopf.on.startup()
async def start(memo: kopf.Memo, triton_deployments: kopf.Index, triton_pods: kopf.Index, **_: Any) -> None:
    # Monitoring (issue 7): the monitor publishes verdicts here and a changed verdict enqueues
    # the object; the reconciler reads them in the serving states and writes status/acts.
    verdicts = VerdictRegistry(on_change=lambda key: loop.queue.add(key))
    children = IndexedChildren(triton_deployments, triton_pods)
    kube = KubeIO(api_client(), IO_THREADS, cache=children)
    reconciler = ModelDeploymentReconciler(kube, worker_image(), verdicts=verdicts,
                                           validation_job_ttl=validation_job_ttl())
    loop = memo.model_deployments = ReconcileLoop("ModelDeployment", reconciler, shared_nodes(memo), WORKERS,
                                                  URGENT_WORKERS)
    loop.start()
    memo.children_resync = asyncio.get_running_loop().create_task(resync(children, kube, loop, memo))


async def resync(children: IndexedChildren, kube: KubeIO, loop: ReconcileLoop, memo: kopf.Memo) -> None:
    """Checks what the watches filled against a LIST of each namespace now and then: when a watch
    must list again (its resourceVersion expired), Kopf sends no DELETED for objects deleted
    meanwhile. Checked: the ModelDeployments (else one is reconciled for good), the Triton indices
    (IndexedChildren) and the validation Jobs (JobWatch)."""
    jobs = loop.reconciler.jobs
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        for namespace in sorted(children.namespaces() | {ns for ns, _ in loop.objects} | jobs.namespaces()):
            try:
                for key in await loop.check_against_list(namespace, PLURAL):
                    if getattr(memo, "monitor", None) is not None:  # stop monitoring it too
                        memo.monitor.observe({"metadata": {"namespace": key[0], "name": key[1]}}, deleted=True)
                deployments, pods = await kube.list_triton(namespace)
                listed_jobs = await kube.list_validation_jobs(namespace)
            except ApiException as e:
                log.warning("could not list what the watches saw in %s: %s", namespace, e.reason)
                continue
            except Exception:  # noqa: BLE001 - a network error must not end the resync for good
                log.exception("could not list what the watches saw in %s", namespace)
                continue
            stale = children.drop_vanished(namespace, deployments, pods)
            stale |= {(namespace, md) for md in jobs.drop_vanished(namespace, *listed_jobs)}
            for key in sorted(stale):
                log.warning("%s/%s: the watch missed a child's deletion; reconciling from the API's view", *key)
                loop.enqueue(*key)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.children_resync.cancel()
    await memo.model_deployments.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_deployment_changed(event: dict, memo: kopf.Memo, **_: Any) -> None:
    memo.model_deployments.observe(copy.deepcopy(event["object"]), event.get("type") == "DELETED")


def _enqueue_owner(body: kopf.Body, memo: kopf.Memo) -> None:
    owner = (body.metadata.labels or {}).get(KIND_LABEL)
    if owner:
        memo.model_deployments.enqueue(body.metadata.namespace, owner)


@kopf.on.event("", "v1", "pods", labels={KIND_LABEL: kopf.PRESENT})
async def pod_changed(event: dict, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.model_deployments.reconciler.jobs.observe_pod(event["object"], event.get("type") == "DELETED")
    _enqueue_owner(body, memo)


@kopf.on.event("batch", "v1", "jobs", labels={KIND_LABEL: kopf.PRESENT})
async def job_changed(event: dict, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.model_deployments.reconciler.jobs.observe_job(event["object"], event.get("type") == "DELETED")
    _enqueue_owner(body, memo)


@kopf.on.event("apps", "v1", "deployments", labels={KIND_LABEL: kopf.PRESENT})
async def deployment_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _enqueue_owner(body, memo)


def _holds_gpus(body: kopf.Body, **_: Any) -> bool:
    return any("gpu" in name for c in body.spec.get("containers") or []
               for name in ((c.get("resources") or {}).get("limits") or {}))


@kopf.on.event("", "v1", "pods", when=_holds_gpus)
async def gpu_pod_changed(event: dict, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A GPU pod that finished or went away frees GPUs: wake whatever waits for them."""
    if event.get("type") == "DELETED" or body.status.get("phase") in ("Succeeded", "Failed"):
        for key in waiting_for_capacity(memo.model_deployments):
            memo.model_deployments.queue.add(key)


@kopf.on.event("", "v1", "nodes")
async def node_changed(event: dict, memo: kopf.Memo, **_: Any) -> None:
    """Nodes joining or changing may make room: wake whatever waits for GPUs."""
    if shared_nodes(memo).observe(event["object"], event.get("type") == "DELETED"):
        for key in waiting_for_capacity(memo.model_deployments):
            memo.model_deployments.queue.add(key)
