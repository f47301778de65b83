"""What the monitor hands the reconciler: one verdict per ModelDeployment, for one version.

The monitor never writes the ModelDeployment. It publishes verdicts here; when a verdict changes
in a way the object should show (degraded or not, the reason, a new version), the ModelDeployment
is put on the reconcile queue, and the reconciler writes status.monitoring, status.metrics, the
Degraded condition and the Event, and rolls back when asked. Snapshot-only changes are picked up
by the reconciler's periodic steady-state pass, at most every STATUS_REFRESH seconds, so
monitoring 200 objects does not mean 200 status writes per interval.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

STATUS_REFRESH = 60.0


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class MonitoringVerdict:
    version: int
    degraded: bool
    reason: str
    message: str
    rollback_requested: bool = False
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    window_seconds: int | None = None
    breaching_windows: int = 0
    clean_windows: int = 0
    evaluated_at: float = 0.0
    snapshot: dict = field(default_factory=dict)  # status.metrics (MetricsSnapshot, camelCase)
    baseline: dict | None = None  # status.baseline, once captured

    def status_body(self) -> dict:
        """status.monitoring (MonitoringStatus, camelCase); unknown values are left out."""
        body = {"version": self.version, "degraded": self.degraded, "reason": self.reason,
                "message": self.message, "metric": self.metric,
                "value": None if self.value is None else round(self.value, 5),
                "threshold": None if self.threshold is None else round(self.threshold, 5),
                "windowSeconds": self.window_seconds, "breachingWindows": self.breaching_windows,
                "cleanWindows": self.clean_windows, "rollbackRequested": self.rollback_requested,
                "lastEvaluated": iso(self.evaluated_at) if self.evaluated_at else None}
        return {k: v for k, v in body.items() if v is not None}

    def state(self) -> tuple:
        """What, when it changes, the object must show at once (and an Event announces)."""
        return self.version, self.degraded, self.reason, self.rollback_requested


class VerdictRegistry:
    """Latest verdict per ModelDeployment key, held in memo. `on_change(key)` runs when a verdict's
    state changes (the operator passes the work queue's `add`)."""

    def __init__(self, on_change: Callable[[Hashable], None] | None = None):
        self.on_change = on_change
        self._latest: dict[Hashable, MonitoringVerdict] = {}

    def get(self, key: Hashable) -> MonitoringVerdict | None:
        return self._latest.get(key)

    def publish(self, key: Hashable, verdict: MonitoringVerdict) -> bool:
        """Stores `verdict` if its state changed or the stored one is stale; returns whether the
        state changed (and the object was enqueued)."""
        old = self._latest.get(key)
        changed = old is None or old.state() != verdict.state()
        if changed or verdict.baseline != old.baseline or \
                verdict.evaluated_at - old.evaluated_at >= STATUS_REFRESH:
            self._latest[key] = verdict
        if changed and self.on_change is not None:
            self.on_change(key)
        return changed

    def forget(self, key: Hashable) -> None:
        self._latest.pop(key, None)

    def __len__(self) -> int:
        return len(self._latest)
