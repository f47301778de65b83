"""A bed for monitoring tests and the benchmark: the real tritonserver with its metrics page on
loopback, and a Python-backend model whose faults are switched at run time: the same loaded version
turns slow, failing or wrong and back again, the way a serving model degrades in production (a
noisy neighbour, a bad dependency, drifted data).

It computes `y = scale * x` like `aiops.devenv.demomodels`, and before each batch reads
`faults.json` in its version directory (re-read only when the file changes):
  {"delay_ms": 0, "jitter_ms": 0, "error_rate": 0.0, "offset": 0.0, "seed": null}
- delay_ms + uniform(0, jitter_ms): latency added per batch;
- error_rate: share of batches that fail (raised in execute(): Triton counts them as failures);
- offset: added to every answer (wrong answers that still succeed).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from aiops.devenv.demomodels import model_config_text
from aiops.devenv.tritonruntime import put_triton_on_path
from aiops.triton.client import TritonServer
from aiops.worker.tritonprocess import find_triton, free_port

put_triton_on_path()  # the benchmarks come here without the tests' conftest
FAULTS_FILE = "faults.json"

MODEL_SOURCE = '''"""Fault-injectable demo model written by harness.faultytriton."""
import json
import os
import random
import time

import numpy as np
import triton_python_backend_utils as pb_utils

SCALE = {scale!r}


class TritonPythonModel:
    def initialize(self, args):
        self.path = os.path.join(args["model_repository"], args["model_version"], "faults.json")
        self.mtime, self.faults = None, {{}}
        self.rng = random.Random()

    def _faults(self):
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return {{}}
        if mtime != self.mtime:
            try:
                with open(self.path) as f:
                    self.faults = json.load(f)
                self.mtime = mtime
                if self.faults.get("seed") is not None:
                    self.rng.seed(self.faults["seed"])
            except (OSError, ValueError):
                pass  # half-written: keep the previous faults
        return self.faults

    def execute(self, requests):
        f = self._faults()
        delay = float(f.get("delay_ms", 0)) + self.rng.uniform(0, float(f.get("jitter_ms", 0)))
        if delay > 0:
            time.sleep(delay / 1000)
        if self.rng.random() < float(f.get("error_rate", 0)):
            # Raised, not returned: Triton 2.51 counts an error *response* of the Python backend
            # as a success in nv_inference_request_failure/success; an exception from execute()
            # fails the batch's requests and is counted (reason BACKEND).
            raise pb_utils.TritonModelException("injected failure")
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            y = (x * SCALE + float(f.get("offset", 0))).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y)]))
        return responses
'''


def write_fault_model(repo: Path, name: str, version: int = 1, *, scale: float = 2.0,
                      write_config: bool = True) -> Path:
    """Writes version `version` of model `name` (FP32 [4] in, FP32 [4] out); returns its directory."""
    version_dir = Path(repo) / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(MODEL_SOURCE.format(scale=scale))
    if write_config:
        (version_dir.parent / "config.pbtxt").write_text(model_config_text(name))
    set_faults(version_dir)
    return version_dir


def set_faults(version_dir: Path, *, delay_ms: float = 0, jitter_ms: float = 0, error_rate: float = 0.0,
               offset: float = 0.0, seed: int | None = None) -> None:
    """Switches the faults of a loaded version (atomically: the model never reads half a file)."""
    path = Path(version_dir) / FAULTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"delay_ms": delay_ms, "jitter_ms": jitter_ms, "error_rate": error_rate,
                               "offset": offset, "seed": seed}))
    tmp.replace(path)


class MetricsTriton:
    """`async with MetricsTriton(repo, scratch) as t:` the real tritonserver on 127.0.0.1 with
    HTTP (`t.http`) and the metrics page (`t.metrics_url`), explicit model control; stopped on exit.
    (The validation worker's LocalTriton turns metrics off on purpose; monitoring needs them.)"""

    def __init__(self, repository: Path, scratch: Path, extra_args: tuple[str, ...] = ()):
        self.repository, self.scratch, self.extra_args = Path(repository).resolve(), Path(scratch), extra_args
        self.process: subprocess.Popen | None = None
        self.http_port = self.metrics_port = 0
        self.client: TritonServer | None = None

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def __aenter__(self) -> MetricsTriton:
        binary = find_triton()
        self.http_port, self.metrics_port = free_port(), free_port()
        argv = [binary, f"--model-repository={self.repository}", "--model-control-mode=explicit",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}", "--allow-grpc=false",
                "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}", "--allow-metrics=true",
                "--exit-timeout-secs=2", *self.extra_args]
        with open(self.scratch / "tritonserver.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.scratch,
                                            start_new_session=True)
        self.client = TritonServer(self.http, timeout=30)
        for _ in range(300):
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited: {(self.scratch / 'tritonserver.log').read_text()[-800:]}")
            health = await self.client.health("")
            if health.live and health.ready:
                return self
            await asyncio.sleep(0.1)
        await self.__aexit__()
        raise RuntimeError("tritonserver did not become ready in 30s")

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
