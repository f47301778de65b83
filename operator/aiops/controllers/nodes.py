"""An in-memory index of nodes, kept current by a watch: GPU capacity questions are answered
without an API call, and change as soon as a node joins, leaves or changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf


@kopf.index("", "v1", "nodes")
def nodes_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, dict]:
    """Just what capacity needs of each node (labels, taints, allocatable, Ready)."""
    return {name: {
        "metadata": {"name": name, "labels": dict(body.metadata.labels or {})},
        "spec": {"taints": list(body.spec.get("taints") or []),
                 "unschedulable": bool(body.spec.get("unschedulable"))},
        "status": {"allocatable": dict(body.status.get("allocatable") or {}),
                   "conditions": list(body.status.get("conditions") or [])},
    }}


def all_nodes(index: kopf.Index) -> list[dict]:
    return [node for store in index.values() for node in store]


def max_gpus_per_node(nodes: Iterable[dict]) -> dict[str, int]:
    """The most of each extended resource any one node offers (e.g. {"nvidia.com/gpu": 3})."""
    best: dict[str, int] = {}
    for node in nodes:
        for resource, value in node["status"]["allocatable"].items():
            if "/" not in resource:  # cpu, memory, pods: not what GPU rules are about
                continue
            try:
                count = int(value)
            except (TypeError, ValueError):
                continue
            best[resource] = max(best.get(resource, 0), count)
    return best
