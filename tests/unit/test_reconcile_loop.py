"""The reconcile loop's cache of primary objects: a status write of our own is not a change, and
a periodic LIST forgets what the watch missed deleting (Kopf sends no DELETED after a re-list)."""

import asyncio

from aiops.controllers.loop import ReconcileLoop
from aiops.nodes import NodeCache


class Recorder:
    kube = None

    def __init__(self):
        self.seen: list[str] = []

    async def reconcile(self, body, nodes):
        self.seen.append(body["metadata"]["name"])
        return None, None


def md(name: str, version: int, namespace: str = "ns") -> dict:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": str(version)}}


def test_a_list_that_lacks_an_older_object_forgets_it_and_drops_its_queued_work():
    async def scenario():
        recorder = Recorder()
        loop = ReconcileLoop("ModelDeployment", recorder, NodeCache())
        for body in (md("gone", 10), md("kept", 11), md("newer", 40), md("elsewhere", 5, "other")):
            loop.observe(body, deleted=False)
        loop.observe(md("kept", 11), deleted=False)  # our own write coming back: no change
        # Listed at 30: "gone" was deleted meanwhile; "newer" was created after the list.
        assert loop.drop_vanished("ns", [md("kept", 11)], 30) == [("ns", "gone")]
        assert set(loop.objects) == {("ns", "kept"), ("ns", "newer"), ("other", "elsewhere")}
        loop.enqueue("ns", "gone")  # a child event of the forgotten object: nothing to do
        loop.start()
        await asyncio.sleep(0.2)
        await loop.queue.stop()
        return recorder.seen

    assert sorted(asyncio.run(scenario())) == ["elsewhere", "kept", "newer"]


def test_periodic_checks_list_each_namespace_and_stop_with_the_loop(monkeypatch):
    import aiops.controllers.loop as loop_module

    class Lister:
        def __init__(self):
            self.asked: list[tuple[str, str]] = []

        async def list_custom(self, namespace, plural):
            self.asked.append((namespace, plural))
            return [md("kept", 11)], 30

        async def flush(self):
            pass

        async def close(self):
            pass

    async def scenario():
        recorder = Recorder()
        recorder.kube = Lister()
        loop = ReconcileLoop("TrainingJob", recorder, NodeCache())
        for body in (md("gone", 10), md("kept", 11), md("elsewhere", 5, "other")):
            loop.observe(body, deleted=False)
        loop.start()
        loop.start_checks("trainingjobs")
        await asyncio.sleep(0.05)
        await loop.stop()
        return loop, recorder.kube.asked

    monkeypatch.setattr(loop_module, "RESYNC_SECONDS", 0.01)
    loop, asked = asyncio.run(scenario())
    assert ("ns", "trainingjobs") in asked and ("other", "trainingjobs") in asked
    assert set(loop.objects) == {("ns", "kept")}  # "elsewhere" was missing from other's list too
    assert loop._checks.cancelled() or loop._checks.done()
