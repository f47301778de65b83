"""The NetworkPolicy in front of each server the operator runs (Triton, managed Milvus): only the
server's own ports are open, and only to pods of its namespace, the operator's namespace and the
peers the administrator lists (the Helm value networkPolicies.from: an ingress controller's or
Prometheus's namespace). Anything else in the cluster is refused by a CNI that enforces
NetworkPolicies (Calico, Cilium, ...). Pure functions; no I/O."""

from __future__ import annotations

import json

# Set by the API server on every namespace since Kubernetes 1.21; on 1.20 label the operator's
# namespace with it by hand (docs/compatibility.md).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PEER_KEYS = frozenset({"podSelector", "namespaceSelector", "ipBlock"})


def workload_peers(operator_namespace: str, extra: list[dict]) -> list[dict]:
    """Who may connect: the workload's own namespace (its clients, its Jobs), the operator (it
    loads models into Triton and checks Milvus's recall), and the administrator's `extra` peers."""
    return [{"podSelector": {}},
            {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}}},
            *extra]


def check_peers(peers: object) -> list[dict]:
    """`peers` if it is a list of NetworkPolicyPeers, else ValueError saying what is wrong."""
    if not isinstance(peers, list) or not all(isinstance(p, dict) and p and set(p) <= PEER_KEYS for p in peers):
        raise ValueError("network policy peers must be a list of NetworkPolicyPeers, each with only "
                         f"{', '.join(sorted(PEER_KEYS))}, not {json.dumps(peers)[:200]}")
    return peers


def build_network_policy(name: str, labels: dict[str, str], ports: list[int], peers: list[dict]) -> dict:
    """Ingress to the pods with `labels` on `ports` from `peers`, nothing else. Written as the API
    server returns it (protocol and policyTypes filled in), so a stored one compares equal."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "podSelector": {"matchLabels": dict(labels)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": p} for p in ports], "from": peers}],
        },
    }

