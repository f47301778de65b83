"""Synthetic request series for the analysis: noisy-but-healthy traffic and injected faults,
fed through the real SlidingWindow, judge and Damper. Used by the unit tests (many windows,
seeded) and the benchmark (false-positive rate over 1000 windows, detection delay)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from aiops.api.modeldeployment import Monitoring
from aiops.monitoring.analysis import Damper, Judgement, baseline_worthy, judge
from aiops.monitoring.scrape import ModelCounters
from aiops.monitoring.window import SlidingWindow, WindowStats


@dataclass
class Traffic:
    """One interval's load: requests ~ Poisson-ish around `rate`, latency mean with multiplicative
    jitter (lognormal sigma), failures binomial with `error_rate`, wrong answers with `wrong_rate`."""

    rate: float = 50.0
    latency_ms: float = 10.0
    jitter: float = 0.2
    error_rate: float = 0.005
    wrong_rate: float = 0.0


@dataclass
class Step:
    at: float
    stats: WindowStats
    judgement: Judgement
    degraded: bool
    changed: bool


def simulate(monitoring: Monitoring, phases: list[tuple[int, Traffic]], seed: int = 7,
             scored_per_interval: int = 4) -> Iterator[Step]:
    """Yields one Step per interval; `phases` is [(intervals, traffic), ...] in order."""
    rng = random.Random(seed)
    window = SlidingWindow(monitoring.window_seconds)
    damper = Damper(monitoring.consecutive_windows)
    totals = ModelCounters()
    baseline: WindowStats | None = None
    t = 0.0
    window.add_counters(t, {"pod": ModelCounters()})
    for count, traffic in phases:
        for _ in range(count):
            t += monitoring.interval_seconds
            n = max(0, int(rng.gauss(traffic.rate, traffic.rate ** 0.5)))
            failed = sum(rng.random() < traffic.error_rate for _ in range(n))
            mean_ms = traffic.latency_ms * rng.lognormvariate(0, traffic.jitter)
            totals = ModelCounters(success=totals.success + n - failed, failure=totals.failure + failed,
                                   inferences=totals.inferences + n,
                                   duration_us=totals.duration_us + n * mean_ms * 1000)
            window.add_counters(t, {"pod": totals})
            window.add_scores(t, [rng.random() >= traffic.wrong_rate for _ in range(scored_per_interval)])
            stats = window.stats(t)
            judgement = judge(stats, monitoring, baseline)
            changed = damper.update(judgement)
            if baseline is None and baseline_worthy(stats, judgement, monitoring, t):
                baseline = stats
            yield Step(t, stats, judgement, damper.degraded, changed)
