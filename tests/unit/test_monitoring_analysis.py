"""Monitoring analysis on synthetic series: the statistics, the guards, damping, and many windows
of noise without an alarm. Pure: no server, no cluster."""

from __future__ import annotations

import math
import random

import pytest

from aiops.api.modeldeployment import Monitoring
from aiops.monitoring.analysis import (
    Damper,
    Judgement,
    binomial_upper_tail,
    judge,
    mann_whitney_greater,
)
from aiops.monitoring.window import WindowStats
from harness.traffic import Traffic, simulate


def monitoring(**thresholds) -> Monitoring:
    return Monitoring.from_wire({"intervalSeconds": 30, "windowSeconds": 300, "consecutiveWindows": 3,
                                 "minSamples": 20, "thresholds": thresholds})


LIMITS = {"inferenceTime": {"percentile": "p95", "maxMilliseconds": 25}, "errorRate": {"max": 0.05},
          "accuracy": {"min": 0.9}}


def test_binomial_tail_matches_the_exact_sum():
    for k, n, p in [(0, 10, 0.1), (3, 10, 0.1), (7, 20, 0.3), (1, 500, 0.001), (40, 1000, 0.02)]:
        exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert binomial_upper_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_mann_whitney_sees_a_clear_shift_and_not_noise():
    rng = random.Random(1)
    before = [10 * rng.lognormvariate(0, 0.2) for _ in range(10)]
    same = [10 * rng.lognormvariate(0, 0.2) for _ in range(10)]
    slower = [20 * rng.lognormvariate(0, 0.2) for _ in range(10)]
    assert mann_whitney_greater(slower, before) < 0.001
    assert mann_whitney_greater(same, before) > 0.05
    assert mann_whitney_greater(slower[:4], before) == 1.0  # too few intervals: no opinion


def test_noise_under_the_thresholds_never_alarms_over_many_windows():
    spec = monitoring(**LIMITS)
    steps = list(simulate(spec, [(1000, Traffic(rate=50, latency_ms=10, jitter=0.25, error_rate=0.01))], seed=3))
    assert not any(s.degraded for s in steps)
    raw = sum(bool(s.judgement.findings) for s in steps)
    assert raw / len(steps) < 0.01  # even before damping, findings on noise are rare


@pytest.mark.parametrize("fault,reason", [
    (Traffic(latency_ms=40), "InferenceTimeAboveThreshold"),
    (Traffic(error_rate=0.3), "ErrorRateAboveThreshold"),
    (Traffic(wrong_rate=0.5), "AccuracyBelowThreshold"),
])
def test_a_fault_is_detected_within_the_window_and_recovery_clears(fault, reason):
    spec = monitoring(**LIMITS)
    steps = list(simulate(spec, [(20, Traffic()), (10, fault), (30, Traffic())], seed=5))
    first_bad = next(i for i, s in enumerate(steps) if s.degraded)
    delay = (first_bad - 19) * spec.interval_seconds
    assert 0 < delay <= spec.window_seconds
    assert steps[first_bad].judgement.findings[0].reason == reason or any(
        f.reason == reason for f in steps[first_bad].judgement.findings)
    assert not steps[-1].degraded  # cleared once clean windows followed


def test_latency_shift_from_the_baseline_is_found_without_a_threshold():
    spec = monitoring()  # no thresholds: only the baseline comparison can see it
    steps = list(simulate(spec, [(20, Traffic(latency_ms=10)), (15, Traffic(latency_ms=25))], seed=9))
    assert not any(s.degraded for s in steps[:20])
    assert steps[-1].degraded
    assert any(f.reason == "InferenceTimeShift" for f in steps[-1].judgement.findings)


def test_error_rate_shift_needs_significance_and_size():
    spec = monitoring()
    base = WindowStats(300, 0, requests=2000, failures=10)  # 0.5 %
    tiny = WindowStats(300, 0, requests=2000, failures=16)  # 0.8 %: not a practical change
    big = WindowStats(300, 0, requests=400, failures=30)  # 7.5 %
    assert not judge(tiny, spec, base).findings
    assert [f.reason for f in judge(big, spec, base).findings] == ["ErrorRateShift"]


def test_the_previous_versions_baseline_catches_a_version_bad_from_the_start():
    spec = monitoring()
    v1 = WindowStats(300, 0, requests=1000, failures=2, interval_means_ms=[10.0] * 10)
    v2 = WindowStats(300, 0, requests=1000, failures=1, interval_means_ms=[30.0, 31, 29, 32, 30, 30, 28, 33, 30, 31])
    found = judge(v2, spec, baseline=v2, previous=v1, previous_version=1).findings
    assert [f.reason for f in found] == ["InferenceTimeShift"] and "version 1's baseline" in found[0].detail


def test_thin_traffic_is_not_judged_and_moves_nothing():
    spec = monitoring(**LIMITS)
    thin = WindowStats(300, 0, requests=5, failures=5, p95_ms=500)
    j = judge(thin, spec)
    assert not j.findings and not j.judged and any("5 of 20 requests" in m for m in j.missing)
    d = Damper(3, degraded=True)
    assert not d.update(j) and d.degraded  # no data does not clear an alarm either


def test_damping_needs_n_in_a_row_both_ways():
    d = Damper(3)
    bad, good = Judgement(findings=(object(),)), Judgement()  # type: ignore[arg-type]
    assert [d.update(j) for j in (bad, bad, good, bad, bad)] == [False] * 5 and not d.degraded
    assert d.update(bad) and d.degraded
    assert [d.update(j) for j in (good, good, bad, good, good)] == [False] * 5 and d.degraded
    assert d.update(good) and not d.degraded


def test_unknown_gpu_figures_are_not_zero():
    spec = monitoring(gpuUtilization={"maxPercent": 90}, memoryUsage={"maxPercent": 90})
    j = judge(WindowStats(300, 0, requests=100), spec)
    assert not j.findings and any("gpu_utilization: unknown" in m for m in j.missing)
    hot = WindowStats(300, 0, requests=100, gpu_utilization_percent=97.0, memory_usage_percent=50.0)
    assert [f.reason for f in judge(hot, spec).findings] == ["GpuUtilizationAboveThreshold"]
