"""The model-control key of each ModelDeployment: derived from the operator's own key, written
once into a Secret the Triton pods read, and computed again (never read back) whenever the
operator needs it, restarts included."""

from __future__ import annotations

import asyncio
import base64

import pytest

from aiops.builders.triton import KIND_LABEL, MODEL_CONTROL_HEADER, MODEL_CONTROL_KEY
from aiops.operatorkey import OPERATOR_KEY_SECRET, OperatorKey, OperatorKeyError
from aiops.rollout.modelcontrol import ModelControlKeys

MD = {"apiVersion": "aiops.dev/v1alpha1", "kind": "ModelDeployment",
      "metadata": {"name": "chat", "namespace": "ns", "uid": "u1"}}
POD = {"metadata": {"name": "chat-triton-x", "namespace": "ns", "labels": {KIND_LABEL: "chat"}}}
HOME = "aiops-system"  # the operator's namespace


class Kube:
    """Secrets by (namespace, name), as the API server keeps them: the first create wins. Every
    read is recorded: the operator may read its own key Secret and nothing else."""

    def __init__(self):
        self.secrets: dict[tuple[str, str], dict] = {}
        self.reads: list[tuple[str, str]] = []

    @staticmethod
    def _at(obj):
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    async def read(self, kind, namespace, name):
        assert kind == "Secret"
        self.reads.append((namespace, name))
        await asyncio.sleep(0)  # another pass may run meanwhile
        return self.secrets.get((namespace, name))

    async def create_or_read(self, obj):
        return self.secrets.setdefault(self._at(obj), obj)

    async def create_unread(self, obj):
        self.secrets.setdefault(self._at(obj), obj)


def keys_for(kube: Kube) -> ModelControlKeys:
    return ModelControlKeys(kube, OperatorKey(kube, HOME))


def stored_key(secret: dict) -> str:
    return base64.b64decode(secret["data"][MODEL_CONTROL_KEY]).decode()


def test_the_key_is_written_once_owned_and_never_read_back():
    kube = Kube()
    keys = keys_for(kube)
    asyncio.run(keys.ensure(MD))
    asyncio.run(keys.ensure(MD))  # a later rollout: the same Secret, not a second one
    name = asyncio.run(keys.secret_name("ns", "chat"))
    (made,) = [s for (ns, _), s in kube.secrets.items() if ns == "ns"]
    assert made["metadata"]["name"] == name and name.startswith("chat-model-control-") and len(name) == 27
    assert made["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert len(stored_key(made)) == 64
    assert asyncio.run(keys.headers(POD)) == {MODEL_CONTROL_HEADER: stored_key(made)}
    assert kube.reads == [(HOME, OPERATOR_KEY_SECRET)], "no Secret of a workload namespace is read"


def test_a_restarted_operator_computes_the_same_key_from_its_own():
    kube = Kube()
    asyncio.run(keys_for(kube).ensure(MD))
    (made,) = [s for (ns, _), s in kube.secrets.items() if ns == "ns"]
    restarted = keys_for(kube)
    assert asyncio.run(restarted.headers(POD)) == {MODEL_CONTROL_HEADER: stored_key(made)}
    assert asyncio.run(restarted.secret_name("ns", "chat")) == made["metadata"]["name"]
    assert all(ns == HOME for ns, _ in kube.reads)


def test_keys_differ_per_model_deployment_and_per_operator_key():
    kube = Kube()
    keys = keys_for(kube)
    mine, other_ns, other_name = (asyncio.run(keys.key(ns, n)) for ns, n in
                                  (("ns", "chat"), ("ns2", "chat"), ("ns", "chat2")))
    assert len({mine, other_ns, other_name}) == 3
    elsewhere = keys_for(Kube())  # another operator key (a new cluster, or the key Secret deleted)
    assert asyncio.run(elsewhere.key("ns", "chat")) != mine
    # ... names another Secret: its pods get the new key, never one the operator cannot compute.
    assert asyncio.run(elsewhere.secret_name("ns", "chat")) != asyncio.run(keys.secret_name("ns", "chat"))


def test_two_operators_making_the_key_at_once_end_with_one():
    kube = Kube()
    a, b = keys_for(kube), keys_for(kube)

    async def both():
        return await asyncio.gather(a.key("ns", "chat"), b.key("ns", "chat"))

    first, second = asyncio.run(both())
    assert first == second and len([k for k in kube.secrets if k[0] == HOME]) == 1


def test_a_name_taken_by_another_secret_is_neither_read_nor_changed():
    kube = Kube()
    keys = keys_for(kube)
    name = asyncio.run(keys.secret_name("ns", "chat"))
    theirs = {"metadata": {"name": name, "namespace": "ns"}, "data": {MODEL_CONTROL_KEY: "Z3Vlc3M="}}
    kube.secrets[("ns", name)] = theirs
    asyncio.run(keys.ensure(MD))
    assert kube.secrets[("ns", name)] is theirs and ("ns", name) not in kube.reads


def test_a_key_secret_without_a_usable_key_says_how_to_recover():
    kube = Kube()
    kube.secrets[(HOME, OPERATOR_KEY_SECRET)] = {"metadata": {"name": OPERATOR_KEY_SECRET}, "data": {}}
    with pytest.raises(OperatorKeyError, match="delete it and the operator makes a new one"):
        asyncio.run(keys_for(kube).key("ns", "chat"))


def test_pods_of_no_model_deployment_get_no_header():
    assert asyncio.run(keys_for(Kube()).headers({"metadata": {"name": "x", "namespace": "ns"}})) is None
