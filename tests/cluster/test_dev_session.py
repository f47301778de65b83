"""`make dev` and `aiops dev up|down`: one control plane per state dir, clean stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiops.devenv.controlplane import COMPONENTS, LocalControlPlane, Ports, _alive


def free_port() -> int:
    return Ports.free().apiserver


def test_up_twice_reuses_the_running_control_plane(kube, tmp_path):
    first = LocalControlPlane(tmp_path, Ports.free()).up(tools=kube.tools)
    try:
        pids = first.pids()
        assert set(pids) == set(COMPONENTS)
        again = LocalControlPlane(tmp_path).up(tools=kube.tools)  # a second `up`, same state dir
        assert again.pids() == pids
        assert again.server == first.server
        rss = first.memory_rss_mb()
        assert set(rss) == set(COMPONENTS) and all(mb > 1 for mb in rss.values())
    finally:
        first.down()
    assert not any(_alive(pid) for pid in pids.values())
    assert first.pids() == {}


def test_dev_foreground_session_is_single_and_stops_cleanly(kube, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello, namespace: default}\ndata: {a: b}\n")
    ports = Ports.free()
    env = {**os.environ, "AIOPS_DEV_DIR": str(tmp_path / "state"),
           "AIOPS_DEV_PORTS": f"{ports.etcd_client},{ports.etcd_peer},{ports.apiserver}"}
    cmd = [sys.executable, "-m", "aiops", "dev", "up", "--foreground", "--apply", str(manifests),
           "--node", "simulated", "--metrics-port", str(free_port()), "--health-port", str(free_port())]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            output.append(line)
            if "kubectl get aiops" in line:
                break
            assert time.monotonic() < deadline, "".join(output)
        assert proc.poll() is None, "".join(output)
        cp = LocalControlPlane(tmp_path / "state")
        pids = cp.pids()
        assert set(pids) == set(COMPONENTS)
        kenv = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
        got = subprocess.run([str(kube.tools.kubectl), "get", "configmap", "hello", "-o",
                              "jsonpath={.data.a}"], env=kenv, capture_output=True, text=True)
        assert got.stdout == "b", got.stderr
        nodes = subprocess.run([str(kube.tools.kubectl), "get", "node", "aiops-gpu-0", "-o",
                                "jsonpath={.status.allocatable.nvidia\\.com/gpu}"],
                               env=kenv, capture_output=True, text=True)
        assert nodes.stdout == "2", nodes.stderr

        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert cp.pids() == pids  # the second attempt started nothing and broke nothing

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        output.append(rest)
        assert proc.returncode == 0, "".join(output)
        assert not any(_alive(pid) for pid in pids.values()), "control-plane processes left behind"
        assert "local control plane stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
        LocalControlPlane(tmp_path / "state").down()


def test_kubeconfig_verifies_the_apiserver_certificate(kube):
    cfg = Path(kube.kubeconfig).read_text()
    assert "insecure-skip-tls-verify" not in cfg
    out = kube.kubectl("get", "--raw", "/readyz")
    assert out.stdout.strip() == "ok"
