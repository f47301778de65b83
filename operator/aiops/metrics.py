"""The operator's own Prometheus metrics. Names are stable: the Helm chart's ServiceMonitor,
alerts and Grafana dashboard are built on them (see the README's metrics reference)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILE_SECONDS = Histogram(
    "aiops_reconcile_duration_seconds", "Time one reconcile of one object took.", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RECONCILE_ERRORS = Counter("aiops_reconcile_errors_total", "Reconciles that raised and were retried.", ["kind"])
ROLLOUT_PHASE_SECONDS = Histogram(
    "aiops_rollout_phase_duration_seconds", "Duration of each ModelDeployment rollout step.", ["phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
ROLLBACKS_TOTAL = Counter("aiops_rollbacks_total", "ModelDeployment rollbacks, by the cause.", ["reason"])
