"""ModelDeployment reconcile cost on the real local control plane, beside the framework's floor
(a plain Kopf handler that only creates a Deployment, bench/floor_operator.py) in the same run.

Each operator runs as its own process watching its own namespace; N ModelDeployments are applied
back to back, and a watch records when each child appears. The simulated node runs no real
processes here: validation Job pods succeed at once with a recorded valid verdict, and Triton pods
stay starting (their startupProbe never passes), so what is measured is the operator and the
control plane, not Triton or the worker (bench_rollback and the tests cover those).

Figures: apply -> first child (our validation Job; the floor's Deployment); apply -> Deployment
(ours: made beside the validation Job by default, and once more with
validation.startServerEarly=false, after the Job passed, and once more with each object asking for
a GPU, so the capacity check runs); validation pod Succeeded -> the status
leaving Validating (the operator's own reaction time, without the Job's scheduling and run);
throughputs; the operators' RSS and CPU time. A second floor also creates a bare Job per object,
run like our validation Job: what an operator that must validate in a Job cannot go below, so the
Job's own cost shows apart from ours. A third creates exactly our first pass's objects (our
Triton Deployment, its model-control Secret and NetworkPolicy and the validation Job, from our
builders): the API server, etcd, the controllers and every watcher handle objects of that size, so
the rest is our operator's own cost. The floors and ours alternate for BENCH_ROUNDS rounds (3) in
one cluster and each figure is the median over the rounds, with its range: this
machine's noise moves whole runs. BENCH_MDS sets the number of objects (100), BENCH_STATE_DIR
keeps the logs.
"""

from __future__ import annotations

import json
import os
import statistics
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
from aiops.devenv.gpunode import NodeAgent  # noqa: E402
from aiops.devenv.nodespec import NodeSpec  # noqa: E402
from aiops.devenv.podbehaviour import NEVER_READY, succeed  # noqa: E402
from aiops.devenv.session import api_client_for, install_crds  # noqa: E402
from aiops.devenv.toolchain import ensure_toolchain  # noqa: E402
from report import figure  # noqa: E402

N = int(os.environ.get("BENCH_MDS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
VERDICT = json.dumps({"valid": True, "reason": "Validated", "message": "recorded verdict", "config": {
    "name": "adder", "backend": "python", "max_batch_size": 8,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": ["4"]}]}})


MODELS = "/var/lib/aiops/models"  # under the host paths the operator lets a spec mount by default


def manifest(name: str, early: bool = True, gpus: int = 0) -> dict:
    return {"apiVersion": "aiops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "adder", "version": 1}, "repository": {"hostPath": {"path": MODELS}},
                     "resources": {"gpus": gpus, "memory": "1Gi"}, "monitoring": {"enabled": False},
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
            validates: bool, early: bool = True, pods_per_object: int = 0, gpus: int = 0) -> dict:
    """validates: an aiops operator (a validation pod and a Triton pod per object), not the floor.
    pods_per_object: the pods an object ends with (default: 2 for aiops, 1 for the floor)."""
    pods_per_object = pods_per_object or (2 if validates else 1)
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
                                               manifest(name, early, gpus))
        created[name] = time.monotonic()
    deadline, look = time.monotonic() + 600, time.monotonic() + 5
    while (len(deps.seen) < N or (validates and len(acted.seen) < N)) and time.monotonic() < deadline:
        time.sleep(0.1)
        if validates and time.monotonic() > look:  # an object the operator rejects never gets there
            look = time.monotonic() + 5
            invalid = [m for m in custom.list_namespaced_custom_object(
                "aiops.dev", "v1alpha1", namespace, "modeldeployments")["items"]
                if (m.get("status") or {}).get("phase") == "Invalid"]
            if invalid:
                proc.terminate()
                conditions = {c["type"]: c for c in invalid[0]["status"].get("conditions") or []}
                raise SystemExit(f"{len(invalid)} ModelDeployments are Invalid: "
                                 f"{(conditions.get('Valid') or {}).get('message')}")
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


def figures(floor: dict, with_job: dict, same: dict, ours: dict) -> dict[str, float]:
    """One round's figures (the floors and aiops measured back to back), by name."""
    return {
        "floor.apply_to_deployment.p50": pct(floor["deployment"], 0.5),
        "floor.apply_to_deployment.p99": pct(floor["deployment"], 0.99),
        "floor.throughput": floor["throughput"],
        "floor.rss": floor["rss"],
        "floor.cpu_per_object": floor["cpu"] * 1000,
        "floor.api_requests_per_object": floor["requests"],
        "floor_with_job.apply_to_deployment.p50": pct(with_job["deployment"], 0.5),
        "floor_with_job.apply_to_deployment.p99": pct(with_job["deployment"], 0.99),
        "floor_with_job.throughput": with_job["throughput"],
        "floor_with_job.cpu_per_object": with_job["cpu"] * 1000,
        "floor_with_job.api_requests_per_object": with_job["requests"],
        "floor_same_objects.apply_to_deployment.p50": pct(same["deployment"], 0.5),
        "floor_same_objects.apply_to_deployment.p99": pct(same["deployment"], 0.99),
        "floor_same_objects.throughput": same["throughput"],
        "floor_same_objects.cpu_per_object": same["cpu"] * 1000,
        "floor_same_objects.api_requests_per_object": same["requests"],
        "aiops.apply_to_first_child.p50": pct(ours["first_child"], 0.5),
        "aiops.apply_to_first_child.p99": pct(ours["first_child"], 0.99),
        "aiops.apply_to_deployment.p50": pct(ours["deployment"], 0.5),
        "aiops.apply_to_deployment.p99": pct(ours["deployment"], 0.99),
        "aiops.validated_to_next_step.p50": pct(ours["reaction"], 0.5),
        "aiops.validated_to_next_step.p99": pct(ours["reaction"], 0.99),
        "aiops.throughput.first_child": ours["first_throughput"],
        "aiops.throughput": ours["throughput"],
        "aiops.rss": ours["rss"],
        "aiops.cpu_per_object": ours["cpu"] * 1000,
        "aiops.api_requests_per_object": ours["requests"],
        "ratio.first_child_p50_vs_floor": pct(ours["first_child"], 0.5) / pct(floor["deployment"], 0.5),
        "ratio.deployment_p50_vs_floor": pct(ours["deployment"], 0.5) / pct(floor["deployment"], 0.5),
        "ratio.deployment_p99_vs_floor": pct(ours["deployment"], 0.99) / pct(floor["deployment"], 0.99),
        "ratio.first_child_throughput_floor_vs_aiops": floor["throughput"] / max(ours["first_throughput"], 1e-9),
        "ratio.throughput_floor_vs_aiops": floor["throughput"] / max(ours["throughput"], 1e-9),
        "ratio.deployment_p50_vs_floor_with_job": pct(ours["deployment"], 0.5) / pct(with_job["deployment"], 0.5),
        "ratio.deployment_p99_vs_floor_with_job": pct(ours["deployment"], 0.99) / pct(with_job["deployment"], 0.99),
        "ratio.throughput_floor_with_job_vs_aiops": with_job["throughput"] / max(ours["throughput"], 1e-9),
        "ratio.deployment_p50_vs_floor_same_objects": pct(ours["deployment"], 0.5) / pct(same["deployment"], 0.5),
        "ratio.deployment_p99_vs_floor_same_objects": pct(ours["deployment"], 0.99) / pct(same["deployment"], 0.99),
        "ratio.throughput_floor_same_objects_vs_aiops": same["throughput"] / max(ours["throughput"], 1e-9),
    }


UNITS = {"ratio": "x", "throughput": "obj/s", "rss": "MiB", "api_requests_per_object": "req"}  # first match wins
NOTES = {
    "floor.apply_to_deployment.p50": "plain Kopf handler: {n} ModelDeployments applied back to back, one namespace",
    "floor.cpu_per_object": "operator process CPU time",
    "floor.api_requests_per_object": "all clients, until every pod is up",
    "floor_with_job.apply_to_deployment.p50": "the same handler also creating a bare Job, run like our validation Job",
    "floor_same_objects.apply_to_deployment.p50": "the same handler creating our own Triton Deployment, its "
                                                  "model-control Secret and validation Job, from our builders",
    "aiops.apply_to_first_child.p50": "the validation Job",
    "aiops.apply_to_deployment.p50": "made beside the validation Job",
    "aiops.validated_to_next_step.p50": "validation pod Succeeded -> status past Validating: the operator's "
                                        "own reaction",
    "aiops.throughput.first_child": "objects given their first child",
    "aiops.throughput": "objects given their Deployment",
    "aiops.rss": "operator process with {n} ModelDeployments",
    "aiops.cpu_per_object": "operator process CPU time, until every Deployment",
}


def report(rounds: list[dict[str, float]], late: dict, gpu: dict) -> None:
    """The median of each figure over the rounds, with the lowest and highest when there are several:
    the machine's noise moves whole rounds, so a single round can be far off either way."""
    for name in rounds[0]:
        values = sorted(r[name] for r in rounds)
        unit = next((u for key, u in UNITS.items() if key in name), "ms")
        note = NOTES.get(name, "").format(n=N)
        if len(values) > 1:
            spread = f"rounds: {values[0]:.3g}-{values[-1]:.3g}"
            note = f"{note}; {spread}" if note else spread
        figure(name, statistics.median(values), unit, note)
    figure("aiops.late.apply_to_deployment.p50", pct(late["deployment"], 0.5), "ms",
           "startServerEarly=false: after the validation Job passed")
    figure("aiops.late.apply_to_deployment.p99", pct(late["deployment"], 0.99), "ms")
    figure("aiops.late.validated_to_next_step.p50", pct(late["reaction"], 0.5), "ms", "incl. creating the Deployment")
    figure("aiops.gpu.apply_to_deployment.p50", pct(gpu["deployment"], 0.5), "ms",
           "each object asks for 1 GPU: the capacity check runs before the Deployment is made")
    figure("aiops.gpu.apply_to_deployment.p99", pct(gpu["deployment"], 0.99), "ms")
    figure("aiops.gpu.throughput", gpu["throughput"], "obj/s")
    figure("aiops.gpu.cpu_per_object", gpu["cpu"] * 1000, "ms")


# Label and the floor_operator.py switch of each floor: plain (the floor), with a bare Job,
# and with our own objects.
FLOORS = (("floor", ""), ("floor-job", "FLOOR_WITH_JOB"), ("floor-same", "FLOOR_SAME_OBJECTS"))


def main() -> None:
    tools = ensure_toolchain()
    with tempfile.TemporaryDirectory() as tmp:
        state = os.environ.get("BENCH_STATE_DIR") or tmp  # set it to keep the operators' logs
        cp = LocalControlPlane(Path(state) / "cluster", Ports.free())
        cp.up(tools=tools)
        api = api_client_for(cp)
        # Room for every validation pod and Triton pod of the run: node size is not what is measured.
        agent = NodeAgent(api, [NodeSpec(cpu="1024", memory="4Ti", max_pods=(5 * ROUNDS + 3) * N + 100,
                                         gpus=N + 3)],
                          launchers=())
        agent.inject(lambda p: (p.metadata.labels or {}).get("aiops.dev/role") == "validation",
                     succeed(message=VERDICT))
        agent.inject(lambda p: (p.metadata.labels or {}).get("app.kubernetes.io/name") == "triton", NEVER_READY)
        agent.start()
        strip = lambda name, suffix: name[: -len(suffix)] if name.endswith(suffix) else None  # noqa: E731

        def aiops(label: str, early: bool, gpus: int = 0) -> dict:
            return measure(api, label, [sys.executable, "-m", "aiops", "run", "-n", label, "--metrics-port", "0",
                                        "--liveness", ""], cp.kubeconfig, Path(state) / f"{label}.log", strip,
                           tools.kubectl, validates=True, early=early, gpus=gpus)

        try:
            install_crds(api)
            rounds = []
            for r in range(ROUNDS):  # the floors and aiops alternate, so slow spells of the machine hit all
                floors = []
                for label, variant in FLOORS:
                    for flag in ("FLOOR_WITH_JOB", "FLOOR_SAME_OBJECTS"):
                        os.environ[flag] = "1" if flag == variant else ""
                    floors.append(measure(api, f"{label}-{r}", [sys.executable, "-m", "kopf", "run", "--standalone",
                                                               "-n", f"{label}-{r}", str(HERE / "floor_operator.py")],
                                          cp.kubeconfig, Path(state) / f"{label}-{r}.log", strip, tools.kubectl,
                                          validates=False, pods_per_object=2 if variant else 1))
                rounds.append(figures(*floors, aiops(f"ours-{r}", early=True)))
            late = aiops("late", early=False)
            gpu = aiops("gpu", early=True, gpus=1)
        finally:
            agent.stop()
            cp.down()
    report(rounds, late, gpu)


if __name__ == "__main__":
    main()
