"""Judging one window of a serving version: pure functions and a small state machine, no I/O.

A window is degraded when it has a *finding*:
- a threshold breach from spec.monitoring.thresholds, or
- a statistically meaningful shift from a baseline: the one captured from the version's first
  clean full window after it became Ready, and the previous version's (so a new version that is
  worse from its first minute, whose own baseline would already contain the regression, is
  compared like for like with what it replaced).

Which tests, and why:
- error_rate and accuracy (failed requests, wrong answers) are proportions of independent
  trials, so the test is a one-sided exact binomial test of the window's count against the
  baseline rate: P(X >= k | n, p0) < 0.001. Exact rather than a normal approximation because the
  interesting cases are small counts near zero, where the approximation is worst. p0 is the
  baseline rate Laplace-smoothed ((f0 + 1) / (n0 + 2)): a baseline with no failures in 200
  requests does not prove the rate is 0, and with p0 = 0 a single failure would be "significant".
- inference_time: the samples are the per-interval mean latencies of the window against those of
  the baseline, compared with a one-sided Mann-Whitney U test (normal approximation with tie
  correction, at least MIN_INTERVALS each side), p < 0.01. Rank-based because latency is skewed
  and its variance moves with load; no normality is assumed and one GC pause cannot swing it.
  The level is looser than for proportions because with 5-10 intervals per side the test cannot
  reach 0.001 at all.
- Significance alone is not enough: a huge sample makes a 1% change "significant". Each shift
  must also be practically large: latency median up by LATENCY_SHIFT_FACTOR and by at least
  MIN_LATENCY_SHIFT_MS (0.2 -> 0.5 ms is "2.5x" and significant on a busy machine, and matters to
  nobody), a failure or wrong-answer rate up by at least MIN_RATE_SHIFT absolute.
- time_to_first_token and time_per_output_token (LLMs, from the vLLM backend's histograms): as
  inference_time, on their per-interval means; a model 3x slower per token is a shift of
  time_per_output_token however few tokens each request asks for.
- gpu_utilization and memory_usage are only compared with thresholds: they follow load by design,
  and a busier GPU is not a worse model.

Guards against false alarms and blindness on thin traffic: latency and error rate are judged only
on windows with at least spec.monitoring.minSamples requests (the monitor tops thin windows up
with synthetic probes so they can be judged), accuracy on at least min(minSamples, 10) scored
samples; a window that cannot be judged changes nothing, so a quiet night neither raises nor
clears Degraded. Damping: `consecutiveWindows` judged windows in a row with a finding set
Degraded, and as many in a row without one clear it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aiops.api.modeldeployment import Monitoring
from aiops.monitoring.window import WindowStats

PROPORTION_ALPHA = 0.001
LATENCY_ALPHA = 0.01
LATENCY_SHIFT_FACTOR = 1.5
MIN_LATENCY_SHIFT_MS = 5.0
MIN_RATE_SHIFT = 0.02
MIN_INTERVALS = 5
ACCURACY_MIN_SCORED = 10

METRICS = ("inference_time", "error_rate", "accuracy", "gpu_utilization", "memory_usage",
           "time_to_first_token", "time_per_output_token")
# The LLM engine's times: (metric, WindowStats window mean, per-interval means, CamelCase stem).
GENERATION_TIMES = (("time_to_first_token", "ttft_ms", "interval_ttft_ms", "TimeToFirstToken"),
                    ("time_per_output_token", "tpot_ms", "interval_tpot_ms", "TimePerOutputToken"))


@dataclass(frozen=True)
class Finding:
    metric: str  # one of METRICS
    reason: str  # CamelCase, for the condition
    value: float
    threshold: float
    detail: str  # a sentence fragment for the condition message


@dataclass(frozen=True)
class Judgement:
    findings: tuple[Finding, ...] = ()
    judged: bool = True  # False: not enough data to say anything
    missing: tuple[str, ...] = ()  # why some metrics were not judged


# ---- statistics ------------------------------------------------------------------------------

def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact, summed in log space from k upward."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    total = 0.0
    for i in range(k, n + 1):
        term = math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
        total += term
        if i > n * p and term < total * 1e-12:  # past the mode the terms only shrink
            break
    return min(1.0, total)


def smoothed_rate(events: int, trials: int) -> float:
    return (events + 1) / (trials + 2)


def mann_whitney_greater(sample: list[float], reference: list[float]) -> float:
    """One-sided p-value that `sample` tends to be larger than `reference` (normal approximation
    with tie correction). 1.0 when either side is too small to say anything."""
    n1, n2 = len(sample), len(reference)
    if n1 < MIN_INTERVALS or n2 < MIN_INTERVALS:
        return 1.0
    pooled = sorted([(v, 0) for v in sample] + [(v, 1) for v in reference])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for m in range(i, j + 1):
            ranks[m] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    r1 = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)  # continuity-corrected
    return 0.5 * math.erfc(z / math.sqrt(2))


def median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# ---- findings --------------------------------------------------------------------------------

def _window(stats: WindowStats) -> str:
    return f"over the last {stats.window_seconds}s window"


def threshold_findings(stats: WindowStats, spec: Monitoring) -> tuple[list[Finding], list[str]]:
    """(breaches, metrics that could not be judged and why)."""
    t = spec.thresholds
    found: list[Finding] = []
    missing: list[str] = []
    enough = stats.requests >= spec.min_samples
    if t.inference_time:
        value = stats.percentile(t.inference_time.percentile)
        if not enough or value is None:
            missing.append(f"inference_time: {stats.requests} of {spec.min_samples} requests")
        elif value > t.inference_time.max_milliseconds:
            found.append(Finding("inference_time", "InferenceTimeAboveThreshold", value,
                                 t.inference_time.max_milliseconds,
                                 f"inference_time {t.inference_time.percentile} is {value:.1f} ms {_window(stats)} "
                                 f"(threshold {t.inference_time.max_milliseconds:g} ms, {stats.requests} requests)"))
    if t.error_rate:
        rate = stats.error_rate
        if not enough or rate is None:
            missing.append(f"error_rate: {stats.requests} of {spec.min_samples} requests")
        elif rate > t.error_rate.max:
            found.append(Finding("error_rate", "ErrorRateAboveThreshold", rate, t.error_rate.max,
                                 f"error_rate is {rate:.3f} ({stats.failures} of {stats.requests} requests failed) "
                                 f"{_window(stats)} (threshold {t.error_rate.max:g})"))
    if t.accuracy:
        needed = min(spec.min_samples, ACCURACY_MIN_SCORED)
        acc = stats.accuracy
        if stats.scored < needed or acc is None:
            missing.append(f"accuracy: {stats.scored} of {needed} samples scored")
        elif acc < t.accuracy.min:
            found.append(Finding("accuracy", "AccuracyBelowThreshold", acc, t.accuracy.min,
                                 f"accuracy is {acc:.3f} ({stats.passed} of {stats.scored} validation samples "
                                 f"answered correctly) {_window(stats)} (threshold {t.accuracy.min:g})"))
    for metric, attr, _, stem in GENERATION_TIMES:
        limit, value = getattr(t, metric), getattr(stats, attr)
        if limit is None:
            continue
        if not enough or value is None:
            missing.append(f"{metric}: {stats.requests} of {spec.min_samples} requests"
                           + ("" if value is not None else ", no engine figures"))
        elif value > limit.max_milliseconds:
            found.append(Finding(metric, f"{stem}AboveThreshold", value, limit.max_milliseconds,
                                 f"{metric} is {value:.1f} ms {_window(stats)} (threshold "
                                 f"{limit.max_milliseconds:g} ms, {stats.requests} requests)"))
    for metric, limit, value, label in (
            ("gpu_utilization", t.gpu_utilization, stats.gpu_utilization_percent, "GpuUtilization"),
            ("memory_usage", t.memory_usage, stats.memory_usage_percent, "MemoryUsage")):
        if limit is None:
            continue
        if value is None:
            missing.append(f"{metric}: unknown (no GPU metrics from Triton or NVML)")
        elif value > limit.max_percent:
            found.append(Finding(metric, f"{label}AboveThreshold", value, limit.max_percent,
                                 f"{metric} is {value:.1f}% {_window(stats)} (threshold {limit.max_percent:g}%)"))
    return found, missing


def shift_findings(stats: WindowStats, baseline: WindowStats, spec: Monitoring, which: str) -> list[Finding]:
    """Significant and large rises from `baseline` (`which` names it in messages)."""
    found: list[Finding] = []
    if stats.requests >= spec.min_samples and baseline.requests >= spec.min_samples:
        p0 = smoothed_rate(baseline.failures, baseline.requests)
        rate = stats.failures / stats.requests
        p = binomial_upper_tail(stats.failures, stats.requests, p0)
        if p < PROPORTION_ALPHA and rate - p0 >= MIN_RATE_SHIFT:
            found.append(Finding("error_rate", "ErrorRateShift", rate, p0,
                                 f"error_rate rose to {rate:.3f} {_window(stats)} from {p0:.3f} at {which} "
                                 f"(one-sided binomial test p={p:.1e})"))
    needed = min(spec.min_samples, ACCURACY_MIN_SCORED)
    if stats.scored >= needed and baseline.scored >= needed:
        q0 = smoothed_rate(baseline.scored - baseline.passed, baseline.scored)
        wrong = stats.scored - stats.passed
        p = binomial_upper_tail(wrong, stats.scored, q0)
        if p < PROPORTION_ALPHA and wrong / stats.scored - q0 >= MIN_RATE_SHIFT:
            acc, acc0 = 1 - wrong / stats.scored, 1 - q0
            found.append(Finding("accuracy", "AccuracyShift", acc, acc0,
                                 f"accuracy fell to {acc:.3f} {_window(stats)} from {acc0:.3f} at {which} "
                                 f"(one-sided binomial test p={p:.1e})"))
    if stats.requests >= spec.min_samples:
        # An LLM's per-token time first: it names the cause that its request times only reflect.
        times = (*((metric, intervals, stem) for metric, _, intervals, stem in GENERATION_TIMES),
                 ("inference_time", "interval_means_ms", "InferenceTime"))
        for metric, intervals, stem in times:
            finding = _time_shift(metric, stem, getattr(stats, intervals), getattr(baseline, intervals), stats, which)
            if finding is not None:
                found.append(finding)
    return found


def _time_shift(metric: str, stem: str, now: list[float], before: list[float], stats: WindowStats,
                which: str) -> Finding | None:
    """A rise of a time's per-interval means that is both significant and large."""
    if len(now) < MIN_INTERVALS or len(before) < MIN_INTERVALS:
        return None
    m, m0 = median(now), median(before)
    if m < LATENCY_SHIFT_FACTOR * m0 or m - m0 < MIN_LATENCY_SHIFT_MS:
        return None
    p = mann_whitney_greater(now, before)
    if p >= LATENCY_ALPHA:
        return None
    return Finding(metric, f"{stem}Shift", m, m0,
                   f"{metric} (median of interval means) rose to {m:.1f} ms {_window(stats)} "
                   f"from {m0:.1f} ms at {which} (one-sided Mann-Whitney U test p={p:.1e})")


def judge(stats: WindowStats, spec: Monitoring, baseline: WindowStats | None = None,
          previous: WindowStats | None = None, previous_version: int | None = None) -> Judgement:
    found, missing = threshold_findings(stats, spec)
    if spec.detect_baseline_shift:
        if baseline is not None:
            found += shift_findings(stats, baseline, spec, "this version's baseline")
        if previous is not None:
            found += shift_findings(stats, previous, spec, f"version {previous_version}'s baseline"
                                    if previous_version else "the previous version's baseline")
    judged = bool(found) or stats.requests >= spec.min_samples or stats.scored >= min(
        spec.min_samples, ACCURACY_MIN_SCORED)
    return Judgement(tuple(found), judged, tuple(missing))


def baseline_worthy(stats: WindowStats, judgement: Judgement, spec: Monitoring, elapsed: float) -> bool:
    """The first full, clean window with enough requests becomes the version's baseline."""
    return (elapsed >= stats.window_seconds and not judgement.findings and stats.requests >= spec.min_samples
            and len(stats.interval_means_ms) >= MIN_INTERVALS)


# ---- damping ---------------------------------------------------------------------------------

@dataclass
class Damper:
    """N judged windows in a row with a finding to set Degraded; N without one to clear it."""

    windows: int
    degraded: bool = False
    breaching: int = 0
    clean: int = 0
    last: tuple[Finding, ...] = field(default=())

    def update(self, judgement: Judgement) -> bool:
        """Feeds one window; returns whether `degraded` changed."""
        if not judgement.judged:
            return False  # absence of evidence moves nothing
        if judgement.findings:
            self.breaching, self.clean = self.breaching + 1, 0
            self.last = judgement.findings
            if not self.degraded and self.breaching >= self.windows:
                self.degraded = True
                return True
        else:
            self.breaching, self.clean = 0, self.clean + 1
            if self.degraded and self.clean >= self.windows:
                self.degraded = False
                return True
        return False
