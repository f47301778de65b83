"""An LLM engine's figures through monitoring: the vLLM backend's metric families on a Triton
page, their deltas over a sliding window, and judgements of time to first token and time per
output token against thresholds and baselines. The page's text follows what the vLLM backend
exports (src/utils/metrics.py: families, kinds, labels model and version)."""

from __future__ import annotations

import pytest

from aiops.api.modeldeployment import MetricsSnapshot, Monitoring
from aiops.monitoring.analysis import judge, shift_findings
from aiops.monitoring.scrape import parse_triton_metrics
from aiops.monitoring.window import SlidingWindow, stats_from_snapshot

INTERVAL = 5.0


def page(requests: int, tokens: int, ttft_s: float, tpot_s: float, tpot_count: int, kv: float = 0.25,
         version: int = 1) -> str:
    """A Triton metrics page of one LLM version with cumulative figures."""
    labels = f'model="llm",version="{version}"'
    return "\n".join([
        "# HELP nv_inference_request_success Number of successful inference requests",
        "# TYPE nv_inference_request_success counter",
        f"nv_inference_request_success{{{labels}}} {requests}",
        "# HELP nv_inference_request_duration_us Cumulative inference request duration",
        "# TYPE nv_inference_request_duration_us counter",
        f"nv_inference_request_duration_us{{{labels}}} {requests * 50_000}",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{labels}}} {tokens}",
        "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        f'vllm:time_to_first_token_seconds_bucket{{{labels},le="0.1"}} {requests}',
        f'vllm:time_to_first_token_seconds_bucket{{{labels},le="+Inf"}} {requests}',
        f"vllm:time_to_first_token_seconds_count{{{labels}}} {requests}",
        f"vllm:time_to_first_token_seconds_sum{{{labels}}} {ttft_s}",
        "# HELP vllm:time_per_output_token_seconds Histogram of time per output token in seconds.",
        "# TYPE vllm:time_per_output_token_seconds histogram",
        f'vllm:time_per_output_token_seconds_bucket{{{labels},le="+Inf"}} {tpot_count}',
        f"vllm:time_per_output_token_seconds_count{{{labels}}} {tpot_count}",
        f"vllm:time_per_output_token_seconds_sum{{{labels}}} {tpot_s}",
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:gpu_cache_usage_perc gauge",
        f"vllm:gpu_cache_usage_perc{{{labels}}} {kv}",
        ""])


def test_the_engine_families_are_read_per_model_version():
    counters = parse_triton_metrics(page(4, 120, 0.2, 1.16, 116)).models[("llm", 1)]
    g = counters.generation
    assert (g.tokens, g.ttft_s, g.ttft_count, g.tpot_s, g.tpot_count, g.kv_cache) == (120, 0.2, 4, 1.16, 116, 0.25)
    assert counters.success == 4


def test_a_model_without_an_engine_has_no_generation_figures():
    text = ('# TYPE nv_inference_request_success counter\n'
            'nv_inference_request_success{model="m",version="1"} 3\n')
    assert parse_triton_metrics(text).models[("m", 1)].generation is None


def walk(tpot_ms: float, intervals: int = 8, requests: int = 6, tokens: int = 30, ttft_ms: float = 40.0,
         start: float = 1000.0) -> SlidingWindow:
    """A window fed `intervals` collections of steady traffic at the given speeds."""
    window = SlidingWindow(INTERVAL * intervals)
    totals = {"requests": 0, "tokens": 0, "ttft": 0.0, "tpot": 0.0, "tpot_n": 0}
    for i in range(intervals + 1):
        text = page(totals["requests"], totals["tokens"], totals["ttft"], totals["tpot"], totals["tpot_n"])
        window.add_counters(start + i * INTERVAL, {"p0": parse_triton_metrics(text).models[("llm", 1)]})
        totals["requests"] += requests
        totals["tokens"] += tokens
        totals["ttft"] += requests * ttft_ms / 1000
        totals["tpot"] += (tokens - requests) * tpot_ms / 1000
        totals["tpot_n"] += tokens - requests
    return window


def test_window_means_rates_and_interval_samples():
    stats = walk(tpot_ms=20.0).stats(1000.0 + 8 * INTERVAL)
    assert stats.ttft_ms == pytest.approx(40.0) and stats.tpot_ms == pytest.approx(20.0)
    assert stats.tokens_per_second == pytest.approx(30 / INTERVAL)
    assert stats.kv_cache_percent == pytest.approx(25.0)
    assert len(stats.interval_tpot_ms) >= 7 and all(v == pytest.approx(20.0) for v in stats.interval_tpot_ms)


def test_the_first_collection_of_a_pod_contributes_nothing_and_a_restart_counts_from_zero():
    window = SlidingWindow(60)
    window.add_counters(0, {"p0": parse_triton_metrics(page(100, 1000, 4.0, 18.0, 900)).models[("llm", 1)]})
    window.add_counters(5, {"p0": parse_triton_metrics(page(2, 20, 0.08, 0.36, 18)).models[("llm", 1)]})  # restarted
    stats = window.stats(5)
    assert stats.tokens_per_second == pytest.approx(20 / 5)
    assert stats.tpot_ms == pytest.approx(20.0)


def test_status_keeps_the_figures_and_a_baseline_survives_the_round_trip():
    stats = walk(tpot_ms=20.0).stats(1040.0)
    snapshot = stats.snapshot()
    MetricsSnapshot.model_validate(snapshot)  # every key is a status field
    assert snapshot["timePerOutputTokenMs"] == 20.0 and snapshot["tokensPerSecond"] == 6.0
    back = stats_from_snapshot(snapshot, 40)
    assert back.interval_tpot_ms == stats.interval_tpot_ms and back.ttft_ms == stats.ttft_ms


def monitoring(**thresholds) -> Monitoring:
    return Monitoring.from_wire({"minSamples": 20, "thresholds": thresholds})


def test_a_version_three_times_slower_per_token_is_a_shift_from_the_one_it_replaced():
    before = walk(tpot_ms=10.0).stats(1040.0)
    after = walk(tpot_ms=30.0, start=5000.0).stats(5040.0)
    findings = shift_findings(after, before, monitoring(), "version 1's baseline")
    assert [f.reason for f in findings] == ["TimePerOutputTokenShift"]
    assert findings[0].value == pytest.approx(30.0) and "version 1's baseline" in findings[0].detail
    # The same speed again is no finding, nor is a rise too small to matter.
    assert shift_findings(walk(tpot_ms=10.0, start=9000.0).stats(9040.0), before, monitoring(), "b") == []
    assert shift_findings(walk(tpot_ms=13.0, start=9000.0).stats(9040.0), before, monitoring(), "b") == []


def test_thresholds_on_generation_times():
    stats = walk(tpot_ms=30.0).stats(1040.0)
    j = judge(stats, monitoring(timePerOutputToken={"maxMilliseconds": 25}, timeToFirstToken={"maxMilliseconds": 100}))
    assert [f.reason for f in j.findings] == ["TimePerOutputTokenAboveThreshold"]


def test_thin_traffic_or_no_engine_figures_is_not_judged_as_fine():
    thin = walk(tpot_ms=30.0, requests=1).stats(1040.0)
    j = judge(thin, monitoring(timePerOutputToken={"maxMilliseconds": 25}))
    assert j.findings == () and any("time_per_output_token" in m for m in j.missing)
