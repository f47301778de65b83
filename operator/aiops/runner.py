"""Runs the operator process: Prometheus metrics, the health endpoint, and Kopf's reactor."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import kopf
import prometheus_client

from aiops import metrics

if TYPE_CHECKING:
    from aiops.kube.lease import LeaseSettings

log = logging.getLogger(__name__)


def run_operator(namespaces: list[str] | None = None, all_namespaces: bool = True,
                 liveness: str | None = "http://0.0.0.0:8080/healthz", metrics_port: int = 9090,
                 leader_election: LeaseSettings | None = None) -> int:
    """Blocks until SIGINT/SIGTERM; returns the exit code. Standalone (no Kopf peering): one
    active instance, or with `leader_election` only the holder of the Lease (aiops.kube.lease)."""
    import aiops.controllers  # noqa: F401  (registers the handlers)

    if metrics_port:
        prometheus_client.start_http_server(metrics_port)
        log.info("metrics on :%d/metrics", metrics_port)

    def operate(stop_flag: threading.Event | None = None) -> None:
        kopf.run(
            standalone=True,
            clusterwide=all_namespaces and not namespaces,
            namespaces=namespaces or [],
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            # The informers of child kinds (aiops.controllers.watches) serve the same namespaces.
            memo=kopf.Memo(namespaces=list(namespaces or [])),
        )

    if leader_election is None:
        metrics.LEADER.set(1)
        operate()
        return 0
    from aiops.kube.fence import FENCE
    from aiops.kube.lease import exit_at_once, lease_api, run_as_leader

    metrics.LEADER.set(0)
    return run_as_leader(leader_election, operate, lease_api(), liveness, on_lost=exit_at_once, fence=FENCE,
                         leading=lambda held: metrics.LEADER.set(1 if held else 0))
