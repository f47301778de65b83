"""The progress line between a worker and the operator: the worker's rate and estimate, the
operator's reading of a pod's log tail, and which pod of a retried Job it reads."""

from __future__ import annotations

import io
import json

from aiops.progress import PREFIX, Reporter, last_progress, running_pod


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line[len(PREFIX):]) for line in out.getvalue().splitlines()]


def test_at_most_one_line_a_second_unless_forced_with_an_estimate_from_the_pace():
    out, clock = io.StringIO(), Clock()
    report = Reporter(out, min_interval=1.0, clock=clock)
    report(percent=10.0, epoch=1)  # the pace is measured from here: a resumed run starts past 0
    clock.now += 0.5
    report(percent=12.0, epoch=1)  # too soon: dropped
    clock.now += 0.5
    report(percent=20.0, epoch=1, loss=None)
    clock.now += 0.1
    report(force=True, percent=100.0, epoch=9)
    assert lines(out) == [{"percent": 10.0, "epoch": 1}, {"percent": 20.0, "epoch": 1, "etaSeconds": 8.0},
                          {"percent": 100.0, "epoch": 9, "etaSeconds": 0}]


def test_the_newest_progress_line_is_found_among_other_lines():
    tail = "\n".join([
        '2026-12-03T05:00:00Z aiops-progress {"percent": 5}',  # a runtime's timestamp prefix
        '{"message": "stored 64/900 documents", "severity": "info"}',
        PREFIX + '{"done": 128, "total": 900, "percent": 14.2}',
        PREFIX + '{"done": 1',  # cut by the tail's byte limit
        "2026-12-03 05:00:03 INFO aiops.worker.embed: stored 192/900 documents",
    ])
    assert last_progress(tail) == {"done": 128, "total": 900, "percent": 14.2}
    assert last_progress("no progress here\n") is None and last_progress("") is None


def pod(name: str, phase: str, created: str, deleting: bool = False) -> dict:
    meta = {"name": name, "creationTimestamp": created, **({"deletionTimestamp": created} if deleting else {})}
    return {"metadata": meta, "status": {"phase": phase}}


def test_a_retried_job_is_read_from_its_running_pod():
    pods = [pod("a", "Failed", "2026-12-03T05:00:00Z"), pod("b", "Running", "2026-12-03T05:01:00Z"),
            pod("c", "Pending", "2026-12-03T05:02:00Z"), pod("d", "Running", "2026-12-03T05:03:00Z", deleting=True)]
    assert running_pod(pods)["metadata"]["name"] == "b"
    assert running_pod([pod("a", "Failed", "x")]) is None


def test_a_log_the_api_server_cannot_read_is_no_progress_and_logged_once(caplog):
    """Progress is extra to a reconcile: a node that serves no logs (500), a pod not started yet
    (400) or gone (404) leaves it out, and the reconcile goes on."""
    import asyncio

    from kubernetes.client.rest import ApiException

    from aiops.kube.client import KubeClient

    class Refusing(KubeClient):
        def __init__(self, status: int):
            super().__init__(None)
            self.status = status

        async def _request(self, method, url, body=None, **kwargs):
            raise ApiException(status=self.status, reason="no kubelet")

    for status in (400, 404, 500, 403):
        kube = Refusing(status)
        assert asyncio.run(kube.log_tail("ns", "p", "c")) is None
        assert asyncio.run(kube.log_tail("ns", "p", "c")) is None
    warned = [r for r in caplog.records if "cannot read the log" in r.getMessage()]
    assert [r.getMessage().split("(")[1][:3] for r in warned] == ["500", "403"]


def test_an_unchanged_line_keeps_the_status_as_it_is():
    """No status write every few seconds for a step that printed nothing new."""
    import asyncio

    from aiops.progress import read_progress

    class Logs:
        text = PREFIX + '{"done": 64, "total": 900, "percent": 7.1, "extra": 1}\n'

        async def log_tail(self, namespace, pod, container):
            return self.text

    pods = [pod("b", "Running", "2026-12-03T05:01:00Z")]
    fields = ("done", "total", "percent")
    first = asyncio.run(read_progress(Logs(), "ns", pods, "embed", fields, "t1"))
    assert first == {"done": 64, "total": 900, "percent": 7.1, "updatedAt": "t1"}
    assert asyncio.run(read_progress(Logs(), "ns", pods, "embed", fields, "t2", first)) is first
    logs = Logs()
    logs.text += PREFIX + '{"done": 128, "total": 900, "percent": 14.2}\n'
    assert asyncio.run(read_progress(logs, "ns", pods, "embed", fields, "t3", first))["updatedAt"] == "t3"
    assert asyncio.run(read_progress(Logs(), "ns", [], "embed", fields, "t4", first)) is first
