"""The work queue's guarantees: dedup, no concurrent reconcile of one key, no lost changes,
requeue after a delay, and backoff on errors."""

import asyncio

import pytest

from aiops.controllers.workqueue import WorkQueue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def recording_queue(workers: int) -> tuple[WorkQueue, list]:
    """A queue whose reconcile only records the keys, in the order they ran."""
    calls = []

    async def reconcile(key):
        calls.append(key)

    return WorkQueue(reconcile, workers=workers), calls


async def run_briefly(q: WorkQueue) -> None:
    q.start()
    await asyncio.sleep(0.05)
    await q.stop()


def test_burst_of_adds_is_one_reconcile():
    async def main():
        q, calls = recording_queue(workers=2)
        for _ in range(10):
            q.add("a")
        q.add("b")
        await run_briefly(q)
        return calls

    assert sorted(run(main())) == ["a", "b"]


def test_one_key_never_runs_concurrently_and_adds_during_a_run_are_not_lost():
    async def main():
        running, overlaps, calls = set(), [], []

        async def reconcile(key):
            if key in running:
                overlaps.append(key)
            running.add(key)
            calls.append(key)
            if len(calls) == 1:
                q.add(key)  # a change arrives while we work: must cause exactly one more run
                q.add(key)
            await asyncio.sleep(0.02)
            running.discard(key)

        q = WorkQueue(reconcile, workers=4)
        q.start()
        q.add("a")
        await asyncio.sleep(0.2)
        await q.stop()
        return overlaps, calls

    overlaps, calls = run(main())
    assert overlaps == [] and calls == ["a", "a"]


def test_urgent_keys_go_first_and_a_promoted_key_runs_once():
    async def main():
        q, calls = recording_queue(workers=1)
        for key in ("child-1", "child-2", "promoted"):
            q.add(key)
        q.add("new", urgent=True)
        q.add("promoted", urgent=True)
        q.add("new")  # a later ordinary add does not demote it
        await run_briefly(q)
        return calls

    assert run(main()) == ["new", "promoted", "child-1", "child-2"]


def test_urgent_workers_run_urgent_keys_while_every_worker_is_busy_and_each_add_runs_once():
    async def main():
        release, calls = asyncio.Event(), []

        async def reconcile(key):
            calls.append(key)
            if key.startswith("slow"):
                await release.wait()  # a re-check stuck on a slow API call

        q = WorkQueue(reconcile, workers=2, urgent_workers=1)
        q.start()
        q.add("slow-1")
        q.add("slow-2")
        q.add("slow-3")
        await asyncio.sleep(0.05)
        q.add("new", urgent=True)
        await asyncio.sleep(0.05)
        ran_while_busy = list(calls)
        release.set()
        await asyncio.sleep(0.05)
        q.add("new", urgent=True)  # again: taken from one queue, its copy in the other is skipped
        await asyncio.sleep(0.05)
        await q.stop()
        return ran_while_busy, calls

    ran_while_busy, calls = run(main())
    assert ran_while_busy == ["slow-1", "slow-2", "new"]  # both ordinary workers were held
    assert sorted(calls) == ["new", "new", "slow-1", "slow-2", "slow-3"]


def test_requested_delay_reruns_and_earlier_request_wins():
    async def main():
        times = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def reconcile(key):
            times.append(loop.time() - t0)
            return 0.1 if len(times) < 3 else None

        q = WorkQueue(reconcile, workers=1)
        q.start()
        q.add("a")
        await asyncio.sleep(0.5)
        q.add_after("b", 5)
        q.add_after("b", 0.01)  # earlier wins
        await asyncio.sleep(0.1)
        await q.stop()
        return times

    times = run(main())
    assert len(times) == 4  # a three times (0, ~0.1, ~0.2), then b once, early
    assert times[1] == pytest.approx(0.1, abs=0.08) and times[2] == pytest.approx(0.2, abs=0.12)


def test_errors_back_off_and_recover():
    async def main():
        calls = []

        async def reconcile(key):
            calls.append(asyncio.get_running_loop().time())
            if len(calls) < 3:
                raise RuntimeError("API hiccup")

        q = WorkQueue(reconcile, workers=1, max_backoff=0.2)
        q.start()
        q.add("a")
        await asyncio.sleep(1.0)
        await q.stop()
        return calls

    calls = run(main())
    assert len(calls) == 3
    assert calls[2] - calls[1] >= calls[1] - calls[0] - 0.01  # backoff grows


def test_queue_metrics_count_adds_depth_and_the_wait_before_a_worker_took_each():
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"kind": "MetricsTest"}) or 0.0

    async def main():
        started = asyncio.Event()

        async def reconcile(key):
            await started.wait()

        q = WorkQueue(reconcile, workers=1, kind="MetricsTest")
        for key in ("a", "a", "b", "c"):  # "a" twice while it waits: one add
            q.add(key)
        assert sample("aiops_workqueue_depth") == 3 and sample("aiops_workqueue_adds_total") == 3
        await asyncio.sleep(0.05)  # no worker yet: they wait
        q.start()
        await asyncio.sleep(0.05)  # the worker took "a" and waits inside it
        assert sample("aiops_workqueue_depth") == 2
        assert sample("aiops_workqueue_queue_duration_seconds_count") == 1
        assert sample("aiops_workqueue_queue_duration_seconds_sum") >= 0.04, "a waited from its add to its pickup"
        started.set()
        await asyncio.sleep(0.05)
        await q.stop()

    run(main())
    assert sample("aiops_workqueue_depth") == 0 and sample("aiops_workqueue_queue_duration_seconds_count") == 3


def test_build_info_names_the_version():
    from prometheus_client import REGISTRY

    import aiops
    from aiops import metrics  # noqa: F401 - registers the metrics

    info = next(m for m in REGISTRY.collect() if m.name == "aiops_build")
    (sample,) = info.samples
    assert sample.value == 1 and sample.labels["version"] == aiops.__version__ and sample.labels["python_version"]
