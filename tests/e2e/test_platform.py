"""The platform as a user installs it on the real node: the operator by `helm upgrade --install`
from the images built here, running as its pod under the chart's ServiceAccount; the three
examples applied (fitted to this node) until each is Ready, the model trained in a container and
served by Triton in another, answering over the cluster network; and what a real node exposes
that the simulated one did not (hostPath ownership, a repository that is not there yet), each
reported with a reason instead of a timeout."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
import yaml
from e2ehelpers import condition, status_of, wait_until, write_model

from aiops.devenv.monitors import FileDiscovery, scrape_jobs, with_file_discovery
from aiops.devenv.prometheus import LocalPrometheus
from aiops.devenv.realcluster import CHART, OPERATOR_NAMESPACE, RELEASE, REPO

pytestmark = pytest.mark.timeout(1800)


def test_the_operator_runs_as_its_chart_says(platform, core):
    pods = core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    assert len(pods) == 1 and all(c.ready for c in pods[0].status.container_statuses)
    # Through the API server to the kubelet (exec), as the pod's own user on a read-only root.
    uid = platform.run(platform.kubectl, "exec", "-n", OPERATOR_NAMESPACE, pods[0].metadata.name, "--",
                       "python", "-c", "import os; open('/tmp/x', 'w'); print(os.getuid())").stdout.strip()
    assert uid == "10001"
    readonly = platform.run(platform.kubectl, "exec", "-n", OPERATOR_NAMESPACE, pods[0].metadata.name, "--",
                            "python", "-c", "open('/opt/x', 'w')", check=False)
    assert readonly.returncode != 0 and "Read-only file system" in readonly.stderr


def test_the_examples_become_ready_and_the_model_answers(platform, custom, core, ns):
    changes = platform.apply_fitted([REPO / "examples"], namespace=ns)
    print("\nfitted: " + "; ".join(changes))

    def all_ready():
        tj = status_of(custom, ns, "trainingjobs", "ticket-classifier-v1")
        vi = status_of(custom, ns, "vectorindexes", "ops-manual")
        md = status_of(custom, ns, "modeldeployments", "ticket-classifier")
        for kind, st in (("TrainingJob", tj), ("VectorIndex", vi), ("ModelDeployment", md)):
            if st.get("phase") in ("Failed", "Invalid"):
                pytest.fail(f"{kind} {st.get('phase')}: {json.dumps(st, indent=1)[-3000:]}")
        done = (tj.get("phase") == "Registered" and vi.get("phase") == "Ready"
                and md.get("phase") == "Ready" and condition(md, "Ready").get("status") == "True")
        return (tj, vi, md) if done else None

    tj, vi, md = wait_until(all_ready, 1500, "the three examples Ready", interval=5, detail=lambda: {
        plural: status_of(custom, ns, plural, name) for plural, name in (
            ("trainingjobs", "ticket-classifier-v1"), ("vectorindexes", "ops-manual"),
            ("modeldeployments", "ticket-classifier"))})
    assert vi["documents"]["ingested"] == 8
    assert tj["producedModel"]["version"] == 1
    assert md["servingVersion"] == 1
    service = core.read_namespaced_service("ticket-classifier-triton", ns)
    # From the host, through kube-proxy's rules for the ClusterIP, to Triton in its container.
    server = triton_http.InferenceServerClient(f"{service.spec.cluster_ip}:8000")
    text = triton_http.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"I was charged twice for my subscription this month"]], dtype=object))

    def infer():  # the endpoint reaches kube-proxy's rules a moment after the pod is ready
        try:
            return server.infer("ticket-classifier", [text])
        except ConnectionRefusedError:
            return None

    answer = wait_until(infer, 30, "the Service to answer").as_numpy("LABEL")
    assert answer.reshape(-1)[0].decode() == "billing"
    scraped_through_the_charts_monitors(platform, core, ns)


def scraped_through_the_charts_monitors(platform, core, ns):
    """A real Prometheus finds the operator, Triton and Milvus with the chart's ServiceMonitor and
    PodMonitors (rendered as this release would render them) and scrapes their own metrics."""
    rendered = platform.run(platform.helm, "template", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE,
                            *platform.operator_values(), "--set", "metrics.serviceMonitor.enabled=true",
                            "--set", "metrics.podMonitors.enabled=true").stdout
    jobs = scrape_jobs([d for d in yaml.safe_load_all(rendered) if d], "unused")
    with tempfile.TemporaryDirectory() as tmp:
        discovery = FileDiscovery(core, jobs, Path(tmp))
        jobs = with_file_discovery(jobs, Path(tmp))
        for job in jobs:  # the chart's 30s, shortened for the test
            job["scrape_interval"] = job["scrape_timeout"] = "1s"
        with LocalPrometheus([], jobs=jobs) as prom:
            def scraped():
                discovery.refresh()
                found = {
                    "operator": prom.query("aiops_build_info"),
                    "triton": prom.query(f'nv_inference_count{{modeldeployment="ticket-classifier",namespace="{ns}"}}'),
                    "milvus": prom.query(f'count by (pod) ({{__name__=~"milvus_.+",vectorindex="ops-manual",'
                                         f'namespace="{ns}"}})'),
                }
                return found if all(found.values()) else None

            found = wait_until(scraped, 90, "the operator, Triton and Milvus scraped", interval=2,
                               detail=lambda: [(t["labels"].get("job"), t["health"], t.get("lastError"))
                                               for t in prom.targets_health()])
    assert found["operator"][0]["metric"]["job"] == f"{RELEASE}-aiops-operator-metrics"
    assert sum(float(s["value"][1]) for s in found["triton"]) >= 1  # the inference above
    assert found["milvus"][0]["metric"]["pod"] == "ops-manual-milvus-0"


def test_an_unwritable_hostpath_workspace_is_reported_with_the_fix(platform, custom, ns, host_dirs):
    workspace = host_dirs / "workspace"
    workspace.mkdir(mode=0o755)  # root's, as the kubelet's DirectoryOrCreate makes it
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / "trainingjob.yaml").read_text()) if d]
    for doc in docs:
        if doc["kind"] == "TrainingJob":
            doc["spec"]["workspace"] = {"hostPath": {"path": str(workspace)}}
            doc["spec"]["output"]["repository"] = {"hostPath": {"path": str(host_dirs / "models")}}
    platform.run(platform.kubectl, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))

    def failed():
        st = status_of(custom, ns, "trainingjobs", "ticket-classifier-v1")
        return st if st.get("phase") == "Failed" else None

    ready = condition(wait_until(failed, 300, "the TrainingJob to fail on its workspace"), "Ready")
    assert ready["reason"] == "WorkspaceNotWritable"
    assert "uid 10001" in ready["message"] and "install -d -o 10001 -g 10001" in ready["message"]


def test_a_missing_hostpath_repository_waits_with_a_reason_then_serves(platform, custom, ns, host_dirs):
    repo = host_dirs / "models"
    doc = next(d for d in yaml.safe_load_all((REPO / "examples" / "modeldeployment.yaml").read_text()) if d)
    doc["spec"]["repository"] = {"hostPath": {"path": str(repo)}}
    doc["spec"]["validation"]["samples"] = doc["spec"]["validation"]["samples"][:1]
    doc["spec"].pop("monitoring", None)
    fit = platform.node_fit()
    from aiops.devenv.fit import fit_manifest

    fit_manifest(doc, fit)
    doc["spec"]["runtime"]["image"] = platform.ref("tritonserver")  # the model needs numpy only
    platform.run(platform.kubectl, "apply", "-n", ns, "-f", "-", input=json.dumps(doc))

    def waiting():
        st = status_of(custom, ns, "modeldeployments", "ticket-classifier")
        assert st.get("phase") not in ("Failed", "Invalid"), st
        ready = condition(st, "Ready")
        return ready if ready.get("reason") == "RepositoryNotFound" else None

    ready = wait_until(waiting, 120, "RepositoryNotFound on the ModelDeployment")
    assert str(repo) in ready["message"] and "install -d" in ready["message"]
    # The user creates it as the message says and puts the model there: the next look serves it.
    repo.mkdir(mode=0o755)
    write_model(repo)

    def serving():
        st = status_of(custom, ns, "modeldeployments", "ticket-classifier")
        assert st.get("phase") not in ("Failed", "Invalid"), st
        return st if st.get("phase") == "Ready" else None

    st = wait_until(serving, 300, "the ModelDeployment Ready once the repository exists",
                    detail=lambda: status_of(custom, ns, "modeldeployments", "ticket-classifier"))
    assert st["servingVersion"] == 1
