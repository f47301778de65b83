"""Cluster DNS emulation: the table built from Services/EndpointSlices, name resolution with the pod's
search path, port mapping, and the patched resolver reaching a real local server by name."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from kubernetes import client

from aiops.devenv import servicedns
from aiops.devenv.servicedns import resolve, rewrite_grpc_target, split_service_name
from aiops.devenv.servicedns_table import build_table


def service(name, ns="ns", ports=(("http", 80),), cluster_ip="10.96.0.10", external=None):
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, namespace=ns),
        spec=client.V1ServiceSpec(cluster_ip=cluster_ip, external_name=external,
                                  ports=[client.V1ServicePort(name=n, port=p) for n, p in ports]))


def endpoints(name, addresses, ports, ns="ns", not_ready=()):
    """An EndpointSlice as the API returns it (a dict: 1.20 serves v1beta1, later v1)."""
    ready = [{"addresses": [ip], "conditions": {"ready": True}, **({"hostname": h} if h else {})}
             for ip, h in addresses]
    unready = [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready]
    return {"metadata": {"name": f"{name}-x1", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": ready + unready,
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}


TABLE = build_table(
    [service("web", ports=(("http", 80), ("metrics", 9000))), service("empty"),
     service("milvus", ports=(("grpc", 19530),), cluster_ip="None"),
     service("ext", cluster_ip="", external=("db.example.org"))],
    [endpoints("web", [("127.100.1.5", None)], (("http", 8080), ("metrics", 9100)), not_ready=["127.100.1.9"]),
     endpoints("empty", [], (("http", 80),), not_ready=["127.100.1.7"]),
     endpoints("milvus", [("127.100.1.6", "milvus-0"), ("127.100.1.8", "milvus-1")], (("grpc", 19530),))])


@pytest.mark.parametrize(("name", "expected"), [
    ("web.ns.svc.cluster.local", ("ns", "web", "")),
    ("web.ns.svc.cluster.local.", ("ns", "web", "")),
    ("web.ns.svc", ("ns", "web", "")),
    ("milvus-0.milvus.ns.svc.cluster.local", ("ns", "milvus", "milvus-0")),
    ("web.ns", ("ns", "web", "")),
    ("web", ("home", "web", "")),
    ("localhost", None),
    ("a.b.c.example.org", None),
])
def test_names_expand_like_a_pods_search_path(name, expected):
    assert split_service_name(name, "home") == expected


def test_only_ready_endpoints_with_target_ports():
    assert TABLE["services"]["ns/web"]["endpoints"] == [
        {"ip": "127.100.1.5", "hostname": "", "ports": {"80": 8080, "9000": 9100}}]
    assert resolve(TABLE, "web.ns.svc.cluster.local", 80) == ("127.100.1.5", 8080)
    assert resolve(TABLE, "web.ns.svc", "9000") == ("127.100.1.5", "9100")
    assert resolve(TABLE, "web.ns", 1234) == ("127.100.1.5", 1234)  # not a service port: unchanged
    assert resolve(TABLE, "web", 80, namespace="ns") == ("127.100.1.5", 8080)
    assert resolve(TABLE, "10.96.0.10", 80) == ("127.100.1.5", 8080)  # the ClusterIP itself
    assert resolve(TABLE, "nothere.ns.svc", 80) is None
    assert resolve(TABLE, "example.org", 80) is None


def test_headless_service_names_its_stateful_pods():
    assert resolve(TABLE, "milvus-1.milvus.ns.svc.cluster.local", 19530) == ("127.100.1.8", 19530)
    first = resolve(TABLE, "milvus.ns.svc", 19530, choose=lambda c: c[0])
    assert first == ("127.100.1.6", 19530)


def test_service_without_ready_endpoints_fails_to_resolve():
    with pytest.raises(socket.gaierror, match="no ready endpoints"):
        resolve(TABLE, "empty.ns.svc", 80)


def test_external_name_resolves_to_the_external_host():
    assert resolve(TABLE, "ext.ns.svc.cluster.local", 5432) == ("db.example.org", 5432)


def test_grpc_targets_are_rewritten():
    def look(host, port):
        return resolve(TABLE, host, port, choose=lambda c: c[0])

    assert rewrite_grpc_target("milvus.ns.svc:19530", look) == "127.100.1.6:19530"
    assert rewrite_grpc_target("dns:///web.ns.svc.cluster.local:80", look) == "127.100.1.5:8080"
    assert rewrite_grpc_target("example.org:443", look) == "example.org:443"
    assert rewrite_grpc_target("unix:/tmp/sock", look) == "unix:/tmp/sock"


@pytest.fixture
def http_server():
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the pod")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def table_file(tmp_path, port):
    path = tmp_path / "services.json"
    path.write_text(json.dumps(build_table([service("hello", ports=(("http", 80),))],
                                           [endpoints("hello", [("127.0.0.1", None)], (("http", port),))])))
    return path


def test_a_launched_python_process_reaches_a_service_by_name(tmp_path, http_server):
    """What a pod's process gets: sitecustomize on PYTHONPATH, the table file in its env."""
    env = servicedns.pod_env(table_file(tmp_path, http_server), "ns")
    code = ("import urllib.request; print(urllib.request.urlopen("
            "'http://hello.ns.svc.cluster.local:80/', timeout=5).read().decode()); "
            "print(urllib.request.urlopen('http://hello/', timeout=5).read().decode())")
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello from the pod"] * 2


def test_install_in_this_process_and_uninstall(tmp_path, http_server):
    servicedns._install(servicedns.FileResolver(table_file(tmp_path, http_server)))
    try:
        body = urllib.request.urlopen("http://hello.ns.svc:80/", timeout=5).read()
        assert body == b"hello from the pod"
        assert socket.gethostbyname("hello.ns.svc.cluster.local") == "127.0.0.1"
    finally:
        servicedns.uninstall()
    with pytest.raises(OSError):
        socket.getaddrinfo("hello.ns.svc.cluster.local", 80)
