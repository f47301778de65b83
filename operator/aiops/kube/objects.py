"""Small facts about API objects every controller needs: ownership, resourceVersion order, and
what a LIST shows was deleted while a watch was away."""

from __future__ import annotations

from collections.abc import Mapping


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
