"""The operator's /metrics, end to end: a real Prometheus server (Debian's package, installed by
aiops.devenv.prometheus when missing) scrapes the exposition that prometheus_client serves on a
loopback port, and answers PromQL for the per-ModelDeployment gauges."""

from __future__ import annotations

import prometheus_client
import pytest

from aiops.devenv.prometheus import LocalPrometheus, free_port
from aiops.monitoring.monitor import _gauges
from aiops.monitoring.window import WindowStats

pytestmark = pytest.mark.timeout(180)


def test_prometheus_scrapes_the_operator_and_answers_promql_for_a_gauge():
    port = free_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1")
    key = ("prom-test", "adder")
    try:
        _gauges(key, 3, WindowStats(300, 0, requests=200, failures=5, p50_ms=4.0, p95_ms=12.5, p99_ms=20.0,
                                    latency_source="counters", passed=9, scored=10), degraded=True)
        with LocalPrometheus([f"127.0.0.1:{port}"]) as prom:
            result = prom.query_until('aiops_modeldeployment_error_rate_ratio{namespace="prom-test",name="adder"}')
            assert result, prom.targets_health()
            assert result[0]["metric"]["version"] == "3" and float(result[0]["value"][1]) == 0.025
            p95 = prom.query('aiops_modeldeployment_inference_time_seconds{name="adder",quantile="0.95"}')
            assert float(p95[0]["value"][1]) == pytest.approx(0.0125)
            assert prom.query('aiops_modeldeployment_degraded{name="adder"} == 1')
            # GPU figures are unknown on this machine: no series at all, never a 0
            assert prom.query('aiops_modeldeployment_gpu_utilization_ratio{name="adder"}') == []
            assert all(t["health"] == "up" for t in prom.targets_health())
    finally:
        _gauges(key, 3, None)
        server.shutdown()
        thread.join(5)
