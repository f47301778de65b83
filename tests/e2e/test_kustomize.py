"""The plain-manifest install path on the real node: `kubectl apply -k` of an overlay on deploy/
that only points the images at the ones built here, as docs/install.md tells a user to do. The
operator comes up as its pod with deploy/'s RBAC and brings a VectorIndex (Milvus in its
StatefulSet, an ingest Job) to Ready. Removed afterwards without its CRDs, so the other modules'
objects stay."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import yaml
from e2ehelpers import wait_until
from kubernetes import client

from aiops.devenv.realcluster import REPO

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def overlay(real):
    directory = REPO / ".aiops" / f"e2e-overlay-{uuid.uuid4().hex[:6]}"
    directory.mkdir(parents=True)
    operator, worker = real.ref("operator"), real.ref("worker")
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../../deploy"],
        "images": [{"name": "ghcr.io/aiops-operator/aiops-operator", "newName": operator.rpartition(":")[0],
                    "newTag": operator.rpartition(":")[2]}],
        "patches": [{"target": {"kind": "Deployment", "name": "aiops-operator"}, "patch": json.dumps([
            {"op": "replace", "path": "/spec/template/spec/containers/0/env/0",
             "value": {"name": "AIOPS_WORKER_IMAGE", "value": worker}}])}] + [
            # The node's own plugin advertises the same gpuLayout on GPUs NVIDIA's could not find.
            {"target": {"kind": "DaemonSet", "name": f"aiops-operator-gpu-{instance}"},
             "patch": yaml.safe_dump({"$patch": "delete", "apiVersion": "apps/v1", "kind": "DaemonSet",
                                      "metadata": {"name": f"aiops-operator-gpu-{instance}"}})}
            for instance in ("whole", "shared")],
    }))
    real.run(real.kubectl, "apply", "-k", str(directory))
    yield directory
    rendered = real.run(real.kubectl, "kustomize", str(directory)).stdout
    keep = ("CustomResourceDefinition", "Namespace")  # the CRDs hold every test's objects
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] not in keep]
    # Foreground: the operator's pod is gone, not just its Deployment, before the chart's comes.
    real.run(real.kubectl, "delete", "--wait=true", "--cascade=foreground", "-f", "-",
             input=yaml.safe_dump_all(docs), check=False)
    core = client.CoreV1Api(real.api())
    wait_until(lambda: not core.list_namespaced_pod(
        "aiops-system", label_selector="app.kubernetes.io/instance=aiops-operator").items, 120,
        "the kustomize install's operator pod gone")
    shutil.rmtree(directory, ignore_errors=True)


def test_apply_k_runs_the_operator_which_serves_a_vector_index(real, overlay, core):
    apps = client.AppsV1Api(real.api())
    deployment = wait_until(lambda: (lambda d: d if d.status.available_replicas else None)(
        apps.read_namespaced_deployment("aiops-operator", "aiops-system")), 180, "the operator Deployment available")
    assert deployment.spec.template.spec.containers[0].image == real.ref("operator")
    ns = f"e2e-k-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        wait_until(lambda: core.read_namespaced_service_account("default", ns).secrets, 30, "a token")
        real.apply_fitted([REPO / "examples" / "vectorindex.yaml"], namespace=ns)
        custom = client.CustomObjectsApi(real.api())

        def ready():
            st = custom.get_namespaced_custom_object("aiops.dev", "v1alpha1", ns, "vectorindexes",
                                                     "ops-manual").get("status") or {}
            assert st.get("phase") not in ("Failed", "Invalid"), st
            return st if st.get("phase") == "Ready" else None

        status = wait_until(ready, 600, "the VectorIndex Ready under the kustomize install", interval=2)
        assert status["documents"]["ingested"] == 8
    finally:
        core.delete_namespace(ns)
        # While this operator still runs: it releases the VectorIndex's finalizer.
        wait_until(lambda: ns not in {n.metadata.name for n in core.list_namespace().items}, 120,
                   f"namespace {ns} gone")
