"""The platform as it ships, on this machine: the local control plane reachable from pods, the real
node (realnode.py), the project's images built from the repository and loaded into the node's
containerd, the operator installed by the Helm chart, and manifests applied fitted to the node.

`make dev` and the end-to-end tests both start from here, so what a developer sees is what the
tests check.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import yaml
from kubernetes import client

from aiops.devenv import images as image_builds
from aiops.devenv.controlplane import LocalControlPlane, Ports
from aiops.devenv.fit import NodeFit, fit_manifest
from aiops.devenv.imagecache import BuiltImage, format_table
from aiops.devenv.realnode import RealNode, host_address
from aiops.devenv.toolchain import ensure_kubectl_helm

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "aiops-operator"
NODE_IMAGES = ("pause", "cluster-dns")
PLATFORM_IMAGES = ("operator", "worker", "triton", "tritonserver", "milvus")
OPERATOR_NAMESPACE = "aiops-system"
RELEASE = "aiops"


class RealCluster:
    """A control plane at `state_dir` with the one real node of this machine."""

    def __init__(self, state_dir: Path | None = None, ports: Ports | None = None):
        self.cp = LocalControlPlane(state_dir, ports, advertise_address=host_address())
        self.node = RealNode(self.cp)
        self.images: dict[str, BuiltImage] = {}
        self.kubectl, self.helm = ensure_kubectl_helm()

    def up(self, image_names: tuple[str, ...] = NODE_IMAGES + PLATFORM_IMAGES, log=print,
           owner: int | None = None) -> RealCluster:
        """Builds (or finds) the images, then starts the control plane and the node (`owner`: see
        RealNode.start)."""
        orphan = RealNode.stop_orphan()
        if orphan:
            log(f"aiops: {orphan}")
        t0 = time.monotonic()
        self.images = image_builds.ensure_images(image_names)
        log(f"aiops: images ready in {time.monotonic() - t0:.0f}s:\n" + format_table(self.images.values()))
        self.node.sandbox_image = self.images["pause"].ref
        self.node.dns_image = self.images["cluster-dns"].ref
        t0 = time.monotonic()
        self.cp.up()
        log(f"aiops: control plane up in {time.monotonic() - t0:.1f}s at {self.cp.server}")
        t0 = time.monotonic()
        refs = [b.ref for b in self.images.values()]
        self.node.start(images=lambda address: image_builds.import_into_containerd(address, refs), owner=owner)
        log(f"aiops: real node {self.node.name} Ready in {time.monotonic() - t0:.1f}s (containerd, kubelet, "
            f"kube-proxy, device plugin, cluster DNS, local-path volumes)")
        return self

    def down(self) -> list[str]:
        problems = self.node.stop()
        self.cp.down()
        return problems

    def ref(self, name: str) -> str:
        return self.images[name].ref

    # ---- tools -------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.cp.kubeconfig)}

    def run(self, tool: Path, *args: str, input: str | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(tool), *args], input=input, capture_output=True, text=True,
                                env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool.name} {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result

    def api(self) -> client.ApiClient:
        from aiops.devenv.session import api_client_for

        return api_client_for(self.cp)

    # ---- the platform ------------------------------------------------------------------------
    def operator_values(self) -> list[str]:
        """Helm --set flags that point the chart at the local images. The chart's GPU device
        plugins stay off: the node's own plugin (aiops.devenv.deviceplugin) advertises the same
        gpuLayout from the chart's values, on GPUs that NVIDIA's plugin could not find here."""
        operator, worker = self.ref("operator"), self.ref("worker")
        repo, _, tag = operator.rpartition(":")
        w_repo, _, w_tag = worker.rpartition(":")
        return ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
                "--set", "image.pullPolicy=Never",
                "--set", f"workerImage.repository={w_repo}", "--set", f"workerImage.tag={w_tag}",
                "--set", "gpuLayout.devicePlugin.enabled=false"]

    def install_operator(self, *extra: str, namespace: str = OPERATOR_NAMESPACE, release: str = RELEASE,
                         timeout: str = "180s") -> subprocess.CompletedProcess:
        """`helm upgrade --install --wait` of the chart with the local images."""
        return self.run(self.helm, "upgrade", "--install", release, str(CHART), "--namespace", namespace,
                        "--create-namespace", "--wait", "--timeout", timeout, *self.operator_values(), *extra,
                        timeout=600)

    def node_fit(self) -> NodeFit:
        node = client.CoreV1Api(self.api()).read_node(self.node.name)
        return NodeFit.for_allocatable(node.status.allocatable, {name: b.ref for name, b in self.images.items()})

    def fitted(self, paths: list[Path]) -> tuple[str, list[str]]:
        """The manifests in `paths` (files or folders of YAML), fitted to this node: (YAML, changes)."""
        fit = self.node_fit()
        docs, changes = [], []
        for path in paths:
            files = sorted(Path(path).glob("*.yaml")) if Path(path).is_dir() else [Path(path)]
            for file in files:
                for doc in yaml.safe_load_all(file.read_text()):
                    if doc:
                        changes += fit_manifest(doc, fit)
                        docs.append(doc)
        return "\n---\n".join(json.dumps(d) for d in docs), changes

    def apply_fitted(self, paths: list[Path], namespace: str | None = None) -> list[str]:
        text, changes = self.fitted(paths)
        self.run(self.kubectl, "apply", *(["-n", namespace] if namespace else []), "-f", "-", input=text)
        return changes
