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

import aiohttp
import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from aiops.api.modeldeployment import GenerateRequest, ValidationSample
from aiops.conditions import ReasonedError
from aiops.httpbody import MAX_API_BYTES, MAX_METRICS_BYTES, bounded_response
from aiops.triton.samples import SampleResult, judge, judge_text, text_answer, to_numpy


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
MAX_EVENT_BYTES = 1 << 20  # one streamed chunk; a server that sends more is not a generate endpoint


@dataclass(frozen=True)
class Generated:
    """What a generate request returned: the text (a stream's chunks joined), the time to the
    whole answer and to its first chunk, and how many chunks came."""

    text: str
    total_ms: float
    first_chunk_ms: float | None
    chunks: int


def _text(answer: dict) -> str:
    value = answer.get("text_output", "")
    return "".join(value) if isinstance(value, list) else str(value)


async def _server_sent_events(response: aiohttp.ClientResponse):
    """The JSON objects of a text/event-stream body (`data: {...}` events, blank-line separated)."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        if len(buffer) > MAX_EVENT_BYTES:
            raise InferenceServerException(f"a streamed event exceeds {MAX_EVENT_BYTES} bytes")
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = b"".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
            if data:
                yield json.loads(data)
    if buffer.strip().startswith(b"data:"):
        yield json.loads(buffer.strip()[5:])


class TritonServer:
    """One server at host:port (a pod IP and the HTTP port)."""

    def __init__(self, url: str, timeout: float = 5.0, control_headers: dict[str, str] | None = None):
        """control_headers: what a server started with a restricted model-repository API asks of
        load, unload and index requests (the operator's key, see builders/triton.py)."""
        self.url = url
        self.timeout = timeout
        self.control_headers = control_headers
        # The client's conn_timeout is aiohttp's *total* request timeout: a model load takes far
        # longer than a health check. Each call is bounded by `_call` instead.
        self._client = aioclient.InferenceServerClient(url, conn_timeout=REQUEST_CEILING)
        # tritonclient reads every answer whole and takes no response class: its session is given
        # one whose reads stop at MAX_API_BYTES (the server runs an image the CR author chose).
        self._client._stub._response_class = bounded_response(MAX_API_BYTES)
        self._http: aiohttp.ClientSession | None = None  # the generate endpoints, which tritonclient lacks

    async def close(self) -> None:
        await self._client.close()
        if self._http is not None:
            await self._http.close()

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
        await self._call(f"loading {model}", self._client.load_model(
            model, headers=self.control_headers, config=json.dumps(config)), timeout=timeout)

    async def unload(self, model: str, timeout: float = 300.0) -> None:
        """Unloads every version of `model`, then waits until the repository index shows none
        READY or UNLOADING: the next load must find the GPU memory given back, and an unload
        request is not promised to return only then."""
        await self._call(f"unloading {model}", self._client.unload_model(model, headers=self.control_headers),
                         timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            index = await self._call("repository index", self._client.get_model_repository_index(
                headers=self.control_headers))
            if not any(m.get("name") == model and m.get("state") in ("READY", "UNLOADING") for m in index):
                return
            await asyncio.sleep(0.1)
        raise TritonError("TritonTimeout", f"{model} on {self.url} was still unloading after {timeout:.0f}s")

    async def loaded_versions(self, model: str) -> set[int]:
        index = await self._call("repository index", self._client.get_model_repository_index(
            headers=self.control_headers))
        return {int(m["version"]) for m in index
                if m.get("name") == model and m.get("state") == "READY" and m.get("version")}

    async def infer_sample(self, model: str, version: int, sample: ValidationSample) -> SampleResult:
        """One sample against one version; a failed request is a failed sample, not an error."""
        if sample.generate is not None:
            return await self.generate_sample(model, version, sample)
        inputs = []
        for tensor in sample.inputs or []:
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

    async def generate_sample(self, model: str, version: int, sample: ValidationSample) -> SampleResult:
        """A generation sample through Triton's generate (or generate_stream) endpoint."""
        request = sample.generate
        try:
            generated = await self._call(f"generation of sample {sample.name!r}",
                                         self.generate(model, version, request))
        except TritonError as e:
            return SampleResult(sample.name, False, str(e))
        verdict = judge_text(sample, text_answer(request, generated.text))
        return SampleResult(sample.name, verdict.passed, verdict.detail, generated.total_ms,
                            first_chunk_ms=generated.first_chunk_ms, chunks=generated.chunks)

    async def generate(self, model: str, version: int | None, request: GenerateRequest) -> Generated:
        """text_input, stream and the sampling parameters (max_tokens among them) as Triton's
        generate extension takes them: fields named like the model's inputs become those
        inputs, `parameters` the request's parameters (which the vLLM backend reads as its
        SamplingParams). A stream is Server-Sent Events, one text_output chunk each."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        path += "/generate_stream" if request.stream else "/generate"
        body = {"text_input": request.prompt, "stream": request.stream,
                "parameters": {**request.parameters, "max_tokens": request.max_tokens}}
        started = time.perf_counter()
        session = self._session()
        async with session.post(f"http://{self.url}{path}", json=body) as response:
            if not request.stream:
                answer = await response.json(content_type=None)
                if response.status != 200 or "error" in answer:
                    raise InferenceServerException(answer.get("error") or f"HTTP {response.status}")
                elapsed = (time.perf_counter() - started) * 1000
                return Generated(_text(answer), elapsed, elapsed, 1)
            parts: list[str] = []
            first, size = None, 0
            async for event in _server_sent_events(response):
                if "error" in event:
                    raise InferenceServerException(event["error"])
                first = first if first is not None else (time.perf_counter() - started) * 1000
                parts.append(_text(event))
                size += len(parts[-1])
                if size > MAX_API_BYTES:
                    raise InferenceServerException(f"the streamed answer passed {MAX_API_BYTES} bytes")
            if response.status != 200 and not parts:
                raise InferenceServerException(f"HTTP {response.status}")
            return Generated("".join(parts), (time.perf_counter() - started) * 1000, first, len(parts))

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_CEILING),
                                               response_class=bounded_response(MAX_API_BYTES))
        return self._http

    async def metrics_text(self, metrics_url: str) -> str:
        """Triton's Prometheus exposition (the metrics port), for monitoring."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout, response_class=bounded_response(MAX_METRICS_BYTES)) as \
                session, session.get(metrics_url) as resp:
            return await resp.text()
