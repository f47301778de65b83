"""Reconciles one ModelDeployment: validate, deploy, health-check and roll back as a level-triggered
control loop.

Steps of a rollout (each with a deadline, each timed into status and a histogram):
  Validating -> [WaitingForCapacity] -> Deploying -> Loading -> HealthChecking -> promote
and on any failure: reject the spec revision, roll back to the last good version, say why.

Versions are swapped inside the running Triton (explicit model control): the new version is
loaded beside the serving one, checked through its versioned endpoint, then the old one is
unloaded. A rollback is one load call, which is why it takes well under a second. Only changes
to the pods themselves (image, args, resources...) go through a Deployment rollout, surge or not
depending on free GPUs, and are undone by restoring the previous ReplicaSet's template. A change
of `replicas` alone is no rollout: the steady state scales the Deployment (`_scale`).

The operator never writes `spec`: what is asked (spec) and what serves (status) are kept apart,
and a rejected revision is not tried again until the spec or the `aiops.dev/retry` annotation
changes, so GitOps re-applies and self-heals don't loop on a bad version.
"""

from __future__ import annotations

import datetime as dt

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.api.registry import MODEL_DEPLOYMENT
from aiops.builders.triton import GRPC_PORT, HTTP_PORT, METRICS_PORT, child_name, triton_labels
from aiops.conditions import now_iso
from aiops.kube.objects import NameTaken
from aiops.monitoring.verdict import VerdictRegistry
from aiops.networkpolicies import NetworkPolicies
from aiops.passes import run_pass
from aiops.pergeneration import PerGeneration
from aiops.rollout.context import CAPACITY_POLL, RETRY_ANNOTATION, Ctx, RolloutFailed, age
from aiops.rollout.deadlines import stalled
from aiops.rollout.demotion import Demotion
from aiops.rollout.deploy import Deploy, guard_triton, owned
from aiops.rollout.history import rejection
from aiops.rollout.jobwatch import JobWatch
from aiops.rollout.modelcontrol import ModelControlKeys
from aiops.rollout.pods import pod_ready
from aiops.rollout.recovery import Recovery
from aiops.rollout.revision import adopt_earlier_revisions, earlier_revision, spec_revision
from aiops.rollout.room import Room
from aiops.rollout.servers import PodServers, Servers
from aiops.rollout.validating import Validation
from aiops.rollout.world import RolloutClient, World
from aiops.validity import judge_spec

__all__ = ["RETRY_ANNOTATION", "Ctx", "ModelDeploymentReconciler", "RolloutFailed"]


class ModelDeploymentReconciler:
    """One pass over one ModelDeployment: which step it is in, and the part that does that step
    (`Validation`, `Deploy`, `Recovery`, `Demotion`), each talking to Triton through `Servers`."""

    def __init__(self, kube: RolloutClient, worker_image: str, triton_timeout: float = 5.0,
                 verdicts: VerdictRegistry | None = None, jobs: JobWatch | None = None,
                 validation_job_ttl: int | None = None, servers: Servers | None = None,
                 host_paths: tuple[str, ...] | None = None, log_format: str = "text",
                 keys: ModelControlKeys | None = None, policies: NetworkPolicies | None = None):
        self.kube = kube
        self.host_paths = host_paths  # the node directories a spec may mount; None: not restricted
        self.jobs = jobs or JobWatch()  # validation Jobs as the watch saw them, to skip reads
        self.verdicts = verdicts
        self.keys = keys  # None: Triton's model control is not restricted (tests of the steps alone)
        servers = servers or PodServers(triton_timeout, self.keys)
        room = Room(kube)
        self.validation = Validation(kube, self.jobs, room, worker_image, validation_job_ttl, self.keys,
                                     log_format, policies)
        self.deploy = Deploy(kube, servers, room, self.keys, policies)
        self.recovery = Recovery(kube, servers, self.deploy)
        self.demotion = Demotion(verdicts, self.recovery)
        self._revisions: PerGeneration[str] = PerGeneration()

    # ---- entry point -----------------------------------------------------------------------------
    async def reconcile(self, md: dict, nodes: list[dict]) -> tuple[float | None, dict | None]:
        """Returns (seconds until the next look, the object as written back or None)."""
        return await run_pass(MODEL_DEPLOYMENT, md, self.kube, lambda ctx: self._reconcile(ctx, nodes), Ctx)

    async def _reconcile(self, ctx: Ctx, nodes: list[dict]) -> float | None:
        spec = self._validate(ctx, nodes)
        if spec is None:
            return None
        ctx.status["observedGeneration"] = ctx.generation
        if self.keys is not None:
            ctx.control_secret = await self.keys.secret_name(ctx.namespace, ctx.name)
        dep_name = child_name(ctx.name, "triton")
        revision, earlier = self._revisions.get(ctx.md, None, lambda: (spec_revision(spec), earlier_revision(spec)))
        adopt_earlier_revisions(ctx.status, revision, earlier)
        rollout = ctx.status.get("rollout")
        if not ctx.status.get("servingVersion") and (rollout or {}).get("step", "Validating") == "Validating" \
                and (rollout or {}).get("revision", revision) in (revision, earlier):
            world = World(None, [], observed=False)  # a first version being validated: nothing to see yet
        else:
            world = await self.kube.observe(ctx.namespace, ctx.name, dep_name)
            self._report_pods(ctx, world, dep_name)
            if world.deployment is not None and owned(ctx, world.deployment):
                await self._guard(ctx)

        if rollout and rollout["revision"] not in (revision, earlier):
            await self.recovery.abandon(ctx, spec, world, "the spec changed while version "
                                        f"{rollout['version']} was rolling out")
            rollout = None
        if rollout is None:
            if ctx.status.get("servingRevision") == revision:
                return await self._steady(ctx, spec, world)
            rejected = rejection(ctx.status, revision, ctx.retry_token)
            if rejected:
                return await self._hold_rejected(ctx, spec, world, rejected)
            self._start_rollout(ctx, spec, revision)
        try:
            return await self._advance(ctx, spec, world)
        except RolloutFailed as failure:
            await self.recovery.fail(ctx, spec, world, failure)
            return 0.5

    # ---- validity and reporting ------------------------------------------------------------------
    def _validate(self, ctx: Ctx, nodes: list[dict]) -> ModelDeploymentSpec | None:
        spec, events = judge_spec(MODEL_DEPLOYMENT.kind, ctx.md, ctx.status, nodes, self.host_paths)
        ctx.events += events
        if spec is None:
            ctx.condition("Ready", bool(ctx.status.get("servingVersion")) and "Unknown", "InvalidSpec",
                          "The spec is invalid (see the Valid condition); what served before keeps serving.")
        return spec

    @staticmethod
    def _report_pods(ctx: Ctx, world: World, dep_name: str) -> None:
        live = [p for p in world.pods if not p["metadata"].get("deletionTimestamp")]
        ctx.status["replicas"] = len(live)
        ctx.status["readyReplicas"] = sum(pod_ready(p) for p in live)
        ctx.status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(triton_labels(ctx.name).items()))
        host = f"{dep_name}.{ctx.namespace}.svc"
        ctx.status["endpoints"] = {"http": f"{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}",
                                   "metrics": f"http://{host}:{METRICS_PORT}/metrics"}

    # ---- the rollout's steps -----------------------------------------------------------------------
    @staticmethod
    def _start_rollout(ctx: Ctx, spec: ModelDeploymentSpec, revision: str) -> None:
        now = now_iso()
        ctx.status["rollout"] = {"version": spec.model.version, "revision": revision, "step": "Validating",
                                 "startedAt": now, "stepStartedAt": now, "healthFailures": 0}
        ctx.status["phaseDurationsSeconds"] = {}
        ctx.status["phase"] = "Validating"
        ctx.condition("Deployed", False, "RolloutStarted", f"Rolling out version {spec.model.version}.")
        serving = ctx.status.get("servingVersion")
        ctx.event("Normal", "RolloutStarted", f"Rolling out version {spec.model.version}"
                  + (f" (serving: {serving})" if serving else ""))

    async def _advance(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float | None:
        rollout = ctx.status["rollout"]
        deadline = spec.health_check.progress_deadline_seconds
        if age(rollout["startedAt"]) > deadline:
            raise RolloutFailed("ProgressDeadlineExceeded", f"version {rollout['version']} was not healthy within "
                                f"{deadline}s; it stalled in step {rollout['step']}")
        live = [p for p in world.pods if not p["metadata"].get("deletionTimestamp")]
        stuck = stalled(spec, rollout, live, dt.datetime.now(dt.UTC))
        if stuck:
            raise RolloutFailed("PhaseDeadlineExceeded", stuck)
        step = rollout["step"]
        if step == "Validating":
            delay = await self.validation.step(ctx, spec)
            if rollout["step"] == "Validating":
                return delay
            # Valid: deploy in this same pass rather than after a status write and a requeue.
            if not world.observed:
                world = await self.kube.observe(ctx.namespace, ctx.name, child_name(ctx.name, "triton"))
                self._report_pods(ctx, world, child_name(ctx.name, "triton"))
            step = rollout["step"]
        if step in ("WaitingForCapacity", "Deploying"):
            return await self.deploy.deploying(ctx, spec, world)
        if step == "Loading":
            return await self.deploy.loading(ctx, spec, world)
        return await self.deploy.health_checking(ctx, spec, world)

    # ---- the steady states -------------------------------------------------------------------------
    async def _guard(self, ctx: Ctx) -> None:
        """A server made before its NetworkPolicy was (an upgrade) or under other settings gets
        it in line; once per operator process, so a steady object costs nothing per pass."""
        try:
            await guard_triton(self.deploy.policies, ctx)
        except NameTaken as taken:  # the servers stay as they are: a policy we never made is not ours
            ctx.event("Warning", taken.reason, str(taken))

    async def _steady(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float:
        """The spec's revision serves: keep it so, on as many pods as the spec asks for."""
        waits = await self._scale(ctx, spec, world)
        healthy = await self.recovery.serving_health(ctx, spec, world)
        if await self.demotion.apply(ctx, spec, world, healthy, may_roll_back=True):
            return 0.5  # demoted: the next pass holds the rejected spec and reports the old version
        return CAPACITY_POLL if waits else float(spec.health_check.period_seconds) if healthy else 2.0

    async def _scale(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> bool:
        """`replicas` alone changed (`kubectl scale`, an autoscaler): the Triton Deployment follows
        it, with no validation and no rollout, since the pods and the version are the same. New
        pods get the serving version loaded by `serving_health`, and Ready says how many are ready
        until they are. Returns True while a scale-up waits for room (what serves keeps serving)."""
        cached = world.deployment
        if cached is None or cached["spec"].get("replicas") == spec.replicas:
            return False
        # Fresh: a pass right after our own scale may still see the old count in the watch's cache.
        world = await self.kube.observe(ctx.namespace, ctx.name, child_name(ctx.name, "triton"), fresh=True)
        current = world.deployment
        if current is None or not owned(ctx, current) or (have := current["spec"].get("replicas", 1)) == spec.replicas:
            return False
        if spec.replicas > have:
            fits, _, reason, message = await self.deploy.room.for_deployment(spec, world, current, False)
            if not fits:
                message = f"Scaling to {spec.replicas} Triton pods waits for room on a node: {message}"
                if ctx.condition("ResourcesAvailable", False, reason, message):
                    ctx.event("Warning", reason, message)
                return True
        await self.kube.scale("Deployment", current, spec.replicas)
        ctx.condition("ResourcesAvailable", True, "ResourcesFit", f"Room for {spec.replicas} Triton pods.")
        ctx.event("Normal", "Scaled", f"Triton pods {have} -> {spec.replicas}: version "
                  f"{ctx.status['servingVersion']} serves on them without a rollout.")
        return False

    async def _hold_rejected(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World,
                             rejected: dict) -> float | None:
        """The spec names a revision that failed: keep what serves, say so, do not retry."""
        note = (f"version {rejected['version']} was rejected ({rejected['reason']}) and is not retried until the "
                f"spec changes or the {RETRY_ANNOTATION} annotation is set to a new value")
        if not ctx.status.get("servingVersion"):
            ctx.status["phase"] = "Failed"
            ctx.condition("Ready", False, rejected["reason"], f"Nothing serves: {note}.")
            return None
        waits = await self._scale(ctx, spec, world)
        healthy = await self.recovery.serving_health(ctx, spec, world, note)
        # Already back on an older version: a degradation of it is reported, never rolled back
        # further (the spec's own version is the rejected one).
        await self.demotion.apply(ctx, spec, world, healthy, may_roll_back=False)
        return CAPACITY_POLL if waits else float(spec.health_check.period_seconds) if healthy else 2.0
