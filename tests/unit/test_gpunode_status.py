"""The simulated kubelet's pod status, without a cluster."""

import datetime as dt

import pytest
from kubernetes import client

from aiops.devenv.nodespec import NodeSpec
from aiops.devenv.podbehaviour import (
    CRASH_LOOP,
    NEVER_READY,
    RUN,
    Behaviour,
    exit_with,
    pod_status,
    succeed,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def make_pod(restart_policy="Always", containers=("main",), init=()):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", namespace="ns", uid="u1"),
        spec=client.V1PodSpec(
            restart_policy=restart_policy,
            containers=[client.V1Container(name=n, image="img") for n in containers],
            init_containers=[client.V1Container(name=n, image="init") for n in init] or None))


def conditions(status):
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_run_is_running_and_ready_with_the_given_ip():
    s = pod_status(make_pod(containers=("a", "b")), RUN, ip="127.100.0.7", started=T0)
    assert s["phase"] == "Running"
    assert s["podIP"] == "127.100.0.7" and s["podIPs"] == [{"ip": "127.100.0.7"}]
    assert conditions(s) == {"Initialized": "True", "Ready": "True", "ContainersReady": "True",
                             "PodScheduled": "True"}
    assert [c["name"] for c in s["containerStatuses"]] == ["a", "b"]
    assert all(c["ready"] and "running" in c["state"] for c in s["containerStatuses"])


def test_never_ready_runs_but_is_not_ready():
    s = pod_status(make_pod(), NEVER_READY, ip="127.100.0.1", started=T0)
    assert s["phase"] == "Running"
    assert conditions(s)["Ready"] == "False"
    assert s["containerStatuses"][0]["ready"] is False
    assert next(c for c in s["conditions"] if c["type"] == "Ready")["reason"] == "ContainersNotReady"
    assert s["containerStatuses"][0]["started"] is True  # no startupProbe: started once running


def test_never_ready_never_passes_a_startup_probe_either():
    pod = make_pod(containers=("triton", "sidecar"))
    pod.spec.containers[0].startup_probe = client.V1Probe(http_get=client.V1HTTPGetAction(path="/live", port=8000))
    s = pod_status(pod, NEVER_READY, ip="127.100.0.1", started=T0)
    assert [c["started"] for c in s["containerStatuses"]] == [False, True]
    assert pod_status(pod, RUN, ip="127.100.0.1", started=T0)["containerStatuses"][0]["started"] is True


def test_crash_loop_reports_back_off_and_restarts():
    s = pod_status(make_pod(), CRASH_LOOP, ip="127.100.0.1", started=T0, restarts=4, finished_at=T0)
    c = s["containerStatuses"][0]
    assert c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert c["lastState"]["terminated"]["exitCode"] == 1
    assert c["restartCount"] == 4
    assert conditions(s)["Ready"] == "False"


def test_exit_with_restart_never_fails_the_pod_with_the_code_and_message():
    s = pod_status(make_pod("Never"), exit_with(3, message="bad model"), ip="127.100.0.1",
                   started=T0, finished_at=T0)
    assert s["phase"] == "Failed"
    term = s["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error" and term["message"] == "bad model"


def test_exit_with_restart_on_failure_is_a_crash_loop():
    s = pod_status(make_pod("OnFailure"), exit_with(2), ip="127.100.0.1", started=T0, finished_at=T0)
    assert s["phase"] == "Running"
    c = s["containerStatuses"][0]
    assert c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert c["lastState"]["terminated"]["exitCode"] == 2


def test_succeed_completes_only_once_finished():
    pod = make_pod("Never", init=("setup",))
    running = pod_status(pod, succeed(after_seconds=5), ip="127.100.0.1", started=T0)
    assert running["phase"] == "Running"
    done = pod_status(pod, succeed(after_seconds=5), ip="127.100.0.1", started=T0,
                      finished_at=T0 + dt.timedelta(seconds=5))
    assert done["phase"] == "Succeeded"
    assert done["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert done["containerStatuses"][0]["state"]["terminated"]["finishedAt"] == "2026-01-01T00:00:05+00:00"
    assert done["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


@pytest.mark.parametrize("text,expected", [
    ("run", RUN), ("never-ready", NEVER_READY), ("crash-loop", CRASH_LOOP),
    ("exit:3", Behaviour("exit", exit_code=3)), ("exit", Behaviour("exit", exit_code=1)),
    ("succeed", Behaviour("succeed")), ("succeed-after:2.5", Behaviour("succeed", after_seconds=2.5)),
])
def test_behaviour_annotation_parses(text, expected):
    assert Behaviour.parse(text) == expected


def test_unknown_behaviour_is_rejected():
    with pytest.raises(ValueError, match="unknown simulated behaviour"):
        Behaviour.parse("explode")


def test_default_node_is_the_seed_machine():
    node = NodeSpec()
    cap = node.capacity()
    assert cap["nvidia.com/gpu"] == "2" and cap["memory"] == "128Gi"
    assert all(isinstance(v, str) for v in cap.values())  # SSA on 1.20 rejects bare numbers
    assert node.all_labels()["nvidia.com/gpu.present"] == "true"
    shared = NodeSpec(extended_resources={"nvidia.com/gpu.shared": "2"}).capacity()
    assert shared["nvidia.com/gpu.shared"] == "2"
