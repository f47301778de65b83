"""Generation samples against the real tritonserver (CPU): a small causal LM trained here
(aiops.devenv.tinylm), served by the Python backend with the vLLM backend's interface, asked
through Triton's generate and generate_stream endpoints, and judged by the samples' text checks.
Version 1 learnt the right capitals, version 2 the wrong ones."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from aiops.api.modeldeployment import GenerateRequest, ModelDeploymentSpec, ValidationSample
from aiops.devenv.tinylm import CORPORA, model_config, train, write_tiny_lm
from aiops.monitoring.monitor import Monitor, PodIndex, Target
from aiops.monitoring.scrape import Generation, parse_triton_metrics
from aiops.monitoring.verdict import VerdictRegistry
from harness.faultytriton import MetricsTriton

pytestmark = pytest.mark.timeout(300)
MODEL = "tinylm"
KEY = ("ns", MODEL)


def sample(name: str, prompt: str, stream: bool = False, max_tokens: int = 32, **expect) -> ValidationSample:
    return ValidationSample.from_wire({"name": name, "generate": {"prompt": prompt, "stream": stream,
                                                                  "maxTokens": max_tokens},
                                       **({"expectedText": expect} if expect else {})})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module, both versions loaded; the tests run their requests on it."""
    repo = tmp_path_factory.mktemp("llm-repo")
    write_tiny_lm(repo, MODEL, 1, "facts")
    write_tiny_lm(repo, MODEL, 2, "wrong")
    scratch = tmp_path_factory.mktemp("llm-triton")
    loop = asyncio.new_event_loop()
    triton = MetricsTriton(repo, scratch)
    loop.run_until_complete(triton.__aenter__())
    config = {**model_config(MODEL), "version_policy": {"all": {}}}
    loop.run_until_complete(triton.client.load(MODEL, config, timeout=120))
    yield loop, triton
    loop.run_until_complete(triton.__aexit__())
    loop.close()


def run(served, coro_fn):
    loop, triton = served
    return loop.run_until_complete(coro_fn(triton.client))


def test_a_generation_sample_passes_on_the_version_that_knows_the_answer(served):
    check = sample("france", "The capital of France is", contains=["Paris"], regex=r"^ Paris\.$")
    result = run(served, lambda c: c.infer_sample(MODEL, 1, check))
    assert result.passed, result.detail
    assert result.chunks == 1 and result.latency_ms > 0


def test_the_same_sample_fails_on_a_version_with_wrong_answers_and_says_what_it_got(served):
    check = sample("france", "The capital of France is", contains=["Paris"])
    result = run(served, lambda c: c.infer_sample(MODEL, 2, check))
    assert not result.passed
    assert "Lyon" in result.detail and "'Paris'" in result.detail


def test_a_streamed_sample_arrives_one_token_per_chunk_and_is_judged_whole(served):
    check = sample("italy", "The capital of Italy is", stream=True, exact="Rome.")
    result = run(served, lambda c: c.infer_sample(MODEL, 1, check))
    assert result.passed, result.detail
    assert result.chunks == len(" Rome.")  # one character is one token
    assert 0 < result.first_chunk_ms <= result.latency_ms


def test_generate_returns_the_text_and_max_tokens_bounds_it(served):
    async def ask(client):
        whole = await client.generate(MODEL, 1, GenerateRequest.from_wire({"prompt": "The capital of Spain is"}))
        cut = await client.generate(MODEL, 1, GenerateRequest.from_wire({"prompt": "The capital of Spain is",
                                                                          "maxTokens": 3}))
        return whole, cut

    whole, cut = run(served, ask)
    # Not streamed, the answer repeats the prompt first, as the vLLM backend's does.
    assert whole.text == "The capital of Spain is Madrid."
    assert cut.text == "The capital of Spain is Ma"


def test_a_request_the_model_refuses_is_a_failed_sample_not_an_error(served):
    check = sample("unknown-chars", "¿Dónde está?", contains=["x"])  # characters the model never saw
    result = run(served, lambda c: c.infer_sample(MODEL, 1, check))
    assert not result.passed and "vocabulary" in result.detail


def test_a_sample_without_checks_only_has_to_succeed(served):
    result = run(served, lambda c: c.infer_sample(MODEL, 2, sample("any", "Triton serves")))
    assert result.passed and result.detail == ""


def test_the_engine_figures_reach_the_metrics_page_as_the_vllm_backend_names_them(served):
    loop, triton = served

    async def ask_and_scrape():
        before = parse_triton_metrics(await triton.client.metrics_text(triton.metrics_url)).models.get((MODEL, 1))
        for _ in range(3):
            await triton.client.infer_sample(MODEL, 1, sample("x", "The capital of Japan is", stream=True))
        return before, parse_triton_metrics(await triton.client.metrics_text(triton.metrics_url)).models[(MODEL, 1)]

    before, after = loop.run_until_complete(ask_and_scrape())
    old = before.generation if before and before.generation else Generation()
    g = after.generation
    assert g.ttft_count - old.ttft_count == 3
    assert g.tokens - old.tokens == 3 * len(" Tokyo.")
    assert g.tpot_count - old.tpot_count == 3 * (len(" Tokyo.") - 1)  # every token after the first
    assert g.kv_cache is None  # a GRU has no KV cache: unknown, not 0


def test_unload_returns_once_no_version_is_left_and_a_load_brings_them_back(served):
    loop, triton = served

    async def swap(client):
        await client.unload(MODEL, timeout=60)
        gone = await client.loaded_versions(MODEL)
        await client.load(MODEL, {**model_config(MODEL), "version_policy": {"all": {}}}, timeout=120)
        return gone, await client.loaded_versions(MODEL)

    gone, back = run(served, swap)
    assert gone == set() and back == {1, 2}


# ---- monitoring under probe traffic alone: a version 3x slower per token -----------------------------

class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_version_three_times_slower_per_token_is_rolled_back_by_probes_alone(tmp_path):
    """No client traffic at all: the monitor's own generation probes fill each window. Version 1
    (4 ms per token) sets the baseline; version 2 (12 ms per token, same answers) is judged
    against it and monitoring asks for the rollback."""
    repo = tmp_path / "repo"
    weights = train(CORPORA["facts"])
    write_tiny_lm(repo, MODEL, 1, token_delay_ms=4, weights=weights)
    write_tiny_lm(repo, MODEL, 2, token_delay_ms=12, weights=weights)
    md = ModelDeploymentSpec.from_wire({
        "model": {"name": MODEL, "version": 1}, "repository": {"hostPath": {"path": "/m"}}, "resources": {"gpus": 0},
        "llm": {"engine": "python"},
        "validation": {"samples": [{"name": "france", "generate": {"prompt": "The capital of France is"},
                                    "expectedText": {"contains": ["Paris"]}},
                                   {"name": "spain", "generate": {"prompt": "The capital of Spain is"},
                                    "expectedText": {"contains": ["Madrid"]}}]},
        "monitoring": {"intervalSeconds": 5, "windowSeconds": 30, "consecutiveWindows": 2, "minSamples": 6,
                       "action": "rollback"}})

    async def go():
        async with MetricsTriton(repo, tmp_path) as triton:
            await triton.client.load(MODEL, {**model_config(MODEL), "version_policy": {"all": {}}}, timeout=120)
            clock, queued = Clock(), []
            pods = PodIndex()
            pods.observe({"metadata": {"name": "p0", "namespace": "ns", "labels": {"aiops.dev/modeldeployment": MODEL}},
                          "status": {"phase": "Running", "podIP": "127.0.0.1"}}, False)
            monitor = Monitor(VerdictRegistry(queued.append), pods, clock=clock,
                              metrics_port=triton.metrics_port, http_port=triton.http_port)
            samples = tuple(md.validation.samples)
            try:
                monitor.targets[KEY] = Target(MODEL, 1, md.monitoring, samples)
                v = None
                for _ in range(10):  # a full window of probes: version 1's baseline
                    clock.now += 5
                    v = await monitor.tick(KEY)
                assert v.baseline is not None and not v.degraded, v.message
                baseline = v.baseline
                assert baseline["timePerOutputTokenMs"] >= 4 and baseline["requests"] >= 6, baseline
                monitor.targets[KEY] = Target(MODEL, 2, md.monitoring, samples, previous_baseline=baseline,
                                              previous_version=1)
                for _ in range(20):
                    clock.now += 5
                    v = await monitor.tick(KEY)
                    if v.rollback_requested:
                        break
                assert v.rollback_requested and v.reason == "TimePerOutputTokenShift", v.message
                assert v.snapshot["timePerOutputTokenMs"] >= 2.5 * baseline["timePerOutputTokenMs"]
                assert v.snapshot["tokensPerSecond"] > 0 and v.snapshot["probes"] > 0
                assert "version 1's baseline" in v.message
                # The operator's own /metrics: the same figures, in seconds.
                labels = {"namespace": "ns", "name": MODEL, "version": "2"}
                tpot = REGISTRY.get_sample_value("aiops_modeldeployment_time_per_output_token_seconds", labels)
                assert tpot == pytest.approx(v.snapshot["timePerOutputTokenMs"] / 1000, rel=1e-3)
                assert REGISTRY.get_sample_value("aiops_modeldeployment_generation_tokens_per_second", labels) > 0
                assert REGISTRY.get_sample_value("aiops_modeldeployment_kv_cache_usage_ratio", labels) is None
            finally:
                await monitor.stop()

    asyncio.run(go())
