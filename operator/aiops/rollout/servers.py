"""The Triton server in each pod of a ModelDeployment, as the rollout talks to it: health, load,
and the validation samples. One short-lived client per call (a pod's address changes when it is
replaced); the rollout's steps know only this interface, so their tests can give them a fake."""

from __future__ import annotations

from typing import Protocol

from aiops.api.modeldeployment import ValidationSample
from aiops.builders.triton import HTTP_PORT
from aiops.rollout.modelcontrol import ModelControlKeys
from aiops.rollout.pods import pod_running_ip
from aiops.triton.client import Health, TritonServer
from aiops.triton.samples import SampleResult

LOAD_TIMEOUT = 300.0  # Triton's own client default for a load


class Servers(Protocol):
    async def health(self, pod: dict, model: str, version: int | None = None) -> Health: ...

    async def load(self, pod: dict, model: str, config: dict, timeout: float = LOAD_TIMEOUT) -> None: ...

    async def unload(self, pod: dict, model: str, timeout: float = LOAD_TIMEOUT) -> None: ...

    async def run_samples(self, pod: dict, model: str, version: int,
                          samples: list[ValidationSample]) -> list[SampleResult]: ...


class PodServers:
    """`Servers` over HTTP to each pod's Triton (raises TritonError as the client does); model
    control carries the ModelDeployment's key (`keys`) where the pods demand one."""

    def __init__(self, timeout: float = 5.0, keys: ModelControlKeys | None = None):
        self.timeout = timeout
        self.keys = keys

    def _client(self, pod: dict, headers: dict[str, str] | None = None) -> TritonServer:
        return TritonServer(f"{pod_running_ip(pod)}:{HTTP_PORT}", self.timeout, control_headers=headers)

    async def _control(self, pod: dict) -> TritonServer:
        return self._client(pod, await self.keys.headers(pod) if self.keys is not None else None)

    async def health(self, pod: dict, model: str, version: int | None = None) -> Health:
        async with self._client(pod) as server:
            return await server.health(model, version)

    async def load(self, pod: dict, model: str, config: dict, timeout: float = LOAD_TIMEOUT) -> None:
        async with await self._control(pod) as server:
            await server.load(model, config, timeout=timeout)

    async def unload(self, pod: dict, model: str, timeout: float = LOAD_TIMEOUT) -> None:
        async with await self._control(pod) as server:
            await server.unload(model, timeout=timeout)

    async def run_samples(self, pod: dict, model: str, version: int,
                          samples: list[ValidationSample]) -> list[SampleResult]:
        async with self._client(pod) as server:
            return [await server.infer_sample(model, version, s) for s in samples]
