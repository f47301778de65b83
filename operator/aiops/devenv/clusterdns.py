"""Cluster DNS for the real node: dnsmasq answering from a hosts directory that a small sync
container (clusterdns_sync.py) keeps in step with the Services and Endpoints, as kube-dns's
Deployment and Service (`kube-system/kube-dns`, 10.96.0.10) on any cluster.

Why not CoreDNS, which clusters run: it is packaged nowhere this machine can reach (no Debian
package, no PyPI or npm release), and building it needs Go modules that are not in Debian either.
dnsmasq is Debian's, a real DNS server that pods query over the pod network through the real
kube-proxy rules; what is ours is only the table of names. What it serves, and what it does not
(no SRV, PTR or CNAME records), is listed in clusterdns_sync.py. Names inside the cluster domain
that do not exist are NXDOMAIN (`--local`); everything else goes to the host's resolvers.

dnsmasq listens on 5353 as a non-root user with no capabilities; the Service maps port 53 to it.
"""

from __future__ import annotations

from aiops.devenv.controlplane import CLUSTER_DOMAIN
from aiops.devenv.nodeconfig import CLUSTER_DNS_IP

NAMESPACE = "kube-system"
NAME = "kube-dns"
LABELS = {"k8s-app": "kube-dns", "app.kubernetes.io/managed-by": "aiops-dev"}
HOSTS_DIR = "/etc/cluster-dns"
DNS_PORT = 5353
RUN_AS_USER = 65534  # nobody


def build_objects(image: str) -> list[dict]:
    """ServiceAccount, ClusterRole and binding (list/watch Services and Endpoints), Deployment,
    Service: everything `kubectl apply` would need, in order."""
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]}}
    hosts = {"name": "hosts", "mountPath": HOSTS_DIR}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "aiops-dev:kube-dns", "labels": LABELS},
         "rules": [{"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "aiops-dev:kube-dns", "labels": LABELS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aiops-dev:kube-dns"},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                  "template": {"metadata": {"labels": LABELS}, "spec": {
                      "serviceAccountName": NAME,
                      # Upstream resolvers are the node's: dnsmasq reads the pod's resolv.conf.
                      "dnsPolicy": "Default",
                      "priorityClassName": "system-cluster-critical",
                      "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                                          "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [
                          {"name": "dnsmasq", "image": image, "imagePullPolicy": "IfNotPresent",
                           "command": ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file",
                                       f"--port={DNS_PORT}", "--no-hosts", f"--hostsdir={HOSTS_DIR}",
                                       f"--local=/{CLUSTER_DOMAIN}/", "--domain-needed", "--cache-size=1000"],
                           "ports": [{"name": "dns", "containerPort": DNS_PORT, "protocol": "UDP"},
                                     {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"}],
                           "readinessProbe": {"tcpSocket": {"port": DNS_PORT}, "periodSeconds": 2},
                           "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                           "securityContext": security, "volumeMounts": [hosts]},
                          {"name": "sync", "image": image, "imagePullPolicy": "IfNotPresent",
                           "command": ["python3", "/usr/local/bin/cluster-dns-sync", HOSTS_DIR],
                           "env": [{"name": "CLUSTER_DOMAIN", "value": CLUSTER_DOMAIN}],
                           "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                           "securityContext": security, "volumeMounts": [hosts]},
                      ],
                      "volumes": [{"name": "hosts", "emptyDir": {}}],
                  }}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS},
         "spec": {"clusterIP": CLUSTER_DNS_IP, "selector": {"k8s-app": "kube-dns"},
                  "ports": [{"name": "dns", "port": 53, "targetPort": DNS_PORT, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "targetPort": DNS_PORT, "protocol": "TCP"}]}},
    ]
