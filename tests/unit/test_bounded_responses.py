"""A pod that answers without end cannot take the operator's memory: metrics scrapes and Triton
API calls stop reading at their limit. A real HTTP server on localhost plays the pod; Python's
allocation peak while it streams 256 MiB shows what the operator held."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc

import pytest
from aiohttp import web

from aiops.httpbody import MAX_API_BYTES, MAX_METRICS_BYTES
from aiops.monitoring.scrape import Scraper
from aiops.triton.client import TritonError, TritonServer

ENDLESS = 256 << 20
CHUNK = 1 << 20
METRICS = ('# TYPE nv_inference_request_success counter\n'
           'nv_inference_request_success{model="m",version="1"} 7\n')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def endless(request: web.Request) -> web.StreamResponse:
    """ENDLESS bytes in chunks, no Content-Length: only reading tells how big it is."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    line = b"# " + b"x" * (CHUNK - 3) + b"\n"
    try:
        for _ in range(ENDLESS // CHUNK):
            await response.write(line)
    except ConnectionError:  # the client stopped reading: what the test wants
        pass
    return response


async def declared(request: web.Request) -> web.Response:
    """A body announced too big up front: refused before a byte of it is read."""
    return web.Response(body=b"[" + b" " * (MAX_API_BYTES + 10) + b"]", content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=METRICS)


async def serve(routes: list[web.RouteDef]):
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def peak_while(coro) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = await coro
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_metrics_page_without_end_is_an_error_not_the_operators_memory():
    async def go():
        runner, port = await serve([web.get("/endless", endless), web.get("/metrics", metrics)])
        scraper = Scraper(timeout=30)
        try:
            good = await scraper.scrape("pod-a", f"http://127.0.0.1:{port}/metrics")
            bad, peak = await peak_while(scraper.scrape("pod-b", f"http://127.0.0.1:{port}/endless"))
            return good, bad, peak
        finally:
            await scraper.close()
            await runner.cleanup()

    good, bad, peak = asyncio.run(go())
    assert good.error is None
    assert bad.error and f"passed {MAX_METRICS_BYTES} bytes" in bad.error
    assert peak < 3 * MAX_METRICS_BYTES, f"held {peak >> 20} MiB for a page cut at {MAX_METRICS_BYTES >> 20} MiB"


@pytest.mark.parametrize("handler", [endless, declared], ids=["streamed", "declared"])
def test_a_triton_api_answer_past_the_limit_fails_the_call(handler):
    async def go():
        runner, port = await serve([web.post("/v2/repository/index", handler)])
        server = TritonServer(f"127.0.0.1:{port}", timeout=30)
        try:
            return await server.loaded_versions("m")
        except TritonError as e:
            return e
        finally:
            await server.close()
            await runner.cleanup()

    error = asyncio.run(go())
    assert isinstance(error, TritonError) and f"{MAX_API_BYTES}" in str(error), error


def test_the_triton_api_limit_bounds_what_is_held():
    async def go():
        runner, port = await serve([web.post("/v2/repository/index", endless)])
        server = TritonServer(f"127.0.0.1:{port}", timeout=30)
        tracemalloc.start()
        try:
            with pytest.raises(TritonError):
                await server.loaded_versions("m")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await server.close()
            await runner.cleanup()

    peak = asyncio.run(go())
    assert peak < 2 * MAX_API_BYTES, f"held {peak >> 20} MiB of a {ENDLESS >> 20} MiB answer"
