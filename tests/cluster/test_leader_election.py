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
    def __init__(self, name: str, namespace: str, log_dir: Path, kubeconfig: Path | None = None):
        self.name, self.port = name, free_port()
        self.log_path = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiops", "run", "--leader-elect", f"--lease-name={LEASE}",
             f"--lease-duration={DURATION}", f"--namespace={namespace}", "--metrics-port=0",
             f"--liveness=http://127.0.0.1:{self.port}/healthz"],
            env={**os.environ, "POD_NAME": name, "POD_NAMESPACE": namespace,
                 **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {})},
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


def lease_holder(kube, namespace: str):
    """A function: the Lease's holder now ("" when none or no Lease)."""
    leases = client.CoordinationV1Api(kube.api_client)

    def holder() -> str:
        try:
            return leases.read_namespaced_lease(LEASE, namespace).spec.holder_identity or ""
        except client.ApiException:
            return ""
    return holder


def md_phase(kube, namespace: str):
    """A function: a ModelDeployment's status.phase now."""
    custom = client.CustomObjectsApi(kube.api_client)

    def phase(name: str) -> str | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
        return (obj.get("status") or {}).get("phase")
    return phase


def test_only_the_lease_holder_reconciles_and_a_standby_takes_over(kube, crds_installed, namespace, wait_for,
                                                                   tmp_path):
    leases = client.CoordinationV1Api(kube.api_client)
    custom = client.CustomObjectsApi(kube.api_client)
    holder, phase = lease_holder(kube, namespace), md_phase(kube, namespace)

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


WRITES = ("create", "update", "patch", "delete", "deletecollection")


def service_account_kubeconfig(kube, namespace: str, name: str, out: Path) -> tuple[Path, str]:
    """A kubeconfig of a ServiceAccount of its own (cluster-admin: the RBAC is not under test here),
    so that the API server's audit log tells this candidate's requests from every other's."""
    core, rbac = kube.core, client.RbacAuthorizationV1Api(kube.api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_cluster_role_binding({
        "metadata": {"name": f"{namespace}-{name}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    token = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    cp = kube.control_plane
    path = out / f"{name}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": cp.server, "certificate-authority": str(cp.ca_file)}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": name, "namespace": namespace}}]}))
    return path, f"system:serviceaccount:{namespace}:{name}"


def writes_by(kube, user: str, since: dt.datetime) -> list[str]:
    """The writes the API server received from `user` at or after `since` (its audit log)."""
    found = []
    for line in (kube.control_plane.state_dir / "logs" / "audit.log").read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("user", {}).get("username") != user or event.get("verb") not in WRITES:
            continue
        received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if received >= since:
            found.append(f"{event['verb']} {event['requestURI']} -> {event.get('responseStatus', {}).get('code')}")
    return found


def test_a_leader_frozen_past_its_lease_writes_nothing_when_it_runs_again(kube, crds_installed, namespace,
                                                                          wait_for, tmp_path):
    """SIGSTOP the leader, let the standby take over and make work for both, SIGCONT the old
    leader: its watch hands it that work at once, yet the API server's audit log shows no write
    from it after the freeze, and it exits."""
    custom = client.CustomObjectsApi(kube.api_client)
    rbac = client.RbacAuthorizationV1Api(kube.api_client)
    holder, phase = lease_holder(kube, namespace), md_phase(kube, namespace)

    config_a, user_a = service_account_kubeconfig(kube, namespace, "op-a", tmp_path)
    config_b, user_b = service_account_kubeconfig(kube, namespace, "op-b", tmp_path)
    a = Candidate("op-a", namespace, tmp_path, config_a)
    candidates = [a]
    try:
        first = wait_for(lambda: holder().startswith("op-a_") and holder(), timeout=60, what="op-a to lead")
        b = Candidate("op-b", namespace, tmp_path, config_b)
        candidates.append(b)
        wait_for(lambda: "standing by" in b.log, timeout=60, what="op-b standing by")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", invalid_md("early"))
        wait_for(lambda: phase("early") == "Invalid", timeout=60, what="op-a to reconcile")
        wait_for(lambda: writes_by(kube, user_a, dt.datetime.min.replace(tzinfo=dt.UTC)), timeout=30,
                 what="op-a's writes in the audit log")

        frozen_at = dt.datetime.now(dt.UTC)
        a.proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: (lambda h: h if h and h != first else None)(holder()), timeout=DURATION * 4,
                 interval=0.1, what="op-b to take the Lease from the frozen op-a")
        # Work that op-a's open watch delivers the moment it runs again.
        for name in ("late-1", "late-2", "late-3"):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", invalid_md(name))
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "early",
                                              {"spec": {"resources": {"gpus": 9}}})
        wait_for(lambda: all(phase(n) == "Invalid" for n in ("late-1", "late-2", "late-3")), timeout=60,
                 what="op-b to reconcile")
        assert writes_by(kube, user_b, frozen_at), "op-b's writes are in the audit log"

        a.proc.send_signal(signal.SIGCONT)
        assert a.proc.wait(timeout=DURATION * 2) == 1, a.log[-3000:]
        time.sleep(1)  # the audit log is written as requests complete
        # A Lease renewal the freeze caught in flight may reach the API server afterwards: the
        # Lease's resourceVersion refuses it (409), which is how a deposed renewer is told. Any
        # other write, or a renewal that got through, would be a second leader acting.
        late = [w for w in writes_by(kube, user_a, frozen_at)
                if not ("/leases/" in w and w.startswith("update ") and w.endswith("-> 409"))]
        assert late == [], a.log[-3000:]
        assert "lost lease" in a.log
        assert holder().startswith("op-b_")
    finally:
        for c in candidates:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGCONT)
            c.stop()
        for name in ("op-a", "op-b"):
            rbac.delete_cluster_role_binding(f"{namespace}-{name}")
