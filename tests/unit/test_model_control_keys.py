"""The model-control key of each ModelDeployment: made once in a Secret it owns, kept in memory,
read back after a restart, and sent as the header Triton's restricted API demands."""

from __future__ import annotations

import asyncio

from aiops.builders.triton import KIND_LABEL, MODEL_CONTROL_HEADER
from aiops.rollout.modelcontrol import ModelControlKeys, key_of

MD = {"apiVersion": "aiops.dev/v1alpha1", "kind": "ModelDeployment",
      "metadata": {"name": "chat", "namespace": "ns", "uid": "u1"}}
POD = {"metadata": {"name": "chat-triton-x", "namespace": "ns", "labels": {KIND_LABEL: "chat"}}}


class Kube:
    """Secrets by (namespace, name), as the API server keeps them: the first create wins."""

    def __init__(self):
        self.secrets: dict[tuple[str, str], dict] = {}
        self.reads = 0

    async def create_or_read(self, obj):
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        return self.secrets.setdefault(key, obj)

    async def read(self, kind, namespace, name):
        assert kind == "Secret"
        self.reads += 1
        return self.secrets.get((namespace, name))


def test_the_key_is_made_once_owned_and_sent_without_reading_it_back():
    kube = Kube()
    keys = ModelControlKeys(kube)
    first = asyncio.run(keys.ensure(MD))
    again = asyncio.run(keys.ensure(MD))  # a later rollout: the same key, not a new one
    assert key_of(first) == key_of(again) and len(key_of(first)) == 64
    assert first["metadata"]["ownerReferences"][0]["uid"] == "u1" and first["metadata"]["name"] == "chat-model-control"
    assert asyncio.run(keys.headers(POD)) == {MODEL_CONTROL_HEADER: key_of(first)} and kube.reads == 0


def test_after_a_restart_the_key_is_read_back_once():
    kube = Kube()
    made = asyncio.run(ModelControlKeys(kube).ensure(MD))
    restarted = ModelControlKeys(kube)
    assert asyncio.run(restarted.headers(POD)) == {MODEL_CONTROL_HEADER: key_of(made)}
    asyncio.run(restarted.headers(POD))
    assert kube.reads == 1


def test_pods_without_a_key_get_no_header():
    keys = ModelControlKeys(Kube())
    assert asyncio.run(keys.headers(POD)) is None  # made before the restriction: no Secret
    assert asyncio.run(keys.headers({"metadata": {"name": "x", "namespace": "ns"}})) is None
