"""How fast the in-place rollback restores the previous version, on the real tritonserver (CPU).

A rollback of a version swap is one Triton model-control call: load the model configuration that
pins the last good version; Triton keeps serving while it reloads. Measured here: from that call
to the first unversioned inference that answers with the old version's numbers, and, for
comparison in the same run, a cold load of the same model (what a pod restart would cost).
Detection before it is the health check: failureThreshold consecutive failed checks, one per
second during a rollout (default threshold 3).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiops.api.modeldeployment import ModelDeploymentSpec  # noqa: E402
from aiops.builders.triton import triton_model_config  # noqa: E402
from aiops.devenv.demomodels import write_python_backend_model  # noqa: E402
from aiops.devenv.tritonruntime import put_triton_on_path  # noqa: E402
from aiops.triton.repository import check_model_version  # noqa: E402
from aiops.worker.tritonprocess import LocalTriton  # noqa: E402
from report import figure  # noqa: E402

ROUNDS = 10
put_triton_on_path()  # the worker's LocalTriton runs `tritonserver` from PATH


async def answer(client: aioclient.InferenceServerClient) -> float:
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    result = await client.infer("adder", [inp])
    return float(result.as_numpy("OUTPUT0").reshape(-1)[0])


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        write_python_backend_model(repo, "adder", 1, scale=2.0)
        write_python_backend_model(repo, "adder", 2, scale=3.0)
        spec = ModelDeploymentSpec.from_wire({"model": {"name": "adder", "version": 2},
                                              "repository": {"hostPath": {"path": str(repo)}}})
        base, _ = check_model_version(repo, spec)
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        async with LocalTriton(repo, scratch) as server:
            client = aioclient.InferenceServerClient(server.url)
            rollbacks, cold = [], []
            for _ in range(ROUNDS):
                await server.load("adder", triton_model_config(base, spec, [1, 2]))
                assert await answer(client) == 3.0  # the new version answers
                t0 = time.perf_counter()
                await server.load("adder", triton_model_config(base, spec, [1]))
                while await answer(client) != 2.0:
                    await asyncio.sleep(0.001)
                rollbacks.append(time.perf_counter() - t0)
                await client.unload_model("adder")
                t0 = time.perf_counter()
                await server.load("adder", triton_model_config(base, spec, [1]))
                await answer(client)
                cold.append(time.perf_counter() - t0)
            await client.close()
    figure("rollback.in_place.p50", statistics.median(rollbacks) * 1000, "ms",
           f"load of the last good version until it answers, {ROUNDS} rounds, real Triton on CPU")
    figure("rollback.in_place.max", max(rollbacks) * 1000, "ms")
    figure("rollback.cold_load.p50", statistics.median(cold) * 1000, "ms", "same model loaded from nothing")
    figure("rollback.detection_default", 3 * 1.0, "s", "3 failed checks, 1 s apart, before the rollback")


if __name__ == "__main__":
    asyncio.run(main())
