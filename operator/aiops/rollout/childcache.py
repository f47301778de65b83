"""Triton Deployments and pods as the operator's informers last saw them: RolloutClient's ChildCache, read
by the reconciler instead of a GET and a LIST on every pass (see aiops.controllers.modeldeployment).

No reconcile runs before the informers' first lists are in (aiops.controllers.watches), and a
re-list announces what was deleted meanwhile, so the cache never keeps an object the API server
no longer has."""

from __future__ import annotations

from aiops.builders.triton import KIND_LABEL, NAME_LABEL, TRITON

Key = tuple[str, str]


def is_triton(obj: dict) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return KIND_LABEL in labels and labels.get(NAME_LABEL) == TRITON


class WatchedChildren:
    def __init__(self) -> None:
        self._deployments: dict[Key, dict] = {}
        self._pods: dict[Key, dict[str, dict]] = {}  # (namespace, ModelDeployment) -> pod name -> pod

    def observe_deployment(self, body: dict, deleted: bool) -> None:
        meta = body["metadata"]
        if deleted:
            self._deployments.pop((meta["namespace"], meta["name"]), None)
        else:
            self._deployments[meta["namespace"], meta["name"]] = body

    def observe_pod(self, body: dict, deleted: bool) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["labels"][KIND_LABEL])
        pods = self._pods.setdefault(key, {})
        if deleted:
            pods.pop(meta["name"], None)
            if not pods:
                del self._pods[key]
        else:
            pods[meta["name"]] = body

    def deployment(self, namespace: str, name: str) -> dict | None:
        return self._deployments.get((namespace, name))

    def pods(self, namespace: str, md_name: str) -> list[dict]:
        return list(self._pods.get((namespace, md_name), {}).values())
