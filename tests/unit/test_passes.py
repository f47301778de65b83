"""The pass every kind's reconcile runs in: status and Events written back once, the time
observed, and a status field the CRD does not declare caught before the API server drops it."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from kubernetes.client.rest import ApiException

from aiops import metrics
from aiops.api.registry import MODEL_DEPLOYMENT, VECTOR_INDEX
from aiops.passes import REJECTED_RETRY_SECONDS, Pass, run_pass


class Kube:
    def __init__(self):
        self.writes = []

    async def write_back(self, obj, plural, before, status, events):
        self.writes.append((plural, before, status, list(events)))
        return {**obj, "status": status}


def body(status=None):
    return {"metadata": {"name": "v", "namespace": "n", "generation": 3,
                         "annotations": {"aiops.dev/retry": "2"}}, "status": status or {}}


def test_a_pass_writes_its_status_and_events_back_once_and_is_timed():
    kube = Kube()
    count = metrics.RECONCILE_SECONDS.labels(kind="VectorIndex")._sum.get()

    async def work(p: Pass) -> float:
        assert (p.name, p.namespace, p.generation, p.retry_token) == ("v", "n", 3, "2")
        assert p.condition("Ready", True, "Fine", "All well.")  # new: worth an Event
        assert not p.condition("Ready", True, "Fine", "Still well.")  # same status and reason
        p.status["phase"] = "Ready"
        p.event("Normal", "Ingested", "7 documents")
        return 12.0

    original = body({"phase": "Provisioning"})
    delay, written = asyncio.run(run_pass(VECTOR_INDEX, original, kube, work))
    assert delay == 12.0 and written["status"]["phase"] == "Ready"
    ((plural, before, status, events),) = kube.writes
    assert plural == "vectorindexes" and before == {"phase": "Provisioning"} and status["phase"] == "Ready"
    assert events == [("Normal", "Ingested", "7 documents")]
    assert original["status"] == {"phase": "Provisioning"}, "the cached body is never changed in place"
    assert metrics.RECONCILE_SECONDS.labels(kind="VectorIndex")._sum.get() > count


def test_a_status_field_the_crd_lacks_is_caught(monkeypatch, caplog):
    async def work(p: Pass) -> None:
        p.status["phase"] = "Ready"
        p.status["rollout"] = {"version": 2, "revision": "r", "step": "Validating", "startedAt": "t",
                               "stepStartedAt": "t", "healthFailures": 0}
        p.status["metrics"] = {"requests": 3, "tokensPerMinute": 9.0}
        p.status["servingVerison"] = 2  # a typo the API server would drop without a word

    with pytest.raises(AssertionError, match=r"status.metrics.tokensPerMinute, status.servingVerison"):
        asyncio.run(run_pass(MODEL_DEPLOYMENT, body(), Kube(), work))
    monkeypatch.setenv("AIOPS_STRICT_STATUS", "0")  # as in production: written, and said once
    caplog.set_level(logging.ERROR, "aiops.passes")
    kube = Kube()
    for _ in range(3):
        asyncio.run(run_pass(MODEL_DEPLOYMENT, body(), kube, work))
    assert len(kube.writes) == 3
    assert len([r for r in caplog.records if "servingVerison" in r.getMessage()]) == 1


def quota_refusal() -> ApiException:
    error = ApiException(status=403, reason="Forbidden")
    error.body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
                             "message": 'jobs.batch "v-validate-2" is forbidden: exceeded quota: no-jobs'})
    return error


def test_an_object_the_api_server_refuses_shows_in_status_at_once_and_clears_when_accepted():
    kube = Kube()

    async def refused(p: Pass) -> float:
        p.status["phase"] = "Validating"  # recorded before the refusal: never written
        p.event("Normal", "Validating", "version 2")
        raise quota_refusal()

    delay, written = asyncio.run(run_pass(VECTOR_INDEX, body({"phase": "Ready"}), kube, refused))
    assert delay == REJECTED_RETRY_SECONDS
    status, events = written["status"], kube.writes[0][3]
    assert status["phase"] == "Ready"
    (applied,) = status["conditions"]
    assert (applied["type"], applied["status"], applied["reason"]) == ("Applied", "False", "RejectedByAPIServer")
    assert applied["message"] == ("The API server refused a request this resource needs (403): "
                                  'jobs.batch "v-validate-2" is forbidden: exceeded quota: no-jobs')
    assert events == [("Warning", "RejectedByAPIServer", applied["message"])]

    asyncio.run(run_pass(VECTOR_INDEX, written, kube, refused))
    assert len(kube.writes) == 1, "the same refusal again: nothing to write, no second Event"

    async def fine(p: Pass) -> None:
        p.status["phase"] = "Ready"

    _, written = asyncio.run(run_pass(VECTOR_INDEX, written, kube, fine))
    (applied,) = written["status"]["conditions"]
    assert (applied["status"], applied["reason"]) == ("True", "Accepted")
    assert [e[1] for e in kube.writes[1][3]] == ["Accepted"]


@pytest.mark.parametrize("status", [404, 409, 429, 500, 503])
def test_passing_api_failures_are_raised_for_the_work_queue_to_retry(status):
    async def failing(p: Pass) -> None:
        raise ApiException(status=status, reason="passing")

    with pytest.raises(ApiException):
        asyncio.run(run_pass(VECTOR_INDEX, body(), Kube(), failing))


def test_a_pass_never_refused_has_no_applied_condition():
    async def fine(p: Pass) -> None:
        p.status["phase"] = "Ready"

    _, written = asyncio.run(run_pass(VECTOR_INDEX, body(), Kube(), fine))
    assert written["status"]["conditions"] == []
