"""The rollout's steps after validation: Deploying (the Triton Deployment, when its pods' room
allows), Loading (the new version into each pod, beside the serving one), HealthChecking (the
versioned endpoint with the validation samples), and the promotion that makes it serve alone."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.triton import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    build_triton_deployment,
    build_triton_service,
    child_name,
    triton_labels,
    triton_model_config,
)
from aiops.conditions import now_iso
from aiops.kube.objects import NameTaken, owned_by, owned_by_uid
from aiops.networkpolicies import NetworkPolicies
from aiops.rollout.context import CAPACITY_POLL, PODS_SAFETY_LOOK, ROLLOUT_POLL, Ctx, RolloutFailed, age, poll
from aiops.rollout.deadlines import seconds_left
from aiops.rollout.history import add_history, remember_previous
from aiops.rollout.modelcontrol import ModelControlKeys
from aiops.rollout.pods import pod_problem, pod_ready, pod_running_ip, pod_started
from aiops.rollout.revision import template_revision
from aiops.rollout.room import Room
from aiops.rollout.servers import Servers
from aiops.rollout.swap import swap_strategy
from aiops.rollout.world import REVISION_ANNOTATION, TEMPLATE_ANNOTATION, RolloutClient, World
from aiops.triton.client import TritonError
from aiops.triton.samples import meets_accuracy

PODS_FOR_ANNOTATION = "aiops.dev/pods-for-version"
READINESS_POLL = 1.0  # a healthy pod waiting for its readiness probe: the pod's event usually comes first


def desired_deployment(ctx: Ctx, spec: ModelDeploymentSpec, surge: bool,
                       pods_for: str | None = None) -> tuple[dict, str]:
    """The Triton Deployment of this spec, owned by the object, with its pod template's revision.
    `pods_for`: the version the pods were made for, where a rollout surged new pods for it (a
    template change of its own), carried over by later rollouts so they change no pods."""
    # Without keys (the steps tested alone) the pods name a Secret nobody makes.
    control_secret = ctx.control_secret or child_name(ctx.name, "model-control")
    dep = owned_by(build_triton_deployment(ctx.name, spec, surge, control_secret), ctx.md)
    template = dep["spec"]["template"]
    if pods_for:
        template["metadata"].setdefault("annotations", {})[PODS_FOR_ANNOTATION] = pods_for
    revision = template_revision(template)
    template["metadata"].setdefault("annotations", {})[TEMPLATE_ANNOTATION] = revision
    dep["metadata"]["annotations"] = {TEMPLATE_ANNOTATION: revision}
    return dep, revision


async def guard_triton(policies: NetworkPolicies | None, ctx: Ctx) -> None:
    """The NetworkPolicy in front of the Triton pods: their ports, to the namespace, the operator
    and the administrator's peers only (aiops.builders.network). None: not managed."""
    if policies is not None:
        await policies.ensure(ctx.md, child_name(ctx.name, "triton"), triton_labels(ctx.name),
                              [HTTP_PORT, GRPC_PORT, METRICS_PORT])


def pods_for(deployment: dict | None) -> str | None:
    """The version a Deployment's pods were surged for (None: made for no version in particular)."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    return (template.get("metadata", {}).get("annotations") or {}).get(PODS_FOR_ANNOTATION)


def deployment_ref(ctx: Ctx) -> dict:
    return {"metadata": {"name": child_name(ctx.name, "triton"), "namespace": ctx.namespace}}


def owned(ctx: Ctx, obj: dict) -> bool:
    """Whether this ModelDeployment owns `obj`."""
    return owned_by_uid(obj, ctx.md["metadata"].get("uid"))


def check_owned(ctx: Ctx, obj: dict | None) -> None:
    """Raises NameTaken for an object of our child's name that this ModelDeployment does not own:
    the operator never changes it, and never routes or loads through it."""
    if obj is None:
        return
    if not owned(ctx, obj):
        taken = NameTaken(obj.get("kind", "object"), obj["metadata"]["name"], "ModelDeployment")
        raise RolloutFailed(taken.reason, str(taken))


def current_pods(world: World, revision: str) -> list[dict]:
    return [p for p in world.pods if not p["metadata"].get("deletionTimestamp")
            and (p["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION) == revision]


def serving_pods(world: World) -> list[dict]:
    """Running Triton pods of the Deployment's current template."""
    rev = ((world.deployment or {}).get("metadata", {}).get("annotations") or {}).get(TEMPLATE_ANNOTATION)
    return [p for p in current_pods(world, rev) if pod_running_ip(p)] if rev else []


class Deploy:
    def __init__(self, kube: RolloutClient, servers: Servers, room: Room, keys: ModelControlKeys | None = None,
                 policies: NetworkPolicies | None = None):
        self.kube, self.servers, self.room = kube, servers, room
        self.policies = policies
        self.keys = keys  # None: pods without a model-control key (tests of the steps alone)

    async def load(self, pod: dict, spec: ModelDeploymentSpec, config: dict) -> None:
        await self.servers.load(pod, spec.model.name, config, float(spec.health_check.progress_deadline_seconds))

    async def _surges(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, current: dict) -> bool:
        """Whether this rollout brings the new version up in new pods beside the serving ones:
        two versions do not fit in one pod's GPU memory, and a node has a spare pod's room."""
        target, serving = ctx.status["rollout"]["version"], ctx.status.get("servingVersion")
        if not serving or serving == target or swap_strategy(spec)[0] != "Replace":
            return False
        return (await self.room.for_deployment(spec, world, current, True))[1]

    async def deploying(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float | None:
        rollout = ctx.status["rollout"]
        current = world.deployment
        current_rev = ((current or {}).get("metadata", {}).get("annotations") or {}).get(TEMPLATE_ANNOTATION)
        pinned = str(rollout["version"]) if rollout.get("swap") == "Surge" else pods_for(current)
        desired, revision = desired_deployment(ctx, spec, False, pinned)
        if "swap" not in rollout and current is not None and current_rev == revision \
                and await self._surges(ctx, spec, world, current):
            rollout["swap"] = "Surge"
            ctx.event("Normal", "VersionSurge", f"Version {rollout['version']} starts in new pods beside version "
                      f"{ctx.status['servingVersion']}: {swap_strategy(spec)[1].split(', so')[0]}, and a node "
                      "has room for a new pod.")
            desired, revision = desired_deployment(ctx, spec, False, str(rollout["version"]))
        if current is None or current_rev != revision or current["spec"].get("replicas") != spec.replicas:
            fits, surge, reason, message = await self.room.for_deployment(spec, world, current,
                                                                          current_rev != revision)
            if not fits:
                if rollout.get("waitReason") != reason:
                    ctx.event("Warning", reason, message)
                    rollout["waitReason"] = reason
                if rollout["step"] != "WaitingForCapacity":
                    ctx.step("WaitingForCapacity", "Pending")
                ctx.condition("ResourcesAvailable", False, reason, message)
                ctx.condition("Ready", bool(ctx.status.get("servingVersion")), reason,
                              f"Version {rollout['version']} waits for room on a node: {message}")
                return CAPACITY_POLL  # node and pod events wake us sooner
            desired, revision = desired_deployment(ctx, spec, surge, str(rollout["version"])
                                                   if rollout.get("swap") == "Surge" else pods_for(current))
            rollout["templateChanged"] = current is not None and current_rev != revision
            check_owned(ctx, current)
            try:  # before the pods, which read their model-control key from its Secret
                await asyncio.gather(guard_triton(self.policies, ctx),
                                     *([self.keys.ensure(ctx.md)] if self.keys is not None else []))
            except NameTaken as taken:
                raise RolloutFailed(taken.reason, str(taken)) from None
            check_owned(ctx, await self.kube.apply_deployment(desired, current))
            rollout.pop("waitReason", None)
            ctx.condition("ResourcesAvailable", True, "ResourcesFit", message)
            if rollout["step"] != "Deploying":
                ctx.step("Deploying", "Deploying")
            return ROLLOUT_POLL
        ctx.condition("ResourcesAvailable", True, "ResourcesFit", "The Triton pods have their GPUs and memory.")
        pods = current_pods(world, revision)
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
            if not (await self.servers.health(pod, spec.model.name)).live:
                return poll(rollout)
        if not ctx.status.get("servingVersion"):
            # Made only now that there is a server to route to: while pods start, a Service has
            # the endpoint controllers rewrite its Endpoints and EndpointSlice on every pod change
            # (7 writes per object in bench_reconcile), and a failed first version never gets one.
            check_owned(ctx, await self.kube.create_or_read(owned_by(build_triton_service(ctx.name), ctx.md)))
        ctx.step("Loading", "Deploying")
        return 0.0

    async def unload(self, pod: dict, spec: ModelDeploymentSpec) -> None:
        """Every version of the model out of `pod`'s Triton, its memory given back."""
        await self.servers.unload(pod, spec.model.name, float(spec.health_check.progress_deadline_seconds))

    async def loading(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float:
        rollout = ctx.status["rollout"]
        target, serving = rollout["version"], ctx.status.get("servingVersion")
        in_place = serving and serving != target and not rollout.get("templateChanged")
        swap, why = swap_strategy(spec)
        beside = in_place and swap == "Beside"
        config = triton_model_config(json.loads(rollout["modelConfigJson"]), spec,
                                     [serving, target] if beside else [target])
        pods = serving_pods(world)
        started = time.monotonic()
        if in_place:
            rollout["swap"] = swap
        if in_place and swap == "Replace":
            ctx.event("Normal", "VersionSwapOutage", f"Version {serving} is unloaded before version {target} "
                      f"loads: {why}. Nothing answers until it has loaded.")
            for pod in pods:
                try:
                    await self.unload(pod, spec)
                except TritonError as e:
                    raise RolloutFailed("ModelUnloadFailed", f"Triton could not unload version {serving} "
                                        f"to make room for {target}: {e}") from None
        for pod in pods:
            try:
                await self.load(pod, spec, config)
            except TritonError as e:
                raise RolloutFailed("ModelLoadFailed", f"Triton could not load version {target}: {e}") from None
        if in_place and swap == "Replace":
            rollout["outageSeconds"] = round(time.monotonic() - started, 3)
        ctx.step("HealthChecking", "HealthChecking")
        return 0.0

    async def check_pod(self, pod: dict, spec: ModelDeploymentSpec, version: int) -> str | None:
        """None when the pod serves `version` correctly; else what is wrong."""
        health = await self.servers.health(pod, spec.model.name, version)
        if not health.ok:
            return (f"pod {pod['metadata']['name']}: live={health.live} ready={health.ready} "
                    f"model version {version} ready={health.model_ready} {health.detail}").strip()
        results = await self.servers.run_samples(pod, spec.model.name, version, list(spec.validation.samples))
        if not meets_accuracy(results, spec.validation.min_accuracy):
            failed = [f"{r.sample}: {r.detail}" for r in results if not r.passed]
            return (f"pod {pod['metadata']['name']}: {len(failed)}/{len(results)} samples failed "
                    f"({'; '.join(failed[:3])})")
        return None

    async def health_checking(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World) -> float:
        rollout = ctx.status["rollout"]
        target = rollout["version"]
        pods = serving_pods(world)
        for pod in pods:
            problem = pod_problem(pod)
            if problem and problem.fatal:
                raise RolloutFailed(problem.reason, problem.message)
        problems = [p for p in [await self.check_pod(pod, spec, target) for pod in pods] if p]
        # The pods this rollout deployed: a scale meanwhile is applied once the version serves.
        deployed = ((world.deployment or {}).get("spec") or {}).get("replicas", spec.replicas)
        if len(pods) < deployed:
            problems.append(f"{len(pods)} of {deployed} Triton pods are running")
        if problems:
            rollout["healthFailures"] = rollout.get("healthFailures", 0) + 1
            if rollout["healthFailures"] >= spec.health_check.failure_threshold:
                raise RolloutFailed("HealthCheckFailed", f"version {target} failed {rollout['healthFailures']} "
                                    f"health checks in a row: {problems[0]}")
            return ROLLOUT_POLL
        if not all(pod_ready(p) for p in pods):
            # Healthy to our own check, but the kubelet's readiness probe (every 2 s) has not seen
            # it yet, so the Service does not route to it: Ready=True now would flip back on the
            # next pass (and a `kubectl wait --for=condition=Ready` would return before it serves).
            return READINESS_POLL
        await self.promote(ctx, spec, pods)
        return float(spec.health_check.period_seconds)

    async def promote(self, ctx: Ctx, spec: ModelDeploymentSpec, pods: list[dict]) -> None:
        rollout = ctx.status["rollout"]
        target, previous = rollout["version"], ctx.status.get("servingVersion")
        config = triton_model_config(json.loads(rollout["modelConfigJson"]), spec, [target])
        for pod in pods:  # unload the old version: only the new one serves now
            try:
                await self.load(pod, spec, config)
            except TritonError as e:
                raise RolloutFailed("ModelLoadFailed", f"switching to version {target} failed: {e}") from None
        ctx.step("Serving", "Ready")
        now, limit = now_iso(), spec.rollback.history_limit
        if previous and previous != target:
            add_history(ctx.status, previous, "Superseded", "NewVersionServing", f"version {target} took over", now,
                        limit)
        outage = rollout.get("outageSeconds")
        swapped = (f"; it replaced version {previous} in place, {outage:.1f}s without an answer"
                   if outage is not None else f"; new pods came up beside version {previous}'s"
                   if rollout.get("swap") == "Surge" else "")
        add_history(ctx.status, target, "Serving", "HealthCheckPassed",
                    f"healthy on {len(pods)} pod(s) after {age(rollout['startedAt']):.1f}s{swapped}", now, limit)
        if previous and previous != target:
            remember_previous(ctx)
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
