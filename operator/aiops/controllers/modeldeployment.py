"""ModelDeployment handlers: thin. Every event that can matter to a ModelDeployment — the object
itself, its Triton pods, Deployment and validation Job, and nodes coming and going — only puts
the object's key on a work queue; `aiops.rollout.reconciler` does the work from the current state
of the world. The operator therefore converges after missed events and restarts, and Kopf's
per-object progress annotations are not needed (no extra writes per event).

Kopf watches the ModelDeployments; the child kinds and nodes come from the shared informers
(aiops.controllers.watches), whose Triton Deployments and pods the reconciler reads instead of
asking the API server on every pass (aiops.rollout.childcache)."""

from __future__ import annotations

import logging

import kopf

from aiops.api.registry import MODEL_DEPLOYMENT
from aiops.builders.triton import KIND_LABEL
from aiops.builders.validation_job import ROLE_LABEL
from aiops.capacity import CAPACITY_REASONS
from aiops.controllers.loop import ReconcileLoop, shared_nodes
from aiops.controllers.registration import register_kind
from aiops.controllers.settings import allowed_host_paths, log_format, validation_job_ttl, worker_image
from aiops.controllers.watches import (
    Watches,
    shared_network_policies,
    shared_operator_key,
    shared_session,
    shared_watches,
)
from aiops.monitoring.verdict import VerdictRegistry
from aiops.nodes import NodeCache
from aiops.podusage import PodUsages
from aiops.rollout.childcache import WatchedChildren, is_triton
from aiops.rollout.modelcontrol import ModelControlKeys
from aiops.rollout.pods import unschedulable
from aiops.rollout.reconciler import ModelDeploymentReconciler
from aiops.rollout.world import RolloutClient

log = logging.getLogger(__name__)
WORKERS = 16  # reconciles in flight; most of a reconcile is waiting on the API server
URGENT_WORKERS = 8  # more, for new and edited objects only: never stuck behind re-checks
# A new rollout makes its Job and Deployment (and a ConfigMap for a large spec) at once: room for 3 calls per
# worker (16 connections let only 4 first passes create at a time: apply -> Deployment p50 312 ms
# at 100 objects, 146 ms with 48, bench_reconcile).
CONNECTIONS = 3 * (WORKERS + URGENT_WORKERS)


def waiting_for_capacity(loop: ReconcileLoop) -> list[tuple[str, str]]:
    def waiting(md: dict) -> bool:
        rollout = (md.get("status") or {}).get("rollout") or {}
        return rollout.get("step") == "WaitingForCapacity" or rollout.get("waitReason") in CAPACITY_REASONS

    return [k for k, md in loop.objects.items() if waiting(md)]


def build(memo: kopf.Memo) -> ReconcileLoop:
    # Monitoring: the monitor publishes verdicts here and a changed verdict enqueues
    # the object; the reconciler reads them in the serving states and writes status/acts.
    verdicts = VerdictRegistry(on_change=lambda key: loop.queue.add(key))
    children, usages = WatchedChildren(), PodUsages(shared_nodes(memo))
    kube = RolloutClient(shared_session(memo), CONNECTIONS, cache=children, capacity=usages)
    keys = ModelControlKeys(kube, shared_operator_key(memo))
    reconciler = ModelDeploymentReconciler(kube, worker_image(), verdicts=verdicts,
                                           validation_job_ttl=validation_job_ttl(),
                                           host_paths=allowed_host_paths(), log_format=log_format(), keys=keys,
                                           policies=shared_network_policies(memo))
    loop = ReconcileLoop("ModelDeployment", reconciler, shared_nodes(memo), WORKERS, URGENT_WORKERS)
    watch_children(shared_watches(memo), loop, children, usages, shared_nodes(memo))
    return loop


def stop_monitoring(memo: kopf.Memo, key: tuple[str, str]) -> None:
    """An object deleted while the watch was away: stop monitoring it too."""
    if getattr(memo, "monitor", None) is not None:
        memo.monitor.observe({"metadata": {"namespace": key[0], "name": key[1]}}, deleted=True)


TERMINAL = ("Succeeded", "Failed")


def wakes_owner(kind: str, obj: dict, owner: dict, owner_active: bool) -> bool:
    """Whether a child's event can change what its ModelDeployment's reconcile decides. Most of
    the ~12 events a new object's children cause while it validates cannot, and each woke a pass
    (10 passes per object in Validating, bench_reconcile): the verdict needs only a finished
    validation pod or Job, and a first version that is still validating looks at nothing of its
    Triton Deployment or pods yet (the pass that ends validation reads them from the cache). While
    the owner is being reconciled every event wakes it: that pass may have just moved it on."""
    if kind == "DELETED" or owner_active:
        return True
    labels = obj["metadata"].get("labels") or {}
    if labels.get(ROLE_LABEL) == "validation":
        if obj.get("kind") == "Job":
            return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                       for c in (obj.get("status") or {}).get("conditions") or [])
        return (obj.get("status") or {}).get("phase") in TERMINAL or unschedulable(obj)
    status = owner.get("status") or {}
    return bool(status.get("servingVersion")) or (status.get("rollout") or {}).get("step") != "Validating"


def watch_children(watches: Watches, loop: ReconcileLoop, children: WatchedChildren, usages: PodUsages,
                   nodes: NodeCache) -> None:
    """What each child event does: update the caches the reconciler reads, then wake the owner
    when the event can matter to it (wakes_owner)."""
    jobs = loop.reconciler.jobs

    def wake(kind: str, obj: dict) -> None:
        md = (obj["metadata"].get("labels") or {}).get(KIND_LABEL)
        key = (obj["metadata"]["namespace"], md)
        owner = loop.objects.get(key)
        if owner is not None and wakes_owner(kind, obj, owner, loop.queue.active(key)):
            loop.queue.add(key)

    def wake_waiting() -> None:
        for key in waiting_for_capacity(loop):
            loop.queue.add(key)

    def usage_changed(kind: str, pod: dict) -> None:
        if usages.observe(pod, kind == "DELETED"):  # a pod finished or went away: wake whatever waits for room
            wake_waiting()

    def pod_changed(kind: str, pod: dict) -> None:
        deleted = kind == "DELETED"
        if KIND_LABEL in (pod["metadata"].get("labels") or {}):
            jobs.observe_pod(pod, deleted)
            if is_triton(pod):
                children.observe_pod(pod, deleted)
            wake(kind, pod)

    def job_changed(kind: str, job: dict) -> None:
        if KIND_LABEL in (job["metadata"].get("labels") or {}):
            jobs.observe_job(job, kind == "DELETED")
            wake(kind, job)

    def deployment_changed(kind: str, deployment: dict) -> None:
        if KIND_LABEL in (deployment["metadata"].get("labels") or {}):
            if is_triton(deployment):
                children.observe_deployment(deployment, kind == "DELETED")
            wake(kind, deployment)

    def node_changed(kind: str, node: dict) -> None:
        """Nodes joining or changing may make room: wake whatever waits for GPUs."""
        if nodes.observe(node, kind == "DELETED"):
            wake_waiting()

    watches.on("pods", usage_changed, every_namespace=True)  # every pod's requests count
    watches.on("pods", pod_changed)
    watches.on("jobs", job_changed)
    watches.on("deployments", deployment_changed)
    watches.on("nodes", node_changed)


register_kind(MODEL_DEPLOYMENT, "model_deployments", build, on_gone=stop_monitoring)
