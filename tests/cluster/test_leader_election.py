"""Leader election on the real control plane: several `aiops run --leader-elect` processes, one
Lease; only the holder runs Kopf and reconciles, a killed leader is replaced within the lease
duration, a cleanly stopped one hands over at once, and one that loses the Lease exits at once."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from aiops.api.common import GROUP, VERSION

LEASE = "aiops-le-test"
DURATION = 4  # seconds; renew deadline 2.7 s, retry period 0.53 s
pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Candidate:
    def __init__(self, name: str, namespace: str, log_dir: Path):
        self.name, self.port = name, free_port()
        self.log_path = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiops", "run", "--leader-elect", f"--lease-name={LEASE}",
             f"--lease-duration={DURATION}", f"--namespace={namespace}", "--metrics-port=0",
             f"--liveness=http://127.0.0.1:{self.port}/healthz"],
            env={**os.environ, "POD_NAME": name, "POD_NAMESPACE": namespace},
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status, r.read().decode()
        except OSError as e:
            return 0, str(e)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def invalid_md(name: str) -> dict:
    """A ModelDeployment the operator rejects at once (more GPUs than any node has): the cheapest
    proof that someone reconciled it."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "m", "version": 1, "backend": "python"},
                     "repository": {"hostPath": {"path": "/nonexistent"}},
                     "resources": {"gpus": 8, "memory": "1Gi"}}}


def test_only_the_lease_holder_reconciles_and_a_standby_takes_over(kube, crds_installed, namespace, wait_for,
                                                                   tmp_path):
    leases = client.CoordinationV1Api(kube.api_client)
    custom = client.CustomObjectsApi(kube.api_client)

    def holder() -> str:
        try:
            return leases.read_namespaced_lease(LEASE, namespace).spec.holder_identity or ""
        except client.ApiException:
            return ""

    def phase(name: str) -> str | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
        return (obj.get("status") or {}).get("phase")

    candidates = [Candidate(n, namespace, tmp_path) for n in ("op-a", "op-b")]
    try:
        first = wait_for(holder, timeout=60, what="a leader")
        leader = next(c for c in candidates if first.startswith(c.name + "_"))
        standby = next(c for c in candidates if c is not leader)
        wait_for(lambda: "standing by" in standby.log, timeout=60, what="the other candidate standing by")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", invalid_md("one"))
        wait_for(lambda: phase("one") == "Invalid", timeout=60, what="the leader to reconcile")
        time.sleep(2 * DURATION)  # several renewals: the leader keeps the Lease, the standby keeps out
        assert holder() == first
        assert "Activity 'login'" in leader.log
        assert "Activity 'login'" not in standby.log, "the standby started Kopf:\n" + standby.log[-3000:]
        code, body = standby.health()
        assert code == 200 and json.loads(body)["standby"] is True  # its probes pass while it waits

        # The leader dies without a word: the standby takes over once the lease runs out.
        killed_at = time.monotonic()
        leader.stop(signal.SIGKILL)
        second = wait_for(lambda: (lambda h: h if h and h != first else None)(holder()), timeout=DURATION * 4,
                          interval=0.1, what="the standby to take the Lease")
        took = time.monotonic() - killed_at
        assert second.startswith(standby.name + "_")
        assert took <= DURATION + 2, f"takeover after {took:.1f}s, lease duration {DURATION}s"
        assert leases.read_namespaced_lease(LEASE, namespace).spec.lease_transitions >= 1
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", invalid_md("two"))
        wait_for(lambda: phase("two") == "Invalid", timeout=60, what="the new leader to reconcile")
        assert "taking over lease" in standby.log

        # A clean stop releases the Lease: a third candidate takes over without waiting it out.
        third = Candidate("op-c", namespace, tmp_path)
        candidates.append(third)
        wait_for(lambda: "standing by" in third.log, timeout=60, what="op-c standing by")
        stopped_at = time.monotonic()
        assert standby.stop(signal.SIGTERM) == 0, standby.log[-3000:]
        wait_for(lambda: holder().startswith("op-c_"), timeout=DURATION * 4, interval=0.1,
                 what="op-c to take the released Lease")
        handover = time.monotonic() - stopped_at
        print(f"\ntakeover after a kill: {took:.2f}s (lease {DURATION}s); handover after SIGTERM: {handover:.2f}s")
        assert "released lease" in standby.log

        # A leader that sees another holder exits at once: no queued reconcile writes after that.
        lease = leases.read_namespaced_lease(LEASE, namespace)
        lease.spec.holder_identity = "intruder"
        lease.spec.renew_time = dt.datetime.now(dt.UTC)
        leases.replace_namespaced_lease(LEASE, namespace, lease)
        taken_at = time.monotonic()
        assert third.proc.wait(timeout=DURATION * 2) == 1, third.log[-3000:]
        exited = time.monotonic() - taken_at
        assert "lost lease" in third.log and "now held by intruder" in third.log
        assert exited < DURATION, f"the old leader ran on for {exited:.1f}s after losing the Lease"
    finally:
        for c in candidates:
            c.stop()
