"""The built-in kinds the controllers follow (pods, Jobs, Deployments, StatefulSets, ConfigMaps,
nodes): each is listed and watched once, by an informer (aiops.kube.informer), and every controller
subscribes callbacks to it in its startup handler. Kopf watches only our own kinds.

The informers start in the last startup handler (aiops.controllers registers it after every
controller's), and Kopf starts its own watches only after every startup handler has finished: no
ModelDeployment, TrainingJob or VectorIndex is reconciled before the first list of every child
kind has been handed out, so no reconcile reads a cache that is still filling (the guarantee
Kopf's indices used to give)."""

from __future__ import annotations

import asyncio
import logging
from fnmatch import fnmatchcase
from typing import Any

import kopf

from aiops.controllers.settings import OWNED_SELECTOR, network_policy_peers, operator_namespace
from aiops.kube.client import KubeClient
from aiops.kube.config import api_client
from aiops.kube.informer import Callback, Informer
from aiops.kube.session import ApiSession
from aiops.networkpolicies import NetworkPolicies
from aiops.operatorkey import OperatorKey

log = logging.getLogger(__name__)

# plural -> (path prefix, label selector the API server applies, namespaced). Only our own Jobs,
# Deployments and StatefulSets come down those watches (every builder labels its objects managed-by
# us). Pods stay unfiltered and cluster-wide even when the operator serves some namespaces only:
# GPU capacity counts every pod's GPUs (aiops.podusage), and a foreign GPU pod that ends frees GPUs
# a waiting ModelDeployment may take. ConfigMaps are unfiltered too: VectorIndex sources are the
# user's.
KINDS: dict[str, tuple[str, str, bool]] = {
    "pods": ("/api/v1", "", False),
    "configmaps": ("/api/v1", "", True),
    "jobs": ("/apis/batch/v1", OWNED_SELECTOR, True),
    "deployments": ("/apis/apps/v1", OWNED_SELECTOR, True),
    "statefulsets": ("/apis/apps/v1", OWNED_SELECTOR, True),
    "nodes": ("/api/v1", "", False),
}
GLOB = set("*?[")


class Watches:
    """`namespaces`: what the operator serves (None: all). Plain names get one watch each;
    patterns ('team-*') one cluster-wide watch that hands out only the matching namespaces."""

    def __init__(self, namespaces: list[str] | None = None):
        self.namespaces = namespaces or None
        self._callbacks: dict[str, list[Callback]] = {}
        self.informers: list[Informer] = []
        self._api: ApiSession | None = None

    def on(self, plural: str, callback: Callback, every_namespace: bool = False) -> None:
        """`callback` gets the kind's events in the namespaces the operator serves; with
        `every_namespace`, from the whole cluster where the kind is watched cluster-wide (pods,
        for GPU accounting): a controller's caches of its own children then hold no other
        namespace's objects."""
        if plural not in KINDS:
            raise ValueError(f"no informer for {plural!r}; known: {sorted(KINDS)}")
        if not every_namespace and self.namespaces is not None and self._cluster_wide(plural):
            callback = self._served_only(callback)
        self._callbacks.setdefault(plural, []).append(callback)

    def _served_only(self, callback: Callback) -> Callback:
        patterns = self.namespaces or []

        def filtered(kind: str, obj: dict) -> None:
            namespace = obj["metadata"].get("namespace")
            if namespace is None or any(fnmatchcase(namespace, p) for p in patterns):  # nodes have none
                callback(kind, obj)

        return filtered

    def _cluster_wide(self, plural: str) -> bool:
        """One watch of the whole cluster: the kind is watched so everywhere (pods, nodes), the
        operator serves every namespace, or it serves patterns that no per-namespace watch can list."""
        return not KINDS[plural][2] or self.namespaces is None or any(GLOB & set(ns) for ns in self.namespaces)

    def _informers_for(self, api: ApiSession, plural: str) -> list[Informer]:
        prefix, selector, _ = KINDS[plural]
        if self._cluster_wide(plural):
            return [Informer(api, prefix, plural, selector=selector)]
        return [Informer(api, prefix, plural, namespace=ns, selector=selector) for ns in self.namespaces]

    async def start(self, api: ApiSession) -> None:
        """Starts an informer per subscribed kind (and namespace) and waits for their first lists."""
        self._api = api
        for plural, callbacks in self._callbacks.items():
            for informer in self._informers_for(api, plural):
                for callback in callbacks:
                    informer.subscribe(callback)
                self.informers.append(informer)
                informer.start()
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        log.info("listed %s", ", ".join(sorted(self._callbacks)))

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self.informers))
        if self._api is not None:
            await self._api.close()


def shared_watches(memo: kopf.Memo) -> Watches:
    """The one set of informers every controller subscribes to; `memo.namespaces` is set by
    aiops.runner from the operator's --namespace flags."""
    return memo.setdefault("watches", Watches(memo.get("namespaces")))


def shared_session(memo: kopf.Memo) -> ApiSession:
    """The operator's one HTTP session to the API server: the informers' watches and every
    controller's client share its connection pool. Closed with the watches, in the last cleanup
    handler, after every controller's loop has stopped."""
    return memo.setdefault("kube_session", ApiSession(api_client().configuration))


def shared_operator_key(memo: kopf.Memo) -> OperatorKey:
    """The operator's own key (rollout/modelcontrol.py), read or made once for every controller."""
    return memo.setdefault("operator_key", OperatorKey(KubeClient(shared_session(memo), 2), operator_namespace()))


def shared_network_policies(memo: kopf.Memo) -> NetworkPolicies:
    """The keeper of the servers' NetworkPolicies, one for every controller (it remembers which
    it checked against the settings)."""
    return memo.setdefault("network_policies", NetworkPolicies(KubeClient(shared_session(memo), 4),
                                                               network_policy_peers()))


async def start_watches(memo: kopf.Memo, **_: Any) -> None:
    await shared_watches(memo).start(shared_session(memo))


async def stop_watches(memo: kopf.Memo, **_: Any) -> None:
    await shared_watches(memo).stop()
