"""A real Kubernetes node on this machine: containerd and runc run the pods' containers, the kubelet
and kube-proxy are Kubernetes' own (built from the same 1.20.2 source as the control plane), the
CNI bridge plugin gives pods their network, and a device plugin on the kubelet's gRPC API
advertises the reference node's GPUs (deviceplugin.py), so the kubelet, not our code, accounts for
GPUs and admits pods.

One real node fits a machine: the kubelet's device-plugin folder is fixed at
/var/lib/kubelet/device-plugins, and the node owns host-wide things (iptables chains, a bridge,
sysctls). `/run/aiops-node.json` names the running one; a second start finds it and says so.
Everything the node changes on the host is recorded first and undone by `stop()` (hoststate.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from aiops.devenv import clusterdns, hoststate, nodeconfig
from aiops.devenv.controlplane import ControlPlaneError, LocalControlPlane, _alive
from aiops.devenv.nodeconfig import NodePaths
from aiops.devenv.pki import CertRequest
from aiops.devenv.toolchain import cache_dir, ensure_kubectl_helm, kubernetes_bin_dir

NODE_NAME = "aiops-gpu-0"
NODE_REGISTRY = Path("/run/aiops-node.json")
COMPONENTS = ("containerd", "kubelet", "device-plugin", "kube-proxy", "local-path")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for the CRI's containers and images
# GPU feature discovery's labels on the reference node (GFD runs beside NVIDIA's device plugin).
GPU_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-RTX-4000-Ada-Generation",
              "nvidia.com/gpu.memory": "20475"}


class RealNodeUnavailable(RuntimeError):
    """This machine cannot run a real node (the message says why); the simulated node still can."""


class RealNodeBusy(RuntimeError):
    """A real node already runs on this machine."""


def host_address() -> str:
    """The address of the interface the default route leaves by: what pods reach the host on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the route's source
        return s.getsockname()[0]


def host_mtu() -> int:
    route = subprocess.run(["ip", "-o", "route", "get", "192.0.2.254"], capture_output=True, text=True).stdout.split()
    dev = route[route.index("dev") + 1] if "dev" in route else "eth0"
    try:
        return int(Path(f"/sys/class/net/{dev}/mtu").read_text())
    except OSError:
        return 1500


def cni_bin_dir() -> str | None:
    return next((d for d in CNI_BIN_DIRS if os.access(Path(d) / "bridge", os.X_OK)), None)


def machine_problems() -> list[str]:
    """Why this machine cannot run a real node; empty when it can."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (the kubelet, containerd and the CNI plugins need root)")
    for exe in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip"):
        if not shutil.which(exe):
            problems.append(f"`{exe}` is missing (apt-get install containerd runc iptables iproute2)")
    if not cni_bin_dir():
        problems.append("the CNI plugins are missing (apt-get install containernetworking-plugins)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        problems.append("the kernel has no overlay filesystem (containerd's snapshotter needs it)")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append("no cgroup hierarchy at /sys/fs/cgroup")
    for binary in ("kubelet", "kube-proxy"):
        if not os.access(kubernetes_bin_dir() / binary, os.X_OK):
            problems.append(f"{binary} is not built yet (`make toolchain`)")
    return problems


def _stop_pid(pid: int, grace: float = 10.0) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


@dataclass
class RealNode:
    """The node `name` of the control plane `cp`, its state under `<cp state dir>/node`."""

    cp: LocalControlPlane
    name: str = NODE_NAME
    sandbox_image: str = "localhost/aiops/pause:3.2"
    dns_image: str = "localhost/aiops/cluster-dns:1"

    def __post_init__(self):
        self.paths = NodePaths(self.cp.state_dir / "node")
        self.containerd_root = cache_dir() / "containerd"
        self.address = self.cp.advertise_address or ""

    @property
    def record_file(self) -> Path:
        return self.paths.root / "host-record.json"

    # ---- status ------------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        found = {}
        for c in COMPONENTS:
            f = self.paths.pidfile(c)
            if f.exists() and _alive(pid := int(f.read_text())):
                found[c] = pid
        return found

    @staticmethod
    def registered() -> dict | None:
        """The real node of this machine, if its registry entry names live processes."""
        try:
            entry = json.loads(NODE_REGISTRY.read_text())
        except (OSError, ValueError):
            return None
        pidfile = Path(entry["node_dir"]) / "run" / "kubelet.pid"
        alive = pidfile.exists() and _alive(int(pidfile.read_text()))
        return entry if alive else None

    @staticmethod
    def stop_orphan() -> str | None:
        """Stops the machine's real node, and its control plane, when the process it lived for has
        gone without stopping it (killed, or a crashed test run); says what it did."""
        entry = RealNode.registered()
        owner = entry.get("owner") if entry else None
        if owner is None or _alive(owner):
            return None
        cp = LocalControlPlane(Path(entry["node_dir"]).parent)
        problems = RealNode(cp).stop()
        cp.down()
        return (f"stopped the real node that process {owner} left running (cluster {entry['server']})"
                + (f"; not undone: {'; '.join(problems)}" if problems else ""))

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 120.0, images=None, owner: int | None = None) -> RealNode:
        """Starts containerd, the kubelet, the device plugin and kube-proxy, and waits until the
        Node is Ready with its GPUs. `images(address)` loads images into containerd before the
        kubelet starts (at least the sandbox image); `timeout` bounds containerd's start, then the
        rest after the images are in. `owner`: the process the node lives for (a
        `make dev` in the foreground, a test session); once it is gone, the next start on this
        machine stops the node it left behind. None: the node runs until `aiops dev down`."""
        problems = machine_problems()
        if problems:
            raise RealNodeUnavailable("; ".join(problems))
        if not self.address:
            raise ControlPlaneError("a real node needs the control plane started with advertise_address")
        other = self.registered()
        if other and Path(other["node_dir"]) != self.paths.root:
            raise RealNodeBusy(
                f"a real node already runs on this machine (state in {other['node_dir']}, cluster "
                f"{other['server']}): only one fits (the kubelet's device-plugin folder is fixed). Use it, "
                f"or stop it with `aiops dev down` in its checkout")
        if other and set(self.pids()) == set(COMPONENTS):
            if images:  # running already: only bring it the images built since
                images(str(self.paths.containerd_socket))
            return self
        self._clean_up_stale_node(other)
        for d in ("run", "logs", "containerd", "kubelet", "kube-proxy"):
            (self.paths.root / d).mkdir(parents=True, exist_ok=True)
        hoststate.record_once(self.record_file, self._host_paths(), links=[nodeconfig.BRIDGE])
        NODE_REGISTRY.write_text(json.dumps({"node_dir": str(self.paths.root), "server": self.cp.server,
                                             "name": self.name, "owner": owner}))
        try:
            self._start_containerd(time.monotonic() + timeout)
            if images:  # may build images first: minutes that the node's own start-up must not lose
                images(str(self.paths.containerd_socket))
            deadline = time.monotonic() + timeout
            self._start_kubelet()
            self._wait_for(lambda: (self.paths.device_plugin_dir / "kubelet.sock").exists(), deadline,
                           "kubelet", "did not open its device-plugin socket")
            self._spawn("device-plugin", [sys.executable, "-m", "aiops", "dev", "device-plugin",
                                          "--socket-dir", str(self.paths.device_plugin_dir)])
            self._start_kube_proxy()
            self._wait_node_ready(deadline)
            self._start_addons(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[str]:
        """Stops every process of the node and its containers, and restores the host. Returns
        what could not be undone (logged by the caller). A cluster that never had the real node,
        or whose node is stopped already, has nothing to stop; nor does it touch another's."""
        entry = self._registry_entry()
        if entry is not None and Path(entry["node_dir"]) != self.paths.root:
            return []  # the machine's node belongs to another cluster
        pids = self.pids()
        if entry is None and not pids and not self.record_file.exists():
            return []
        for c in ("local-path", "device-plugin", "kube-proxy", "kubelet"):
            if c in pids:
                _stop_pid(pids[c])
            self.paths.pidfile(c).unlink(missing_ok=True)
        if "containerd" in pids:
            self._remove_containers()
            _stop_pid(pids["containerd"], grace=20)
        self.paths.pidfile("containerd").unlink(missing_ok=True)
        problems = []
        leftover = hoststate.unmount_all(self.paths.root, self.containerd_root, self.paths.kubelet_root)
        if leftover:
            problems.append(f"still mounted: {', '.join(leftover[:3])}")
        if self.record_file.exists():
            problems += hoststate.restore(hoststate.HostRecord.load(self.record_file), self.record_file)
        shutil.rmtree(self.paths.cni_ipam_dir, ignore_errors=True)
        shutil.rmtree(self.paths.root / "containerd" / "state", ignore_errors=True)
        if entry is not None:
            NODE_REGISTRY.unlink(missing_ok=True)
        return problems

    @staticmethod
    def _registry_entry() -> dict | None:
        try:
            return json.loads(NODE_REGISTRY.read_text())
        except (OSError, ValueError):
            return None

    def _clean_up_stale_node(self, live: dict | None) -> None:
        """A node that died without its stop (SIGKILL, a crashed test run) left host state and
        maybe containers behind: undo them before starting afresh."""
        entry = self._registry_entry()
        if live or entry is None:
            return
        RealNode(LocalControlPlane(Path(entry["node_dir"]).parent), self.name).stop()

    def _host_paths(self) -> list[Path]:
        """Host paths the node may create, recorded so that stop removes only what it made."""
        return [self.paths.kubelet_root, Path("/var/log/pods"), Path("/var/log/containers"),
                Path("/var/lib/cni"), Path("/run/containerd"), Path("/var/run/netns")]

    # ---- components --------------------------------------------------------------------------
    def _spawn(self, component: str, cmd: list[str]) -> None:
        with open(self.paths.log(component), "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.paths.root)
        self.paths.pidfile(component).write_text(str(proc.pid))

    def _wait_for(self, ready, deadline: float, component: str, what: str, interval: float = 0.2) -> None:
        while time.monotonic() < deadline:
            if component not in self.pids():
                self._fail(component, "exited during start-up")
            if ready():
                return
            time.sleep(interval)
        self._fail(component, what)

    def _fail(self, component: str, what: str) -> None:
        log = self.paths.log(component)
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        raise ControlPlaneError(f"{component} {what}; its log ({log}) ends with:\n" + "\n".join(tail))

    def ctr(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", str(self.paths.containerd_socket), "--namespace",
                               K8S_NAMESPACE, *args], capture_output=True, text=True, check=check, timeout=120)

    def _start_containerd(self, deadline: float) -> None:
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        self.paths.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (self.paths.cni_conf_dir / "10-aiops.conflist").write_text(nodeconfig.cni_conflist(self.paths, host_mtu()))
        config = nodeconfig.containerd_config(self.paths, self.sandbox_image, cni_bin_dir() or CNI_BIN_DIRS[0])
        config = config.replace(f'root = "{self.paths.root / "containerd" / "root"}"',
                                f'root = "{self.containerd_root}"')
        self.paths.containerd_config.write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(self.paths.containerd_config)])
        self._wait_for(lambda: self.ctr("version").returncode == 0, deadline, "containerd",
                       "did not answer on its socket")

    def _start_kubelet(self) -> None:
        ca = self.cp.ca
        client_cert, client_key = ca.issue(CertRequest(
            f"kubelet-{self.name}-client", f"system:node:{self.name}", organizations=("system:nodes",)))
        serving_cert, serving_key = ca.issue(CertRequest(
            f"kubelet-{self.name}", self.name, client=False, server=True,
            dns_names=(self.name, socket.gethostname()), ip_addresses=(self.address, "127.0.0.1")))
        d = self.paths.kubelet_dir
        (d / "kubeconfig").write_text(nodeconfig.kubeconfig(self._server(), self.cp.ca_file, client_cert,
                                                            client_key, f"system:node:{self.name}"))
        (d / "config.yaml").write_text(nodeconfig.kubelet_config(self.paths, self.cp.ca_file, serving_cert,
                                                                 serving_key, resolv_conf="/etc/resolv.conf"))
        labels = ",".join(f"{k}={v}" for k, v in GPU_LABELS.items())
        self._spawn("kubelet", [
            str(kubernetes_bin_dir() / "kubelet"), f"--config={d / 'config.yaml'}",
            f"--kubeconfig={d / 'kubeconfig'}", f"--root-dir={self.paths.kubelet_root}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.paths.containerd_socket}",
            f"--hostname-override={self.name}", f"--node-ip={self.address}", f"--node-labels={labels}",
            "--v=1"])

    def _start_kube_proxy(self) -> None:
        cert, key = self.cp.ca.issue(CertRequest("kube-proxy", "system:kube-proxy"))
        d = self.paths.kube_proxy_dir
        (d / "kubeconfig").write_text(nodeconfig.kubeconfig(self._server(), self.cp.ca_file, cert, key,
                                                            "system:kube-proxy"))
        (d / "config.yaml").write_text(nodeconfig.kube_proxy_config(d / "kubeconfig", self.name))
        self._spawn("kube-proxy", [str(kubernetes_bin_dir() / "kube-proxy"), f"--config={d / 'config.yaml'}",
                                   "--v=1"])

    def _server(self) -> str:
        return f"https://{self.address}:{self.cp.ports.apiserver}"

    def _wait_node_ready(self, deadline: float) -> None:
        from aiops.devenv.session import api_client_for

        core = client.CoreV1Api(api_client_for(self.cp))

        def ready() -> bool:
            try:
                node = core.read_node(self.name)
            except client.ApiException:
                return False
            conds = {c.type: c.status for c in node.status.conditions or []}
            gpus = (node.status.allocatable or {}).get("nvidia.com/gpu")
            return conds.get("Ready") == "True" and gpus not in (None, "0")

        for component in ("kubelet", "device-plugin", "kube-proxy"):
            if component not in self.pids():
                self._fail(component, "exited during start-up")
        self._wait_for(ready, deadline, "kubelet", "did not report the node Ready with its GPUs", interval=0.5)

    @property
    def volumes_root(self) -> Path:
        """Where the local-path provisioner keeps volumes: beside the cluster's etcd data, so they
        live as long as the cluster whose claims they back."""
        return self.cp.state_dir / "volumes"

    def _start_addons(self, deadline: float) -> None:
        """What every cluster's node relies on: a default StorageClass with its provisioner, and
        cluster DNS (waited for: pods resolving Service names right away is part of Ready)."""
        self.volumes_root.mkdir(parents=True, exist_ok=True)
        self._spawn("local-path", [sys.executable, "-m", "aiops", "dev", "local-path", "--kubeconfig",
                                   str(self.cp.kubeconfig), "--node", self.name, "--root", str(self.volumes_root)])
        kubectl, _ = ensure_kubectl_helm()
        text = "\n---\n".join(json.dumps(o) for o in clusterdns.build_objects(self.dns_image))
        result = subprocess.run([str(kubectl), "apply", "-f", "-"], input=text, capture_output=True, text=True,
                                env={**os.environ, "KUBECONFIG": str(self.cp.kubeconfig)}, timeout=60)
        if result.returncode != 0:
            raise ControlPlaneError(f"applying cluster DNS failed: {result.stderr.strip()}")
        from aiops.devenv.session import api_client_for

        apps = client.AppsV1Api(api_client_for(self.cp))

        def dns_ready() -> bool:
            status = apps.read_namespaced_deployment(clusterdns.NAME, clusterdns.NAMESPACE).status
            return bool(status.available_replicas)

        self._wait_for(dns_ready, deadline, "kubelet", "did not start cluster DNS (kubectl -n kube-system "
                       "describe pod -l k8s-app=kube-dns)", interval=0.5)

    def _remove_containers(self) -> None:
        """Every container of the CRI namespace, killed and removed (the kubelet is already gone,
        so nobody restarts them); their network namespaces and mounts go with them."""
        listed = self.ctr("containers", "list", "--quiet")
        ids = listed.stdout.split() if listed.returncode == 0 else []
        for cid in ids:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", cid)
        for cid in ids:
            self.ctr("tasks", "delete", "--force", cid)
            self.ctr("containers", "delete", cid)
