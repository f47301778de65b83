"""Rates and percentiles over a sliding window, from Triton's cumulative counters.

Counters only grow, so each collection contributes the difference from the previous one
(an *interval*): requests, failures and summed request time. A counter that went down means the
pod restarted (Triton starts again at 0), and the new value is the whole increase, as
Prometheus' rate() treats resets. A pod seen for the first time contributes nothing until its
second collection: its totals cover an unknown span.

Percentiles: Triton 2.51 has no latency histograms for ordinary models, only the counters and,
when started with `--metrics-config=summary_latencies=true`, a summary with exact quantiles over
its own recent window. With a summary, the window's p50/p95/p99 are the latest quantiles (the
largest over pods: the slowest pod is what some clients get). Without one, they are
request-weighted percentiles of the per-interval mean latencies: coarser (an interval's mean hides
its tail) but derived from the counters alone; `latencySource` in status says which.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from aiops.monitoring.gpu import UNKNOWN
from aiops.monitoring.scrape import GENERATION_COUNTERS, Generation, ModelCounters

MAX_INTERVAL_SAMPLES = 64  # per-interval means kept in status for the baseline test
MAX_GPU_DEVICES = 16  # GPUs named in status (a node has at most 8 or 16)


@dataclass(frozen=True)
class Interval:
    end: float
    requests: float
    failures: float
    duration_us: float
    start: float | None = None  # the collection before (None: the first)
    generation: Generation | None = None  # what the LLM engines did in the interval

    @property
    def mean_ms(self) -> float | None:
        return self.duration_us / self.requests / 1000.0 if self.requests > 0 else None


def generation_delta(pods: dict[str, ModelCounters], last: dict[str, ModelCounters]) -> Generation | None:
    """The engines' work between two collections, summed over pods (None: no engine figures)."""
    totals = dict.fromkeys(GENERATION_COUNTERS, 0.0)
    seen = False
    for pod, c in pods.items():
        if c.generation is None:
            continue
        seen = True
        prev = last.get(pod)
        before = prev.generation if prev is not None else None
        for name in GENERATION_COUNTERS:
            # A pod seen before without engine figures started them from 0 since.
            then = getattr(before, name) if before is not None else (None if prev is None else 0.0)
            totals[name] += counter_delta(getattr(c.generation, name), then)
    return Generation(**totals) if seen else None


@dataclass
class WindowStats:
    """The five metrics over one window; None is unknown, never zero."""

    window_seconds: int
    end: float
    requests: int = 0
    failures: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    latency_source: str | None = None
    interval_means_ms: list[float] = field(default_factory=list)
    gpu_utilization_percent: float | None = None
    memory_usage_percent: float | None = None
    gpu_source: str | None = None
    gpu_devices: tuple[str, ...] = ()
    passed: int = 0
    scored: int = 0
    probes: int = 0
    # An LLM engine's figures (the vLLM backend's): window means, and per-interval means for the
    # shift tests, as for inference time.
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    tokens_per_second: float | None = None
    queue_ms: float | None = None
    kv_cache_percent: float | None = None
    interval_ttft_ms: list[float] = field(default_factory=list)
    interval_tpot_ms: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def accuracy(self) -> float | None:
        return self.passed / self.scored if self.scored else None

    def percentile(self, name: str) -> float | None:
        return {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms}[name]

    def snapshot(self) -> dict:
        """The status.metrics body (MetricsSnapshot, camelCase); unknown values are left out."""
        from aiops.monitoring.verdict import iso

        body = {"windowEnd": iso(self.end), "requests": self.requests, "failures": self.failures,
                "inferenceTimeP50Ms": _r(self.p50_ms), "inferenceTimeP95Ms": _r(self.p95_ms),
                "inferenceTimeP99Ms": _r(self.p99_ms), "gpuUtilizationPercent": _r(self.gpu_utilization_percent),
                "memoryUsagePercent": _r(self.memory_usage_percent), "accuracy": _r(self.accuracy, 4),
                "errorRate": _r(self.error_rate, 5), "scored": self.scored, "probes": self.probes,
                "latencySource": self.latency_source, "gpuSource": self.gpu_source,
                "gpuDevices": list(self.gpu_devices[:MAX_GPU_DEVICES]),
                "intervalLatenciesMs": [_r(v) for v in self.interval_means_ms[-MAX_INTERVAL_SAMPLES:]],
                "timeToFirstTokenMs": _r(self.ttft_ms), "timePerOutputTokenMs": _r(self.tpot_ms),
                "tokensPerSecond": _r(self.tokens_per_second), "queueTimeMs": _r(self.queue_ms),
                "kvCacheUsagePercent": _r(self.kv_cache_percent),
                "intervalTimeToFirstTokenMs": [_r(v) for v in self.interval_ttft_ms[-MAX_INTERVAL_SAMPLES:]],
                "intervalTimePerOutputTokenMs": [_r(v) for v in self.interval_tpot_ms[-MAX_INTERVAL_SAMPLES:]]}
        return {k: v for k, v in body.items() if v is not None and v != []}


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def weighted_quantile(values: list[float], weights: list[float], q: float) -> float | None:
    """The smallest value whose cumulative weight reaches q of the total."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return None
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= q * total - 1e-9:
            return v
    return pairs[-1][0]


def counter_delta(now: float, before: float | None) -> float:
    if before is None:
        return 0.0
    return now if now < before else now - before  # a reset: the pod restarted from 0


class SlidingWindow:
    """The recent history of one model version on its pods."""

    def __init__(self, window_seconds: float):
        self.window_seconds = window_seconds
        self.intervals: deque[Interval] = deque()
        self.scores: deque[tuple[float, bool]] = deque()
        self.probes: deque[tuple[float, int]] = deque()
        self.last: dict[str, ModelCounters] = {}
        self.last_at: float | None = None
        self.summaries: dict[str, dict[str, float]] = {}
        self.kv_cache: float | None = None  # the engines' latest KV-cache use (0..1), the fullest pod's
        self.gpu = UNKNOWN

    def add_counters(self, at: float, pods: dict[str, ModelCounters]) -> Interval:
        """One collection: each pod's cumulative counters for this model version."""
        requests = failures = duration = 0.0
        for pod, c in pods.items():
            prev = self.last.get(pod)
            requests += counter_delta(c.requests, prev.requests if prev else None)
            failures += counter_delta(c.failure, prev.failure if prev else None)
            duration += counter_delta(c.duration_us, prev.duration_us if prev else None)
            # Quantiles only from pods that served in this interval (a summary of an idle pod
            # describes requests that are long gone).
            if c.summary_us and prev is not None and (c.summary_count or 0) > (prev.summary_count or 0):
                self.summaries[pod] = dict(c.summary_us)
            else:
                self.summaries.pop(pod, None)
        generation = generation_delta(pods, self.last)
        caches = [c.generation.kv_cache for c in pods.values() if c.generation and c.generation.kv_cache is not None]
        self.kv_cache = max(caches) if caches else None
        self.last = dict(pods)
        interval = Interval(at, requests, min(failures, requests), duration, self.last_at, generation)
        self.last_at = at
        self.intervals.append(interval)
        self._expire(at)
        return interval

    def add_scores(self, at: float, passed: list[bool]) -> None:
        self.scores.extend((at, p) for p in passed)
        self._expire(at)

    def add_probes(self, at: float, count: int) -> None:
        if count:
            self.probes.append((at, count))

    def _expire(self, now: float) -> None:
        start = now - self.window_seconds
        while self.intervals and self.intervals[0].end < start:
            self.intervals.popleft()
        for timed in (self.scores, self.probes):
            while timed and timed[0][0] < start:
                timed.popleft()

    def stats(self, now: float) -> WindowStats:
        self._expire(now)
        st = WindowStats(int(self.window_seconds), now)
        means, weights = [], []
        for i in self.intervals:
            st.requests += int(round(i.requests))
            st.failures += int(round(i.failures))
            if i.mean_ms is not None:
                means.append(i.mean_ms)
                weights.append(i.requests)
        st.interval_means_ms = means
        if self.summaries:
            st.latency_source = "summary"
            for name in ("p50", "p95", "p99"):
                values = [s[name] / 1000.0 for s in self.summaries.values() if name in s]
                setattr(st, f"{name}_ms", max(values) if values else None)
        elif means:
            st.latency_source = "counters"
            st.p50_ms, st.p95_ms, st.p99_ms = (weighted_quantile(means, weights, q) for q in (0.5, 0.95, 0.99))
        st.gpu_utilization_percent = self.gpu.utilization_percent
        st.memory_usage_percent = self.gpu.memory_percent
        st.gpu_source, st.gpu_devices = self.gpu.source, self.gpu.devices
        st.scored = len(self.scores)
        st.passed = sum(p for _, p in self.scores)
        st.probes = sum(n for _, n in self.probes)
        self._generation_stats(st)
        return st

    def _generation_stats(self, st: WindowStats) -> None:
        spans = [i for i in self.intervals if i.generation is not None]
        if not spans:
            return
        total = Generation(**{name: sum(getattr(i.generation, name) for i in spans) for name in GENERATION_COUNTERS})
        st.ttft_ms, st.tpot_ms, st.queue_ms = total.ttft_ms, total.tpot_ms, total.queue_ms
        st.interval_ttft_ms = [i.generation.ttft_ms for i in spans if i.generation.ttft_ms is not None]
        st.interval_tpot_ms = [i.generation.tpot_ms for i in spans if i.generation.tpot_ms is not None]
        timed = [i for i in spans if i.start is not None]
        seconds = sum(i.end - i.start for i in timed)
        st.tokens_per_second = sum(i.generation.tokens for i in timed) / seconds if seconds > 0 else None
        st.kv_cache_percent = self.kv_cache * 100.0 if self.kv_cache is not None else None


def stats_from_snapshot(snapshot: dict, window_seconds: int) -> WindowStats:
    """A baseline kept in status (MetricsSnapshot, camelCase) back as WindowStats, so an operator
    restart or a rollback compares with the baseline that was captured, not a new one."""
    scored = int(snapshot.get("scored") or 0)
    accuracy = snapshot.get("accuracy")
    return WindowStats(
        window_seconds, 0.0, requests=int(snapshot.get("requests") or 0), failures=int(snapshot.get("failures") or 0),
        p50_ms=snapshot.get("inferenceTimeP50Ms"), p95_ms=snapshot.get("inferenceTimeP95Ms"),
        p99_ms=snapshot.get("inferenceTimeP99Ms"), latency_source=snapshot.get("latencySource"),
        interval_means_ms=list(snapshot.get("intervalLatenciesMs") or []),
        gpu_utilization_percent=snapshot.get("gpuUtilizationPercent"),
        memory_usage_percent=snapshot.get("memoryUsagePercent"), gpu_source=snapshot.get("gpuSource"),
        gpu_devices=tuple(snapshot.get("gpuDevices") or ()),
        passed=round(accuracy * scored) if accuracy is not None else 0, scored=scored if accuracy is not None else 0,
        probes=int(snapshot.get("probes") or 0), ttft_ms=snapshot.get("timeToFirstTokenMs"),
        tpot_ms=snapshot.get("timePerOutputTokenMs"), tokens_per_second=snapshot.get("tokensPerSecond"),
        queue_ms=snapshot.get("queueTimeMs"), kv_cache_percent=snapshot.get("kvCacheUsagePercent"),
        interval_ttft_ms=list(snapshot.get("intervalTimeToFirstTokenMs") or []),
        interval_tpot_ms=list(snapshot.get("intervalTimePerOutputTokenMs") or []))
