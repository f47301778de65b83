"""A cache of nodes, kept current by a watch: GPU limits are known without an API call and change
as soon as a node joins, leaves or changes."""

from __future__ import annotations

from collections.abc import Iterable


def node_summary(body: dict) -> dict:
    """Just what capacity needs of a node (labels, taints, allocatable, Ready)."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    return {
        "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
        "spec": {"taints": list(spec.get("taints") or []), "unschedulable": bool(spec.get("unschedulable"))},
        "status": {"allocatable": dict(status.get("allocatable") or {}),
                   "conditions": [{"type": c.get("type"), "status": c.get("status")}
                                  for c in status.get("conditions") or []]},
    }


class NodeCache:
    def __init__(self) -> None:
        self._nodes: dict[str, dict] = {}

    def observe(self, body: dict, deleted: bool) -> bool:
        """Records a node event; True when something capacity depends on changed (heartbeats
        that only renew timestamps don't count)."""
        name = body["metadata"]["name"]
        if deleted:
            return self._nodes.pop(name, None) is not None
        summary = node_summary(body)
        changed = self._nodes.get(name) != summary
        self._nodes[name] = summary
        return changed

    def all(self) -> list[dict]:
        return list(self._nodes.values())


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
