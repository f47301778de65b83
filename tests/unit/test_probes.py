"""Probe specs and thresholds (pure) and probes performed against real local servers."""

import http.server
import socket
import threading

import pytest
from kubernetes import client

from aiops.devenv.probes import ProbeSpec, ProbeTracker, perform


def http_probe(**kw):
    return client.V1Probe(http_get=client.V1HTTPGetAction(path="/ready", port="http"), **kw)


def test_defaults_are_kubernetes_defaults_and_named_ports_resolve():
    spec = ProbeSpec.from_probe(http_probe(), {"http": 8000})
    assert (spec.action, spec.port, spec.path) == ("http", 8000, "/ready")
    assert (spec.initial_delay, spec.period, spec.timeout) == (0, 10, 1)
    assert (spec.success_threshold, spec.failure_threshold) == (1, 3)


def test_time_scale_shortens_delays_and_periods_but_not_timeouts():
    spec = ProbeSpec.from_probe(http_probe(initial_delay_seconds=10, period_seconds=4, timeout_seconds=2),
                                {"http": 1}, time_scale=0.25)
    assert (spec.initial_delay, spec.period, spec.timeout) == (2.5, 1.0, 2.0)


def test_undeclared_named_port_is_an_error():
    with pytest.raises(ValueError, match="does not declare"):
        ProbeSpec.from_probe(http_probe(), {"grpc": 8001})


def test_exec_and_tcp_probes():
    assert ProbeSpec.from_probe(client.V1Probe(_exec=client.V1ExecAction(command=["true"])), {}).command == ("true",)
    assert ProbeSpec.from_probe(client.V1Probe(tcp_socket=client.V1TCPSocketAction(port=81)), {}).port == 81
    assert ProbeSpec.from_probe(None, {}) is None


def test_readiness_flips_on_first_success_and_back_after_failure_threshold():
    t = ProbeTracker(ProbeSpec("http", period=1, failure_threshold=2), started=100.0, initial=False)
    assert t.due(100.0) and not t.result
    assert not t.record(False, 100.0) and not t.result
    assert not t.due(100.5) and t.due(101.0)
    assert t.record(True, 101.0) and t.result
    assert not t.record(False, 102.0) and t.result  # one failure is not enough
    assert t.record(False, 103.0) and not t.result


def test_liveness_is_exhausted_after_consecutive_failures_only():
    t = ProbeTracker(ProbeSpec("exec", period=1, failure_threshold=3, initial_delay=5), 0.0, initial=True)
    assert not t.due(4.9) and t.due(5.0)
    for now in (5, 6):
        t.record(False, now)
    t.record(True, 7)
    assert not t.exhausted
    for now in (8, 9, 10):
        t.record(False, now)
    assert t.exhausted and not t.result


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_http_probe_against_a_real_server(server):
    assert perform(ProbeSpec("http", port=server, path="/ok"), "127.0.0.1") == (True, "")
    ok, why = perform(ProbeSpec("http", port=server, path="/bad"), "127.0.0.1")
    assert not ok and "503" in why


def test_tcp_probe_against_open_and_closed_ports(server):
    assert perform(ProbeSpec("tcp", port=server), "127.0.0.1")[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    ok, why = perform(ProbeSpec("tcp", port=closed), "127.0.0.1")
    assert not ok and "Refused" in why


def test_exec_probe_runs_locally_with_paths_translated(tmp_path):
    (tmp_path / "healthy").write_text("")
    spec = ProbeSpec("exec", command=("test", "-e", "/state/healthy"))
    assert perform(spec, "127.0.0.1", mounts={"/state": str(tmp_path)})[0]
    (tmp_path / "healthy").unlink()
    ok, why = perform(spec, "127.0.0.1", mounts={"/state": str(tmp_path)})
    assert not ok and why.startswith("exit 1")
