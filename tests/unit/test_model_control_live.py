"""Triton's model control restricted to the operator's key, on the real tritonserver: the
arguments the Triton Deployment is built with, the key expanded as the kubelet expands $(VAR).
Without the key nobody loads, unloads or lists the repository; inference and health stay open."""

from __future__ import annotations

import asyncio

import pytest

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.triton import MODEL_CONTROL_ENV, MODEL_CONTROL_HEADER, build_triton_deployment
from aiops.devenv.demomodels import write_python_backend_model
from aiops.devenv.launchers import expand
from aiops.triton.client import TritonError, TritonServer
from harness.faultytriton import MetricsTriton

pytestmark = pytest.mark.timeout(180)
KEY = "k" * 64
CONFIG = {"name": "double", "backend": "python", "max_batch_size": 8,
          "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
          "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
          "instance_group": [{"kind": "KIND_CPU", "count": 1}]}


def restricted_args() -> list[str]:
    """The Deployment's restriction arguments as tritonserver receives them in the pod."""
    spec = ModelDeploymentSpec.from_wire({"model": {"name": "double", "version": 1},
                                          "repository": {"hostPath": {"path": "/m"}}})
    dep = build_triton_deployment("md", spec, False, "md-model-control-1a2b3c4d")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = container["env"][0]
    assert env["name"] == MODEL_CONTROL_ENV and env["valueFrom"]["secretKeyRef"]["name"] == "md-model-control-1a2b3c4d"
    assert all(KEY not in a for a in container["args"])  # the pod spec never holds the key
    return [expand(a, {MODEL_CONTROL_ENV: KEY}) for a in container["args"] if "restricted" in a]


def test_only_the_key_holder_controls_the_model_and_everyone_may_infer(tmp_path):
    args = restricted_args()
    assert args == [f"--http-restricted-api=model-repository:{MODEL_CONTROL_HEADER}={KEY}",
                    f"--grpc-restricted-protocol=model-repository:{MODEL_CONTROL_HEADER}={KEY}"]
    repo = tmp_path / "repo"
    write_python_backend_model(repo, "double", 1)

    async def go():
        async with MetricsTriton(repo, tmp_path, tuple(a for a in args if a.startswith("--http"))) as triton:
            stranger = TritonServer(triton.http, timeout=30)
            operator = TritonServer(triton.http, timeout=30, control_headers={MODEL_CONTROL_HEADER: KEY})
            wrong = TritonServer(triton.http, timeout=30, control_headers={MODEL_CONTROL_HEADER: "guess"})
            try:
                for client in (stranger, wrong):
                    with pytest.raises(TritonError, match="restricted"):
                        await client.load("double", CONFIG, timeout=60)
                    with pytest.raises(TritonError, match="restricted"):
                        await client.loaded_versions("double")
                await operator.load("double", CONFIG, timeout=60)
                assert await operator.loaded_versions("double") == {1}
                assert (await stranger.health("double", 1)).ok  # health stays open
                with pytest.raises(TritonError, match="restricted"):
                    await stranger.unload("double", timeout=30)
                assert (await stranger.health("double", 1)).ok  # still loaded
                await operator.unload("double", timeout=30)
                assert await operator.loaded_versions("double") == set()
            finally:
                for client in (stranger, operator, wrong):
                    await client.close()

    asyncio.run(go())
