"""Real processes behind pods on the simulated node: the real Triton server answering tritonclient
at the pod IP, Job pods whose exit code and termination message reach the Job, probes that decide
readiness and restarts, and pod deletion that stops the process."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from kubernetes import client
from tritonclient.utils import InferenceServerException

from aiops.devenv.demomodels import expected_output, sample_input, write_python_backend_model
from aiops.devenv.gpunode import NodeAgent
from aiops.devenv.nodespec import NodeSpec
from aiops.devenv.podbehaviour import NEVER_READY
from aiops.devenv.processes import PidRegistry

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"


def read_pod(kube, ns, name) -> client.V1Pod:
    return kube.core.read_namespaced_pod(name, ns)


def condition(pod: client.V1Pod, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in pod.status.conditions or [])


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def process_group(pgid: int) -> list[int]:
    """Live members of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return [p for p in members if alive(p)]


def bound_claim(kube, namespace: str, name: str, wait_for) -> Path:
    """A PVC bound to a PV by the real PV controller; the node backs it with a local dir."""
    pv_name = f"{namespace}-{name}"
    kube.core.create_persistent_volume(client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=pv_name),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"}, access_modes=["ReadWriteOnce"], storage_class_name="manual",
            persistent_volume_reclaim_policy="Delete",
            host_path=client.V1HostPathVolumeSource(path=str(kube.agent.claim_path(namespace, name))))))
    # The PV controller must have seen the volume before the claim, or it binds only on its
    # next periodic resync (15 s later).
    wait_for(lambda: kube.core.read_persistent_volume(pv_name).status.phase == "Available",
             what=f"PV {pv_name} Available")
    kube.core.create_namespaced_persistent_volume_claim(namespace, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], storage_class_name="manual", volume_name=pv_name,
            resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))))
    wait_for(lambda: kube.core.read_namespaced_persistent_volume_claim(name, namespace).status.phase == "Bound",
             what=f"PVC {name} Bound")
    return kube.agent.claim_path(namespace, name)


@pytest.fixture
def claim(kube, namespace, wait_for):
    path = bound_claim(kube, namespace, "models", wait_for)
    yield path
    kube.core.delete_persistent_volume(f"{namespace}-models")
    shutil.rmtree(path.parent, ignore_errors=True)


def triton_deployment(name: str, model: str) -> client.V1Deployment:
    labels = {"app": name}
    http_probe = client.V1HTTPGetAction
    container = client.V1Container(
        name="triton", image=TRITON_IMAGE, command=["tritonserver"],
        args=["--model-repository=/models", "--model-control-mode=explicit", "--http-port=8000",
              "--grpc-port=8001", "--metrics-port=8002"],
        ports=[client.V1ContainerPort(name=n, container_port=p)
               for n, p in (("http", 8000), ("grpc", 8001), ("metrics", 8002))],
        # Ready only once the model is loaded: the probe asks Triton itself.
        readiness_probe=client.V1Probe(http_get=http_probe(path=f"/v2/models/{model}/ready", port="http"),
                                       period_seconds=1, failure_threshold=1),
        liveness_probe=client.V1Probe(http_get=http_probe(path="/v2/health/live", port="http"),
                                      initial_delay_seconds=5, period_seconds=2),
        volume_mounts=[client.V1VolumeMount(name="repo", mount_path="/models", sub_path="repo",
                                            read_only=True)])
    volume = client.V1Volume(name="repo", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
        claim_name="models"))
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container], volumes=[volume],
                                      termination_grace_period_seconds=10))))


def test_triton_pod_runs_the_real_server(kube, namespace, claim, wait_for):
    write_python_backend_model(claim / "repo", "double", 1)
    client.AppsV1Api(kube.api_client).create_namespaced_deployment(namespace, triton_deployment("triton", "double"))

    def running_pod():
        pods = kube.core.list_namespaced_pod(namespace, label_selector="app=triton").items
        return pods and pods[0].status.phase == "Running" and pods[0].status.pod_ip and pods[0]

    pod = wait_for(running_pod, timeout=60, what="the Triton pod Running with an IP")
    name, ip = pod.metadata.name, pod.status.pod_ip
    try:
        live = httpclient.InferenceServerClient(f"{ip}:8000")
        wait_for(lambda: _quietly(live.is_server_live), timeout=30, what="Triton live at the pod IP")
        # The server runs, but the model is not loaded: the real readiness probe keeps it unready.
        time.sleep(1.5)
        assert not condition(read_pod(kube, namespace, name), "Ready")
        assert live.is_server_ready() and not live.is_model_ready("double")

        live.load_model("double")  # explicit model control, as the operator does
        wait_for(lambda: condition(read_pod(kube, namespace, name), "Ready"), timeout=15,
                 what="the pod Ready once the model loaded")

        x = sample_input((4,), batch=3)
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = live.infer("double", [inp]).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, expected_output(x))

        grpc = grpcclient.InferenceServerClient(f"{ip}:8001")
        assert grpc.is_model_ready("double", "1")
        ginp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        np.testing.assert_array_equal(grpc.infer("double", [ginp]).as_numpy("OUTPUT0"), expected_output(x))
        grpc.close()
        live.close()
    except BaseException:
        print(kube.agent.container_log(namespace, name)[-4000:])
        raise

    pid = kube.agent.container_pids(namespace, name)["triton"]
    group = process_group(pid)
    assert len(group) >= 2, "tritonserver and its Python-backend stub run in the container's group"
    assert "tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    kube.core.delete_namespaced_pod(name, namespace)
    wait_for(lambda: not [p for p in group if alive(p)], timeout=15,
             what="tritonserver and its stub stopped after the pod's deletion")
    wait_for(lambda: not _exists(kube, namespace, name), timeout=15, what="the pod gone")


def test_triton_sees_the_demo_models_broken_versions(kube, namespace, wait_for, tmp_path):
    """The demo models' failure modes are real to the real server (hostPath repository)."""
    repo = tmp_path / "repo"
    write_python_backend_model(repo, "good", 1, scale=3.0)
    write_python_backend_model(repo, "wrong", 1, behaviour="wrong")
    write_python_backend_model(repo, "noload", 1, behaviour="fail-load")
    write_python_backend_model(repo, "badcfg", 1, behaviour="bad-config")
    container = client.V1Container(
        name="triton", image=TRITON_IMAGE,
        args=["tritonserver", "--model-repository", "/models", "--model-control-mode", "explicit"],
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/v2/health/ready", port=8000),
                                       period_seconds=1),
        volume_mounts=[client.V1VolumeMount(name="repo", mount_path="/models")])
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="triton"),
        spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=5, volumes=[
            client.V1Volume(name="repo", host_path=client.V1HostPathVolumeSource(path=str(repo)))])))
    pod = wait_for(lambda: condition(p := read_pod(kube, namespace, "triton"), "Ready") and p, timeout=30,
                   what="Triton Ready (server ready: no model needed)")
    triton = httpclient.InferenceServerClient(f"{pod.status.pod_ip}:8000")
    try:
        x = sample_input()
        for model, behaviour, scale in (("good", "double", 3.0), ("wrong", "wrong", 2.0)):
            triton.load_model(model)
            inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            out = triton.infer(model, [inp]).as_numpy("OUTPUT0")
            np.testing.assert_array_equal(out, expected_output(x, behaviour, scale))
        assert not np.array_equal(out, expected_output(x))  # `wrong` is caught by a sample check
        for model, error in (("noload", "refusing to load"), ("badcfg", "failed to poll")):
            with pytest.raises(InferenceServerException, match=error):
                triton.load_model(model)
            assert not triton.is_model_ready(model)
    except BaseException:
        print(kube.agent.container_log(namespace, "triton")[-4000:])
        raise
    finally:
        triton.close()


def _quietly(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - not listening yet
        return False


def _exists(kube, ns, name) -> bool:
    try:
        read_pod(kube, ns, name)
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def python_job(name: str, code: str, *args: str, policy: str = "File", volumes=(), mounts=(),
               env=()) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"job": name}),
            spec=client.V1PodSpec(restart_policy="Never", volumes=list(volumes), containers=[
                client.V1Container(name="worker", image="aiops-worker", command=["python3", "-c", code],
                                   args=list(args), termination_message_policy=policy,
                                   volume_mounts=list(mounts), env=list(env))]))))


def job_condition(kube, namespace, name, kind) -> bool:
    job = client.BatchV1Api(kube.api_client).read_namespaced_job_status(name, namespace)
    return any(c.type == kind and c.status == "True" for c in job.status.conditions or [])


def job_pod(kube, namespace, name) -> client.V1Pod:
    return kube.core.list_namespaced_pod(namespace, label_selector=f"job={name}").items[0]


def test_job_exit_code_and_termination_message_fail_the_job(kube, namespace, wait_for):
    code = "import sys; open(sys.argv[1], 'w').write('accuracy 0.42 < 0.90'); sys.exit(3)"
    client.BatchV1Api(kube.api_client).create_namespaced_job(
        namespace, python_job("validate", code, "/dev/termination-log"))
    wait_for(lambda: job_condition(kube, namespace, "validate", "Failed"), timeout=30, what="Job Failed")
    pod = job_pod(kube, namespace, "validate")
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, term.message) == (3, "Error", "accuracy 0.42 < 0.90")
    assert pod.status.phase == "Failed"


def test_job_falls_back_to_logs_on_error(kube, namespace, wait_for):
    code = "import sys; print('loading model'); sys.exit('config.pbtxt: unknown data type TYPE_X')"
    client.BatchV1Api(kube.api_client).create_namespaced_job(
        namespace, python_job("logs", code, policy="FallbackToLogsOnError"))
    wait_for(lambda: job_condition(kube, namespace, "logs", "Failed"), timeout=30, what="Job Failed")
    term = job_pod(kube, namespace, "logs").status.container_statuses[0].state.terminated
    assert term.exit_code == 1 and "unknown data type TYPE_X" in term.message


def test_worker_job_runs_the_project_cli_and_completes(kube, namespace, wait_for):
    batch = client.BatchV1Api(kube.api_client)
    job = python_job("cli", "")
    job.spec.template.spec.containers[0].command = ["aiops", "--help"]
    batch.create_namespaced_job(namespace, job)
    wait_for(lambda: batch.read_namespaced_job_status("cli", namespace).status.succeeded == 1,
             timeout=60, what="the aiops Job succeeded")
    pod = job_pod(kube, namespace, "cli")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    assert "usage: aiops" in kube.agent.container_log(namespace, pod.metadata.name)
    # ... and through the API server, as `kubectl logs` reads it (the node's kubelet API).
    logs = kube.kubectl("logs", "-n", namespace, pod.metadata.name, "--tail=3").stdout
    assert len(logs.splitlines()) == 3
    assert logs.splitlines() == kube.agent.container_log(namespace, pod.metadata.name).splitlines()[-3:]
    assert kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, limit_bytes=5) == "usage"


def test_volumes_and_env_reach_the_process(kube, namespace, wait_for, tmp_path):
    (tmp_path / "host.txt").write_text("from the host")
    kube.core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings"), data={"mode": "fast"}))
    code = ("import json, os, sys; r = lambda p: open(p).read();"
            "open('/tmp/x', 'a').close();"
            "json.dump({'cfg': r(sys.argv[1]), 'host': r(sys.argv[2]), 'mode': os.environ['MODE'],"
            " 'ip': os.environ['POD_IP'], 'scratch': os.path.isdir(sys.argv[3])}, open(sys.argv[4], 'w'))")
    job = python_job(
        "env", code, "/etc/cfg/mode", "/host/host.txt", "/scratch", "/dev/termination-log",
        volumes=[client.V1Volume(name="cfg", config_map=client.V1ConfigMapVolumeSource(name="settings")),
                 client.V1Volume(name="host", host_path=client.V1HostPathVolumeSource(path=str(tmp_path))),
                 client.V1Volume(name="scratch", empty_dir=client.V1EmptyDirVolumeSource())],
        mounts=[client.V1VolumeMount(name="cfg", mount_path="/etc/cfg"),
                client.V1VolumeMount(name="host", mount_path="/host"),
                client.V1VolumeMount(name="scratch", mount_path="/scratch")],
        env=[client.V1EnvVar(name="MODE", value_from=client.V1EnvVarSource(
                 config_map_key_ref=client.V1ConfigMapKeySelector(name="settings", key="mode"))),
             client.V1EnvVar(name="POD_IP", value_from=client.V1EnvVarSource(
                 field_ref=client.V1ObjectFieldSelector(field_path="status.podIP")))])
    client.BatchV1Api(kube.api_client).create_namespaced_job(namespace, job)
    wait_for(lambda: job_condition(kube, namespace, "env", "Complete"), timeout=30, what="Job Complete")
    pod = job_pod(kube, namespace, "env")
    seen = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert seen == {"cfg": "fast", "host": "from the host", "mode": "fast", "ip": pod.status.pod_ip,
                    "scratch": True}


LIVENESS_SERVER = """
import http.server, os, sys, time
started = time.monotonic()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        # Healthy for 3 s after each start, then the liveness endpoint fails.
        self.send_response(200 if time.monotonic() - started < 3 else 500)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()
"""


def test_liveness_failure_restarts_the_process(kube, namespace, wait_for):
    container = client.V1Container(
        name="server", image="python:3.11", command=["python3", "-c", LIVENESS_SERVER],
        ports=[client.V1ContainerPort(name="web", container_port=8080)],
        env=[client.V1EnvVar(name="POD_IP", value_from=client.V1EnvVarSource(
            field_ref=client.V1ObjectFieldSelector(field_path="status.podIP")))],
        liveness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/live", port="web"),
                                      initial_delay_seconds=1, period_seconds=1, failure_threshold=1),
        readiness_probe=client.V1Probe(tcp_socket=client.V1TCPSocketAction(port="web"), period_seconds=1))
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="flaky"),
        spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=2)))
    wait_for(lambda: condition(read_pod(kube, namespace, "flaky"), "Ready"), timeout=30,
             what="the server Ready via its TCP readiness probe")
    first = kube.agent.container_pids(namespace, "flaky")["server"]

    def restarted():
        statuses = read_pod(kube, namespace, "flaky").status.container_statuses or []
        return statuses and statuses[0].restart_count >= 1 and statuses[0]

    status = wait_for(restarted, timeout=30, what="a restart after the liveness probe failed")
    assert status.last_state.terminated.exit_code == 143  # SIGTERM from the kubelet's kill
    wait_for(lambda: (pid := kube.agent.container_pids(namespace, "flaky").get("server")) and pid != first,
             timeout=15, what="a new process")
    assert not alive(first)
    events = kube.core.list_namespaced_event(namespace, field_selector="involvedObject.name=flaky").items
    assert any(e.reason == "Killing" and "liveness" in e.message for e in events)


def test_injected_behaviour_wins_over_launchers(kube, namespace, wait_for):
    kube.agent.inject(lambda p: p.metadata.name == "imagined", NEVER_READY)
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="imagined"),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="c", image="python", command=["python3", "-c", "import time; time.sleep(60)"])])))
    pod = wait_for(lambda: (p := read_pod(kube, namespace, "imagined")).status.phase == "Running" and p,
                   what="Running")
    assert not condition(pod, "Ready")
    assert kube.agent.container_pids(namespace, "imagined") == {}


def test_missing_config_map_waits_then_starts_once_created(kube, namespace, wait_for):
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="nocfg"),
        spec=client.V1PodSpec(
            restart_policy="Never",
            volumes=[client.V1Volume(name="cfg", config_map=client.V1ConfigMapVolumeSource(name="late"))],
            containers=[client.V1Container(
                name="c", image="python", command=["python3", "-c", "import sys; print(open(sys.argv[1]).read())"],
                args=["/cfg/greeting"], volume_mounts=[client.V1VolumeMount(name="cfg", mount_path="/cfg")])])))

    def waiting():
        statuses = read_pod(kube, namespace, "nocfg").status.container_statuses or []
        return statuses and statuses[0].state.waiting and statuses[0].state.waiting

    state = wait_for(waiting, what="the container waiting with a reason")
    assert state.reason == "ContainerCreating" and "late" in state.message
    assert read_pod(kube, namespace, "nocfg").status.phase == "Pending"
    # The Event and the pod status are separate writes (as a kubelet's are): the Event may come second.
    wait_for(lambda: any(e.reason == "FailedMount" for e in kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=nocfg").items), timeout=10, what="the FailedMount Event")

    kube.core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="late"), data={"greeting": "hello"}))
    wait_for(lambda: read_pod(kube, namespace, "nocfg").status.phase == "Succeeded", timeout=20,
             what="the pod run once its ConfigMap exists")
    assert "hello" in kube.agent.container_log(namespace, "nocfg")


def test_agent_restart_leaves_no_orphans_and_resumes_the_pod(kube, namespace, wait_for):
    """A stopped agent stops its processes; the next agent on the same state dir reaps what a
    crashed one left behind, and runs the pods it finds bound to its node again."""
    node = NodeSpec(name="aiops-restart-0", gpus=0)
    first = NodeAgent(kube.api_client, [node]).start()
    orphan = None
    try:
        kube.core.create_namespaced_pod(namespace, client.V1Pod(
            metadata=client.V1ObjectMeta(name="sleeper"),
            spec=client.V1PodSpec(node_name=node.name, containers=[client.V1Container(
                name="c", image="python", command=["python3", "-c", "import time; time.sleep(600)"])])))
        pid = wait_for(lambda: first.container_pids(namespace, "sleeper").get("c"), what="a process")
        first.stop()
        assert not alive(pid)

        # What a crashed agent leaves: a recorded process still running.
        orphan = subprocess.Popen(["sleep", "600"], start_new_session=True)
        PidRegistry(first.state_dir / "pids").record("crashed_c", orphan.pid)

        second = NodeAgent(kube.api_client, [node], state_dir=first.state_dir).start()
        try:
            assert orphan.wait(timeout=5) == -signal.SIGTERM
            new = wait_for(lambda: second.container_pids(namespace, "sleeper").get("c"),
                           what="the pod's process started again by the new agent")
            assert alive(new) and new != pid
            kube.core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=1)
            wait_for(lambda: not alive(new), timeout=10, what="the process stopped on deletion")
        finally:
            second.stop()
    finally:
        first.stop()
        if orphan and orphan.poll() is None:
            orphan.kill()
        kube.core.delete_node(node.name)
