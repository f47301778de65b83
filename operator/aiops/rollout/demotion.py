"""Monitoring's verdicts, acted on: the monitor (aiops.monitoring) judges the serving version and
publishes a verdict; here it is written into status (monitoring, metrics, baseline, the Degraded
condition, an Event on each change), and with `spec.monitoring.action: rollback` a degraded
version is rejected like a failed rollout and the previous good one serves again through the
one rollback path."""

from __future__ import annotations

import logging

from aiops import metrics
from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.conditions import get_condition, now_iso
from aiops.monitoring.verdict import MonitoringVerdict, VerdictRegistry
from aiops.rollout.context import RETRY_ANNOTATION, Ctx
from aiops.rollout.history import add_history, reject
from aiops.rollout.recovery import Recovery
from aiops.rollout.world import World

log = logging.getLogger(__name__)


class Demotion:
    def __init__(self, verdicts: VerdictRegistry | None, recovery: Recovery):
        self.verdicts = verdicts  # the monitor's latest verdict per object
        self.recovery = recovery

    async def apply(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, healthy: bool,
                    may_roll_back: bool) -> bool:
        """Writes the latest verdict on the serving version into status; demotes the version when
        the spec asks. Returns whether it rolled back."""
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
            return await self.demote(ctx, spec, world, verdict)
        return False

    async def demote(self, ctx: Ctx, spec: ModelDeploymentSpec, world: World, verdict: MonitoringVerdict) -> bool:
        """The serving version is rejected like a failed rollout and the previous good version
        serves again through `Recovery.roll_back`."""
        st = ctx.status
        serving, previous = st["servingVersion"], st.get("previousVersion")
        target_ok = bool(previous and st.get("previousModelConfigJson")
                         and previous not in (st.get("rejectedVersions") or []))
        if not target_ok or not spec.rollback.enabled:
            why = "rollback is disabled" if target_ok else "there is no previous good version to return to"
            ctx.condition("Degraded", True, verdict.reason, f"{verdict.message} Not rolled back: {why}.")
            return False
        now, limit = now_iso(), spec.rollback.history_limit
        reject(st, serving, st["servingRevision"], verdict.reason, now, ctx.retry_token, limit)
        add_history(st, serving, "RolledBack", verdict.reason, verdict.message, now, limit)
        template_changed = st.get("previousDeploymentRevision") != st.get("servingDeploymentRevision")
        await self.recovery.roll_back(ctx, spec, world, previous, st["previousModelConfigJson"],
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
