"""The real node's configuration files, as pure functions: containerd's config.toml, the CNI
network, the kubelet's and kube-proxy's configurations and kubeconfigs. No I/O here: realnode.py
writes what these return.

Every setting that differs from the components' defaults is here for a reason written beside it;
most were learnt by running this node on a 2-core VM with cgroup v1 and no systemd.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from aiops.devenv.controlplane import CLUSTER_DOMAIN

POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DNS_IP = "10.96.0.10"
CNI_NETWORK = "aiops"
BRIDGE = "aiops0"
KUBELET_PORT = 10250


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its state: one directory, plus the kubelet's fixed root (the kubelet
    looks for device plugins in /var/lib/kubelet/device-plugins whatever its root dir says)."""

    root: Path
    kubelet_root: Path = Path("/var/lib/kubelet")

    @property
    def containerd_socket(self) -> Path:
        return self.root / "run" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kube_proxy_dir(self) -> Path:
        return self.root / "kube-proxy"

    @property
    def device_plugin_dir(self) -> Path:
        return self.kubelet_root / "device-plugins"

    def log(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    def pidfile(self, component: str) -> Path:
        return self.root / "run" / f"{component}.pid"


def containerd_config(paths: NodePaths, sandbox_image: str, cni_bin_dir: str) -> str:
    """containerd 1.6's config (version 2) with the CRI plugin the kubelet talks to."""
    return f'''version = 2
root = "{paths.root / 'containerd' / 'root'}"
state = "{paths.root / 'containerd' / 'state'}"
oom_score = 0

[grpc]
  address = "{paths.containerd_socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # The VM lacks CAP_SYS_RESOURCE: without this runc cannot lower oom_score_adj and every sandbox
  # fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  # Network namespaces under our state dir, not /var/run/netns: teardown finds them all there.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet runs with --cgroup-driver=cgroupfs (no systemd here); both must agree.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{paths.cni_conf_dir}"
    max_conf_num = 1
'''


def cni_conflist(paths: NodePaths, mtu: int) -> str:
    """A bridge with a gateway and masquerading, host-local addresses, and portmap for hostPorts.
    The MTU is the host's: a larger one loses packets on the way out of the machine."""
    return json.dumps({
        "cniVersion": "0.4.0", "name": CNI_NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "mtu": mtu,
             "ipam": {"type": "host-local", "dataDir": str(paths.cni_ipam_dir),
                      "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def kubeconfig(server: str, ca_file: Path, cert: Path, key: Path, user: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }, sort_keys=False)


@dataclass(frozen=True)
class Reservations:
    """What the kubelet keeps back from pods, as a real node's would be set (kubeReserved for the
    node's own daemons, systemReserved for the OS): allocatable = capacity - these - eviction."""

    system_memory: str = "1Gi"
    kube_memory: str = "512Mi"
    system_cpu: str = "100m"
    kube_cpu: str = "100m"
    eviction_memory: str = "200Mi"


def kubelet_config(paths: NodePaths, ca_file: Path, cert: Path, key: Path, resolv_conf: str,
                   reserved: Reservations = Reservations()) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # Only the API server (client certificate) and bearer tokens it vouches for may call the
        # kubelet's API, and what they may do is the API server's RBAC decision.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(cert), "tlsPrivateKeyFile": str(key),
        "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "clusterDomain": CLUSTER_DOMAIN, "clusterDNS": [CLUSTER_DNS_IP], "resolvConf": resolv_conf,
        "cgroupDriver": "cgroupfs", "failSwapOn": False,
        "systemReserved": {"memory": reserved.system_memory, "cpu": reserved.system_cpu},
        "kubeReserved": {"memory": reserved.kube_memory, "cpu": reserved.kube_cpu},
        # Memory eviction as usual; disk thresholds low: the dev machine's disk is shared with
        # everything else, and a DiskPressure taint would evict the platform for a full cache dir.
        "evictionHard": {"memory.available": reserved.eviction_memory, "nodefs.available": "2%",
                         "imagefs.available": "2%", "nodefs.inodesFree": "2%"},
        # Never garbage-collect images: they are built here and cannot be pulled again.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "volumePluginDir": str(paths.kubelet_dir / "volume-plugins"),
        "nodeStatusReportFrequency": "10s",
        "maxPods": 110,
    }, sort_keys=False)


def kube_proxy_config(kubeconfig_path: Path, node_name: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "hostnameOverride": node_name,
        "mode": "iptables",
        # Traffic to Services from outside the pod network (the host) is masqueraded.
        "clusterCIDR": CLUSTER_CIDR,
        "bindAddress": "0.0.0.0",
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        # Leave the host's conntrack sysctls alone (0: kube-proxy does not set them).
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }, sort_keys=False)
