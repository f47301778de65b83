"""When a rollout fails, and while a version serves: the one rollback path (restore the pod
template, or load the old version back in place), what a failure leaves in status, and the
serving version's health (pods that restarted get it loaded again)."""

from __future__ import annotations

import json
import logging

from aiops import metrics
from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.triton import child_name, triton_model_config
from aiops.conditions import now_iso
from aiops.rollout.context import RETRY_ANNOTATION, Ctx, RolloutFailed
from aiops.rollout.deploy import Deploy, owned, serving_pods
from aiops.rollout.history import add_history, reject
from aiops.rollout.pods import pod_problem
from aiops.rollout.servers import Servers
from aiops.rollout.swap import swap_strategy
from aiops.rollout.world import REVISION_ANNOTATION, TEMPLATE_ANNOTATION, RolloutClient, World
from aiops.triton.client import TritonError

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, kube: RolloutClient, servers: Servers, deploy: Deploy):
        self.kube, self.servers, self.deploy = kube, servers, deploy

    async def fail(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, failure: RolloutFailed) -> None:
        rollout = ctx.status.pop("rollout")
        target, serving = rollout["version"], ctx.status.get("servingVersion")
        now, limit = now_iso(), spec.rollback.history_limit
        reject(ctx.status, target, rollout["revision"], failure.reason, now, ctx.retry_token, limit)
        add_history(ctx.status, target, "Failed", failure.reason, failure.message, now, limit)
        ctx.event("Warning", failure.reason, failure.message)
        log.warning("%s/%s: version %s failed: %s", ctx.namespace, ctx.name, target, failure.message)
        if not serving:
            if not world.observed:  # a first version failed validation; its server may have started early
                # Fresh: created a moment ago, the watch may not have shown it yet.
                world = await self.kube.observe(ctx.namespace, ctx.name, child_name(ctx.name, "triton"), fresh=True)
            if world.deployment and world.deployment["spec"].get("replicas") and owned(ctx, world.deployment):
                # Nothing good to return to: free the GPUs instead of leaving failing pods behind.
                await self.kube.scale("Deployment", world.deployment, 0)
            ctx.status["phase"] = "Failed"
            ctx.condition("Ready", False, failure.reason, f"{failure.message}. Nothing serves; fix the spec "
                          f"(or set the {RETRY_ANNOTATION} annotation to try the same spec again).")
            ctx.condition("Deployed", False, failure.reason, failure.message)
            return
        if not spec.rollback.enabled:
            ctx.status["phase"] = "Failed"
            ctx.condition("Ready", False, failure.reason, f"{failure.message}. Rollback is disabled.")
            return
        await self.roll_back(ctx, spec, world, serving, ctx.status["servingModelConfigJson"],
                             ctx.status.get("servingDeploymentRevision"), bool(rollout.get("templateChanged")))
        metrics.ROLLBACKS_TOTAL.labels(reason=failure.reason).inc()
        message = f"Version {target} failed ({failure.reason}: {failure.message}); version {serving} serves again."
        ctx.condition("RolledBack", True, failure.reason, message)
        ctx.condition("Deployed", True, "VersionServing", f"Version {serving} serves; {target} was rejected.")
        ctx.event("Warning", "RolledBack", message)
        await self.serving_health(ctx, spec, await self.kube.observe(
            ctx.namespace, ctx.name, child_name(ctx.name, "triton"), fresh=True))

    async def roll_back(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, version: int, config_json: str,
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
        replace = swap_strategy(spec)[0] == "Replace"  # the way back follows the rule of the way there
        for pod in serving_pods(world):
            if replace:
                try:
                    await self.deploy.unload(pod, spec)
                except TritonError as e:  # the load says whether there is room
                    log.warning("unloading %s from %s failed: %s", spec.model.name, pod["metadata"]["name"], e)
            try:
                await self.deploy.load(pod, spec, config)
            except TritonError as e:  # the steady state will keep trying on this pod
                log.warning("restoring version %s on %s failed: %s", version, pod["metadata"]["name"], e)

    async def abandon(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, why: str) -> None:
        """The spec changed mid-rollout: the rollout goes into history and what served serves."""
        rollout = ctx.status.pop("rollout")
        add_history(ctx.status, rollout["version"], "Failed", "Superseded", why, now_iso(),
                    spec.rollback.history_limit)
        if ctx.status.get("servingVersion"):
            await self.roll_back(ctx, spec, world, ctx.status["servingVersion"], ctx.status["servingModelConfigJson"],
                                 ctx.status.get("servingDeploymentRevision"), bool(rollout.get("templateChanged")))

    async def _ensure_serving_loaded(self, spec: ModelDeploymentSpec, status: dict, world: World) -> list[str]:
        """Pods that restarted come back empty: load the serving version into them. Returns problems."""
        serving = status["servingVersion"]
        config = triton_model_config(json.loads(status["servingModelConfigJson"]), spec, [serving])
        problems = []
        for pod in serving_pods(world):
            health = await self.servers.health(pod, spec.model.name, serving)
            if health.live and not health.model_ready:
                try:
                    await self.servers.load(pod, spec.model.name, config)
                    continue
                except TritonError as e:
                    problems.append(f"reloading version {serving} into {pod['metadata']['name']}: {e}")
            elif not (health.live and health.model_ready):  # server readiness blips during loads
                problems.append(f"pod {pod['metadata']['name']}: {health.detail or 'model not ready'}")
        return problems

    async def serving_health(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, note: str = "") -> bool:
        """Reloads restarted pods, then sets Ready (and phase) from how the serving version is doing.
        Ready never says True while a pod crash-loops or fewer pods than asked are ready."""
        serving = ctx.status["servingVersion"]
        if spec.replicas == 0 and not [p for p in world.pods if not p["metadata"].get("deletionTimestamp")]:
            ctx.condition("Ready", False, "ScaledToZero", f"Version {serving} is scaled to zero Triton pods: nothing "
                          "answers until replicas is raised.")
            ctx.status["phase"] = "Pending"
            return True  # as asked: nothing to roll back from
        problems = await self._ensure_serving_loaded(spec, ctx.status, world)
        problems += [p.message for p in map(pod_problem, world.pods) if p]
        ready = ctx.status.get("readyReplicas", 0)
        if ready < spec.replicas:
            problems.append(f"{ready} of {spec.replicas} Triton pods are ready")
        suffix = f"; {note}" if note else ""
        if problems:
            ctx.condition("Ready", False, "Unhealthy", f"Version {serving}: {problems[0]}{suffix}.")
            ctx.status["phase"] = "Degraded" if ready else "Deploying"
            return False
        ctx.condition("Ready", True, "HealthCheckPassed", f"Version {serving} serves on {ready} pod(s){suffix}.")
        ctx.status["phase"] = "Ready"
        return True
