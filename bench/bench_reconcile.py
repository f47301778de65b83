"""ModelDeployment reconcile cost on the real local control plane, beside the framework's floor
(a plain Kopf handler that only creates a Deployment, bench/floor_operator.py) in the same run.

Each operator runs as its own process watching its own namespace; N ModelDeployments are applied
back to back, and a watch records when each child appears. The simulated node runs no real
processes here: validation Job pods succeed at once with a recorded valid verdict, and Triton pods
stay starting (their startupProbe never passes), so what is measured is the operator and the
control plane, not Triton or the worker (bench_rollback and the tests cover those).

Figures: apply -> first child (our validation Job; the floor's Deployment); apply -> Deployment
(ours: made beside the validation Job by default, and once more with
validation.startServerEarly=false, after the Job passed); validation pod Succeeded -> the status
leaving Validating (the operator's own reaction time, without the Job's scheduling and run);
throughputs; the operators' RSS and CPU time. BENCH_MDS sets the number of objects (100),
BENCH_STATE_DIR keeps the logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kubernetes import client, watch  # noqa: E402

from aiops.devenv.controlplane import LocalControlPlane, Ports  # noqa: E402
from aiops.devenv.gpunode import NEVER_READY, NodeAgent, NodeSpec, succeed  # noqa: E402
from aiops.devenv.session import api_client_for, install_crds  # noqa: E402
from aiops.devenv.toolchain import ensure_toolchain  # noqa: E402
from report import figure  # noqa: E402

N = int(os.environ.get("BENCH_MDS", "100"))
VERDICT = json.dumps({"valid": True, "reason": "Validated", "message": "recorded verdict", "config": {
    "name": "adder", "backend": "python", "max_batch_size": 8,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}]}})


def manifest(name: str, early: bool = True) -> dict:
    return {"apiVersion": "aiops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "adder", "version": 1}, "repository": {"hostPath": {"path": "/srv/models"}},
                     "resources": {"gpus": 0, "memory": "1Gi"}, "monitoring": {"enabled": False},
                     "validation": {"startServerEarly": early}}}


class Arrivals:
    """First time each object of a kind shows up in a namespace, from a watch of plain dicts.

    The lister is wrapped in a lambda so the client does not build typed models from every event
    (the lambda has no return annotation to find a model by): the measuring process shares the
    2 cores with the operators, and decoding typed pods and Jobs cost it more CPU in the aiops
    run, with its Jobs and second pods, than in the floor's."""

    def __init__(self, api, namespace: str, lister, key):
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(api, namespace, lister, key), daemon=True)
        self._thread.start()

    def _run(self, api, namespace, lister, key):
        untyped = lambda ns, **kw: lister(ns, **kw)  # noqa: E731
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(untyped, namespace, timeout_seconds=2):
                    name = key(event["object"])
                    if name and name not in self.seen:
                        self.seen[name] = time.monotonic()
            except Exception:  # noqa: BLE001 - the cluster went down under a watch that was stopping
                if not self._stop.is_set():
                    raise

    def stop(self):
        self._stop.set()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_operator(cmd: list[str], kubeconfig: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "AIOPS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=HERE.parent)


def api_requests(kubectl: Path, kubeconfig: Path) -> float:
    """All requests the API server has answered so far (its apiserver_request_total counter)."""
    text = subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics"],
                          capture_output=True, text=True, check=True).stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("apiserver_request_total{"))


def past_validation(md: dict) -> str | None:
    """The name of a ModelDeployment whose status has left the Validating step."""
    status = md.get("status") or {}
    step = (status.get("rollout") or {}).get("step")
    return md["metadata"]["name"] if step not in (None, "Validating") or status.get("servingVersion") else None


def measure(api, namespace: str, cmd: list[str], kubeconfig: Path, log: Path, child_of, kubectl: Path,
            validates: bool, early: bool = True) -> dict:
    """validates: an aiops operator (a validation pod and a Triton pod per object), not the floor."""
    pods_per_object = 2 if validates else 1
    requests_before = api_requests(kubectl, kubeconfig)
    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    while not (sa := core.list_namespaced_service_account(namespace).items) or not sa[0].secrets:
        time.sleep(0.05)
    proc = run_operator(cmd, kubeconfig, log)
    time.sleep(3)  # let it start and list
    owner = lambda o: (o["metadata"].get("labels") or {}).get("aiops.dev/modeldeployment")  # noqa: E731
    deps = Arrivals(api, namespace, apps.list_namespaced_deployment,
                    lambda o: child_of(o["metadata"]["name"], "-triton"))
    jobs = Arrivals(api, namespace, batch.list_namespaced_job, owner)

    def finished(o):  # the validation pod's Succeeded, as the operator could first see it
        return owner(o) if (o.get("status") or {}).get("phase") == "Succeeded" else None

    done_pods = Arrivals(api, namespace, core.list_namespaced_pod, finished)
    custom = client.CustomObjectsApi(api)
    acted = Arrivals(api, namespace, lambda ns, **kw: custom.list_namespaced_custom_object(
        "aiops.dev", "v1alpha1", ns, "modeldeployments", **kw), past_validation)
    created = {}
    cpu_before = cpu_seconds(proc.pid)
    t0 = time.monotonic()
    for i in range(N):
        name = f"md-{i:03d}"
        custom.create_namespaced_custom_object("aiops.dev", "v1alpha1", namespace, "modeldeployments",
                                               manifest(name, early))
        created[name] = time.monotonic()
    deadline = time.monotonic() + 600
    while (len(deps.seen) < N or (validates and len(acted.seen) < N)) and time.monotonic() < deadline:
        time.sleep(0.1)
    elapsed = max(deps.seen.values(), default=t0) - t0
    rss, cpu = rss_mb(proc.pid), cpu_seconds(proc.pid) - cpu_before
    proc.terminate()
    proc.wait(timeout=30)
    for arrivals in (deps, jobs, done_pods, acted):
        arrivals.stop()
    first = {n: (jobs.seen.get(n) or deps.seen.get(n)) for n in created}
    first_span = max((v for v in first.values() if v), default=t0) - t0
    # The pods of what was just made (Deployments' ReplicaSets, Jobs) still come up: let the
    # controllers and the node finish before the next operator is measured.
    settle = time.monotonic() + 120
    while time.monotonic() < settle and len([p for p in core.list_namespaced_pod(namespace).items
                                             if p.status.phase in ("Running", "Succeeded")]) < N * pods_per_object:
        time.sleep(0.5)
    return {
        # Everyone's: the operator's own, and the controllers', scheduler's and node's work it causes.
        "requests": (api_requests(kubectl, kubeconfig) - requests_before) / N,
        "first_child": sorted(first[n] - created[n] for n in created if first.get(n)),
        "deployment": sorted(deps.seen[n] - created[n] for n in created if n in deps.seen),
        "reaction": sorted(acted.seen[n] - done_pods.seen[n] for n in created
                           if n in acted.seen and n in done_pods.seen),
        "throughput": len(deps.seen) / elapsed if elapsed > 0 else 0.0,
        "first_throughput": len([v for v in first.values() if v]) / first_span if first_span > 0 else 0.0,
        "rss": rss, "cpu": cpu / N, "done": len(deps.seen),
    }


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def main() -> None:
    tools = ensure_toolchain()
    with tempfile.TemporaryDirectory() as tmp:
        state = os.environ.get("BENCH_STATE_DIR") or tmp  # set it to keep the operators' logs
        cp = LocalControlPlane(Path(state) / "cluster", Ports.free())
        cp.up(tools=tools)
        api = api_client_for(cp)
        # Room for every validation pod and Triton pod of the run: node size is not what is measured.
        agent = NodeAgent(api, [NodeSpec(cpu="1024", memory="4Ti", max_pods=2000)], launchers=())
        agent.inject(lambda p: (p.metadata.labels or {}).get("aiops.dev/role") == "validation",
                     succeed(message=VERDICT))
        agent.inject(lambda p: (p.metadata.labels or {}).get("app.kubernetes.io/name") == "triton", NEVER_READY)
        agent.start()
        try:
            install_crds(api)
            strip = lambda name, suffix: name[: -len(suffix)] if name.endswith(suffix) else None  # noqa: E731
            floor = measure(api, "floor", [sys.executable, "-m", "kopf", "run", "--standalone", "-n", "floor",
                                           str(HERE / "floor_operator.py")], cp.kubeconfig,
                            Path(state) / "floor.log", strip, tools.kubectl, validates=False)
            runs = {}
            for label, early in (("ours", True), ("late", False)):
                runs[label] = measure(api, label, [sys.executable, "-m", "aiops", "run", "-n", label, "--metrics-port",
                                                   "0", "--liveness", ""], cp.kubeconfig, Path(state) / f"{label}.log",
                                      strip, tools.kubectl, validates=True, early=early)
            ours, late = runs["ours"], runs["late"]
        finally:
            agent.stop()
            cp.down()
    note = f"{N} ModelDeployments applied back to back, one namespace"
    figure("floor.apply_to_deployment.p50", pct(floor["deployment"], 0.5), "ms", "plain Kopf handler: " + note)
    figure("floor.apply_to_deployment.p99", pct(floor["deployment"], 0.99), "ms")
    figure("floor.throughput", floor["throughput"], "obj/s")
    figure("floor.rss", floor["rss"], "MiB")
    figure("floor.cpu_per_object", floor["cpu"] * 1000, "ms", "operator process CPU time")
    figure("floor.api_requests_per_object", floor["requests"], "req", "all clients, until every pod is up")
    figure("aiops.apply_to_first_child.p50", pct(ours["first_child"], 0.5), "ms", "the validation Job: " + note)
    figure("aiops.apply_to_first_child.p99", pct(ours["first_child"], 0.99), "ms")
    figure("aiops.apply_to_deployment.p50", pct(ours["deployment"], 0.5), "ms", "made beside the validation Job")
    figure("aiops.apply_to_deployment.p99", pct(ours["deployment"], 0.99), "ms")
    figure("aiops.late.apply_to_deployment.p50", pct(late["deployment"], 0.5), "ms",
           "startServerEarly=false: after the validation Job passed")
    figure("aiops.late.apply_to_deployment.p99", pct(late["deployment"], 0.99), "ms")
    figure("aiops.validated_to_next_step.p50", pct(ours["reaction"], 0.5), "ms",
           "validation pod Succeeded -> status past Validating: the operator's own reaction")
    figure("aiops.validated_to_next_step.p99", pct(ours["reaction"], 0.99), "ms")
    figure("aiops.late.validated_to_next_step.p50", pct(late["reaction"], 0.5), "ms", "incl. creating the Deployment")
    figure("aiops.throughput.first_child", ours["first_throughput"], "obj/s", "objects given their first child")
    figure("aiops.throughput", ours["throughput"], "obj/s", f"{ours['done']}/{N} reached a Deployment")
    figure("aiops.rss", ours["rss"], "MiB", f"operator process with {N} ModelDeployments")
    figure("aiops.cpu_per_object", ours["cpu"] * 1000, "ms", "operator process CPU time, until every Deployment")
    figure("aiops.api_requests_per_object", ours["requests"], "req", "all clients, until every pod is up")
    figure("ratio.first_child_p50_vs_floor", pct(ours["first_child"], 0.5) / pct(floor["deployment"], 0.5), "x")
    figure("ratio.deployment_p50_vs_floor", pct(ours["deployment"], 0.5) / pct(floor["deployment"], 0.5), "x")
    figure("ratio.deployment_p99_vs_floor", pct(ours["deployment"], 0.99) / pct(floor["deployment"], 0.99), "x")
    figure("ratio.first_child_throughput_floor_vs_aiops", floor["throughput"] / max(ours["first_throughput"], 1e-9),
           "x")
    figure("ratio.throughput_floor_vs_aiops", floor["throughput"] / max(ours["throughput"], 1e-9), "x")


if __name__ == "__main__":
    main()
