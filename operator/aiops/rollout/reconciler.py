"""Reconciles one ModelDeployment: validate, deploy, health-check and roll back as a level-triggered
control loop.

Steps of a rollout (each with a deadline, each timed into status and a histogram):
  Validating -> [WaitingForCapacity] -> Deploying -> Loading -> HealthChecking -> promote
and on any failure: reject the spec revision, roll back to the last good version, say why.

Versions are swapped inside the running Triton (explicit model control): the new version is
loaded beside the serving one, checked through its versioned endpoint, then the old one is
unloaded. A rollback is one load call, which is why it takes well under a second. Only changes
to the pods themselves (image, args, resources...) go through a Deployment rollout, surge or not
depending on free GPUs, and are undone by restoring the previous ReplicaSet's template.

The operator never writes `spec`: what is asked (spec) and what serves (status) are kept apart,
and a rejected revision is not tried again until the spec or the `aiops.dev/retry` annotation
changes, so GitOps re-applies and self-heals don't loop on a bad version.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field

from aiops import metrics
from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.api.registry import MODEL_DEPLOYMENT
from aiops.builders.jobs import RUN_AS_USER as WORKER_USER
from aiops.builders.triton import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    build_triton_deployment,
    build_triton_service,
    child_name,
    triton_model_config,
)
from aiops.builders.triton import RUN_AS_USER as TRITON_USER
from aiops.builders.validation_job import (
    build_validation_objects,
    validation_attempt,
    validation_job_name,
)
from aiops.capacity import CAPACITY_REASONS, Capacity, capacity, pod_requests
from aiops.conditions import get_condition, set_condition
from aiops.kube import owned_by
from aiops.monitoring.verdict import MonitoringVerdict, VerdictRegistry
from aiops.pergeneration import PerGeneration
from aiops.rollout.deadlines import seconds_left, stalled
from aiops.rollout.history import add_history, reject, rejection
from aiops.rollout.jobwatch import JobWatch
from aiops.rollout.kubeio import REVISION_ANNOTATION, TEMPLATE_ANNOTATION, KubeIO, World
from aiops.rollout.pods import pod_problem, pod_ready, pod_running_ip, pod_started, unschedulable_reason
from aiops.rollout.revision import spec_revision, template_revision
from aiops.rollout.verdict import job_outcome
from aiops.triton.client import TritonError, TritonServer
from aiops.triton.samples import meets_accuracy
from aiops.validity import judge_spec

log = logging.getLogger(__name__)
RETRY_ANNOTATION = "aiops.dev/retry"
# Validation reasons that mean "not there yet" rather than "bad": a training run may still register it.
NOT_YET_THERE = frozenset({"ModelNotFound", "VersionNotFound"})
ROLLOUT_POLL = 1.0  # seconds between looks while a rollout step waits on something
CAPACITY_POLL = 15.0  # seconds between capacity checks while waiting for room (node and pod events come sooner)
MOUNT_CHECK_AFTER = 15.0  # seconds a validation pod may take to start before its mounts are looked into
MOUNT_CHECK_EVERY = 10.0
PODS_SAFETY_LOOK = 30.0  # the longest a rollout waiting on pod events goes without a look


def _poll(rollout: dict) -> float:
    """Look again soon while a step is young, less often the longer it waits (pod and Job events
    wake the reconcile anyway): a hundred rollouts waiting on slow pulls must not flood the API."""
    return min(5.0, ROLLOUT_POLL / 2 + _age(rollout.get("stepStartedAt")) / 10)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _age(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


class RolloutFailed(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Ctx:
    """One reconcile of one object: its body, the status being built, and Events to post."""

    md: dict
    status: dict
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.md["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.md["metadata"]["namespace"]

    @property
    def generation(self) -> int | None:
        return self.md["metadata"].get("generation")

    def condition(self, type_: str, ok: bool | str, reason: str, message: str) -> None:
        self.status["conditions"] = set_condition(self.status.get("conditions"), type_, ok, reason, message,
                                                  self.generation)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class ModelDeploymentReconciler:
    def __init__(self, kube: KubeIO, worker_image: str, triton_timeout: float = 5.0,
                 verdicts: VerdictRegistry | None = None, jobs: JobWatch | None = None,
                 validation_job_ttl: int | None = None):
        self.kube = kube
        self.worker_image = worker_image
        self.validation_job_ttl = validation_job_ttl  # seconds a finished validation Job stays
        self.triton_timeout = triton_timeout
        self.verdicts = verdicts  # monitoring: the monitor's latest verdict per object
        self.jobs = jobs or JobWatch()  # validation Jobs as the watch saw them, to skip reads
        self._revisions: PerGeneration[str] = PerGeneration()
        self._mount_checks: dict[tuple[str, str], float] = {}  # validation Job -> when its mounts were looked into

    # ---- entry point -----------------------------------------------------------------------------
    async def reconcile(self, md: dict, nodes: list[dict]) -> tuple[float | None, dict | None]:
        """Returns (seconds until the next look, the object as written back or None)."""
        ctx = Ctx(md, copy.deepcopy(md.get("status") or {}))
        before = copy.deepcopy(ctx.status)
        started = time.perf_counter()
        try:
            delay = await self._reconcile(ctx, nodes)
        finally:
            metrics.RECONCILE_SECONDS.labels(kind="ModelDeployment").observe(time.perf_counter() - started)
        written = await self.kube.write_back(md, MODEL_DEPLOYMENT.plural, before, ctx.status, ctx.events)
        return delay, written

    async def _reconcile(self, ctx: Ctx, nodes: list[dict]) -> float | None:
        spec = self._validate(ctx, nodes)
        if spec is None:
            return None
        ctx.status["observedGeneration"] = ctx.generation
        dep_name = child_name(ctx.name, "triton")
        revision = self._revisions.get(ctx.md, None, lambda: spec_revision(spec))
        retry_token = (ctx.md["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION, "")
        rollout = ctx.status.get("rollout")
        if not ctx.status.get("servingVersion") and (rollout or {}).get("step", "Validating") == "Validating" \
                and (rollout or {}).get("revision", revision) == revision:
            world = World(None, [], observed=False)  # a first version being validated: nothing to see yet
        else:
            world = await self.kube.observe(ctx.namespace, ctx.name, dep_name)
            self._report_pods(ctx, world, dep_name)

        if rollout and rollout["revision"] != revision:
            await self._abandon(ctx, spec, world, "the spec changed while version "
                                f"{rollout['version']} was rolling out")
            rollout = None
        if rollout is None:
            if ctx.status.get("servingRevision") == revision:
                return await self._steady(ctx, spec, world)
            rejected = rejection(ctx.status, revision, retry_token)
            if rejected:
                return await self._hold_rejected(ctx, spec, world, rejected)
            self._start_rollout(ctx, spec, revision)
        try:
            return await self._advance(ctx, spec, world, nodes)
        except RolloutFailed as failure:
            await self._fail(ctx, spec, world, failure, retry_token)
            return 0.5

    # ---- validity and reporting ------------------------------------------------------------------
    def _validate(self, ctx: Ctx, nodes: list[dict]) -> ModelDeploymentSpec | None:
        spec, events = judge_spec(MODEL_DEPLOYMENT.kind, ctx.md, ctx.status, nodes)
        ctx.events += events
        if spec is None:
            ctx.condition("Ready", bool(ctx.status.get("servingVersion")) and "Unknown", "InvalidSpec",
                          "The spec is invalid (see the Valid condition); what served before keeps serving.")
        return spec

    def _report_pods(self, ctx: Ctx, world: World, dep_name: str) -> None:
        live = [p for p in world.pods if not p["metadata"].get("deletionTimestamp")]
        ctx.status["replicas"] = len(live)
        ctx.status["readyReplicas"] = sum(pod_ready(p) for p in live)
        host = f"{dep_name}.{ctx.namespace}.svc"
        ctx.status["endpoints"] = {"http": f"{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}",
                                   "metrics": f"http://{host}:{METRICS_PORT}/metrics"}

    # ---- rollout steps ---------------------------------------------------------------------------
    def _start_rollout(self, ctx: Ctx, spec: ModelDeploymentSpec, revision: str) -> None:
        now = now_iso()
        ctx.status["rollout"] = {"version": spec.model.version, "revision": revision, "step": "Validating",
                                 "startedAt": now, "stepStartedAt": now, "healthFailures": 0}
        ctx.status["phaseDurationsSeconds"] = {}
        ctx.status["phase"] = "Validating"
        ctx.condition("Deployed", False, "RolloutStarted", f"Rolling out version {spec.model.version}.")
        serving = ctx.status.get("servingVersion")
        ctx.event("Normal", "RolloutStarted", f"Rolling out version {spec.model.version}"
                  + (f" (serving: {serving})" if serving else ""))

    def _step(self, ctx: Ctx, step: str, phase: str) -> None:
        rollout = ctx.status["rollout"]
        took = _age(rollout["stepStartedAt"])
        ctx.status.setdefault("phaseDurationsSeconds", {})[rollout["step"]] = round(took, 3)
        metrics.ROLLOUT_PHASE_SECONDS.labels(phase=rollout["step"]).observe(took)
        rollout["step"], rollout["stepStartedAt"] = step, now_iso()
        ctx.status["phase"] = phase

    async def _advance(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, nodes: list[dict]) -> float | None:
        rollout = ctx.status["rollout"]
        deadline = spec.health_check.progress_deadline_seconds
        if _age(rollout["startedAt"]) > deadline:
            raise RolloutFailed("ProgressDeadlineExceeded", f"version {rollout['version']} was not healthy within "
                                f"{deadline}s; it stalled in step {rollout['step']}")
        live = [p for p in world.pods if not p["metadata"].get("deletionTimestamp")]
        stuck = stalled(spec, rollout, live, dt.datetime.now(dt.UTC))
        if stuck:
            raise RolloutFailed("PhaseDeadlineExceeded", stuck)
        step = rollout["step"]
        if step == "Validating":
            delay = await self._validating(ctx, spec)
            if rollout["step"] == "Validating":
                return delay
            # Valid: deploy in this same pass rather than after a status write and a requeue.
            if not world.observed:
                world = await self.kube.observe(ctx.namespace, ctx.name, child_name(ctx.name, "triton"))
                self._report_pods(ctx, world, child_name(ctx.name, "triton"))
            step = rollout["step"]
        if step in ("WaitingForCapacity", "Deploying"):
            return await self._deploying(ctx, spec, world)
        if step == "Loading":
            return await self._loading(ctx, spec, world)
        return await self._health_checking(ctx, spec, world)

    async def _validating(self, ctx: Ctx, spec: ModelDeploymentSpec) -> float:
        rollout = ctx.status["rollout"]
        version = rollout["version"]
        attempt = validation_attempt(rollout["revision"], (ctx.md["metadata"].get("annotations") or {}).get(
            RETRY_ANNOTATION, ""))
        name = validation_job_name(ctx.name, version, attempt)
        outcome, pods = None, []
        if rollout.get("validationJob"):  # looked up once this rollout made it; a new one goes straight to creating
            watched = self.jobs.get(ctx.namespace, name)
            outcome = job_outcome(*watched) if watched else None
            pods = watched[1] if watched else []
            if outcome is None or (outcome.finished and outcome.exit_code is None):
                # Not in the watch yet, or finished there before its pod's last state: ask the API server.
                job, pods = await self.kube.read_job(ctx.namespace, name)
                outcome = job_outcome(job, pods) if job else None
        if outcome is None:
            wait = -_age(rollout.get("nextValidationAt"))
            if wait > 0:  # waiting for the model to appear: events must not hurry the back-off
                return wait
            room = await self._room(spec)  # one look serves both questions below
            wait = self._fits_no_node(ctx, room)
            if wait is not None:
                return wait
            # All at once (each tolerates "already exists", so a lost status write is harmless):
            # a Job's pod that mounts a spec ConfigMap waits in the kubelet until it exists.
            # The Deployment goes first: its image pull and server start are the longest wait.
            creates = build_validation_objects(ctx.name, spec, version, attempt, self.worker_image,
                                               self.validation_job_ttl)
            if self._starts_early(ctx, spec, room):
                creates.insert(0, self._desired_deployment(ctx, spec, surge=False)[0])
                rollout["serverStartedEarly"] = True
            await asyncio.gather(*(self.kube.create_if_missing(owned_by(obj, ctx.md)) for obj in creates))
            rollout["validationJob"] = name
            return ROLLOUT_POLL
        if not outcome.finished:
            self._validation_unschedulable(ctx, name, pods)
            missing = await self._repository_not_mountable(ctx, spec, name)
            if missing:
                return await self._wait_for_model(ctx, name, "RepositoryNotFound", "Warning", missing)
            return self._validation_pending(spec, rollout, name)
        verdict = outcome.verdict
        if outcome.succeeded and verdict.get("valid"):
            if not verdict.get("config"):
                raise RolloutFailed("ValidationError", f"Job {name} passed but returned no model configuration "
                                    "(config.pbtxt too large for a termination message)")
            rollout["modelConfigJson"] = json.dumps(verdict["config"], sort_keys=True)
            self._step(ctx, "Deploying", "Deploying")
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

    @staticmethod
    def _starts_early(ctx: Ctx, spec: ModelDeploymentSpec, room: Capacity) -> bool:
        """Whether this rollout creates the Triton Deployment beside its validation Job: a first
        version (nothing serves, so its Deployment is new), not after a wait for the model, and
        only when its GPUs are free now (else the pods would sit Pending)."""
        rollout = ctx.status["rollout"]
        if not spec.validation.start_server_early or ctx.status.get("servingVersion") or rollout.get("modelWaits"):
            return False
        return room.fits(spec.replicas)

    @staticmethod
    def _deployment_ref(ctx: Ctx) -> dict:
        return {"metadata": {"name": child_name(ctx.name, "triton"), "namespace": ctx.namespace}}

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
        await self.kube.delete_job(ctx.namespace, job_name)  # the next look runs a fresh validation Job
        self.jobs.forget(ctx.namespace, job_name)
        rollout.pop("validationJob", None)
        if rollout.pop("serverStartedEarly", False):
            # The wait may be long (a TrainingJob may need these very GPUs): give them back.
            await self.kube.scale_deployment(self._deployment_ref(ctx), 0)
        backoff = min(5.0 * 2 ** (waits - 1), 60.0)
        rollout["nextValidationAt"] = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=backoff)).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        return backoff

    async def _repository_not_mountable(self, ctx: Ctx, spec: ModelDeploymentSpec, job_name: str) -> str | None:
        """Why the validation pod cannot start, when the reason is that its hostPath repository does
        not exist on the node (the kubelet's FailedMount Event on the pod says so; the pod itself
        only shows ContainerCreating). Looked into once the pod had time to start, then every few
        seconds: one LIST of the namespace's FailedMount Events."""
        repo = spec.repository.host_path
        if repo is None or _age(ctx.status["rollout"].get("stepStartedAt")) < MOUNT_CHECK_AFTER:
            return None
        key = (ctx.namespace, job_name)
        now = time.monotonic()
        if now - self._mount_checks.get(key, -MOUNT_CHECK_EVERY) < MOUNT_CHECK_EVERY:
            return None
        self._mount_checks[key] = now
        if len(self._mount_checks) > 1000:
            self._mount_checks.clear()
        for event in await self.kube.mount_failures(ctx.namespace):
            pod = event.get("involvedObject", {}).get("name", "")
            message = event.get("message", "")
            if pod.startswith(f"{job_name}-") and "model-repository" in message and "hostPath type check" in message:
                return (f"The model repository (hostPath {repo.path}) does not exist on the node, so the validation "
                        f"pod cannot mount it (kubelet: {message}). Create it there, readable by Triton's uid "
                        f"{TRITON_USER} and writable by uid {WORKER_USER} if a TrainingJob registers into it "
                        f"(`install -d -o {WORKER_USER} -g {WORKER_USER} -m 0755 {repo.path}`), or correct "
                        "spec.repository")
        return None

    @staticmethod
    def _validation_unschedulable(ctx: Ctx, job_name: str, pods: list[dict]) -> None:
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
    def _validation_pending(spec: ModelDeploymentSpec, rollout: dict, job_name: str) -> float:
        if _age(rollout["stepStartedAt"]) > spec.validation.timeout_seconds:
            raise RolloutFailed("ValidationTimeout", f"validating version {rollout['version']} took longer than "
                                f"{spec.validation.timeout_seconds}s (Job {job_name})")
        return _poll(rollout)

    def _desired_deployment(self, ctx: Ctx, spec: ModelDeploymentSpec, surge: bool) -> tuple[dict, str]:
        dep = owned_by(build_triton_deployment(ctx.name, spec, surge), ctx.md)
        template = dep["spec"]["template"]
        revision = template_revision(template)
        template["metadata"].setdefault("annotations", {})[TEMPLATE_ANNOTATION] = revision
        dep["metadata"]["annotations"] = {TEMPLATE_ANNOTATION: revision}
        return dep, revision

    async def _deploying(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float | None:
        rollout = ctx.status["rollout"]
        desired, revision = self._desired_deployment(ctx, spec, surge=False)
        current = world.deployment
        current_rev = ((current or {}).get("metadata", {}).get("annotations") or {}).get(TEMPLATE_ANNOTATION)
        if current is None or current_rev != revision or current["spec"].get("replicas") != spec.replicas:
            fits, surge, reason, message = await self._capacity(spec, world, current, current_rev != revision)
            if not fits:
                if rollout.get("waitReason") != reason:
                    ctx.event("Warning", reason, message)
                    rollout["waitReason"] = reason
                if rollout["step"] != "WaitingForCapacity":
                    self._step(ctx, "WaitingForCapacity", "Pending")
                ctx.condition("ResourcesAvailable", False, reason, message)
                ctx.condition("Ready", bool(ctx.status.get("servingVersion")), reason,
                              f"Version {rollout['version']} waits for room on a node: {message}")
                return CAPACITY_POLL  # node and pod events wake us sooner
            desired, revision = self._desired_deployment(ctx, spec, surge)
            rollout["templateChanged"] = current is not None and current_rev != revision
            await self.kube.apply_deployment(desired, current)
            rollout.pop("waitReason", None)
            ctx.condition("ResourcesAvailable", True, "ResourcesFit", message)
            if rollout["step"] != "Deploying":
                self._step(ctx, "Deploying", "Deploying")
            return ROLLOUT_POLL
        ctx.condition("ResourcesAvailable", True, "ResourcesFit", "The Triton pods have their GPUs and memory.")
        pods = self._current_pods(world, revision)
        for pod in pods:
            problem = pod_problem(pod)
            if problem and problem.fatal:
                raise RolloutFailed(problem.reason, problem.message)
            if problem:
                ctx.condition("Deployed", False, problem.reason, f"Waiting: {problem.message}")
        # Started: Triton's startupProbe (/v2/health/live) passed, so the kubelet polls a slow
        # start, not us.
        running = [p for p in pods if pod_running_ip(p) and pod_started(p)]
        if len(running) < spec.replicas or len(pods) > spec.replicas:
            # Pods still starting, or old ones terminating: each change is a pod event that wakes
            # this object. Look on our own only when a deadline may pass, or after a while anyway.
            live = [p for p in world.pods if not p["metadata"].get("deletionTimestamp")]
            return min(PODS_SAFETY_LOOK, seconds_left(spec, rollout, live, dt.datetime.now(dt.UTC)) + 0.5)
        for pod in running:
            async with TritonServer(f"{pod_running_ip(pod)}:{HTTP_PORT}", self.triton_timeout) as server:
                health = await server.health(spec.model.name)
            if not health.live:
                return _poll(rollout)
        if not ctx.status.get("servingVersion"):
            # Made only now that there is a server to route to: while pods start, a Service has
            # the endpoint controllers rewrite its Endpoints and EndpointSlice on every pod change
            # (7 writes per object in bench_reconcile), and a failed first version never gets one.
            await self.kube.create_if_missing(owned_by(build_triton_service(ctx.name), ctx.md))
        self._step(ctx, "Loading", "Deploying")
        return 0.0

    async def _room(self, spec: ModelDeploymentSpec, own_pods: list[dict] = ()) -> Capacity:
        """Room on the usable nodes for Triton pods of this spec (their GPUs, memory and CPU);
        `own_pods` count as free (the pods a rollout replaces in place)."""
        template = build_triton_deployment("capacity-check", spec, False)["spec"]["template"]
        usages, nodes = await self.kube.pod_usages_and_nodes()
        tolerations = [{"key": spec.resources.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}]
        return capacity(nodes, usages, pod_requests(template), spec.node_selector, tolerations,
                        [p["metadata"]["uid"] for p in own_pods])

    async def _capacity(self, spec: ModelDeploymentSpec, world: World, current: dict | None,
                        template_changes: bool) -> tuple[bool, bool, str, str]:
        """(fits, surge possible, reason, message). A new Deployment needs all its pods' room; a
        template change needs one extra pod's to surge, else replaces pods one at a time in place."""
        cap = await self._room(spec)
        if current is None:
            return cap.fits(spec.replicas), False, cap.reason(spec.replicas), cap.describe(spec.replicas)
        extra = max(0, spec.replicas - len([p for p in world.pods if not p["metadata"].get("deletionTimestamp")]))
        if template_changes and cap.fits(extra + 1):
            return True, True, "", cap.describe(extra + 1) + "; surging one new pod beside the old ones"
        # Replacing in place frees each old pod's resources before its successor is scheduled.
        freed = await self._room(spec, world.pods)
        return freed.fits(spec.replicas), False, freed.reason(spec.replicas), freed.describe(spec.replicas)

    @staticmethod
    def _fits_no_node(ctx: Ctx, cap: Capacity) -> float | None:
        """Before anything of a rollout is created: a Triton pod that no usable node could hold
        even empty (more memory or GPUs than any node's allocatable) waits here, with the numbers,
        until a node that can hold it joins or changes (node events wake us). Nothing is created,
        not even the validation Job."""
        rollout = ctx.status["rollout"]
        if cap.ever_fits():
            if rollout.get("waitReason") in CAPACITY_REASONS:
                rollout.pop("waitReason")
            return None
        reason, message = cap.reason(1), "no usable node can hold one Triton pod: " + cap.describe(1)
        if rollout.get("waitReason") != reason:
            ctx.event("Warning", reason, message)
            rollout["waitReason"] = reason
        ctx.condition("ResourcesAvailable", False, reason, message)
        ctx.condition("Ready", bool(ctx.status.get("servingVersion")), reason,
                      f"Version {rollout['version']} waits for a node it fits on: {message}")
        return CAPACITY_POLL

    @staticmethod
    def _current_pods(world: World, revision: str) -> list[dict]:
        return [p for p in world.pods if not p["metadata"].get("deletionTimestamp")
                and (p["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION) == revision]

    def _serving_pods(self, world: World) -> list[dict]:
        """Running Triton pods of the Deployment's current template."""
        rev = ((world.deployment or {}).get("metadata", {}).get("annotations") or {}).get(TEMPLATE_ANNOTATION)
        return [p for p in self._current_pods(world, rev) if pod_running_ip(p)] if rev else []

    async def _load(self, pod: dict, spec: ModelDeploymentSpec, config: dict) -> None:
        async with TritonServer(f"{pod_running_ip(pod)}:{HTTP_PORT}", self.triton_timeout) as server:
            await server.load(spec.model.name, config, timeout=float(spec.health_check.progress_deadline_seconds))

    async def _loading(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float:
        rollout = ctx.status["rollout"]
        target, serving = rollout["version"], ctx.status.get("servingVersion")
        both = serving and serving != target and not rollout.get("templateChanged")
        config = triton_model_config(json.loads(rollout["modelConfigJson"]), spec,
                                     [serving, target] if both else [target])
        for pod in self._serving_pods(world):
            try:
                await self._load(pod, spec, config)
            except TritonError as e:
                raise RolloutFailed("ModelLoadFailed", f"Triton could not load version {target}: {e}") from None
        self._step(ctx, "HealthChecking", "HealthChecking")
        return 0.0

    async def _check_pod(self, pod: dict, spec: ModelDeploymentSpec, version: int) -> str | None:
        """None when the pod serves `version` correctly; else what is wrong."""
        async with TritonServer(f"{pod_running_ip(pod)}:{HTTP_PORT}", self.triton_timeout) as server:
            health = await server.health(spec.model.name, version)
            if not health.ok:
                return (f"pod {pod['metadata']['name']}: live={health.live} ready={health.ready} "
                        f"model version {version} ready={health.model_ready} {health.detail}").strip()
            results = [await server.infer_sample(spec.model.name, version, s) for s in spec.validation.samples]
        if not meets_accuracy(results, spec.validation.min_accuracy):
            failed = [f"{r.sample}: {r.detail}" for r in results if not r.passed]
            return (f"pod {pod['metadata']['name']}: {len(failed)}/{len(results)} samples failed "
                    f"({'; '.join(failed[:3])})")
        return None

    async def _health_checking(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float:
        rollout = ctx.status["rollout"]
        target = rollout["version"]
        pods = self._serving_pods(world)
        for pod in pods:
            problem = pod_problem(pod)
            if problem and problem.fatal:
                raise RolloutFailed(problem.reason, problem.message)
        problems = [p for p in [await self._check_pod(pod, spec, target) for pod in pods] if p]
        if len(pods) < spec.replicas:
            problems.append(f"{len(pods)} of {spec.replicas} Triton pods are running")
        if problems:
            rollout["healthFailures"] = rollout.get("healthFailures", 0) + 1
            if rollout["healthFailures"] >= spec.health_check.failure_threshold:
                raise RolloutFailed("HealthCheckFailed", f"version {target} failed {rollout['healthFailures']} "
                                    f"health checks in a row: {problems[0]}")
            return ROLLOUT_POLL
        await self._promote(ctx, spec, pods)
        return float(spec.health_check.period_seconds)

    async def _promote(self, ctx: Ctx, spec: ModelDeploymentSpec, pods: list[dict]) -> None:
        rollout = ctx.status["rollout"]
        target, previous = rollout["version"], ctx.status.get("servingVersion")
        config = triton_model_config(json.loads(rollout["modelConfigJson"]), spec, [target])
        for pod in pods:  # unload the old version: only the new one serves now
            try:
                await self._load(pod, spec, config)
            except TritonError as e:
                raise RolloutFailed("ModelLoadFailed", f"switching to version {target} failed: {e}") from None
        self._step(ctx, "Serving", "Ready")
        now, limit = now_iso(), spec.rollback.history_limit
        if previous and previous != target:
            add_history(ctx.status, previous, "Superseded", "NewVersionServing", f"version {target} took over", now,
                        limit)
        add_history(ctx.status, target, "Serving", "HealthCheckPassed",
                    f"healthy on {len(pods)} pod(s) after {_age(rollout['startedAt']):.1f}s", now, limit)
        if previous and previous != target:
            self._remember_previous(ctx)
        dep_revision = None
        # Fresh: the revision the Deployment controller gave the template is what a rollback restores.
        world = await self.kube.observe(ctx.namespace, ctx.name, child_name(ctx.name, "triton"), fresh=True)
        if world.deployment:
            dep_revision = int((world.deployment["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, 0))
        ctx.status.update(servingVersion=target, lastGoodVersion=target, servingRevision=rollout["revision"],
                          servingModelConfigJson=rollout["modelConfigJson"], servingDeploymentRevision=dep_revision,
                          phase="Ready")
        ctx.status.pop("rollout", None)
        ctx.condition("Deployed", True, "VersionServing", f"Version {target} serves.")
        ctx.condition("Ready", True, "HealthCheckPassed", f"Version {target} is healthy on {len(pods)} pod(s).")
        ctx.condition("RolledBack", False, "VersionServing", f"Version {target} rolled out without a rollback.")
        ctx.event("Normal", "RolloutSucceeded", f"Version {target} serves (was: {previous or 'nothing'}).")

    # ---- failure, rollback, and the steady states ------------------------------------------------
    async def _fail(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, failure: RolloutFailed,
                    retry_token: str) -> None:
        rollout = ctx.status.pop("rollout")
        target, serving = rollout["version"], ctx.status.get("servingVersion")
        now, limit = now_iso(), spec.rollback.history_limit
        reject(ctx.status, target, rollout["revision"], failure.reason, now, retry_token, limit)
        add_history(ctx.status, target, "Failed", failure.reason, failure.message, now, limit)
        ctx.event("Warning", failure.reason, failure.message)
        log.warning("%s/%s: version %s failed: %s", ctx.namespace, ctx.name, target, failure.message)
        if not serving:
            if not world.observed:  # a first version failed validation; its server may have started early
                # Fresh: created a moment ago, the watch may not have shown it yet.
                world = await self.kube.observe(ctx.namespace, ctx.name, child_name(ctx.name, "triton"), fresh=True)
            if world.deployment and world.deployment["spec"].get("replicas"):
                # Nothing good to return to: free the GPUs instead of leaving failing pods behind.
                await self.kube.scale_deployment(world.deployment, 0)
            ctx.status["phase"] = "Failed"
            ctx.condition("Ready", False, failure.reason, f"{failure.message}. Nothing serves; fix the spec "
                          f"(or set the {RETRY_ANNOTATION} annotation to try the same spec again).")
            ctx.condition("Deployed", False, failure.reason, failure.message)
            return
        if not spec.rollback.enabled:
            ctx.status["phase"] = "Failed"
            ctx.condition("Ready", False, failure.reason, f"{failure.message}. Rollback is disabled.")
            return
        await self._roll_back(ctx, spec, world, serving, ctx.status["servingModelConfigJson"],
                              ctx.status.get("servingDeploymentRevision"), bool(rollout.get("templateChanged")))
        metrics.ROLLBACKS_TOTAL.labels(reason=failure.reason).inc()
        message = f"Version {target} failed ({failure.reason}: {failure.message}); version {serving} serves again."
        ctx.condition("RolledBack", True, failure.reason, message)
        ctx.condition("Deployed", True, "VersionServing", f"Version {serving} serves; {target} was rejected.")
        ctx.event("Warning", "RolledBack", message)
        await self._serving_health(ctx, spec, await self.kube.observe(
            ctx.namespace, ctx.name, child_name(ctx.name, "triton"), fresh=True))

    async def _roll_back(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, version: int, config_json: str,
                         deployment_revision: int | None, template_changed: bool) -> None:
        """Makes `version` (with its model config) serve again: restores the pod template of
        `deployment_revision` when the pods changed, else loads it in place into the running pods.
        The one rollback path: failed rollouts and monitoring demotions both come here."""
        if template_changed and world.deployment:
            wanted = deployment_revision
            for rs in await self.kube.replica_sets(ctx.namespace, ctx.name):
                if int((rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, -1)) == wanted:
                    await self.kube.restore_template(world.deployment, rs, {
                        TEMPLATE_ANNOTATION: (rs["spec"]["template"]["metadata"].get("annotations") or {}).get(
                            TEMPLATE_ANNOTATION, "")})
                    break
            return  # the restored pods load the serving version in the steady state
        config = triton_model_config(json.loads(config_json), spec, [version])
        for pod in self._serving_pods(world):
            try:
                await self._load(pod, spec, config)
            except TritonError as e:  # the steady state will keep trying on this pod
                log.warning("restoring version %s on %s failed: %s", version, pod["metadata"]["name"], e)

    async def _abandon(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, why: str) -> None:
        rollout = ctx.status.pop("rollout")
        add_history(ctx.status, rollout["version"], "Failed", "Superseded", why, now_iso(),
                    spec.rollback.history_limit)
        if ctx.status.get("servingVersion"):
            await self._roll_back(ctx, spec, world, ctx.status["servingVersion"], ctx.status["servingModelConfigJson"],
                                  ctx.status.get("servingDeploymentRevision"), bool(rollout.get("templateChanged")))

    async def _ensure_serving_loaded(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> list[str]:
        """Pods that restarted come back empty: load the serving version into them. Returns problems."""
        serving = ctx.status["servingVersion"]
        config = triton_model_config(json.loads(ctx.status["servingModelConfigJson"]), spec, [serving])
        problems = []
        for pod in self._serving_pods(world):
            async with TritonServer(f"{pod_running_ip(pod)}:{HTTP_PORT}", self.triton_timeout) as server:
                health = await server.health(spec.model.name, serving)
                if health.live and not health.model_ready:
                    try:
                        await server.load(spec.model.name, config)
                        continue
                    except TritonError as e:
                        problems.append(f"reloading version {serving} into {pod['metadata']['name']}: {e}")
                elif not (health.live and health.model_ready):  # server readiness blips during loads
                    problems.append(f"pod {pod['metadata']['name']}: {health.detail or 'model not ready'}")
        return problems

    async def _serving_health(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, note: str = "") -> bool:
        """Reloads restarted pods, then sets Ready (and phase) from how the serving version is doing.
        Ready never says True while a pod crash-loops or fewer pods than asked are ready."""
        problems = await self._ensure_serving_loaded(ctx, spec, world)
        problems += [p.message for p in map(pod_problem, world.pods) if p]
        ready = ctx.status.get("readyReplicas", 0)
        if ready < spec.replicas:
            problems.append(f"{ready} of {spec.replicas} Triton pods are ready")
        serving = ctx.status["servingVersion"]
        suffix = f"; {note}" if note else ""
        if problems:
            ctx.condition("Ready", False, "Unhealthy", f"Version {serving}: {problems[0]}{suffix}.")
            ctx.status["phase"] = "Degraded" if ready else "Deploying"
            return False
        ctx.condition("Ready", True, "HealthCheckPassed", f"Version {serving} serves on {ready} pod(s){suffix}.")
        ctx.status["phase"] = "Ready"
        return True

    async def _steady(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float:
        """The spec's revision serves: keep it so."""
        healthy = await self._serving_health(ctx, spec, world)
        if await self._monitoring(ctx, spec, world, healthy, may_roll_back=True):
            return 0.5  # demoted: the next pass holds the rejected spec and reports the old version
        return float(spec.health_check.period_seconds) if healthy else 2.0

    async def _hold_rejected(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World,
                             rejected: dict) -> float | None:
        """The spec names a revision that failed: keep what serves, say so, do not retry."""
        note = (f"version {rejected['version']} was rejected ({rejected['reason']}) and is not retried until the "
                f"spec changes or the {RETRY_ANNOTATION} annotation is set to a new value")
        if not ctx.status.get("servingVersion"):
            ctx.status["phase"] = "Failed"
            ctx.condition("Ready", False, rejected["reason"], f"Nothing serves: {note}.")
            return None
        healthy = await self._serving_health(ctx, spec, world, note)
        # Already back on an older version: a degradation of it is reported, never rolled back
        # further (the spec's own version is the rejected one).
        await self._monitoring(ctx, spec, world, healthy, may_roll_back=False)
        return float(spec.health_check.period_seconds) if healthy else 2.0

    # ---- monitoring: verdicts from aiops.monitoring, acted on here ------------------------------
    @staticmethod
    def _remember_previous(ctx: Ctx) -> None:
        """A new version takes over: keep what a monitoring rollback needs to return to the one it
        replaces (its config, revision, pod template) and its baseline, for like-for-like checks."""
        st = ctx.status
        st.update(previousVersion=st.get("servingVersion"), previousRevision=st.get("servingRevision"),
                  previousModelConfigJson=st.get("servingModelConfigJson"),
                  previousDeploymentRevision=st.get("servingDeploymentRevision"))
        if st.get("baseline"):
            st["previousBaseline"] = st["baseline"]
        for key in ("baseline", "monitoring", "metrics"):
            st.pop(key, None)
        if get_condition(st.get("conditions"), "Degraded"):
            ctx.condition("Degraded", "Unknown", "NewVersionServing", "The new version has not been judged yet.")

    async def _monitoring(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, healthy: bool,
                          may_roll_back: bool) -> bool:
        """Writes the latest verdict on the serving version (status.monitoring, metrics, baseline,
        the Degraded condition, an Event on each change); demotes the version when the spec asks.
        Returns whether it rolled back."""
        serving = ctx.status.get("servingVersion")
        verdict = self.verdicts.get((ctx.namespace, ctx.name)) if self.verdicts is not None else None
        if not spec.monitoring.enabled:
            ctx.status.pop("monitoring", None)
            if get_condition(ctx.status.get("conditions"), "Degraded"):
                ctx.condition("Degraded", "Unknown", "MonitoringDisabled", "spec.monitoring.enabled is false.")
            return False
        if verdict is None or verdict.version != serving:
            return False  # nothing judged yet for this version: leave what status says
        before = ctx.status.get("monitoring") or {}
        ctx.status["monitoring"] = verdict.status_body()
        ctx.status["metrics"] = verdict.snapshot
        if verdict.baseline:
            ctx.status["baseline"] = verdict.baseline
        unjudged = not verdict.degraded and verdict.reason == "InsufficientData"
        ctx.condition("Degraded", "Unknown" if unjudged else verdict.degraded, verdict.reason, verdict.message)
        if (before.get("version"), before.get("degraded"), before.get("reason")) != \
                (verdict.version, verdict.degraded, verdict.reason) and (verdict.degraded or before.get("degraded")):
            ctx.event("Warning" if verdict.degraded else "Normal",
                      verdict.reason if verdict.degraded else "Recovered", verdict.message)
        if verdict.degraded and healthy:
            ctx.status["phase"] = "Degraded"
        if verdict.rollback_requested and may_roll_back:
            return await self._demote_degraded(ctx, spec, world, verdict)
        return False

    async def _demote_degraded(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World,
                               verdict: MonitoringVerdict) -> bool:
        """spec.monitoring.action=rollback: the serving version is rejected like a failed rollout and
        the previous good version serves again through the same `_roll_back`."""
        st = ctx.status
        serving, previous = st["servingVersion"], st.get("previousVersion")
        target_ok = bool(previous and st.get("previousModelConfigJson")
                         and previous not in (st.get("rejectedVersions") or []))
        if not target_ok or not spec.rollback.enabled:
            why = "rollback is disabled" if target_ok else "there is no previous good version to return to"
            ctx.condition("Degraded", True, verdict.reason, f"{verdict.message} Not rolled back: {why}.")
            return False
        now, limit = now_iso(), spec.rollback.history_limit
        retry_token = (ctx.md["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION, "")
        reject(st, serving, st["servingRevision"], verdict.reason, now, retry_token, limit)
        add_history(st, serving, "RolledBack", verdict.reason, verdict.message, now, limit)
        template_changed = st.get("previousDeploymentRevision") != st.get("servingDeploymentRevision")
        await self._roll_back(ctx, spec, world, previous, st["previousModelConfigJson"],
                              st.get("previousDeploymentRevision"), template_changed)
        add_history(st, previous, "Serving", "RolledBack", f"restored after version {serving} degraded", now, limit)
        st.update(servingVersion=previous, lastGoodVersion=previous, servingRevision=st.get("previousRevision"),
                  servingModelConfigJson=st["previousModelConfigJson"],
                  servingDeploymentRevision=st.get("previousDeploymentRevision"),
                  baseline=st.get("previousBaseline"), phase="Ready",
                  # the restored version's own baseline comes back with it (see aiops.monitoring.monitor)
                  monitoring={"version": previous, "degraded": False, "reason": "RolledBack",
                              "message": f"Version {previous} serves again after version {serving} degraded."})
        for key in ("previousVersion", "previousRevision", "previousModelConfigJson", "previousDeploymentRevision",
                    "previousBaseline", "metrics"):
            st.pop(key, None)
        if not st.get("baseline"):
            st.pop("baseline", None)
        metrics.ROLLBACKS_TOTAL.labels(reason="Degraded").inc()
        message = (f"Version {serving} was degraded while serving ({verdict.message}); version {previous} serves "
                   f"again and version {serving} is rejected until the spec changes or the {RETRY_ANNOTATION} "
                   "annotation is set to a new value.")
        ctx.condition("RolledBack", True, verdict.reason, message)
        ctx.condition("Degraded", False, "RolledBack", f"Version {previous} serves again; version {serving} was "
                      f"degraded: {verdict.message}")
        ctx.condition("Deployed", True, "VersionServing", f"Version {previous} serves; {serving} was rejected.")
        ctx.event("Warning", "RolledBack", message)
        log.warning("%s/%s: version %s degraded, rolled back to %s", ctx.namespace, ctx.name, serving, previous)
        return True
