"""The framework's floor for bench_reconcile: a plain Kopf handler that only creates a Deployment
for each ModelDeployment, nothing else (no validation, no status)."""

import kopf
from kubernetes import client, config


@kopf.on.startup()
def setup(memo: kopf.Memo, **_):
    memo.apps = client.AppsV1Api(config.new_client_from_config())


@kopf.on.create("aiops.dev", "v1alpha1", "modeldeployments")
def create(name: str, namespace: str, memo: kopf.Memo, **_):
    labels = {"app": name}
    memo.apps.create_namespaced_deployment(namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"{name}-triton"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.10-py3"}]}}}})
