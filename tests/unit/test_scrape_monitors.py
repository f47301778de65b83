"""The chart's scrape objects against the pods they must find: the PodMonitors select exactly the
labels and port names the Triton and Milvus builders give their pods, and the scrape jobs they
become (as the Prometheus Operator generates them, aiops.devenv.monitors) pass `promtool check
config`. The end-to-end tier has a real Prometheus scrape the real pods through them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.api.vectorindex import VectorIndexSpec
from aiops.builders.milvus import build_milvus_statefulset
from aiops.builders.triton import build_triton_deployment
from aiops.devenv.monitors import pod_targets, scrape_jobs, with_file_discovery
from aiops.devenv.prometheus import ensure_prometheus, scrape_config
from aiops.devenv.toolchain import ensure_kubectl_helm

CHART = Path(__file__).resolve().parents[2] / "helm" / "aiops-operator"
VALUES = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitors.enabled=true"]


def rendered(*extra: str) -> list[dict]:
    _, helm = ensure_kubectl_helm()
    out = subprocess.run([str(helm), "template", "aiops-operator", str(CHART), "-n", "aiops-system", *VALUES, *extra],
                         capture_output=True, text=True, check=True, timeout=120)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def monitors(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")}


def pod_template(obj: dict) -> tuple[dict[str, str], set[str]]:
    template = obj["spec"]["template"]
    return template["metadata"]["labels"], {p["name"] for c in template["spec"]["containers"]
                                            for p in c.get("ports", [])}


def selects(monitor: dict, labels: dict[str, str], ports: set[str]) -> bool:
    wanted = monitor["spec"]["selector"]["matchLabels"]
    return all(labels.get(k) == v for k, v in wanted.items()) and \
        all(e["port"] in ports for e in monitor["spec"]["podMetricsEndpoints"])


def test_the_pod_monitors_select_the_pods_the_builders_make_and_only_those():
    found = monitors(rendered())
    assert set(found) == {"aiops-operator", "aiops-operator-triton", "aiops-operator-milvus"}
    md = ModelDeploymentSpec.model_validate({"model": {"name": "m", "version": 1},
                                             "repository": {"hostPath": {"path": "/var/lib/aiops/models"}}})
    vi = VectorIndexSpec.model_validate({"milvus": {"managed": {}}, "collection": {"name": "c", "dimension": 4},
                                         "source": {"configMap": {"name": "docs"}}})
    triton = pod_template(build_triton_deployment("llm", md, surge=False, control_secret="s"))
    milvus = pod_template(build_milvus_statefulset("docs", vi))
    assert selects(found["aiops-operator-triton"], *triton) and not selects(found["aiops-operator-triton"], *milvus)
    assert selects(found["aiops-operator-milvus"], *milvus) and not selects(found["aiops-operator-milvus"], *triton)
    # the owner's name, from the pod label the builders set, becomes a series label
    relabel = found["aiops-operator-triton"]["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_aiops_dev_modeldeployment"]
    assert triton[0]["aiops.dev/modeldeployment"] == "llm" and milvus[0]["aiops.dev/vectorindex"] == "docs"
    assert found["aiops-operator-triton"]["spec"]["namespaceSelector"] == {"any": True}


def test_watched_namespaces_limit_the_pod_monitors_to_them():
    found = monitors(rendered("--set", "watchNamespaces={ai,ml}"))
    assert found["aiops-operator-milvus"]["spec"]["namespaceSelector"] == {"matchNames": ["ai", "ml"]}


def test_the_scrape_jobs_they_become_pass_promtool(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    jobs = scrape_jobs(rendered(), str(kubeconfig))
    assert [j["job_name"] for j in jobs] == ["podMonitor/aiops-system/aiops-operator-triton/0",
                                             "podMonitor/aiops-system/aiops-operator-milvus/0",
                                             "serviceMonitor/aiops-system/aiops-operator/0"]
    assert jobs[0]["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": str(kubeconfig)}]
    config = tmp_path / "prometheus.yml"
    # Debian's promtool, like its prometheus, knows no kubernetes_sd_configs: the file_sd form
    config.write_text(scrape_config([], jobs=with_file_discovery(jobs, tmp_path)))
    promtool = Path(ensure_prometheus()).with_name("promtool")
    result = subprocess.run([str(promtool), "check", "config", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_monitor_using_what_the_translation_does_not_cover_is_refused(tmp_path):
    monitor = {"kind": "PodMonitor", "metadata": {"name": "m", "namespace": "n"},
               "spec": {"selector": {"matchExpressions": []}, "podMetricsEndpoints": [{"port": "metrics"}]}}
    with pytest.raises(ValueError, match="matchLabels"):
        scrape_jobs([monitor], "kubeconfig")
    monitor["spec"] = {"selector": {"matchLabels": {}}, "podMetricsEndpoints": [{"port": "m", "tlsConfig": {}}]}
    with pytest.raises(ValueError, match="tlsConfig"):
        scrape_jobs([monitor], "kubeconfig")


def test_prometheus_scrapes_only_the_pods_a_pod_monitor_selects(tmp_path):
    """The real Prometheus applies the translated rules to discovered pods: a Triton-labelled pod
    is scraped on its `metrics` port and labelled with its ModelDeployment; a Milvus pod, a
    second port and a pod of another name are not."""
    import prometheus_client

    from aiops.devenv.prometheus import LocalPrometheus, free_port

    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("nv_inference_count", "served", registry=registry).inc(3)
    port = free_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)

    def pod(name, labels, ports):
        return {"metadata": {"name": name, "namespace": "team", "labels": labels, "uid": name},
                "spec": {"nodeName": "gpu-node", "containers": [{"name": "server", "ports": ports}]},
                "status": {"podIP": "127.0.0.1", "phase": "Running"}}

    triton = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/managed-by": "aiops-operator",
              "aiops.dev/modeldeployment": "llm"}
    pods = [pod("llm-triton-0", triton, [{"name": "http", "containerPort": free_port()},
                                         {"name": "metrics", "containerPort": port}]),
            pod("docs-milvus-0", {**triton, "app.kubernetes.io/name": "milvus"},
                [{"name": "metrics", "containerPort": free_port()}]),
            pod("other", {"app.kubernetes.io/name": "triton"}, [{"name": "metrics", "containerPort": free_port()}])]
    jobs = with_file_discovery([j for j in scrape_jobs(rendered(), "unused") if "triton" in j["job_name"]], tmp_path)
    for job in jobs:  # the chart's 30s, shortened for the test
        job["scrape_interval"] = job["scrape_timeout"] = "1s"
    (tmp_path / "job-0-pod.json").write_text(json.dumps(pod_targets(pods)))
    try:
        with LocalPrometheus([], jobs=jobs) as prom:
            result = prom.query_until("nv_inference_count_total")
            assert result, prom.targets_health()
            (series,) = result
            assert {k: series["metric"][k] for k in ("namespace", "pod", "modeldeployment", "endpoint", "job")} == {
                "namespace": "team", "pod": "llm-triton-0", "modeldeployment": "llm", "endpoint": "metrics",
                "job": "aiops-system/aiops-operator-triton"}
            assert [t["labels"]["pod"] for t in prom.targets_health()] == ["llm-triton-0"]
    finally:
        server.shutdown()
        thread.join(5)
