"""Pod status from the snapshots of real container processes (pure)."""

import datetime as dt

from kubernetes import client

from aiops.devenv.podstatus import carry_transition_times, pod_phase, process_pod_status
from aiops.devenv.processes import ContainerSnapshot, Terminated

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POD = client.V1Pod(metadata=client.V1ObjectMeta(name="p", namespace="ns", uid="u1"),
                   spec=client.V1PodSpec(containers=[client.V1Container(name="a", image="i"),
                                                     client.V1Container(name="b", image="j")]))


def snap(name="a", state="running", **kw):
    return ContainerSnapshot(name, "i", state, started_at=T0, **kw)


def done(code, name="a"):
    return snap(name, "terminated", final=True, terminated=Terminated(code, "Error" if code else "Completed",
                                                                    "msg", T0, T0))


def conditions(status):
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_ready_only_when_every_container_is_ready():
    s = process_pod_status(POD, [snap(ready=True), snap("b", ready=False)], "127.100.0.2", T0)
    assert s["phase"] == "Running" and conditions(s)["Ready"] == "False"
    ready = next(c for c in s["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ContainersNotReady" and "[b]" in ready["message"]
    s = process_pod_status(POD, [snap(ready=True), snap("b", ready=True)], "127.100.0.2", T0)
    assert conditions(s)["Ready"] == "True"


def test_phases():
    waiting = snap(state="waiting", reason="ContainerCreating")
    assert pod_phase([waiting, snap("b")]) == "Pending"
    assert pod_phase([snap(state="waiting", reason="CrashLoopBackOff", restart_count=2)]) == "Running"
    assert pod_phase([done(0), done(0, "b")]) == "Succeeded"
    assert pod_phase([done(0), done(3, "b")]) == "Failed"
    assert pod_phase([done(3), snap("b")]) == "Running"  # one still running


def test_terminated_container_reports_code_message_and_signal():
    term = Terminated(137, "Error", "", T0, T0, signal=9)
    s = process_pod_status(POD, [snap(state="waiting", reason="CrashLoopBackOff", restart_count=1,
                                      last_terminated=term), done(4, "b")], "127.100.0.2", T0)
    a, b = s["containerStatuses"]
    assert a["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": None}}
    assert a["lastState"]["terminated"]["exitCode"] == 137 and a["lastState"]["terminated"]["signal"] == 9
    assert a["restartCount"] == 1
    assert b["state"]["terminated"]["exitCode"] == 4 and b["state"]["terminated"]["message"] == "msg"


def test_transition_times_move_only_when_a_condition_flips():
    old = process_pod_status(POD, [snap(ready=False), snap("b", ready=True)], "127.100.0.2", T0)
    new = process_pod_status(POD, [snap(ready=True), snap("b", ready=True)], "127.100.0.2", T0)
    stamped = carry_transition_times(new, old, "2026-01-01T00:00:09+00:00")
    times = {c["type"]: c["lastTransitionTime"] for c in stamped["conditions"]}
    assert times["Ready"] == "2026-01-01T00:00:09+00:00"
    assert times["Initialized"] == T0.isoformat()
    assert carry_transition_times(new, None, "x") is new
