"""Rollouts and faults on the real node, with the operator running as its pod: version 1 serves,
version 2 replaces it in place while the operator's process is killed with SIGKILL in the middle
of the rollout, a bad version 3 is rejected while version 2 keeps answering, and an ingest
interrupted the same way ends with every document stored once. After each kill the kubelet
restarts the operator's container and it converges with no duplicate objects."""

from __future__ import annotations

import base64
import json
import os
import signal
import time

import numpy as np
import pytest
import tritonclient.http as triton_http
import yaml
from e2ehelpers import condition, status_of, wait_until, write_model
from kubernetes import client
from pymilvus import MilvusClient

from aiops.devenv.fit import fit_manifest
from aiops.devenv.realcluster import OPERATOR_NAMESPACE, RELEASE, REPO

pytestmark = pytest.mark.timeout(1200)


def operator_pod(core) -> client.V1Pod:
    pods = core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def kill_operator(real, core) -> int:
    """SIGKILL to the operator's process, from the host (as the OOM killer or a node fault would
    send it: no chance to clean up). Returns the container's restart count before."""
    status = operator_pod(core).status.container_statuses[0]
    container = status.container_id.removeprefix("containerd://")
    tasks = real.node.ctr("tasks", "list").stdout.splitlines()
    pid = next(int(line.split()[1]) for line in tasks if line.startswith(container))
    os.kill(pid, signal.SIGKILL)
    return status.restart_count


def wait_restarted(core, before: int) -> None:
    def restarted():
        status = operator_pod(core).status.container_statuses[0]
        return status.restart_count > before and status.ready

    wait_until(restarted, 180, "the kubelet to restart the operator and it to be ready again")


def classify(core, ns: str, text: bytes) -> str:
    """The served model's answer through its Service. Ready in status means the pod is ready; the
    endpoint reaching kube-proxy's rules takes a moment more, as on any cluster."""
    ip = core.read_namespaced_service("ticket-classifier-triton", ns).spec.cluster_ip
    request = triton_http.InferInput("TEXT", [1, 1], "BYTES")
    request.set_data_from_numpy(np.array([[text]], dtype=object))

    def answer():
        try:
            return triton_http.InferenceServerClient(f"{ip}:8000").infer("ticket-classifier", [request])
        except ConnectionRefusedError:
            return None

    return wait_until(answer, 30, "the Service to answer").as_numpy("LABEL").reshape(-1)[0].decode()


def model_deployment(platform, repo) -> dict:
    doc = next(d for d in yaml.safe_load_all((REPO / "examples" / "modeldeployment.yaml").read_text()) if d)
    doc["spec"]["repository"] = {"hostPath": {"path": str(repo)}}
    doc["spec"]["validation"]["samples"] = doc["spec"]["validation"]["samples"][:1]  # billing
    doc["spec"].pop("monitoring", None)
    fit_manifest(doc, platform.node_fit())
    doc["spec"]["runtime"]["image"] = platform.ref("tritonserver")  # these versions need numpy only
    return doc


def test_versions_swap_in_place_through_a_sigkill_and_a_bad_version_is_rejected(platform, custom, core, ns,
                                                                              host_dirs):
    repo = host_dirs / "models"
    for version, answer in ((1, b"billing"), (2, b"billing"), (3, b"refund")):
        write_model(repo, version, answer)
    md = model_deployment(platform, repo)
    platform.run(platform.kubectl, "apply", "-n", ns, "-f", "-", input=json.dumps(md))

    def serving(version: int):
        def check():
            st = status_of(custom, ns, "modeldeployments", "ticket-classifier")
            assert st.get("phase") not in ("Failed", "Invalid"), st
            ok = st.get("servingVersion") == version and st.get("phase") == "Ready" and not st.get("rollout")
            return st if ok else None
        return check

    md_status = lambda: status_of(custom, ns, "modeldeployments", "ticket-classifier")  # noqa: E731
    wait_until(serving(1), 300, "version 1 serving", detail=md_status)
    assert classify(core, ns, b"I was charged twice") == "billing"

    md["spec"]["model"]["version"] = 2
    platform.run(platform.kubectl, "apply", "-n", ns, "-f", "-", input=json.dumps(md))
    wait_until(lambda: (status_of(custom, ns, "modeldeployments", "ticket-classifier").get("rollout") or {})
               .get("version") == 2, 60, "the rollout of version 2 to start", interval=0.1)
    restarts = kill_operator(platform, core)
    wait_restarted(core, restarts)
    st = wait_until(serving(2), 300, "version 2 serving after the operator was killed mid-rollout", detail=md_status)
    assert classify(core, ns, b"I was charged twice") == "billing"
    assert st["history"][0]["version"] == 2  # newest first

    md["spec"]["model"]["version"] = 3
    platform.run(platform.kubectl, "apply", "-n", ns, "-f", "-", input=json.dumps(md))

    def rejected():
        st = status_of(custom, ns, "modeldeployments", "ticket-classifier")
        return st if 3 in st.get("rejectedVersions", []) else None

    st = wait_until(rejected, 300, "version 3 rejected", detail=md_status)
    assert st["servingVersion"] == 2
    assert condition(st, "Ready")["status"] == "True", "version 2 still serves"
    assert classify(core, ns, b"I was charged twice") == "billing"

    # One of each child, whatever the kill interrupted.
    apps = client.AppsV1Api(platform.api())
    deployments = apps.list_namespaced_deployment(ns).items
    assert [d.metadata.name for d in deployments] == ["ticket-classifier-triton"]
    assert [s.metadata.name for s in core.list_namespaced_service(ns).items] == ["ticket-classifier-triton"]
    assert deployments[0].status.ready_replicas == 1


DOCUMENTS = 1200


def test_an_ingest_interrupted_by_sigkill_stores_every_document_once(platform, custom, core, ns):
    lines = [json.dumps({"id": f"doc-{i:04d}", "text": f"Operations note {i}: the node serves models, vectors "
                         f"and training jobs; item {i} concerns GPU {i % 3} and memory {i % 7} GB.",
                         "metadata": {"n": i}}) for i in range(DOCUMENTS)]
    source = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ops-manual-docs"},
              "data": {"manual.jsonl": "\n".join(lines) + "\n"}}
    vi = next(d for d in yaml.safe_load_all((REPO / "examples" / "vectorindex.yaml").read_text())
              if d and d["kind"] == "VectorIndex")
    fit_manifest(vi, platform.node_fit())
    platform.run(platform.kubectl, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([source, vi]))

    def ingesting():
        st = status_of(custom, ns, "vectorindexes", "ops-manual")
        return st if st.get("phase") == "Ingesting" else None

    wait_until(ingesting, 300, "the ingest to start", interval=0.2)
    time.sleep(2)  # into the Job's run
    restarts = kill_operator(platform, core)
    wait_restarted(core, restarts)

    def ready():
        st = status_of(custom, ns, "vectorindexes", "ops-manual")
        assert st.get("phase") not in ("Failed", "Invalid"), st
        return st if st.get("phase") == "Ready" else None

    st = wait_until(ready, 600, "the VectorIndex Ready after the operator was killed mid-ingest", interval=2)
    assert st["documents"]["ingested"] == DOCUMENTS
    ip = core.read_namespaced_service("ops-manual-milvus", ns).spec.cluster_ip
    # Signed in as applications do, with the Secret the status names (Milvus refuses anyone else).
    creds = {k: base64.b64decode(v).decode() for k, v in
             core.read_namespaced_secret(st["credentialsSecret"], ns).data.items()}
    milvus = MilvusClient(uri=f"http://{ip}:19530", token=f"{creds['username']}:{creds['password']}")
    try:
        rows = milvus.query("ops_manual", filter="", output_fields=["count(*)"])
        assert rows[0]["count(*)"] == DOCUMENTS, "every document once: none lost, none twice"
    finally:
        milvus.close()
    statefulsets = client.AppsV1Api(platform.api()).list_namespaced_stateful_set(ns).items
    assert [s.metadata.name for s in statefulsets] == ["ops-manual-milvus"]
