"""The operator's conversation with one Triton server, over KServe v2 HTTP (tritonclient's asyncio
client): health, explicit model control, and the sample inferences of a health check.

Every call is bounded by a timeout, and failures come back as `TritonError` with a message fit
for a condition, never as a library-specific exception.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from aiops.api.modeldeployment import ValidationSample
from aiops.conditions import ReasonedError
from aiops.triton.samples import SampleResult, judge, to_numpy


class TritonError(ReasonedError):
    """A Triton call failed; `reason` is a CamelCase word for conditions."""


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool
    model_ready: bool
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.live and self.ready and self.model_ready


REQUEST_CEILING = 3600.0


class TritonServer:
    """One server at host:port (a pod IP and the HTTP port)."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        # The client's conn_timeout is aiohttp's *total* request timeout: a model load takes far
        # longer than a health check. Each call is bounded by `_call` instead.
        self._client = aioclient.InferenceServerClient(url, conn_timeout=REQUEST_CEILING)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> TritonServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, what: str, coro, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(coro, timeout or self.timeout)
        except TimeoutError:
            raise TritonError("TritonTimeout", f"{what} on {self.url} timed out after "
                              f"{timeout or self.timeout:.0f}s") from None
        except InferenceServerException as e:
            raise TritonError("TritonRequestFailed", f"{what} on {self.url}: {e.message()}") from None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # connection refused or reset, bad response...
            raise TritonError("TritonUnreachable", f"{what} on {self.url}: {e}") from None

    async def health(self, model: str, version: int | None = None) -> Health:
        """Server live, server ready, and the model (version) ready; unreachable counts as down."""
        try:
            live = await self._call("liveness", self._client.is_server_live())
            ready = await self._call("readiness", self._client.is_server_ready())
            model_ready = await self._call("model readiness", self._client.is_model_ready(
                model, str(version) if version else ""))
        except TritonError as e:
            return Health(False, False, False, str(e))
        return Health(bool(live), bool(ready), bool(model_ready))

    async def load(self, model: str, config: dict, timeout: float = 300.0) -> None:
        """Loads (or reloads) `model` with `config`; Triton keeps serving what it had until the
        new configuration is loaded, and keeps it if loading fails."""
        await self._call(f"loading {model}", self._client.load_model(model, config=json.dumps(config)),
                         timeout=timeout)

    async def loaded_versions(self, model: str) -> set[int]:
        index = await self._call("repository index", self._client.get_model_repository_index())
        return {int(m["version"]) for m in index
                if m.get("name") == model and m.get("state") == "READY" and m.get("version")}

    async def infer_sample(self, model: str, version: int, sample: ValidationSample) -> SampleResult:
        """One sample against one version; a failed request is a failed sample, not an error."""
        inputs = []
        for tensor in sample.inputs:
            data = to_numpy(tensor)
            inp = httpclient.InferInput(tensor.name, list(data.shape), tensor.data_type)
            inp.set_data_from_numpy(data, binary_data=True)
            inputs.append(inp)
        outputs = [httpclient.InferRequestedOutput(o.name, binary_data=True) for o in sample.expected_outputs]
        started = time.perf_counter()
        try:
            result = await self._call(f"inference of sample {sample.name!r}", self._client.infer(
                model, inputs, model_version=str(version), outputs=outputs or None))
        except TritonError as e:
            return SampleResult(sample.name, False, str(e))
        latency = (time.perf_counter() - started) * 1000
        answers: dict[str, np.ndarray] = {}
        for expected in sample.expected_outputs:
            value = result.as_numpy(expected.name)
            if value is not None:
                answers[expected.name] = value
        verdict = judge(sample, answers)
        return SampleResult(verdict.sample, verdict.passed, verdict.detail, latency)

    async def metrics_text(self, metrics_url: str) -> str:
        """Triton's Prometheus exposition (the metrics port), for monitoring."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(metrics_url) as resp:
            return await resp.text()
