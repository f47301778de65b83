"""Keeps the NetworkPolicy in front of each server the operator runs (aiops.builders.network).

A policy is made with its server and checked against the operator's settings once per operator
process (the settings are the operator's environment: they change only with a restart), so a
changed `networkPolicies.from` reaches every existing policy after the upgrade that changes it,
and a steady object costs no request per pass."""

from __future__ import annotations

from collections import OrderedDict

from aiops.builders.network import build_network_policy
from aiops.kube.client import MERGE, KubeClient
from aiops.kube.objects import NameTaken, owned_by, owned_by_uid

CHECKED_REMEMBERED = 4096  # policies known to match the settings; a forgotten one is read again


class NetworkPolicies:
    """peers: who may connect (aiops.builders.network.workload_peers); None: the operator makes
    and changes no NetworkPolicy (networkPolicies.enabled=false; ones it made before are left)."""

    def __init__(self, kube: KubeClient, peers: list[dict] | None):
        self.kube, self.peers = kube, peers
        self._checked: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def ensure(self, owner: dict, name: str, labels: dict[str, str], ports: list[int]) -> None:
        """The policy `name` for `owner`'s pods with `labels`, as the settings want it. NameTaken
        when a policy of that name is not `owner`'s: it is never changed."""
        if self.peers is None:
            return
        uid = owner["metadata"]["uid"]
        key = (uid, name)
        if key in self._checked:
            self._checked.move_to_end(key)
            return
        wanted = owned_by(build_network_policy(name, labels, ports, self.peers), owner)
        found = await self.kube.create_or_read(wanted)
        if not owned_by_uid(found, uid):
            raise NameTaken("NetworkPolicy", name, owner["kind"])
        if found.get("spec") != wanted["spec"]:  # made under other settings
            await self.kube.patch("NetworkPolicy", owner["metadata"]["namespace"], name,
                                  {"spec": wanted["spec"]}, content_type=MERGE)
        self._checked[key] = None
        if len(self._checked) > CHECKED_REMEMBERED:
            self._checked.popitem(last=False)
