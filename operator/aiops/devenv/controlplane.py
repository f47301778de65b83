"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, as local processes.

With `advertise_address` set, the API server also listens on that address of the host and
advertises it as the `kubernetes` Service's endpoint, so pods of a real node (realnode.py) reach it;
otherwise it stays on loopback, which is all the simulated node needs.

State lives in one directory (certificates, keys, etcd data, logs, pid files, kubeconfig), so a
second `up` on the same directory finds the running cluster and reuses it instead of starting a
second one, and `down` stops exactly the processes it started.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from aiops.cli import UserError
from aiops.devenv.pki import CertRequest, LocalCA
from aiops.devenv.toolchain import Toolchain, ensure_toolchain

ADMIN_TOKEN_USER = "aiops-admin"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# What 1.20 still gates but every supported Kubernetes has on (GA in 1.23): a Job's
# ttlSecondsAfterFinished, which the finished validation Jobs rely on to be cleaned up.
FEATURE_GATES = "--feature-gates=TTLAfterFinished=true"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
CLUSTER_DOMAIN = "cluster.local"
APISERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   f"kubernetes.default.svc.{CLUSTER_DOMAIN}")


class ControlPlaneError(UserError):
    """The control plane could not start; the message names the component and what to do."""


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int

    @classmethod
    def free(cls) -> Ports:
        """Three currently free loopback ports (for tests that must not collide with `make dev`)."""
        socks = [socket.socket() for _ in range(3)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for s in socks:
                s.close()


DEFAULT_PORTS = Ports(etcd_client=23790, etcd_peer=23800, apiserver=16443)


def default_ports() -> Ports:
    """`AIOPS_DEV_PORTS=ETCD,PEER,APISERVER` moves the dev cluster off the default ports."""
    text = os.environ.get("AIOPS_DEV_PORTS")
    if not text:
        return DEFAULT_PORTS
    try:
        return Ports(*(int(p) for p in text.split(",")))
    except (TypeError, ValueError):
        raise ControlPlaneError(f"AIOPS_DEV_PORTS={text!r}: expected three ports, e.g. 23790,23800,16443") from None


def default_state_dir() -> Path:
    return Path(os.environ.get("AIOPS_DEV_DIR", Path.cwd() / ".aiops" / "cluster"))


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class LocalControlPlane:
    """Starts, finds and stops one local control plane rooted at `state_dir`."""

    def __init__(self, state_dir: Path | None = None, ports: Ports | None = None,
                 advertise_address: str | None = None):
        self.state_dir = Path(state_dir or default_state_dir()).resolve()
        self._requested_ports = ports
        self._requested_address = advertise_address

    # ---- paths -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def ca(self) -> LocalCA:
        return LocalCA(self.state_dir / "certs")

    @property
    def ca_file(self) -> Path:
        return self.ca.cert

    @property
    def advertise_address(self) -> str | None:
        """The host address pods reach the API server on; None while it listens on loopback only."""
        saved = self.state_dir / "ports.json"
        if saved.exists():
            return json.loads(saved.read_text()).get("advertise_address")
        return self._requested_address

    @property
    def ports(self) -> Ports:
        saved = self.state_dir / "ports.json"
        if saved.exists():
            fields = json.loads(saved.read_text())
            fields.pop("advertise_address", None)
            return Ports(**fields)
        return self._requested_ports or default_ports()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def _pidfile(self, component: str) -> Path:
        return self.state_dir / "run" / f"{component}.pid"

    def _log(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    def _token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    # ---- status ------------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        found = {}
        for c in COMPONENTS:
            f = self._pidfile(c)
            if f.exists():
                pid = int(f.read_text())
                if _alive(pid):
                    found[c] = pid
        return found

    def is_running(self) -> bool:
        return set(self.pids()) == set(COMPONENTS) and self._ready()

    def _ready(self) -> bool:
        if not self.ca_file.exists() or not (self.state_dir / "admin.token").exists():
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(f"{self.server}/readyz",
                                     headers={"Authorization": f"Bearer {self._token()}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    # ---- lifecycle ---------------------------------------------------------------------------
    @contextmanager
    def _locked(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self, timeout: float = 90.0, tools: Toolchain | None = None) -> LocalControlPlane:
        """Starts the control plane, or returns at once if this state dir already runs one."""
        with self._locked():
            if self.is_running():
                if self._requested_address and self.advertise_address != self._requested_address:
                    raise ControlPlaneError(
                        f"the control plane in {self.state_dir} runs on loopback only, and a real node "
                        f"needs it on {self._requested_address}: stop it (`aiops dev down`) and start again")
                return self
            self._stop_processes()  # a half-dead previous run: clear it, keep its data
            tools = tools or ensure_toolchain()
            ports = self._requested_ports or default_ports()
            for name, port in asdict(ports).items():
                if _port_busy(port):
                    raise ControlPlaneError(
                        f"port {port} ({name}) on 127.0.0.1 is busy: stop what uses it "
                        f"(`ss -ltnp | grep {port}`) or run `aiops dev down`")
            (self.state_dir / "ports.json").write_text(
                json.dumps({**asdict(ports), "advertise_address": self._requested_address}))
            self._prepare_credentials()
            deadline = time.monotonic() + timeout
            self._spawn("etcd", self._etcd_cmd(tools, ports))
            self._spawn("kube-apiserver", self._apiserver_cmd(tools, ports))
            self._wait_ready(deadline)
            self._write_kubeconfig()
            self._spawn("kube-controller-manager", self._controller_manager_cmd(tools))
            self._spawn("kube-scheduler", self._scheduler_cmd(tools))
            time.sleep(0.5)
            missing = set(COMPONENTS) - set(self.pids())
            if missing:
                self._fail(sorted(missing)[0], "exited right after starting")
            return self

    def down(self) -> None:
        with self._locked():
            self._stop_processes()

    def _stop_processes(self) -> None:
        # Reverse order: clients first, etcd last, so nothing logs errors about a vanished store.
        for c in reversed(COMPONENTS):
            f = self._pidfile(c)
            if not f.exists():
                continue
            pid = int(f.read_text())
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not _alive(pid):
                        break
                    time.sleep(0.05)
                else:
                    os.kill(pid, signal.SIGKILL)
            f.unlink(missing_ok=True)

    def _spawn(self, component: str, cmd: list[str]) -> None:
        (self.state_dir / "run").mkdir(exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        with open(self._log(component), "ab") as log:
            # Own session: Ctrl-C in a terminal reaches us, and we stop the children in order.
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.state_dir)
        self._pidfile(component).write_text(str(proc.pid))

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            for c in ("etcd", "kube-apiserver"):
                if c not in self.pids():
                    self._fail(c, "exited during start-up")
            if self._ready():
                return
            time.sleep(0.25)
        self._fail("kube-apiserver", "did not answer /readyz in time")

    def _fail(self, component: str, what: str) -> None:
        tail = self._log(component).read_text(errors="replace").splitlines()[-15:]
        self._stop_processes()
        raise ControlPlaneError(f"{component} {what}; its log ({self._log(component)}) ends with:\n"
                                + "\n".join(tail))

    # ---- configuration -----------------------------------------------------------------------
    def _prepare_credentials(self) -> None:
        d = self.state_dir
        (d / "certs").mkdir(exist_ok=True)
        if not (d / "sa.key").exists():
            subprocess.run(["openssl", "genrsa", "-out", str(d / "sa.key"), "2048"],
                           check=True, capture_output=True)
            subprocess.run(["openssl", "rsa", "-in", str(d / "sa.key"), "-pubout",
                            "-out", str(d / "sa.pub")], check=True, capture_output=True)
        if not (d / "admin.token").exists():
            (d / "admin.token").write_text(os.urandom(24).hex())
            (d / "admin.token").chmod(0o600)
        address = self._requested_address
        self.ca.issue(CertRequest("apiserver", "kube-apiserver", client=False, server=True,
                                  dns_names=APISERVER_NAMES,
                                  ip_addresses=("127.0.0.1", KUBERNETES_SERVICE_IP, *([address] if address else []))))
        # Its identity towards kubelets (logs, exec, port-forward); system:masters, as kubeadm does.
        self.ca.issue(CertRequest("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                  organizations=("system:masters",)))
        (d / "tokens.csv").write_text(f'{self._token()},{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},"system:masters"\n')

    def kubelet_tls(self, node: str) -> tuple[Path, Path, Path]:
        """(serving certificate, key, CA) for a simulated node's kubelet API on 127.0.0.1, which the
        API server verifies against this CA (--kubelet-certificate-authority)."""
        cert, key = self.ca.issue(CertRequest(f"kubelet-sim-{node}", node, client=False, server=True,
                                              dns_names=(node,), ip_addresses=("127.0.0.1",)))
        return cert, key, self.ca_file

    def _etcd_cmd(self, tools: Toolchain, p: Ports) -> list[str]:
        client = f"http://127.0.0.1:{p.etcd_client}"
        return [str(tools.etcd), "--name", "aiops", "--data-dir", str(self.state_dir / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
                "--initial-cluster", f"aiops=http://127.0.0.1:{p.etcd_peer}",
                "--listen-metrics-urls", "", "--log-level", "warn", "--logger", "zap"]

    def _apiserver_cmd(self, tools: Toolchain, p: Ports) -> list[str]:
        d = self.state_dir
        serving, serving_key = self.ca.paths("apiserver")
        kubelet_client, kubelet_client_key = self.ca.paths("apiserver-kubelet-client")
        address = self._requested_address
        network = (
            # Pods reach it through the `kubernetes` Service, whose endpoint the lease reconciler
            # keeps at the advertised address.
            ["--bind-address=0.0.0.0", f"--advertise-address={address}"] if address else
            # Loopback only: the default reconciler would log every 10 s that 127.0.0.1 is refused.
            ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"])
        return [str(tools.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
                *network,
                f"--secure-port={p.apiserver}", "--insecure-port=0",
                f"--cert-dir={d / 'certs'}", f"--tls-cert-file={serving}", f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={self.ca_file}", f"--token-auth-file={d / 'tokens.csv'}",
                # Kubelets are authorized as nodes (their own pods, secrets and node object only).
                "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={kubelet_client}", f"--kubelet-client-key={kubelet_client_key}",
                f"--kubelet-certificate-authority={self.ca_file}",
                # The node's hostname need not resolve here; its InternalIP does.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                FEATURE_GATES,
                # Audit every request: the RBAC test compares what the operator used with what
                # its Role grants.
                f"--audit-log-path={d / 'logs' / 'audit.log'}",
                f"--audit-policy-file={self._audit_policy()}",
                "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
                "--v=1"]

    def _audit_policy(self) -> Path:
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                # Only service accounts: what the operator does when it runs under its own identity.
                {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                {"level": "None"},
            ],
        }))
        return policy

    def _controller_manager_cmd(self, tools: Toolchain) -> list[str]:
        d = self.state_dir
        return [str(tools.kube_controller_manager), f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1", "--secure-port=0", "--port=0",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--controllers=*", "--leader-elect=false",
                # Fast feedback for tests and demos; defaults are tuned for big clusters.
                "--node-monitor-grace-period=40s", "--pod-eviction-timeout=5m",
                # All of its controllers share one client rate limit, 20/s by default: a hundred
                # Jobs applied at once then wait seconds for their pods. One node's worth of work
                # never loads the API server anywhere near this.
                "--kube-api-qps=200", "--kube-api-burst=400",
                FEATURE_GATES,
                "--v=1"]

    def _scheduler_cmd(self, tools: Toolchain) -> list[str]:
        return [str(tools.kube_scheduler), f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1", "--secure-port=0", "--port=0",
                "--leader-elect=false", "--v=1"]

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "aiops-local",
                          "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": ADMIN_TOKEN_USER, "user": {"token": self._token()}}],
            "contexts": [{"name": "aiops-local",
                          "context": {"cluster": "aiops-local", "user": ADMIN_TOKEN_USER}}],
            "current-context": "aiops-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def memory_rss_mb(self) -> dict[str, float]:
        """Resident memory of each component, for the notes and benchmarks."""
        rss = {}
        for c, pid in self.pids().items():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[c] = int(line.split()[1]) / 1024
        return rss
