"""Cluster DNS on the simulated node: a Service over a real http.server pod, reached by its DNS
name from a process in another pod (resolver table kept by the agent) and from the test process
(`servicedns.install`), with the service port mapped to the target port."""

from __future__ import annotations

import json
import urllib.request

import pytest
from kubernetes import client

from aiops.devenv import servicedns, servicedns_table


def ready(kube, namespace, name):
    p = kube.core.read_namespaced_pod(name, namespace)
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) and p


@pytest.fixture
def web(kube, namespace, wait_for):
    """`web`: python's http.server on the pod IP's 8080 serving a ConfigMap; Service port 80."""
    kube.core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="site"), data={"hello.txt": "hello from web"}))
    container = client.V1Container(
        name="web", image="python:3.11",
        command=["python3", "-m", "http.server", "8080", "--bind", "$(POD_IP)", "--directory", "/srv"],
        env=[client.V1EnvVar(name="POD_IP", value_from=client.V1EnvVarSource(
            field_ref=client.V1ObjectFieldSelector(field_path="status.podIP")))],
        ports=[client.V1ContainerPort(name="http", container_port=8080)],
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/hello.txt", port="http"),
                                       period_seconds=1),
        volume_mounts=[client.V1VolumeMount(name="site", mount_path="/srv")])
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=2, volumes=[
            client.V1Volume(name="site", config_map=client.V1ConfigMapVolumeSource(name="site"))])))
    kube.core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[
            client.V1ServicePort(name="http", port=80, target_port="http")])))
    wait_for(lambda: ready(kube, namespace, "web"), what="the web pod Ready")

    def endpoint():  # EndpointSlices: Endpoints refuse loopback IPs (see servicedns)
        slices = servicedns_table.endpoint_slice_lister(kube.api_client)()["items"]
        return any(ep.get("conditions", {}).get("ready") for s in slices
                   if s["metadata"]["namespace"] == namespace for ep in s.get("endpoints") or [])
    wait_for(endpoint, what="the web Service's ready endpoint")
    wait_for(lambda: in_dns_table(kube, namespace, "web"), what="web in the node's DNS table")
    return "web"


def in_dns_table(kube, namespace: str, service: str) -> bool:
    try:
        table = json.loads(kube.agent.dns_file.read_text())
    except (OSError, ValueError):
        return False
    return bool(table["services"].get(f"{namespace}/{service}", {}).get("endpoints"))


def test_a_pod_reaches_a_service_by_its_dns_names(kube, namespace, web, wait_for):
    names = [f"web.{namespace}.svc.cluster.local", f"web.{namespace}.svc", f"web.{namespace}", "web"]
    script = ("import sys, urllib.request\n"
              "for name in sys.argv[1:]:\n"
              "    print(name, urllib.request.urlopen(f'http://{name}:80/hello.txt', timeout=5).read().decode())\n")
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="client"),
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
            name="c", image="python:3.11", command=["python3", "-c", script, *names])])))
    phase = wait_for(lambda: kube.core.read_namespaced_pod("client", namespace).status.phase
                     in ("Succeeded", "Failed") and kube.core.read_namespaced_pod("client", namespace).status.phase,
                     what="the client pod finished")
    log = kube.agent.container_log(namespace, "client")
    assert phase == "Succeeded", log
    for name in names:
        assert f"{name} hello from web" in log


def test_the_test_process_resolves_services_through_the_api(kube, namespace, web):
    servicedns.install(kube.api_client)
    try:
        url = f"http://web.{namespace}.svc.cluster.local:80/hello.txt"
        assert urllib.request.urlopen(url, timeout=5).read() == b"hello from web"
        # The ClusterIP, unroutable here, leads to the same pod.
        cluster_ip = kube.core.read_namespaced_service("web", namespace).spec.cluster_ip
        assert urllib.request.urlopen(f"http://{cluster_ip}/hello.txt", timeout=5).read() == b"hello from web"
    finally:
        servicedns.uninstall()
