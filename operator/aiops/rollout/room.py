"""Room for a ModelDeployment's Triton pods on the usable nodes: whether a rollout may create
them now, surge one beside the old ones, replace them in place, or must wait (and why, with the
numbers)."""

from __future__ import annotations

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.triton import build_triton_deployment
from aiops.capacity import CAPACITY_REASONS, Capacity, capacity, pod_requests
from aiops.rollout.context import CAPACITY_POLL, Ctx
from aiops.rollout.world import RolloutClient, World


class Room:
    def __init__(self, kube: RolloutClient):
        self.kube = kube

    async def for_spec(self, spec: ModelDeploymentSpec, own_pods: list[dict] = ()) -> Capacity:
        """Room for Triton pods of this spec (their GPUs, memory and CPU); `own_pods` count as
        free (the pods a rollout replaces in place)."""
        template = build_triton_deployment("capacity-check", spec, False, "capacity-check")["spec"]["template"]
        usages, nodes = await self.kube.pod_usages_and_nodes()
        tolerations = [{"key": spec.resources.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}]
        return capacity(nodes, usages, pod_requests(template), spec.node_selector, tolerations,
                        [p["metadata"]["uid"] for p in own_pods])

    async def for_deployment(self, spec: ModelDeploymentSpec, world: World, current: dict | None,
                             template_changes: bool) -> tuple[bool, bool, str, str]:
        """(fits, surge possible, reason, message). A new Deployment needs all its pods' room; a
        template change needs one extra pod's to surge, else replaces pods one at a time in place."""
        cap = await self.for_spec(spec)
        if current is None:
            return cap.fits(spec.replicas), False, cap.reason(spec.replicas), cap.describe(spec.replicas)
        extra = max(0, spec.replicas - len([p for p in world.pods if not p["metadata"].get("deletionTimestamp")]))
        if template_changes and cap.fits(extra + 1):
            return True, True, "", cap.describe(extra + 1) + "; surging one new pod beside the old ones"
        # Replacing in place frees each old pod's resources before its successor is scheduled.
        freed = await self.for_spec(spec, world.pods)
        return freed.fits(spec.replicas), False, freed.reason(spec.replicas), freed.describe(spec.replicas)


def fits_no_node(ctx: Ctx, cap: Capacity) -> float | None:
    """Before anything of a rollout is created: a Triton pod that no usable node could hold even
    empty (more memory or GPUs than any node's allocatable) waits here, with the numbers, until a
    node that can hold it joins or changes (node events wake us). Nothing is created, not even the
    validation Job. Returns the delay to look again, or None when some node can hold it."""
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


def starts_early(ctx: Ctx, spec: ModelDeploymentSpec, room: Capacity) -> bool:
    """Whether this rollout creates the Triton Deployment beside its validation Job: a first
    version (nothing serves, so its Deployment is new), not after a wait for the model, and only
    when its GPUs are free now (else the pods would sit Pending)."""
    rollout = ctx.status["rollout"]
    if not spec.validation.start_server_early or ctx.status.get("servingVersion") or rollout.get("modelWaits"):
        return False
    return room.fits(spec.replicas)
