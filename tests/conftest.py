"""Shared fixtures: one real local control plane per test session (started only if a test needs
it), a simulated 3-GPU node, a fresh namespace per test, the operator run in-process with Kopf's
test runner, and `wait_for` with failures that say what was awaited."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (imported before any thread starts: see below)
import pytest
from kubernetes import client

from aiops.devenv.controlplane import LocalControlPlane, Ports
from aiops.devenv.gpunode import NodeAgent
from aiops.devenv.nodespec import NodeSpec
from aiops.devenv.session import api_client_for, install_crds
from aiops.devenv.toolchain import Toolchain, ensure_toolchain
from aiops.devenv.tritonruntime import put_triton_on_path

# A status field the CRD does not declare fails the reconcile in the tests (see aiops.passes).
os.environ["AIOPS_STRICT_STATUS"] = "1"

# The operators the tests run mount model repositories and workspaces from pytest's temporary
# directories, as an admin lists the node directories of their own install (hostPaths.allowed).
os.environ.setdefault("AIOPS_ALLOWED_HOST_PATHS", f"/var/lib/aiops,{tempfile.gettempdir()}")

# The validation worker finds `tritonserver` on PATH, as in its image; here that is the wheel's.
# Set before any fixture starts a process (the simulated node's pods inherit PATH).
if (_why := put_triton_on_path()) is not None:
    warnings.warn(f"no tritonserver for the tests that run one: {_why}", stacklevel=1)

# Why hypothesis is imported up front: CPython 3.11.7's ast.parse is not thread-safe
# (gh-106905), and pytest rewrites a plugin's modules with ast.parse when they are first imported.
# A late import while the node agent's and Kopf's threads run failed with "AST constructor
# recursion depth mismatch".


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.cluster)


@dataclass
class KubeEnv:
    """The running test cluster and handy clients for it."""

    control_plane: LocalControlPlane
    tools: Toolchain
    api_client: client.ApiClient
    agent: NodeAgent

    @property
    def kubeconfig(self) -> str:
        return str(self.control_plane.kubeconfig)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return self._run(self.tools.kubectl, args, check, input)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run(self.tools.helm, args, check, None)

    def _run(self, exe: Path, args, check: bool, input: str | None) -> subprocess.CompletedProcess:
        result = subprocess.run([str(exe), *args], capture_output=True, text=True, input=input,
                                env={**os.environ, "KUBECONFIG": self.kubeconfig}, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{exe.name} {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> KubeEnv:
    tools = ensure_toolchain()
    cp = LocalControlPlane(tmp_path_factory.mktemp("cluster"), ports=Ports.free())
    t0 = time.monotonic()
    cp.up(tools=tools)
    print(f"\nlocal control plane up in {time.monotonic() - t0:.1f}s at {cp.server}")
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)  # for Kopf's login and the clients
    api = api_client_for(cp)
    agent = NodeAgent(api, [NodeSpec()], crash_period=0.5, kubelet_tls=cp.kubelet_tls(NodeSpec().name)).start()
    try:
        yield KubeEnv(cp, tools, api, agent)
    finally:
        agent.stop()
        cp.down()


@pytest.fixture(scope="session")
def crds_installed(kube: KubeEnv) -> list[str]:
    return install_crds(kube.api_client)


@pytest.fixture
def namespace(kube: KubeEnv, request) -> str:
    # Parametrized tests share the name's first 30 characters: 8 random hex digits make a clash
    # with a namespace of an earlier case (perhaps still being deleted) negligible (5 did not).
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:8]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until the token controller gave the namespace's default ServiceAccount
    # its token, as on any real cluster; wait for it so tests don't race it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        accounts = kube.core.list_namespaced_service_account(name, field_selector="metadata.name=default")
        if accounts.items and accounts.items[0].secrets:
            break
        time.sleep(0.05)
    yield name
    kube.agent.clear_faults()
    kube.core.delete_namespace(name)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """`wait_for(fn, timeout=30, what="...")`: polls until fn() is truthy and returns its value;
    on timeout fails naming what was awaited and the last value seen."""

    def _wait(fn: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
              interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = fn()
                if last:
                    return last
            except client.ApiException as e:  # e.g. not created yet: keep waiting
                last = f"ApiException {e.status} {e.reason}"
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
            time.sleep(interval)

    return _wait


@pytest.fixture
def memory_hog(kube: KubeEnv, namespace: str, wait_for) -> Callable[[], None]:
    """A running pod that requests 124Gi of the simulated node's 125Gi allocatable memory, so the
    next pod asking for 2Gi cannot be placed ("Insufficient memory"); call the returned function
    to free the memory."""
    hog = client.V1Pod(metadata=client.V1ObjectMeta(name="memory-hog"), spec=client.V1PodSpec(containers=[
        client.V1Container(name="c", image="hog", resources=client.V1ResourceRequirements(
            requests={"memory": "124Gi"}))]))
    kube.core.create_namespaced_pod(namespace, hog)
    wait_for(lambda: kube.core.read_namespaced_pod("memory-hog", namespace).status.phase == "Running",
             what="the memory hog running")
    return lambda: kube.core.delete_namespaced_pod("memory-hog", namespace, grace_period_seconds=0)


@pytest.fixture
def operator(kube: KubeEnv, crds_installed, namespace: str):
    """The operator, watching only this test's namespace, in this process."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "aiops.controllers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.output
