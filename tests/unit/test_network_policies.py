"""The NetworkPolicies in front of Triton and managed Milvus: what they allow, the settings that
say who else may connect, and how an existing policy is brought in line (against a fake API; the
cluster tests make them on the real API server)."""

from __future__ import annotations

import asyncio

import pytest

from aiops.builders.network import build_network_policy, check_peers, workload_peers
from aiops.controllers.settings import network_policy_peers
from aiops.kube.objects import NameTaken
from aiops.networkpolicies import NetworkPolicies

OWNER = {"apiVersion": "aiops.dev/v1alpha1", "kind": "ModelDeployment",
         "metadata": {"name": "llm", "namespace": "team", "uid": "u-1"}}
LABELS = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "llm"}


class Kube:
    def __init__(self, existing: dict | None = None):
        self.existing, self.calls = existing, []

    async def create_or_read(self, obj):
        self.calls.append(("create", obj["metadata"]["name"]))
        if self.existing is None:
            self.existing = obj
        return self.existing

    async def patch(self, kind, namespace, name, patch, content_type):
        self.calls.append(("patch", kind, namespace, name))
        self.existing = {**self.existing, "spec": patch["spec"]}


def test_the_policy_opens_the_servers_ports_to_the_namespace_the_operator_and_the_listed_peers():
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    peers = workload_peers("aiops-system", [monitoring])
    policy = build_network_policy("llm-triton", LABELS, [8000, 8001, 8002], peers)
    assert policy["spec"]["podSelector"] == {"matchLabels": LABELS}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8000, 8001, 8002]
    assert rule["from"] == [{"podSelector": {}},
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "aiops-system"}}},
                            monitoring]


def test_settings_name_the_peers_or_turn_the_policies_off(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    monkeypatch.delenv("AIOPS_NETWORK_POLICIES", raising=False)
    monkeypatch.delenv("AIOPS_NETWORK_POLICY_PEERS", raising=False)
    assert network_policy_peers() == workload_peers("ops", [])
    monkeypatch.setenv("AIOPS_NETWORK_POLICY_PEERS", '[{"ipBlock": {"cidr": "10.0.0.0/8"}}]')
    assert network_policy_peers()[-1] == {"ipBlock": {"cidr": "10.0.0.0/8"}}
    monkeypatch.setenv("AIOPS_NETWORK_POLICIES", "false")
    assert network_policy_peers() is None
    monkeypatch.setenv("AIOPS_NETWORK_POLICIES", "maybe")
    with pytest.raises(ValueError, match="true or false"):
        network_policy_peers()


@pytest.mark.parametrize("peers", ['{"podSelector": {}}', '[{"namespace": "x"}]', "[{}]", "[1]", "not json"])
def test_peers_that_are_not_network_policy_peers_stop_the_operator_with_the_reason(monkeypatch, peers):
    monkeypatch.setenv("AIOPS_NETWORK_POLICIES", "true")
    monkeypatch.setenv("AIOPS_NETWORK_POLICY_PEERS", peers)
    with pytest.raises(ValueError, match="AIOPS_NETWORK_POLICY_PEERS|NetworkPolicyPeers"):
        network_policy_peers()
    assert check_peers([{"podSelector": {"matchLabels": {"a": "b"}}}])


def test_a_policy_is_made_once_and_then_costs_no_request():
    kube = Kube()
    policies = NetworkPolicies(kube, workload_peers("ops", []))
    for _ in range(3):
        asyncio.run(policies.ensure(OWNER, "llm-triton", LABELS, [8000]))
    assert kube.calls == [("create", "llm-triton")]
    assert kube.existing["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_a_policy_made_under_other_settings_is_patched_to_the_current_ones():
    old = NetworkPolicies(Kube(), workload_peers("ops", []))
    asyncio.run(old.ensure(OWNER, "llm-triton", LABELS, [8000]))
    kube = Kube(old.kube.existing)  # the operator restarted with another networkPolicies.from
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    asyncio.run(NetworkPolicies(kube, workload_peers("ops", [monitoring])).ensure(OWNER, "llm-triton", LABELS, [8000]))
    assert kube.calls == [("create", "llm-triton"), ("patch", "NetworkPolicy", "team", "llm-triton")]
    assert kube.existing["spec"]["ingress"][0]["from"][-1] == monitoring


def test_a_policy_of_that_name_made_by_someone_else_is_never_changed():
    theirs = {"metadata": {"name": "llm-triton", "ownerReferences": []}, "spec": {"podSelector": {}}}
    kube = Kube(theirs)
    with pytest.raises(NameTaken, match="NetworkPolicy llm-triton already exists"):
        asyncio.run(NetworkPolicies(kube, workload_peers("ops", [])).ensure(OWNER, "llm-triton", LABELS, [8000]))
    assert kube.calls == [("create", "llm-triton")] and kube.existing is theirs


def test_disabled_policies_are_neither_made_nor_changed():
    kube = Kube()
    asyncio.run(NetworkPolicies(kube, None).ensure(OWNER, "llm-triton", LABELS, [8000]))
    assert kube.calls == []
