"""What every part of a ModelDeployment's reconcile shares: the pass object (`Ctx`, the shared
`Pass` with the rollout's step clock), the failure that ends a rollout, and how often a waiting
rollout looks again."""

from __future__ import annotations

import datetime as dt

from aiops import metrics
from aiops.conditions import now_iso
from aiops.passes import RETRY_ANNOTATION, Pass

__all__ = ["RETRY_ANNOTATION", "Ctx", "RolloutFailed", "age", "poll"]
ROLLOUT_POLL = 1.0  # seconds between looks while a rollout step waits on something
CAPACITY_POLL = 15.0  # seconds between capacity checks while waiting for room (node and pod events come sooner)
PODS_SAFETY_LOOK = 30.0  # the longest a rollout waiting on pod events goes without a look


def age(timestamp: str | None) -> float:
    """Seconds since an RFC 3339 timestamp of status; 0 for none."""
    if not timestamp:
        return 0.0
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def poll(rollout: dict) -> float:
    """Look again soon while a step is young, less often the longer it waits (pod and Job events
    wake the reconcile anyway): a hundred rollouts waiting on slow pulls must not flood the API."""
    return min(5.0, ROLLOUT_POLL / 2 + age(rollout.get("stepStartedAt")) / 10)


class RolloutFailed(Exception):
    """Ends the rollout in progress: the revision is rejected and the last good version serves."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


class Ctx(Pass):
    """A pass over one ModelDeployment (`md` is its body), with the rollout's step clock."""

    control_secret: str | None = None  # the Secret of its model-control key (ModelControlKeys.secret_name)

    @property
    def md(self) -> dict:
        return self.obj

    def step(self, step: str, phase: str) -> None:
        """The rollout moves to `step`: the one it leaves is timed into status and a histogram."""
        rollout = self.status["rollout"]
        took = age(rollout["stepStartedAt"])
        self.status.setdefault("phaseDurationsSeconds", {})[rollout["step"]] = round(took, 3)
        metrics.ROLLOUT_PHASE_SECONDS.labels(phase=rollout["step"]).observe(took)
        rollout["step"], rollout["stepStartedAt"] = step, now_iso()
        self.status["phase"] = phase
