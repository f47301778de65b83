"""The Kubernetes client configuration the operator's own code uses (Kopf has its own for its
watches): the informers and KubeIO take its host and credentials for their aiohttp sessions
(aiops.kubehttp); leader election calls it directly.

Configured when first needed, not at import: the kubernetes package reads $KUBECONFIG when it is
imported, which is too early for tests and tools that point it at a cluster they just started.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from kubernetes import client, config

_lock = threading.Lock()
_clients: dict[str, client.ApiClient] = {}


def api_client() -> client.ApiClient:
    """In a pod: the ServiceAccount. Elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    key = "in-cluster" if os.environ.get("KUBERNETES_SERVICE_HOST") else os.environ.get("KUBECONFIG", "")
    with _lock:
        if key not in _clients:
            cfg = client.Configuration()
            if key == "in-cluster":
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(config_file=key or None, client_configuration=cfg)
            _clients[key] = client.ApiClient(cfg)
        return _clients[key]


def owned_by(obj: dict, owner: dict) -> dict:
    """`obj` with `owner` as its controller: garbage-collected with it, and found from it."""
    meta = owner["metadata"]
    obj.setdefault("metadata", {})["namespace"] = meta["namespace"]
    obj["metadata"]["ownerReferences"] = [{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
        "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
    }]
    return obj


def vanished(cache: Mapping[tuple[str, str], dict], namespace: str, listed: list[dict],
             listed_at: int) -> list[tuple[str, str]]:
    """The (namespace, name) keys of `cache` in `namespace` that a LIST (`listed`, taken at
    resourceVersion `listed_at`) lacks though they are older than it: deleted while a watch was
    listing again, which Kopf reports with no DELETED event."""
    live = {o["metadata"]["name"] for o in listed}
    return [key for key, obj in cache.items()
            if key[0] == namespace and key[1] not in live and resource_version(obj) <= listed_at]


def resource_version(obj: dict) -> int:
    """An object's resourceVersion as a number, to tell older from newer (0 when unknown)."""
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):  # opaque by contract; etcd's happen to be numbers
        return 0
