"""Per-phase deadlines of a rollout (spec.healthCheck.phaseDeadlines): which phase a rollout is in,
how long it has been there, and whether that is too long. Pure: the reconciler passes the clock.

Deploying covers two phases a person tells apart when a rollout hangs: Scheduling (a new pod has
no node: GPUs, taints, selectors) and Starting (scheduled, but Triton does not answer yet: image
pull, crash, slow start). Scheduling is measured from the step's start, Starting from the moment
the last new pod was scheduled.
"""

from __future__ import annotations

import datetime as dt

from aiops.api.modeldeployment import ModelDeploymentSpec


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _scheduled_at(pod: dict) -> dt.datetime | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            return _time(cond.get("lastTransitionTime"))
    return None


def current_phase(rollout: dict, pods: list[dict]) -> tuple[str, dt.datetime | None]:
    """(phase name, when it began) for the rollout's step and its new pods."""
    step, started = rollout["step"], _time(rollout.get("stepStartedAt"))
    if step != "Deploying":
        return {"Validating": "Validation", "WaitingForCapacity": "Capacity", "Loading": "Load",
                "HealthChecking": "HealthCheck"}.get(step, step), started
    times = [_scheduled_at(p) for p in pods]
    if not pods or any(t is None for t in times):
        return "Scheduling", started
    return "Starting", max([started, *times]) if started else max(times)


def _phase_deadline(spec: ModelDeploymentSpec, rollout: dict, pods: list[dict]) -> tuple[str, dt.datetime | None,
                                                                                        int | None]:
    phase, since = current_phase(rollout, pods)
    limits = spec.health_check.phase_deadlines
    deadline = {"Capacity": limits.capacity_seconds, "Scheduling": limits.schedule_seconds,
                "Starting": limits.start_seconds, "Load": limits.load_seconds,
                "HealthCheck": limits.health_check_seconds}.get(phase)
    return phase, since, deadline  # Validation has its own timeout (validation.timeoutSeconds)


def stalled(spec: ModelDeploymentSpec, rollout: dict, pods: list[dict], now: dt.datetime) -> str | None:
    """A message naming the phase that passed its deadline, or None."""
    phase, since, deadline = _phase_deadline(spec, rollout, pods)
    if deadline is None or since is None:
        return None
    age = (now - since).total_seconds()
    if age <= deadline:
        return None
    return (f"version {rollout['version']} stalled in phase {phase} for {age:.0f}s "
            f"(deadline {deadline}s, spec.healthCheck.phaseDeadlines)")


def seconds_left(spec: ModelDeploymentSpec, rollout: dict, pods: list[dict], now: dt.datetime) -> float:
    """Seconds until the first deadline that applies now (the phase's or the whole rollout's) passes."""
    left = spec.health_check.progress_deadline_seconds - (now - _time(rollout["startedAt"])).total_seconds()
    _, since, deadline = _phase_deadline(spec, rollout, pods)
    if deadline is not None and since is not None:
        left = min(left, deadline - (now - since).total_seconds())
    return max(0.0, left)
