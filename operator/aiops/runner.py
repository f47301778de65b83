"""Runs the operator process: Prometheus metrics, the health endpoint, and Kopf's reactor."""

from __future__ import annotations

import logging

import kopf
import prometheus_client

log = logging.getLogger(__name__)


def run_operator(namespaces: list[str] | None = None, all_namespaces: bool = True,
                 liveness: str | None = "http://0.0.0.0:8080/healthz", metrics_port: int = 9090) -> None:
    """Blocks until SIGINT/SIGTERM. One active instance by design (standalone, no Kopf peering);
    replicas > 1 need the Lease-based leader election of the Helm chart."""
    import aiops.controllers  # noqa: F401  (registers the handlers)

    if metrics_port:
        prometheus_client.start_http_server(metrics_port)
        log.info("metrics on :%d/metrics", metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces and not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=liveness,
    )
