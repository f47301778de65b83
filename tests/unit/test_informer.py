"""What an informer hands out from a re-list and from watch events (aiops.kube.informer); the live
list-and-watch against the API server is tests/cluster/test_informer_live.py."""

import pytest

from aiops.kube.informer import Expired, Informer


def cm(name: str, version: int, uid: str = "", namespace: str = "ns") -> dict:
    return {"kind": "ConfigMap", "apiVersion": "v1", "data": {"v": str(version)},
            "metadata": {"namespace": namespace, "name": name, "uid": uid or name,
                         "resourceVersion": str(version), "labels": {"app": name}}}


def informer() -> tuple[Informer, list]:
    seen: list[tuple[str, str, dict]] = []
    inf = Informer(None, "/api/v1", "configmaps")
    inf.subscribe(lambda kind, obj: seen.append((kind, obj["metadata"]["name"], obj)))
    return inf, seen


def names(seen) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name, _ in seen]


def test_a_relist_hands_out_only_the_difference_and_announces_what_vanished():
    inf, seen = informer()
    inf.replace([cm("a", 1), cm("b", 2), cm("c", 3)], "3")
    assert names(seen) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")] and inf.synced.is_set()
    seen.clear()
    # Away for a while: b changed, c was deleted, a was deleted and made again (new uid), d is new.
    inf.replace([cm("a", 7, uid="a2"), cm("b", 5), cm("d", 6)], "9")
    assert names(seen) == [("DELETED", "a"), ("ADDED", "a"), ("MODIFIED", "b"), ("ADDED", "d"), ("DELETED", "c")]
    deleted_c = seen[-1][2]
    assert deleted_c["metadata"]["labels"] == {"app": "c"} and "data" not in deleted_c  # only what was kept
    assert inf.resource_version == "9" and set(inf.known) == {("ns", "a"), ("ns", "b"), ("ns", "d")}


def test_watch_events_bookmarks_and_errors():
    inf, seen = informer()
    inf._event({"type": "ADDED", "object": cm("a", 10)})
    inf._event({"type": "BOOKMARK", "object": {"kind": "ConfigMap", "metadata": {"resourceVersion": "15"}}})
    assert names(seen) == [("ADDED", "a")] and inf.resource_version == "15"
    inf._event({"type": "DELETED", "object": cm("a", 16)})
    assert inf.known == {} and inf.resource_version == "16"
    with pytest.raises(Expired):  # the version to resume from is gone: list again
        inf._event({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}})


def test_a_failing_callback_does_not_stop_the_others():
    inf, seen = informer()
    inf._callbacks.insert(0, lambda kind, obj: 1 / 0)
    inf._event({"type": "ADDED", "object": cm("a", 1)})
    assert names(seen) == [("ADDED", "a")]


def test_a_watch_answered_410_gone_lists_again():
    """The resume point expired while away: the informer lists afresh and announces what vanished."""
    import asyncio
    import json

    from kubernetes.client.rest import ApiException

    class Response:
        def __init__(self, body: dict):
            self.body = body

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

        async def read(self) -> bytes:
            return json.dumps(self.body).encode()

    class Api:
        def __init__(self):
            self.calls: list[str] = []
            self.listed = [cm("a", 1), cm("b", 2)]

        async def get(self, path, params, timeout):
            self.calls.append("watch" if "watch" in params else "list")
            if "watch" not in params:
                return Response({"kind": "ConfigMapList", "apiVersion": "v1", "items": self.listed,
                                 "metadata": {"resourceVersion": "20"}})
            if self.calls.count("watch") == 1:
                raise ApiException(status=410, reason="too old resource version")
            await asyncio.Event().wait()  # a quiet watch

    async def scenario():
        api = Api()
        inf = Informer(api, "/api/v1", "configmaps")
        seen = []
        inf.subscribe(lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
        inf.replace([cm("a", 1), cm("gone", 3)], "5")  # what it knew before going away
        seen.clear()
        inf.start()
        while api.calls.count("watch") < 2:
            await asyncio.sleep(0.01)
        await inf.stop()
        assert api.calls == ["watch", "list", "watch"]
        assert seen == [("ADDED", "b"), ("DELETED", "gone")] and inf.resource_version == "20"

    asyncio.run(scenario())
