"""`make dev` and `aiops dev up|down`: the control plane, a GPU node, the CRDs and the operator,
brought up together and torn down together.

The node is the real one (realnode.py: containerd, kubelet, the operator installed by its Helm
chart from locally built images) wherever this machine can run it, else the simulated one
(gpunode.py: pods as local processes, the operator in this process); the first lines say which
runs and why. Only one dev session runs per state directory: a second `make dev` finds the first
(by its lock) and says so, instead of starting a second control plane or a second node.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kubernetes import client, config

from aiops.devenv.controlplane import ControlPlaneError, LocalControlPlane, _alive
from aiops.devenv.gpunode import NodeAgent
from aiops.devenv.nodespec import NodeSpec
from aiops.devenv.realnode import RealNode
from aiops.devenv.toolchain import ensure_kubectl_helm


def api_client_for(cp: LocalControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cp.kubeconfig))


def install_crds(api: client.ApiClient, timeout: float = 30.0) -> list[str]:
    """Creates or updates the CRDs generated from the API models, then waits until Established."""
    from aiops.api.crds import build_crds

    ext = client.ApiextensionsV1Api(api)
    names = []
    for crd in build_crds():
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            current = ext.read_custom_resource_definition(name)
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(name, crd)
        except client.ApiException as e:
            if e.status != 404:
                raise
            ext.create_custom_resource_definition(crd)
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            conds = ext.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conds):
                break
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"CRD {name} was not Established within {timeout:.0f}s")
            time.sleep(0.1)
    return names


def _agent_pidfile(cp: LocalControlPlane) -> Path:
    return cp.state_dir / "run" / "node-agent.pid"


def _agent_running(cp: LocalControlPlane) -> bool:
    f = _agent_pidfile(cp)
    return f.exists() and _alive(int(f.read_text()))


def up_background(gpus: int = 2, node: str = "auto") -> LocalControlPlane:
    """Starts (or finds) the control plane and its node, and installs the CRDs: the real node with
    the operator installed by its chart, or a detached simulated node agent (no operator)."""
    if choose_node(node) == "real":
        from aiops.devenv.realcluster import RealCluster

        cluster = RealCluster()
        cluster.up()
        install_crds(api_client_for(cluster.cp))
        cluster.install_operator()
        return cluster.cp
    cp = LocalControlPlane().up()
    if not _agent_running(cp):
        log = open(cp.state_dir / "logs" / "node-agent.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "aiops", "dev", "node-agent", "--gpus", str(gpus)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        _agent_pidfile(cp).write_text(str(proc.pid))
    install_crds(api_client_for(cp))
    return cp


def down() -> None:
    cp = LocalControlPlane()
    problems = RealNode(cp).stop()  # nothing to do unless this cluster has the real node
    for problem in problems:
        print(f"aiops: could not undo on the host: {problem}", file=sys.stderr)
    f = _agent_pidfile(cp)
    if f.exists():
        pid = int(f.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
        f.unlink(missing_ok=True)
    cp.down()


def dev_node_agent(cp: LocalControlPlane, gpus: int) -> NodeAgent:
    """The dev session's node: claim data beside the cluster's etcd data, so volumes live as
    long as the cluster that binds them (the agent's own state dir is under the temp dir)."""
    spec = NodeSpec(gpus=gpus)
    return NodeAgent(api_client_for(cp), [spec], volumes_root=cp.state_dir / "volumes",
                     kubelet_tls=cp.kubelet_tls(spec.name))  # `kubectl logs` works


def run_node_agent(gpus: int = 2) -> int:
    cp = LocalControlPlane()
    if not cp.is_running():
        raise ControlPlaneError("the local control plane is not running: `aiops dev up` first")
    agent = dev_node_agent(cp, gpus).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    agent.stop()
    return 0


def kubectl_apply(cp: LocalControlPlane, path: str) -> None:
    kubectl, _ = ensure_kubectl_helm()
    subprocess.run([str(kubectl), "apply", "-f", path], check=True,
                   env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)})


def choose_node(requested: str) -> str:
    """"real" or "simulated" for `--node auto|real|simulated`, with the reason printed."""
    from aiops.devenv.realnode import machine_problems

    if requested == "simulated":
        print("aiops: simulated GPU node (asked for with --node simulated)", flush=True)
        return "simulated"
    problems = machine_problems()
    orphan = RealNode.stop_orphan() if not problems else None
    if orphan:
        print(f"aiops: {orphan}", flush=True)
    running = RealNode.registered()
    if running and Path(running["node_dir"]) == RealNode(LocalControlPlane()).paths.root:
        running = None  # this checkout's own: used again
    if running and not problems:
        problems = [f"a real node already runs on this machine (cluster {running['server']}, state in "
                    f"{running['node_dir']}); one fits a machine"]
    if not problems:
        print("aiops: real node (containerd + kubelet + kube-proxy, images built from this checkout)", flush=True)
        return "real"
    if requested == "real":
        raise ControlPlaneError("no real node on this machine: " + "; ".join(problems))
    print("aiops: SIMULATED GPU node: this machine cannot run the real one: " + "; ".join(problems), flush=True)
    return "simulated"


def _lock_session(cp: LocalControlPlane):
    cp.state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(cp.state_dir / ".dev-session.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ControlPlaneError(
            "another `make dev` is already running on this checkout; use it (`aiops dev env` "
            "prints its KUBECONFIG) or stop it with Ctrl-C first") from None
    return lock


def run_real_foreground(apply_dirs: list[str], with_operator: bool = True) -> int:
    """`make dev` on the real node: the operator runs as the chart's pod, its Jobs, Triton and
    Milvus in containers; the examples are applied fitted to this node. Ctrl-C stops it all and
    restores the host."""
    from aiops.devenv.realcluster import RealCluster

    cluster = RealCluster()
    lock = _lock_session(cluster.cp)  # noqa: F841  (held until this function returns)
    if cluster.cp.is_running() and cluster.cp.advertise_address is None:
        print("aiops: stopping this checkout's loopback-only control plane: the real node needs one "
              "reachable from pods", flush=True)
        down()
    started_here = RealNode.registered() is None  # else `aiops dev up` started it: it stays up
    try:
        cluster.up(owner=os.getpid())
        install_crds(api_client_for(cluster.cp))
        if with_operator:
            t0 = time.monotonic()
            cluster.install_operator()
            print(f"aiops: operator installed by `helm upgrade --install` in {time.monotonic() - t0:.0f}s "
                  f"(namespace aiops-system)", flush=True)
        for path in apply_dirs:
            changes = cluster.apply_fitted([Path(path)], namespace="default")
            print(f"aiops: applied {path}, fitted to this node:\n  " + "\n  ".join(changes), flush=True)
        print(f"\n  export KUBECONFIG={cluster.cp.kubeconfig}\n  kubectl get aiops -A\n", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        if started_here:
            for problem in cluster.down():
                print(f"aiops: could not undo on the host: {problem}", file=sys.stderr)
            print("aiops: real node and control plane stopped; host restored", flush=True)
    return 0


def run_foreground(apply_dirs: list[str], gpus: int = 2, with_operator: bool = True,
                   metrics_port: int = 9090, health_port: int = 8080, node: str = "auto") -> int:
    """`make dev`: everything in one terminal; Ctrl-C stops what this session started."""
    if choose_node(node) == "real":
        return run_real_foreground(apply_dirs, with_operator)
    cp = LocalControlPlane()
    lock = _lock_session(cp)  # noqa: F841  (held until this function returns)

    started_here = not cp.is_running()
    t0 = time.monotonic()
    cp.up()
    print(f"aiops: control plane {'started' if started_here else 'already running'} "
          f"in {time.monotonic() - t0:.1f}s at {cp.server}", flush=True)
    agent = None
    if not _agent_running(cp):
        agent = dev_node_agent(cp, gpus).start()
        node = agent.nodes[0]
        print(f"aiops: simulated GPU node {node.name} with {gpus} x {node.gpu_resource} and "
              f"{node.shared_gpus} x {node.shared_gpu_resource} registered; PVCs of StorageClass "
              f"local-path under {agent.volumes_root}", flush=True)
    try:
        install_crds(api_client_for(cp))
        for path in apply_dirs:
            kubectl_apply(cp, path)
        print(f"\n  export KUBECONFIG={cp.kubeconfig}\n  kubectl get aiops -A\n", flush=True)
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        if with_operator:
            from aiops.devenv import servicedns
            from aiops.runner import run_operator

            # The operator reaches what it deploys (e.g. managed Milvus) by service DNS names,
            # as in a cluster; here no DNS server knows them, so this process resolves them.
            servicedns.install(api_client_for(cp))

            run_operator(all_namespaces=True, liveness=f"http://127.0.0.1:{health_port}/healthz",
                         metrics_port=metrics_port)
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        if agent:
            agent.stop()
        if started_here:
            cp.down()
            print("aiops: local control plane stopped", flush=True)
    return 0
