"""Small facts about API objects every controller needs: ownership, resourceVersion order, a cheap
copy, and what a LIST shows was deleted while a watch was away."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (an object as the API server sends it, a status): a tenth of
    copy.deepcopy's time, which was the operator's largest cost per event in bench_reconcile."""
    return orjson.loads(orjson.dumps(value))


def owned_by(obj: dict, owner: dict) -> dict:
    """`obj` with `owner` as its controller: garbage-collected with it, and found from it."""
    meta = owner["metadata"]
    obj.setdefault("metadata", {})["namespace"] = meta["namespace"]
    obj["metadata"]["ownerReferences"] = [{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
        "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
    }]
    return obj


class NameTaken(Exception):
    """An object of the name a resource needs exists and is not that resource's: the operator
    never changes, uses or adopts what it did not create."""

    reason = "NameTaken"

    def __init__(self, kind: str, name: str, owner_kind: str):
        super().__init__(f"{kind} {name} already exists and does not belong to this {owner_kind}; the operator "
                         "never changes or uses what it did not create: delete or rename that object, or rename "
                         f"the {owner_kind}.")


def owned_by_uid(obj: dict, uid: str | None) -> bool:
    """Whether the object with `uid` is among `obj`'s owners."""
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def controller_of(obj: dict) -> dict | None:
    """The ownerReference marked controller, if any."""
    return next((ref for ref in obj.get("metadata", {}).get("ownerReferences") or [] if ref.get("controller")), None)


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
