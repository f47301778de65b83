"""The end-to-end tier: the platform as it ships, on the real node of this machine (containerd,
kubelet, kube-proxy, cluster DNS, the device plugin), with the images built from this checkout and
the operator installed by its Helm chart.

One real node fits a machine, so the tier starts one cluster for all its tests and stops it (the
host restored) at the end. Where the machine cannot run a real node, or one already runs (a
`make dev`), the tier fails with the reason: it is part of `make test`, and a silent skip would
pass a build that never ran as it ships.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from e2ehelpers import HOST_DIRS, PLATFORM_VALUES, wait_until
from kubernetes import client

from aiops.devenv.controlplane import Ports
from aiops.devenv.realcluster import RealCluster
from aiops.devenv.realnode import RealNode, machine_problems
from aiops.devenv.session import install_crds

# The modules in the order they run: the kustomize install comes and goes before the chart's
# operator is installed (two operators must never reconcile the same objects), and the audit of
# the operator's requests reads what all the others made it do.
MODULE_ORDER = ("test_node", "test_kustomize", "test_platform", "test_rollouts", "test_first_hour", "test_audit")


def pytest_collection_modifyitems(config, items):
    ours = [item for item in items if "/tests/e2e/" in str(item.fspath)]
    for item in ours:
        item.add_marker(pytest.mark.e2e)
    rank = {name: i for i, name in enumerate(MODULE_ORDER)}
    ours.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))
    others = [item for item in items if item not in ours]
    items[:] = others + ours


@pytest.fixture(scope="session")
def real(tmp_path_factory) -> RealCluster:
    problems = machine_problems()
    if problems:
        pytest.fail("the end-to-end tier needs a real node, and this machine cannot run one: " + "; ".join(problems))
    orphan = RealNode.stop_orphan()
    if orphan:
        print(f"\n{orphan}")
    running = RealNode.registered()
    if running:
        pytest.fail(f"a real node already runs on this machine (cluster {running['server']}, state in "
                    f"{running['node_dir']}): stop it (`aiops dev down` in its checkout) to run the end-to-end tier")
    cluster = RealCluster(tmp_path_factory.mktemp("real-cluster"), Ports.free())
    try:
        cluster.up(owner=os.getpid())
        install_crds(cluster.api())
        yield cluster
    finally:
        problems = cluster.down()
        assert not problems, f"the host was not restored: {problems}"


@pytest.fixture(scope="session")
def core(real) -> client.CoreV1Api:
    return client.CoreV1Api(real.api())


@pytest.fixture(scope="session")
def platform(real):
    """The operator installed by its chart (and left installed for the session's tests), allowed
    to mount the tests' node directories besides the default one."""
    real.install_operator(*PLATFORM_VALUES)
    yield real


@pytest.fixture(scope="session")
def custom(platform) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(platform.api())


@pytest.fixture
def ns(core):
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(lambda: (core.read_namespaced_service_account("default", name).secrets or None), 30,
               "the namespace's default ServiceAccount token")
    yield name
    core.delete_namespace(name)
    # Gone before the next test: its pods' memory and GPUs must be free again, and a namespace that
    # never finishes terminating (a finalizer nobody removes) is a defect worth failing on.
    wait_until(lambda: name not in {n.metadata.name for n in core.list_namespace().items}, 300,
               f"namespace {name} to be deleted")


@pytest.fixture
def host_dirs():
    """Directories on the node (this host) for hostPath volumes, removed afterwards."""
    root = HOST_DIRS / uuid.uuid4().hex[:6]
    root.mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)
    if HOST_DIRS.exists() and not any(HOST_DIRS.iterdir()):
        HOST_DIRS.rmdir()
