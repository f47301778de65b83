"""A real Prometheus server for local runs and tests: Debian's `prometheus` package, run as a
plain process on a loopback port with a generated scrape configuration and its own data
directory — the end-to-end check that the operator's /metrics is valid exposition, and a way to
try PromQL on the operator's gauges. Nothing is left running: `stop()` (or the context manager)
ends it.

Installing: if the binary is missing, `apt-get install -y --no-install-recommends prometheus`
(CI and the dev machines run as root on Debian with its mirrors reachable). The package's
service must not start: a temporary policy-rc.d forbids it for the duration of the install (and
on a machine without systemd nothing would start it anyway).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

BINARY_CANDIDATES = ("/usr/bin/prometheus",)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


class PrometheusUnavailable(RuntimeError):
    """No binary and it could not be installed; the message says what to do."""


def find_prometheus() -> str | None:
    return shutil.which("prometheus") or next((b for b in BINARY_CANDIDATES if os.access(b, os.X_OK)), None)


def ensure_prometheus(install: bool = True) -> str:
    """The path of the prometheus binary, installing Debian's package when it is missing."""
    found = find_prometheus()
    if found or not install:
        if found:
            return found
        raise PrometheusUnavailable("prometheus is not installed: apt-get install -y --no-install-recommends "
                                    "prometheus")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PrometheusUnavailable("prometheus is not installed and this is not a root Debian machine: install "
                                    "Debian's `prometheus` package (or put a prometheus binary on PATH)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    own_policy = not POLICY_RC_D.exists()
    if own_policy:  # "101: action forbidden": the package's postinst must not start a service
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
                                capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:  # stale package lists on a fresh machine: refresh once
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
            result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
                                    capture_output=True, text=True, env=env, timeout=900)
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    found = find_prometheus()
    if not found:
        raise PrometheusUnavailable(f"installing prometheus failed: {result.stderr[-800:]}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_config(targets: list[str], interval: str = "1s", job: str = "aiops-operator",
                  jobs: list[dict] | None = None) -> str:
    """A prometheus.yml scraping `targets` (host:port) every `interval`, and the scrape `jobs`
    given whole (aiops.devenv.monitors). JSON is valid YAML."""
    configs = [{"job_name": job, "static_configs": [{"targets": targets}]}] if targets else []
    return json.dumps({"global": {"scrape_interval": interval, "evaluation_interval": interval},
                       "scrape_configs": configs + list(jobs or [])}, indent=2)


class LocalPrometheus:
    """`with LocalPrometheus(["127.0.0.1:9090"]) as prom: prom.query("up")`; `jobs`: more scrape
    jobs, e.g. a chart's monitors (aiops.devenv.monitors.scrape_jobs)."""

    def __init__(self, targets: list[str], workdir: Path | None = None, interval: str = "1s",
                 jobs: list[dict] | None = None):
        self.targets, self.interval, self.jobs = targets, interval, jobs
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="aiops-prometheus-")
        self.workdir = Path(workdir or self._tmp.name)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalPrometheus:
        binary = ensure_prometheus()
        config = self.workdir / "prometheus.yml"
        config.write_text(scrape_config(self.targets, self.interval, jobs=self.jobs))
        self.port = free_port()
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 (kept open for the child)
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusUnavailable(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusUnavailable(f"prometheus not ready after {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.workdir / "prometheus.log").read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def query(self, promql: str) -> list[dict]:
        """An instant PromQL query; the result vector (raises on an error answer)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"PromQL {promql!r} failed: {body}")
        return body["data"]["result"]

    def query_until(self, promql: str, timeout: float = 60.0) -> list[dict]:
        """`query` again until it has a result or `timeout` passes (the first scrapes take a
        moment); the last result, empty when none came."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.3)

    def targets_health(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            return json.load(resp)["data"]["activeTargets"]

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
