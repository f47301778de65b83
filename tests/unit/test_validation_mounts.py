"""A missing hostPath repository is told from the kubelet's FailedMount Events of the validation
Job's own pods only: a retried Job keeps its name, and the Events of its predecessor's pods
outlive them, so once the directory exists the new pod must not be judged by the old Events
(which kept a rollout waiting for good on a real node)."""

from __future__ import annotations

import asyncio

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.rollout.context import Ctx
from aiops.rollout.jobwatch import JobWatch
from aiops.rollout.validating import Validation

JOB = "adder-validate-v1-abcdef"
FAILED = "MountVolume.SetUp failed for volume \"model-repository\" : hostPath type check failed: /m is not a directory"


class Kube:
    async def mount_failures(self, namespace):
        return [{"involvedObject": {"kind": "Pod", "name": f"{JOB}-old12"}, "reason": "FailedMount",
                 "message": FAILED}]


def pod(name: str) -> dict:
    return {"metadata": {"name": name}, "status": {"phase": "Pending"}}


def look(pods: list[dict]) -> str | None:
    spec = ModelDeploymentSpec.from_wire({"model": {"name": "adder", "version": 1},
                                          "repository": {"hostPath": {"path": "/m"}}})
    md = {"metadata": {"name": "adder", "namespace": "ns", "generation": 1}}
    ctx = Ctx(md, {"rollout": {"stepStartedAt": "2026-01-01T00:00:00Z"}})
    validation = Validation(Kube(), JobWatch(), room=None, worker_image="img")
    return asyncio.run(validation._repository_not_mountable(ctx, spec, JOB, pods))


def test_the_events_of_a_predecessors_pod_do_not_hold_the_new_one():
    assert look([pod(f"{JOB}-new34")]) is None
    assert look([]) is None


def test_the_jobs_own_pod_that_cannot_mount_says_why():
    why = look([pod(f"{JOB}-old12")])
    assert why and "/m" in why and "install -d" in why
