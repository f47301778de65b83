"""Performance monitoring end to end: the real control plane, the operator in-process, the real
tritonserver behind the simulated GPU node, and a model whose faults are switched while it
serves. The monitor's own probes are the traffic (the validation samples), so what it sees are
Triton's real counters on the pod's real metrics page."""

from __future__ import annotations

import time

import pytest
from test_modeldeployment import MDs, condition, infer, md_manifest, serving, triton_pods

from harness.faultytriton import set_faults, write_fault_model

MODEL = "adder"
pytestmark = pytest.mark.timeout(300)
WINDOW = 20


def monitoring(action: str, **thresholds) -> dict:
    return {"enabled": True, "intervalSeconds": 5, "windowSeconds": WINDOW, "consecutiveWindows": 2,
            "minSamples": 10, "thresholds": thresholds, "action": action}


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "models"
    write_fault_model(path, MODEL, 1, scale=2.0)
    write_fault_model(path, MODEL, 2, scale=3.0, write_config=False)
    return path


def events(kube, namespace, name):
    return kube.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items


def judged(mds, name, version):
    def check():
        o = mds.get(name)
        mon = (o.get("status") or {}).get("monitoring") or {}
        c = condition(o, "Degraded")
        return o if mon.get("version") == version and mon.get("reason") == "WithinLimits" and c \
            and c["status"] == "False" else None
    return check


def test_degraded_version_is_rolled_back_when_the_spec_asks(kube, namespace, operator, wait_for, repo):
    mds = MDs(kube, namespace)
    spec = {"monitoring": monitoring("rollback", errorRate={"max": 0.2})}
    mds.create(md_manifest("adder", repo, 1, **spec))
    wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving")
    wait_for(judged(mds, "adder", 1), timeout=60, what="version 1 judged within limits")

    v2 = md_manifest("x", repo, 2, 3.0)["spec"]["validation"]
    mds.patch("adder", {"spec": {"model": {"version": 2}, "validation": v2}})
    obj = wait_for(serving(mds, "adder", 2), timeout=120, what="version 2 serving")
    assert obj["status"]["previousVersion"] == 1
    wait_for(judged(mds, "adder", 2), timeout=60, what="version 2 judged within limits")

    set_faults(repo / MODEL / "2", error_rate=0.7, seed=3)
    injected = time.monotonic()

    def rolled_back():
        o = mds.get("adder")
        c = condition(o, "RolledBack")
        return o if c and c["status"] == "True" and o["status"].get("servingVersion") == 1 else None

    obj = wait_for(rolled_back, timeout=90, what="version 2 degraded and rolled back to version 1")
    delay = time.monotonic() - injected
    print(f"\ninjected errors -> rolled back in {delay:.1f}s (window {WINDOW}s, interval 5s, 2 windows)")
    assert delay < 3 * WINDOW
    st = obj["status"]
    rolled = condition(obj, "RolledBack")
    assert rolled["reason"] == "ErrorRateAboveThreshold" and "threshold 0.2" in rolled["message"]
    assert st["rejectedVersions"] == [2]
    assert [(h["version"], h["outcome"]) for h in st["history"][:2]] == [(1, "Serving"), (2, "RolledBack")]
    assert condition(obj, "Degraded")["status"] == "False" and condition(obj, "Degraded")["reason"] == "RolledBack"
    pods = triton_pods(kube, namespace)
    assert len(pods) == 1 and infer(pods[0].status.pod_ip) == [2.0, 4.0, 6.0, 8.0]
    # Events are posted right after the status write: wait for them rather than race them.
    wait_for(lambda: {("Warning", "ErrorRateAboveThreshold"), ("Warning", "RolledBack")}
             <= {(e.type, e.reason) for e in events(kube, namespace, "adder")}, what="the Warning Events")

    # Held like a failed rollout: a GitOps re-apply of the same spec does not bring version 2 back,
    # and version 1 is monitored again.
    mds.patch("adder", {"metadata": {"labels": {"synced-by": "argocd"}}})
    obj = wait_for(judged(mds, "adder", 1), timeout=60, what="version 1 monitored again after the rollback")
    time.sleep(3)
    assert mds.get("adder")["status"]["servingVersion"] == 1
    assert condition(mds.get("adder"), "Ready")["status"] == "True"


def test_alert_only_sets_degraded_and_clears_it_on_recovery(kube, namespace, operator, wait_for, repo):
    mds = MDs(kube, namespace)
    mds.create(md_manifest("adder", repo, 1, monitoring=monitoring(
        "alert", inferenceTime={"percentile": "p95", "maxMilliseconds": 50})))
    wait_for(serving(mds, "adder", 1), timeout=120, what="version 1 serving")
    wait_for(judged(mds, "adder", 1), timeout=60, what="version 1 judged within limits")

    set_faults(repo / MODEL / "1", delay_ms=150)
    injected = time.monotonic()

    def degraded():
        o = mds.get("adder")
        c = condition(o, "Degraded")
        return o if c and c["status"] == "True" else None

    obj = wait_for(degraded, timeout=60, what="Degraded=True")
    delay = time.monotonic() - injected
    print(f"\ninjected latency -> Degraded in {delay:.1f}s (window {WINDOW}s)")
    assert delay < 2 * WINDOW
    c = condition(obj, "Degraded")
    assert c["reason"] == "InferenceTimeAboveThreshold"
    assert "p95" in c["message"] and "threshold 50 ms" in c["message"] and f"{WINDOW}s window" in c["message"]
    assert obj["status"]["phase"] == "Degraded" and obj["status"]["servingVersion"] == 1
    assert condition(obj, "Ready")["status"] == "True"  # still serving: only slower
    table = kube.kubectl("get", "mdep", "adder", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert row.split()[header.split().index("DEGRADED")] == "True", table

    set_faults(repo / MODEL / "1")
    obj = wait_for(judged(mds, "adder", 1), timeout=90, what="Degraded cleared after recovery")
    assert obj["status"]["phase"] == "Ready" and obj["status"].get("rejectedVersions", []) == []
    wait_for(lambda: {("Warning", "InferenceTimeAboveThreshold"), ("Normal", "Recovered")}
             <= {(e.type, e.reason) for e in events(kube, namespace, "adder")}, what="the alert and recovery Events")
