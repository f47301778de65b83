"""An informer (aiops.kube.informer) against the real API server: its first list, live events, an
object larger than aiohttp's line limit, and what a re-list announces after the informer was away
(deletions it never saw as events)."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client

from aiops.kube.informer import Informer
from aiops.kube.session import ApiSession

pytestmark = pytest.mark.cluster


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_list_watch_and_relist_against_the_api_server(kube, namespace):
    core = kube.core

    def make(name: str, value: str = "1") -> None:
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels={"test": "informer"}), data={"v": value}))

    make("before")
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(  # the selector leaves it out
        metadata=client.V1ObjectMeta(name="unlabelled"), data={"v": "1"}))
    seen: list[tuple[str, str]] = []
    objects: dict[str, dict] = {}

    def record(kind: str, obj: dict) -> None:
        seen.append((kind, obj["metadata"]["name"]))
        objects[obj["metadata"]["name"]] = obj

    async def scenario() -> None:
        api = ApiSession(kube.api_client.configuration)
        informer = Informer(api, "/api/v1", "configmaps", namespace=namespace, selector="test=informer")
        informer.subscribe(record)
        informer.start()
        await asyncio.wait_for(informer.synced.wait(), 20)
        assert seen == [("ADDED", "before")] and objects["before"]["kind"] == "ConfigMap"

        big = "x" * 300_000  # one watch line past aiohttp's 128 KiB readline limit
        await asyncio.to_thread(make, "big", big)
        await asyncio.to_thread(core.patch_namespaced_config_map, "before", namespace, {"data": {"v": "2"}})
        await until(lambda: ("MODIFIED", "before") in seen and ("ADDED", "big") in seen)
        assert objects["big"]["data"]["v"] == big and objects["before"]["data"]["v"] == "2"

        # Away: the watch stops; meanwhile one object is deleted and one made. When the version to
        # resume from is gone (410), the informer lists again (an empty resourceVersion, as its
        # Expired handling leaves it) and announces the deletion it never saw as an event.
        await informer.stop()
        await asyncio.to_thread(core.delete_namespaced_config_map, "big", namespace)
        await asyncio.to_thread(make, "after")
        seen.clear()
        informer.resource_version = ""
        informer.start()
        await until(lambda: ("DELETED", "big") in seen and ("ADDED", "after") in seen)
        assert ("ADDED", "before") not in seen  # unchanged: not handed out again
        assert set(informer.known) == {(namespace, "before"), (namespace, "after")}
        await informer.stop()
        await api.close()

    asyncio.run(scenario())
