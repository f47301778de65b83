"""Generation samples against the real tritonserver (CPU): a small causal LM trained here
(aiops.devenv.tinylm), served by the Python backend with the vLLM backend's interface, asked
through Triton's generate and generate_stream endpoints, and judged by the samples' text checks.
Version 1 learnt the right capitals, version 2 the wrong ones."""

from __future__ import annotations

import asyncio

import pytest

from aiops.api.modeldeployment import GenerateRequest, ValidationSample
from aiops.devenv.tinylm import model_config, write_tiny_lm
from harness.faultytriton import MetricsTriton

pytestmark = pytest.mark.timeout(300)
MODEL = "tinylm"


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
