"""Triton Deployments and pods as the operator's watch last saw them: KubeIO's ChildCache over two
Kopf indices (see aiops.controllers.modeldeployment), read by the reconciler instead of a GET and a
LIST on every pass.

Kopf holds every handler back until the indices have listed everything, so no reconcile sees a
cache that is still filling. One gap remains: when a watch must list again (its resourceVersion
expired, e.g. across an API server restart), an object deleted meanwhile gets no DELETED event and
Kopf keeps it in the index. `drop_vanished`, fed by a periodic LIST, hides such objects: absent
from a list taken after their last change means deleted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiops.builders.triton import KIND_LABEL
from aiops.kube import resource_version

Key = tuple[str, str]


def _uid(obj: dict) -> str:
    return obj["metadata"].get("uid") or ""


class IndexedChildren:
    def __init__(self, deployments: Mapping[Key, Iterable[dict]], pods: Mapping[Key, Iterable[dict]]):
        self._deployments, self._pods = deployments, pods
        self._vanished: set[str] = set()  # uids the API server no longer has, still in an index

    def deployment(self, namespace: str, name: str) -> dict | None:
        return next((d for d in self._deployments.get((namespace, name), ()) if _uid(d) not in self._vanished), None)

    def pods(self, namespace: str, md_name: str) -> list[dict]:
        return [p for p in self._pods.get((namespace, md_name), ()) if _uid(p) not in self._vanished]

    def namespaces(self) -> set[str]:
        return {ns for ns, _ in self._deployments} | {ns for ns, _ in self._pods}

    def drop_vanished(self, namespace: str, deployments: tuple[list[dict], int],
                      pods: tuple[list[dict], int]) -> set[Key]:
        """Hides what a LIST of `namespace` (items, the list's resourceVersion) no longer has though
        it is older than the list. Returns the ModelDeployments whose view changed, to reconcile them."""
        changed: set[Key] = set()
        for index, (items, listed_at) in ((self._deployments, deployments), (self._pods, pods)):
            live = {_uid(o) for o in items}
            for key, store in index.items():
                for obj in store if key[0] == namespace else ():
                    uid = _uid(obj)
                    if uid not in live and uid not in self._vanished and resource_version(obj) <= listed_at:
                        self._vanished.add(uid)
                        changed.add((namespace, (obj["metadata"].get("labels") or {}).get(KIND_LABEL, "")))
        everything = {_uid(o) for index in (self._deployments, self._pods) for store in index.values() for o in store}
        self._vanished &= everything  # Kopf let go of them after all: nothing left to hide
        return changed
