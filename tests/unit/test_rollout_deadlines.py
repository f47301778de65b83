"""Per-phase rollout deadlines: the phase is named right and the deadline comes from the spec."""

from __future__ import annotations

import datetime as dt

import yaml

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.rollout.deadlines import current_phase, seconds_left, stalled

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
EXAMPLE = next(d for d in yaml.safe_load_all(open("examples/modeldeployment.yaml")) if d["kind"] == "ModelDeployment")


def spec(**deadlines) -> ModelDeploymentSpec:
    wire = {**EXAMPLE["spec"], "healthCheck": {**EXAMPLE["spec"].get("healthCheck", {}),
                                               "phaseDeadlines": deadlines}}
    return ModelDeploymentSpec.model_validate(wire)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(scheduled: dt.datetime | None) -> dict:
    conds = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": iso(scheduled)}] if scheduled else \
        [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    return {"metadata": {"name": "p"}, "status": {"conditions": conds}}


def rollout(step: str) -> dict:
    return {"version": 3, "step": step, "stepStartedAt": iso(T0)}


def test_deploying_is_scheduling_until_every_pod_has_a_node_then_starting():
    assert current_phase(rollout("Deploying"), []) == ("Scheduling", T0)
    assert current_phase(rollout("Deploying"), [pod(T0), pod(None)])[0] == "Scheduling"
    later = T0 + dt.timedelta(seconds=40)
    assert current_phase(rollout("Deploying"), [pod(T0), pod(later)]) == ("Starting", later)


def test_each_phase_has_its_own_deadline_and_the_message_names_it():
    s = spec(scheduleSeconds=30, startSeconds=100, loadSeconds=20, healthCheckSeconds=50, capacitySeconds=60)
    assert stalled(s, rollout("Deploying"), [pod(None)], T0 + dt.timedelta(seconds=29)) is None
    message = stalled(s, rollout("Deploying"), [pod(None)], T0 + dt.timedelta(seconds=31))
    assert "phase Scheduling" in message and "deadline 30s" in message and "version 3" in message
    # Starting counts from the scheduling time, not from the step's start.
    scheduled = T0 + dt.timedelta(seconds=25)
    assert stalled(s, rollout("Deploying"), [pod(scheduled)], T0 + dt.timedelta(seconds=120)) is None
    assert "phase Starting" in stalled(s, rollout("Deploying"), [pod(scheduled)], T0 + dt.timedelta(seconds=126))
    assert "phase Load" in stalled(s, rollout("Loading"), [], T0 + dt.timedelta(seconds=21))
    assert "phase HealthCheck" in stalled(s, rollout("HealthChecking"), [], T0 + dt.timedelta(seconds=51))
    assert "phase Capacity" in stalled(s, rollout("WaitingForCapacity"), [], T0 + dt.timedelta(seconds=61))


def test_validation_keeps_its_own_timeout():
    assert stalled(spec(), rollout("Validating"), [], T0 + dt.timedelta(days=1)) is None


def test_seconds_left_is_the_nearer_of_the_phase_and_progress_deadlines():
    s = spec(scheduleSeconds=30, startSeconds=100)
    r = {**rollout("Deploying"), "startedAt": iso(T0)}  # progress deadline: the example's
    progress = s.health_check.progress_deadline_seconds
    assert seconds_left(s, r, [pod(None)], T0 + dt.timedelta(seconds=10)) == 20  # scheduling: 30 - 10
    scheduled = T0 + dt.timedelta(seconds=25)
    left = seconds_left(s, r, [pod(scheduled)], T0 + dt.timedelta(seconds=45))
    assert left == min(80, progress - 45)  # starting: 100 - (45 - 25)
    assert seconds_left(s, r, [pod(None)], T0 + dt.timedelta(seconds=99)) == 0  # already past: look now
    assert seconds_left(s, {**rollout("Validating"), "startedAt": iso(T0)}, [], T0) == progress
