"""Container probes, performed for real against the process behind a simulated pod.

A pod is Ready only when its readinessProbe passes against the running program, and a failing
livenessProbe restarts it, because that is what the operator's health checks and rollbacks must
be tested against: a Ready that the node merely imagined would hide the bugs they exist to catch.

`ProbeSpec` and `ProbeTracker` are pure (Kubernetes' thresholds and timing); `perform` does the
one HTTP request, TCP connect or local command.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from dataclasses import dataclass

from kubernetes import client

from aiops.devenv.launchers import translate_arg


@dataclass(frozen=True)
class ProbeSpec:
    action: str  # http | tcp | exec
    port: int = 0
    path: str = "/"
    host: str = ""  # empty: the pod IP
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_probe(cls, probe: client.V1Probe | None, ports: dict[str, int],
                   time_scale: float = 1.0) -> ProbeSpec | None:
        """Kubernetes' defaults (period 10 s, timeout 1 s, thresholds 1/3); delays and periods
        scaled by `time_scale` so tests need not wait out production timings. Timeouts are not
        scaled: they bound a real request. Raises ValueError for a named port the container
        does not declare (the kubelet fails such a probe too)."""
        if probe is None:
            return None
        timing = {"initial_delay": (probe.initial_delay_seconds or 0) * time_scale,
                  "period": (probe.period_seconds or 10) * time_scale,
                  "timeout": float(probe.timeout_seconds or 1),
                  "success_threshold": probe.success_threshold or 1,
                  "failure_threshold": probe.failure_threshold or 3}
        if probe.http_get:
            g = probe.http_get
            return cls("http", port=resolve_port(g.port, ports), path=g.path or "/", host=g.host or "",
                       scheme=(g.scheme or "HTTP").upper(),
                       headers=tuple((h.name, h.value) for h in g.http_headers or []), **timing)
        if probe.tcp_socket:
            t = probe.tcp_socket
            return cls("tcp", port=resolve_port(t.port, ports), host=t.host or "", **timing)
        if probe._exec and probe._exec.command:
            return cls("exec", command=tuple(probe._exec.command), **timing)
        return None


def resolve_port(port: int | str, ports: dict[str, int]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    if port not in ports:
        raise ValueError(f"probe names port {port!r}, which the container does not declare")
    return ports[port]


class ProbeTracker:
    """Consecutive results against the thresholds, and when the next attempt is due.

    `initial` is the result before any attempt: False for readiness and startup probes (not
    ready, not started), True for liveness (alive until proven otherwise)."""

    def __init__(self, spec: ProbeSpec, started: float, initial: bool):
        self.spec = spec
        self.result = initial
        self.next_due = started + spec.initial_delay
        self.successes = 0
        self.failures = 0
        self.last_message = ""

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def record(self, ok: bool, now: float, message: str = "") -> bool:
        """Records one attempt; returns True when the result flipped."""
        self.next_due = now + self.spec.period
        self.last_message = message
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            flip = not self.result and self.successes >= self.spec.success_threshold
        else:
            self.successes, self.failures = 0, self.failures + 1
            flip = self.result and self.failures >= self.spec.failure_threshold
            # Startup/readiness start out failed; liveness and a ready pod flip on the threshold.
        if flip:
            self.result = not self.result
        return flip

    @property
    def exhausted(self) -> bool:
        """failureThreshold consecutive failures (for a startup probe, that never passed)."""
        return self.failures >= self.spec.failure_threshold


def perform(spec: ProbeSpec, pod_ip: str, env: dict[str, str] | None = None, cwd: str | None = None,
            mounts: dict[str, str] | None = None) -> tuple[bool, str]:
    """One probe attempt: (passed, what went wrong)."""
    host = spec.host or pod_ip
    try:
        if spec.action == "http":
            return _http(spec, host)
        if spec.action == "tcp":
            with socket.create_connection((host, spec.port), timeout=spec.timeout):
                return True, ""
        argv = [translate_arg(a, mounts or {}) for a in spec.command]
        done = subprocess.run(argv, check=False, env=env, cwd=cwd, capture_output=True,
                              timeout=spec.timeout)
        output = (done.stdout + done.stderr).decode(errors="replace").strip()[-300:]
        return done.returncode == 0, f"exit {done.returncode}: {output}" if done.returncode else ""
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {spec.timeout:g}s"
    except (OSError, http.client.HTTPException) as e:
        return False, f"{type(e).__name__}: {e}"


def _http(spec: ProbeSpec, host: str) -> tuple[bool, str]:
    if spec.scheme == "HTTPS":  # the kubelet does not verify probe certificates either
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, spec.port, timeout=spec.timeout, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, spec.port, timeout=spec.timeout)
    try:
        conn.request("GET", spec.path, headers={"User-Agent": "kube-probe/1.20", **dict(spec.headers)})
        status = conn.getresponse().status
    finally:
        conn.close()
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {status}"
