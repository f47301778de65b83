"""The rollout's first step: a validation Job runs the version through the project's worker
before anything serves it. A version not in the repository yet waits with a back-off (a
TrainingJob may still register it); a repository the node cannot mount and a validation pod the
scheduler cannot place are reported with the kubelet's and the scheduler's own words."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.jobs import RUN_AS_USER as WORKER_USER
from aiops.builders.triton import RUN_AS_USER as TRITON_USER
from aiops.builders.validation_job import build_validation_objects, validation_attempt, validation_job_name
from aiops.capacity import CAPACITY_REASONS
from aiops.kube.objects import NameTaken, owned_by
from aiops.networkpolicies import NetworkPolicies
from aiops.rollout.context import ROLLOUT_POLL, Ctx, RolloutFailed, age, poll
from aiops.rollout.deploy import deployment_ref, desired_deployment, guard_triton, owned
from aiops.rollout.jobwatch import JobWatch
from aiops.rollout.modelcontrol import ModelControlKeys
from aiops.rollout.pods import pod_problem, unschedulable_reason
from aiops.rollout.room import Room, fits_no_node, starts_early
from aiops.rollout.verdict import job_outcome, own_pods
from aiops.rollout.world import RolloutClient

# Validation reasons that mean "not there yet" rather than "bad": a training run may still register it.
NOT_YET_THERE = frozenset({"ModelNotFound", "VersionNotFound"})
MOUNT_CHECK_AFTER = 15.0  # seconds a validation pod may take to start before its mounts are looked into
MOUNT_CHECK_EVERY = 10.0


class Validation:
    def __init__(self, kube: RolloutClient, jobs: JobWatch, room: Room, worker_image: str,
                 validation_job_ttl: int | None = None, keys: ModelControlKeys | None = None,
                 log_format: str = "text", policies: NetworkPolicies | None = None):
        self.kube, self.jobs, self.room = kube, jobs, room
        self.policies = policies  # the early server's NetworkPolicy, made with it
        self.log_format = log_format  # of the validation Jobs' lines (aiops.logs)
        self.keys = keys
        self.worker_image = worker_image
        self.validation_job_ttl = validation_job_ttl  # seconds a finished validation Job stays
        self._mount_checks: dict[tuple[str, str], float] = {}  # validation Job -> when its mounts were looked into

    async def step(self, ctx: Ctx, spec: ModelDeploymentSpec) -> float:
        rollout = ctx.status["rollout"]
        version = rollout["version"]
        attempt = validation_attempt(rollout["revision"], ctx.retry_token)
        name = validation_job_name(ctx.name, version, attempt)
        outcome, job, pods = None, None, []
        if rollout.get("validationJob"):  # looked up once this rollout made it; a new one goes straight to creating
            watched = self.jobs.get(ctx.namespace, name)
            outcome = job_outcome(*watched) if watched else None
            job, pods = watched if watched else (None, [])
            if outcome is None or (outcome.finished and outcome.exit_code is None):
                # Not in the watch yet, or finished there before its pod's last state: ask the API server.
                job, pods = await self.kube.read_job(ctx.namespace, name)
                outcome = job_outcome(job, pods) if job else None
        if outcome is None:
            wait = -age(rollout.get("nextValidationAt"))
            if wait > 0:  # waiting for the model to appear: events must not hurry the back-off
                return wait
            room = await self.room.for_spec(spec)  # one look serves both questions below
            wait = fits_no_node(ctx, room)
            if wait is not None:
                return wait
            # All at once (each tolerates "already exists", so a lost status write is harmless):
            # a Job's pod that mounts a spec ConfigMap waits in the kubelet until it exists.
            # The Deployment goes first: its image pull and server start are the longest wait.
            creates = build_validation_objects(ctx.name, spec, version, attempt, self.worker_image,
                                               self.validation_job_ttl, self.log_format)
            early = starts_early(ctx, spec, room)
            if early:
                creates.insert(0, desired_deployment(ctx, spec, surge=False)[0])
                rollout["serverStartedEarly"] = True
            try:  # the early pods read their model-control key from its Secret
                await asyncio.gather(*(self.kube.create_if_missing(owned_by(obj, ctx.md)) for obj in creates),
                                     *([self.keys.ensure(ctx.md)] if early and self.keys is not None else []),
                                     *([guard_triton(self.policies, ctx)] if early else []))
            except NameTaken as taken:  # a version that cannot validate: rejected like any other
                raise RolloutFailed(taken.reason, str(taken)) from None
            rollout["validationJob"] = name
            return ROLLOUT_POLL
        if not outcome.finished:
            self._unschedulable(ctx, name, pods)
            missing = await self._repository_not_mountable(ctx, spec, name, own_pods(job, pods) if job else pods)
            if missing:
                return await self._wait_for_model(ctx, name, "RepositoryNotFound", "Warning", missing)
            return self._pending(spec, rollout, name)
        verdict = outcome.verdict
        if outcome.succeeded and verdict.get("valid"):
            if not verdict.get("config"):
                raise RolloutFailed("ValidationError", f"Job {name} passed but returned no model configuration "
                                    "(config.pbtxt too large for a termination message)")
            rollout["modelConfigJson"] = json.dumps(verdict["config"], sort_keys=True)
            ctx.step("Deploying", "Deploying")
            return 0.0
        if verdict.get("reason") in NOT_YET_THERE:
            # A TrainingJob applied with this ModelDeployment (GitOps applies both at once) has not
            # registered the version yet: wait for it within the progress deadline, don't reject it.
            return await self._wait_for_model(
                ctx, name, "WaitingForModel", "Normal",
                f"Version {version} is not in the repository yet ({verdict.get('message', '')})")
        if verdict:
            raise RolloutFailed(verdict.get("reason") or "ValidationFailed",
                                f"version {version} failed validation: {verdict.get('message', '')}")
        raise RolloutFailed("ValidationError", f"validation Job {name} failed without a verdict "
                            f"(exit code {outcome.exit_code}): {outcome.detail}")

    async def _wait_for_model(self, ctx: Ctx, job_name: str, reason: str, event_type: str, why: str) -> float:
        """Not the version's fault: it is not there yet. Ready stays as it is (False on a first
        version), the validation Job goes, and a fresh one looks again after a back-off, until the
        progress deadline; the GPUs of a server started early are given back meanwhile."""
        rollout = ctx.status["rollout"]
        waits = rollout["modelWaits"] = rollout.get("modelWaits", 0) + 1
        ctx.condition("Ready", bool(ctx.status.get("servingVersion")), reason,
                      f"{why}; checking again (attempt {waits}) until the progress deadline.")
        if waits == 1 or reason != rollout.get("waitReason"):
            ctx.event(event_type, reason, why)
        rollout["waitReason"] = reason
        await self.kube.delete("Job", ctx.namespace, job_name)  # the next look runs a fresh validation Job
        self.jobs.forget(ctx.namespace, job_name)
        rollout.pop("validationJob", None)
        if rollout.pop("serverStartedEarly", False):
            # The wait may be long (a TrainingJob may need these very GPUs): give them back.
            deployment = await self.kube.read("Deployment", ctx.namespace, deployment_ref(ctx)["metadata"]["name"])
            if deployment is not None and owned(ctx, deployment):
                await self.kube.scale("Deployment", deployment, 0)
        backoff = min(5.0 * 2 ** (waits - 1), 60.0)
        rollout["nextValidationAt"] = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=backoff)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        return backoff

    async def _repository_not_mountable(self, ctx: Ctx, spec: ModelDeploymentSpec, job_name: str,
                                        pods: list[dict]) -> str | None:
        """Why the validation pod cannot start, when the reason is that its hostPath repository does
        not exist on the node (the kubelet's FailedMount Event on the pod says so; the pod itself
        only shows ContainerCreating). Looked into once the pod had time to start, then every few
        seconds: one LIST of the namespace's FailedMount Events. Only Events of `pods`, this Job's
        own (by pod name): a retried Job has the same name, and its predecessor's pods' Events
        outlive them."""
        repo = spec.repository.host_path
        if repo is None or age(ctx.status["rollout"].get("stepStartedAt")) < MOUNT_CHECK_AFTER:
            return None
        key = (ctx.namespace, job_name)
        now = time.monotonic()
        if now - self._mount_checks.get(key, -MOUNT_CHECK_EVERY) < MOUNT_CHECK_EVERY:
            return None
        self._mount_checks[key] = now
        if len(self._mount_checks) > 1000:
            self._mount_checks.clear()
        current = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
        if not current:
            return None
        for event in await self.kube.mount_failures(ctx.namespace):
            pod = event.get("involvedObject", {}).get("name", "")
            message = event.get("message", "")
            if pod in current and "model-repository" in message and "hostPath type check" in message:
                return (f"The model repository (hostPath {repo.path}) does not exist on the node, so the validation "
                        f"pod cannot mount it (kubelet: {message}). Create it there, readable by Triton's uid "
                        f"{TRITON_USER} and writable by uid {WORKER_USER} if a TrainingJob registers into it "
                        f"(`install -d -o {WORKER_USER} -g {WORKER_USER} -m 0755 {repo.path}`), or correct "
                        "spec.repository")
        return None

    @staticmethod
    def _unschedulable(ctx: Ctx, job_name: str, pods: list[dict]) -> None:
        """A validation pod the scheduler cannot place (the node's memory taken by others, say)
        shows in status with the scheduler's own message, and once as an Event; the pass after it
        is placed clears the wait."""
        rollout = ctx.status["rollout"]
        waiting = next((p for p in map(pod_problem, pods) if p and p.reason == "Unschedulable"), None)
        if waiting is None:
            if rollout.get("waitReason") in (*CAPACITY_REASONS, "Unschedulable"):
                rollout.pop("waitReason")
                ctx.condition("Ready", bool(ctx.status.get("servingVersion")), "Validating",
                              f"Version {rollout['version']} is being validated (Job {job_name}).")
            return
        reason = unschedulable_reason(waiting.message)
        message = f"Validation Job {job_name} waits for the scheduler: {waiting.message}"
        if rollout.get("waitReason") != reason:
            ctx.event("Warning", reason, message)
            rollout["waitReason"] = reason
        ctx.condition("Ready", bool(ctx.status.get("servingVersion")), reason, message)

    @staticmethod
    def _pending(spec: ModelDeploymentSpec, rollout: dict, job_name: str) -> float:
        if age(rollout["stepStartedAt"]) > spec.validation.timeout_seconds:
            raise RolloutFailed("ValidationTimeout", f"validating version {rollout['version']} took longer than "
                                f"{spec.validation.timeout_seconds}s (Job {job_name})")
        return poll(rollout)
