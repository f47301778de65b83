"""The Helm chart and the plain manifests without a cluster: `helm lint`, `helm template` with the
default and with all-features values (every document parsed and checked), values.schema.json
refusing bad values with a clear message, the CRDs carried from the one `crds/` directory, and
`kubectl kustomize deploy/` rendering the same objects as the chart's defaults.

deploy/aiops-operator.yaml is generated from the chart; after changing the chart, regenerate it:
    AIOPS_REGENERATE_DEPLOY=1 .venv/bin/python -m pytest tests/unit/test_chart_static.py -k deploy
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from aiops import metrics
from aiops.api.common import DEFAULT_SHARED_GPU_RESOURCE
from aiops.devenv.deviceplugin_layout import GpuLayout
from aiops.devenv.toolchain import ensure_kubectl_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "aiops-operator"
DEPLOY = ROOT / "deploy"
NAMESPACE = "aiops-system"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

ALL_FEATURES = {
    "replicaCount": 3,
    "image": {"repository": "registry.example/aiops", "digest": "sha256:" + "a" * 64},
    "workerImage": {"repository": "registry.example/aiops-cuda", "tag": "0.1.0-cu128"},
    "watchNamespaces": ["ai", "ml-team"],
    "leaderElection": {"leaseName": "aiops-leader", "leaseDurationSeconds": 20},
    "logLevel": "DEBUG",
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "podAnnotations": {"example.com/team": "platform"},
    "serviceAccount": {"name": "aiops", "annotations": {"example.com/owner": "platform"}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
                "podMonitors": {"enabled": True, "labels": {"release": "prometheus"}}},
    "networkPolicies": {"enabled": True, "from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]},
    "grafanaDashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "AI platform"}},
    "gpuLayout": {"devicePlugin": {"namespace": "nvidia-device-plugin", "runtimeClassName": ""},
                  "instances": [{"name": "all-shared", "devices": "all", "replicas": 4}]},
}


@pytest.fixture(scope="module")
def tools() -> tuple[Path, Path]:
    return ensure_kubectl_helm()


def helm(tools, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(tools[1]), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stderr}")
    return result


def template(tools, tmp_path: Path | None = None, values: dict | None = None, *extra: str) -> list[dict]:
    args = ["template", "aiops-operator", str(CHART), "-n", NAMESPACE, *extra]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    return [d for d in yaml.safe_load_all(helm(tools, *args).stdout) if d]


def index(docs: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def exposed_metric_names() -> set[str]:
    """Every series name the operator's /metrics can expose, from aiops.metrics as it is now."""
    names = set()
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        name, kind = obj._name, obj._type
        if kind == "counter":
            names |= {f"{name}_total", f"{name}_created"}
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
        elif kind == "summary":
            names |= {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
        elif kind == "info":
            names.add(f"{name}_info")
        else:
            names.add(name)
    return names


def aiops_names(text: str) -> set[str]:
    return set(re.findall(r"\baiops_[a-z_]+\b", text))


# ---- lint and defaults ---------------------------------------------------------------------------

def test_helm_lint_strict(tools, tmp_path):
    helm(tools, "lint", "--strict", str(CHART))
    (tmp_path / "all.yaml").write_text(yaml.safe_dump(ALL_FEATURES))
    helm(tools, "lint", "--strict", str(CHART), "-f", str(tmp_path / "all.yaml"))


def test_defaults_render_the_operator_locked_down(tools):
    docs = index(template(tools))
    assert {k[0] for k in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                                    "ConfigMap", "DaemonSet", "Role", "RoleBinding"}
    assert not any(k[0] in ("ServiceMonitor", "PrometheusRule") for k in docs)
    # The one Role: the operator's own key Secret (no leader-election Lease with one replica).
    assert [k for k in docs if k[0] == "Role"] == [("Role", NAMESPACE, "aiops-operator-key")]
    dep = docs[("Deployment", NAMESPACE, "aiops-operator")]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "aiops-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/aiops-operator/aiops-operator:0.1.0"
    assert c["args"] == ["run", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    env = {e["name"]: e for e in c["env"]}
    assert env["AIOPS_WORKER_IMAGE"]["value"] == "ghcr.io/aiops-operator/aiops-worker:0.1.0", \
        "the workers run the Dockerfile's worker target, tagged like the operator"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["AIOPS_ALLOWED_HOST_PATHS"]["value"] == "/var/lib/aiops"
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    svc = docs[("Service", NAMESPACE, "aiops-operator-metrics")]
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]


def test_cluster_roles_have_no_wildcards_and_no_write_on_nodes(tools):
    docs = template(tools)
    for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            if "nodes" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}
            if "secrets" in rule["resources"]:
                assert "list" not in rule["verbs"] and "watch" not in rule["verbs"], "secrets are never listed"
    # Secrets are read in two places only: the operator's own key, by name, in the release
    # namespace; and the namespaces that bind the milvus-credentials ClusterRole themselves.
    readers = [(d["kind"], d["metadata"]["name"], rule) for d in docs if d["kind"] in ("ClusterRole", "Role")
               for rule in d["rules"] if "secrets" in rule["resources"] and "get" in rule["verbs"]]
    assert sorted((kind, name) for kind, name, _ in readers) == [
        ("ClusterRole", "aiops-operator-milvus-credentials"), ("Role", "aiops-operator-key")]
    assert next(rule for kind, _, rule in readers if kind == "Role")["resourceNames"] == ["aiops-operator-key"]
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")}
    assert "aiops-operator-milvus-credentials" not in bound, "no namespace's Secrets are readable by default"


def test_the_gpu_layout_is_two_plugin_instances_that_advertise_the_seed_split(tools):
    """GPUs 0-1 whole, GPU 2 in two replicas, as NVIDIA's plugin reads the rendered DaemonSets
    and config files; the dev environment's node advertises the same layout, from the same values."""
    docs = template(tools)
    layout = GpuLayout.from_rendered(docs)
    assert layout == GpuLayout.seed() == GpuLayout.from_values(
        yaml.safe_load((CHART / "values.yaml").read_text())["gpuLayout"])
    advertised = {i.advertised_resource: len(layout.devices(i)) for i in layout.instances}
    assert advertised == {"nvidia.com/gpu": 2, DEFAULT_SHARED_GPU_RESOURCE: 2}
    by_name = index(docs)
    for instance, visible in (("whole", "0,1"), ("shared", "2")):
        ds = by_name[("DaemonSet", NAMESPACE, f"aiops-operator-gpu-{instance}")]
        pod = ds["spec"]["template"]["spec"]
        (plugin,) = pod["containers"]
        assert {e["name"]: e["value"] for e in plugin["env"]}["NVIDIA_VISIBLE_DEVICES"] == visible
        # Unprivileged, or the runtime would show it every GPU whatever NVIDIA_VISIBLE_DEVICES says.
        assert plugin["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert not plugin["securityContext"].get("privileged") and pod["automountServiceAccountToken"] is False
        assert pod["runtimeClassName"] == "nvidia"
        # Never selected by the operator's Deployment or metrics Service.
        assert ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "nvidia-device-plugin"


def test_two_instances_of_one_kind_are_refused(tools, tmp_path):
    values = {"gpuLayout": {"instances": [{"name": "a", "devices": "0", "replicas": 1},
                                          {"name": "b", "devices": "1", "replicas": 1}]}}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm(tools, "template", "x", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0 and "two instances advertise nvidia.com/gpu" in result.stderr


def test_dashboard_is_valid_json_on_existing_metrics(tools):
    cm = index(template(tools))[("ConfigMap", NAMESPACE, "aiops-operator-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["aiops-operator.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set().union(*map(aiops_names, exprs))
    assert used and used <= exposed_metric_names(), f"not exposed by aiops.metrics: {used - exposed_metric_names()}"
    # Every metric the operator exposes has a panel.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in exposed_metric_names()}
    shown = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in used}
    assert families <= shown | {re.sub(r"_total$", "", f) for f in shown}, families - shown
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# ---- all features --------------------------------------------------------------------------------

def test_all_features(tools, tmp_path):
    docs = index(template(tools, tmp_path, ALL_FEATURES))
    dep = docs[("Deployment", NAMESPACE, "aiops-operator")]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.example/aiops@sha256:" + "a" * 64
    worker = {e["name"]: e.get("value") for e in c["env"]}["AIOPS_WORKER_IMAGE"]
    assert worker == "registry.example/aiops-cuda:0.1.0-cu128"
    assert c["args"][3:] == ["--namespace=ai", "--namespace=ml-team", "--leader-elect", "--lease-name=aiops-leader",
                             "--lease-duration=20"]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # One namespace per Role; cluster-wide only what has to be.
    for ns in ("ai", "ml-team"):
        assert docs[("Role", ns, "aiops-operator")]["rules"]
        assert docs[("RoleBinding", ns, "aiops-operator")]["subjects"] == [
            {"kind": "ServiceAccount", "name": "aiops", "namespace": NAMESPACE}]
    assert ("ClusterRole", "", "aiops-operator") not in docs
    cluster = docs[("ClusterRole", "", "aiops-operator-cluster")]
    assert {r for rule in cluster["rules"] for r in rule["resources"]} == {"nodes", "pods",
                                                                             "customresourcedefinitions"}
    assert docs[("Role", NAMESPACE, "aiops-operator-leader-election")]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]

    monitor = docs[("ServiceMonitor", NAMESPACE, "aiops-operator")]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # the ModelDeployments' namespace label
    for server in ("triton", "milvus"):
        pod_monitor = docs[("PodMonitor", NAMESPACE, f"aiops-operator-{server}")]
        assert pod_monitor["metadata"]["labels"]["release"] == "prometheus"
        assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["ai", "ml-team"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (env["AIOPS_NETWORK_POLICIES"], json.loads(env["AIOPS_NETWORK_POLICY_PEERS"])) == (
        "true", [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])
    rule = docs[("PrometheusRule", NAMESPACE, "aiops-operator")]
    alerts = rule["spec"]["groups"][0]["rules"]
    assert {a["alert"] for a in alerts} == {"AiopsOperatorDown", "AiopsReconcileErrors", "AiopsReconcileSlow",
                                           "AiopsModelDeploymentDegraded", "AiopsVectorIndexRecallLow",
                                           "AiopsModelRolledBack"}
    exprs = " ".join(a["expr"] for a in alerts)
    assert aiops_names(exprs) <= exposed_metric_names(), aiops_names(exprs) - exposed_metric_names()
    assert 'job="aiops-operator-metrics"' in exprs
    assert all("{{ $labels" in a["annotations"]["summary"] or a["alert"] == "AiopsOperatorDown" for a in alerts)

    assert ("ConfigMap", "monitoring", "aiops-operator-dashboard") in docs
    plugin = docs[("DaemonSet", "nvidia-device-plugin", "aiops-operator-gpu-all-shared")]["spec"]["template"]["spec"]
    assert "runtimeClassName" not in plugin
    config = yaml.safe_load(docs[("ConfigMap", "nvidia-device-plugin", "aiops-operator-gpu-all-shared")]["data"]
                            ["config.yaml"])
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    layout = GpuLayout.from_rendered(list(docs.values()))
    assert [(i.advertised_resource, len(layout.devices(i))) for i in layout.instances] == [
        (DEFAULT_SHARED_GPU_RESOURCE, 12)]


def test_a_cluster_wide_install_binds_the_namespaced_rules_cluster_wide(tools):
    docs = index(template(tools))
    binding = docs[("ClusterRoleBinding", "", "aiops-operator")]
    assert binding["roleRef"]["name"] == "aiops-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aiops-operator", "namespace": NAMESPACE}]


# ---- the schema ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, says", [
    ("replicaCount=two", "replicaCount"),
    ("image.pullPolicy=Sometimes", "pullPolicy"),
    ("image.digest=latest", "digest"),
    ("replicas=2", "replicas"),  # a typo of replicaCount: unknown keys are refused
    ("watchNamespaces={Bad_Namespace}", "watchNamespaces"),
    ("gpuLayout.instances[0].replicas=0", "replicas"),
    ("gpuLayout.instances[1].devices=GPU 2", "devices"),
    ("leaderElection.leaseDurationSeconds=1", "leaseDurationSeconds"),
    ("logLevel=chatty", "logLevel"),
    ("metrics.serviceMonitor.interval=often", "interval"),
    ("metrics.podMonitors.scrapeTimeout=soon", "scrapeTimeout"),
    ("networkPolicies.from[0].namespace=monitoring", "from"),
    ("networkPolicies.enabled=maybe", "enabled"),
])
def test_bad_values_fail_with_the_key_named(tools, bad, says):
    result = helm(tools, "template", "x", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0, f"{bad} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert says in result.stderr, result.stderr


def test_a_service_monitor_without_the_service_is_refused(tools):
    result = helm(tools, "template", "x", str(CHART), "--set", "metrics.serviceMonitor.enabled=true",
                  "--set", "metrics.service.enabled=false", check=False)
    assert result.returncode != 0 and "needs metrics.service.enabled" in result.stderr


# ---- CRDs: one source ----------------------------------------------------------------------------

def test_chart_crds_are_the_repository_crds(tools, tmp_path):
    link = CHART / "crds"
    assert link.is_symlink() and link.resolve() == (ROOT / "crds").resolve(), "crds/ must be a symlink to ../../crds"
    rendered = [d for d in template(tools, None, None, "--include-crds") if d["kind"] == "CustomResourceDefinition"]
    files = [d for p in sorted((ROOT / "crds").glob("*.aiops.dev.yaml")) for d in yaml.safe_load_all(p.read_text())]
    assert sorted(rendered, key=lambda d: d["metadata"]["name"]) == sorted(files, key=lambda d: d["metadata"]["name"])
    packaged = helm(tools, "package", str(CHART), "-d", str(tmp_path))
    assert packaged.returncode == 0
    with tarfile.open(next(tmp_path.glob("aiops-operator-*.tgz"))) as tar:
        names = tar.getnames()
    assert sorted(n for n in names if "/crds/" in n) == [f"aiops-operator/crds/{p.name}" for p in
                                                          sorted((ROOT / "crds").glob("*.aiops.dev.yaml"))]


# ---- plain manifests -----------------------------------------------------------------------------

def plain_manifests(tools) -> list[dict]:
    """The chart's default objects as plain manifests: Helm's own labels dropped."""
    docs = template(tools)
    for d in docs:
        for meta in (d["metadata"], d.get("spec", {}).get("template", {}).get("metadata", {})):
            for key in HELM_ONLY_LABELS:
                (meta.get("labels") or {}).pop(key, None)
    return docs


def test_deploy_manifest_is_the_chart_rendered(tools):
    path = DEPLOY / "aiops-operator.yaml"
    header = ("# Generated from helm/aiops-operator with its default values (release aiops-operator,\n"
              "# namespace aiops-system). Regenerate after changing the chart:\n"
              "#   AIOPS_REGENERATE_DEPLOY=1 pytest tests/unit/test_chart_static.py -k deploy\n")
    text = header + yaml.safe_dump_all(plain_manifests(tools), sort_keys=False)
    if os.environ.get("AIOPS_REGENERATE_DEPLOY"):
        path.write_text(text)
    assert path.read_text() == text, "deploy/aiops-operator.yaml is stale: regenerate it (see this file's header)"


def test_kustomize_renders_the_same_objects_as_the_chart(tools):
    if not (ROOT / "crds" / "Kustomization").exists():
        pytest.fail("crds/Kustomization is missing: `aiops crds` (operator/aiops/api/crds.py) must write it; "
                    "deploy/ takes the CRDs from crds/ as a kustomize base")
    rendered = {}
    for directory in (DEPLOY / "crds", DEPLOY):
        result = subprocess.run([str(tools[0]), "kustomize", str(directory)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        rendered |= index([d for d in yaml.safe_load_all(result.stdout) if d])
    chart = index(plain_manifests(tools) + [d for d in template(tools, None, None, "--include-crds")
                                            if d["kind"] == "CustomResourceDefinition"])
    assert set(rendered) - set(chart) == {("Namespace", "", NAMESPACE)}
    assert set(chart) - set(rendered) == set()
    for key, obj in chart.items():
        got = rendered[key]
        if key[0] == "CustomResourceDefinition":  # plus the Argo CD sync wave that puts them first
            annotations = dict(got["metadata"]["annotations"])
            assert annotations.pop("argocd.argoproj.io/sync-wave") == "-2"
            got = {**got, "metadata": {**got["metadata"], "annotations": annotations}}
        assert got == obj, f"{key} differs between deploy/ and the chart"


def test_deleting_deploy_leaves_the_crds_and_so_every_custom_resource(tools):
    """`kubectl delete -k deploy/` deletes what deploy/ renders: the CRDs must not be among it."""
    result = subprocess.run([str(tools[0]), "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert "CustomResourceDefinition" not in kinds and "Deployment" in kinds


def test_argocd_kustomization_carries_the_lua_health_checks(tools):
    result = subprocess.run([str(tools[0]), "kustomize", str(DEPLOY / "argocd")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    docs = index([d for d in yaml.safe_load_all(result.stdout) if d])
    cm = docs[("ConfigMap", "argocd", "argocd-cm")]
    for kind, script in (("ModelDeployment", "modeldeployment"), ("VectorIndex", "vectorindex"),
                         ("TrainingJob", "trainingjob")):
        key = f"resource.customizations.health.aiops.dev_{kind}"
        assert cm["data"][key] == (DEPLOY / "argocd" / "health" / f"{script}.lua").read_text()
    operator = docs[("Application", "argocd", "aiops-operator")]
    workloads = docs[("Application", "argocd", "aiops-workloads")]
    wave = "argocd.argoproj.io/sync-wave"
    assert int(operator["metadata"]["annotations"][wave]) < int(workloads["metadata"]["annotations"][wave])
    assert operator["spec"]["source"]["path"] == "helm/aiops-operator"
    assert (ROOT / workloads["spec"]["source"]["path"]).is_dir()
    appset = yaml.safe_load((DEPLOY / "argocd" / "applicationset.yaml").read_text())
    assert appset["spec"]["template"]["spec"]["source"]["path"] == "helm/aiops-operator"


@pytest.mark.parametrize("allowed, value", [
    ([], ""), (["/var/lib/aiops", "/srv/models"], "/var/lib/aiops,/srv/models")])
def test_the_allowed_host_paths_reach_the_operator(tools, tmp_path, allowed, value):
    docs = index(template(tools, tmp_path, {"hostPaths": {"allowed": allowed}}))
    (c,) = docs[("Deployment", NAMESPACE, "aiops-operator")]["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in c["env"]}["AIOPS_ALLOWED_HOST_PATHS"] == value


def test_a_relative_allowed_host_path_is_refused_by_the_chart(tools, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"hostPaths": {"allowed": ["models"]}}))
    result = helm(tools, "template", "aiops-operator", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0 and "hostPaths" in result.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_log_format_reaches_the_operator_and_nothing_else_passes(tools, tmp_path, log_format):
    docs = index(template(tools, tmp_path, {"logFormat": log_format}))
    (c,) = docs[("Deployment", NAMESPACE, "aiops-operator")]["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in c["env"]}["AIOPS_LOG_FORMAT"] == log_format
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"logFormat": "logfmt"}))
    result = helm(tools, "template", "aiops-operator", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0 and "logFormat" in result.stderr
