"""Triton's Prometheus metrics page, fetched from each serving pod and parsed with
prometheus_client's own parser (the exposition format has escaping, comments and optional
timestamps that a regex gets wrong).

What Triton 2.51 exposes, checked against the real server on CPU:
- counters per model and version: nv_inference_request_success, nv_inference_request_failure
  (one series per `reason`: OTHER, BACKEND, CANCELED, REJECTED), nv_inference_count,
  nv_inference_exec_count, nv_inference_request_duration_us (sum of end-to-end request time);
- with `--metrics-config=summary_latencies=true`: the summary nv_inference_request_summary_us
  with quantiles 0.5/0.9/0.95/0.99/0.999 over Triton's own recent window;
- with GPUs: nv_gpu_utilization (0..1 per GPU, label `gpu_uuid`), nv_gpu_memory_used_bytes and
  nv_gpu_memory_total_bytes; on CPU these are simply absent (nv_cpu_* are not GPU metrics).
No latency histograms exist for non-decoupled models in 2.51.

An LLM behind the vLLM backend adds its engine's figures to the same page (the backend's
utils/metrics.py, labels model and version): the histograms vllm:time_to_first_token_seconds,
vllm:time_per_output_token_seconds and vllm:request_queue_time_seconds, the counter
vllm:generation_tokens_total and the gauge vllm:gpu_cache_usage_perc (0..1). Their sums and counts
are kept like Triton's counters (`Generation`).
Seen on the real server: a Python-backend model that *returns* an error response is counted as a
success; only a failed execution (an exception) counts as a failure. Errors a model reports in
its responses are therefore caught by the accuracy probes, not by error_rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from aiops.httpbody import MAX_METRICS_BYTES, bounded_response

SUMMARY = "nv_inference_request_summary_us"
SUMMARY_QUANTILES = {"0.5": "p50", "0.95": "p95", "0.99": "p99"}
GPU_FAMILIES = {"nv_gpu_utilization": "utilization", "nv_gpu_memory_used_bytes": "memory_used_bytes",
                "nv_gpu_memory_total_bytes": "memory_total_bytes"}


@dataclass
class Generation:
    """One pod's LLM engine figures for one model version: cumulative sums (seconds) and counts
    of the vLLM backend's histograms, generated tokens, and the KV-cache gauge (None: unknown)."""

    tokens: float = 0.0
    ttft_s: float = 0.0
    ttft_count: float = 0.0
    tpot_s: float = 0.0
    tpot_count: float = 0.0
    queue_s: float = 0.0
    queue_count: float = 0.0
    kv_cache: float | None = None

    @property
    def ttft_ms(self) -> float | None:
        return self.ttft_s / self.ttft_count * 1000.0 if self.ttft_count > 0 else None

    @property
    def tpot_ms(self) -> float | None:
        return self.tpot_s / self.tpot_count * 1000.0 if self.tpot_count > 0 else None

    @property
    def queue_ms(self) -> float | None:
        return self.queue_s / self.queue_count * 1000.0 if self.queue_count > 0 else None


# What a window sums of Generation (kv_cache is a gauge: the latest value, not a sum).
GENERATION_COUNTERS = ("tokens", "ttft_s", "ttft_count", "tpot_s", "tpot_count", "queue_s", "queue_count")


# vLLM histogram family -> the Generation fields of its _sum and _count.
GENERATION_HISTOGRAMS = {"vllm:time_to_first_token_seconds": ("ttft_s", "ttft_count"),
                         "vllm:time_per_output_token_seconds": ("tpot_s", "tpot_count"),
                         "vllm:request_queue_time_seconds": ("queue_s", "queue_count")}


@dataclass
class ModelCounters:
    """One pod's cumulative counters for one model version."""

    success: float = 0.0
    failure: float = 0.0
    inferences: float = 0.0
    duration_us: float = 0.0
    summary_count: float | None = None
    summary_us: dict[str, float] = field(default_factory=dict)  # "p50"/"p95"/"p99" -> microseconds
    generation: Generation | None = None  # an LLM engine's figures, where the backend exports them

    @property
    def requests(self) -> float:
        return self.success + self.failure


@dataclass(frozen=True)
class GpuDevice:
    """One GPU's figures, keyed by its UUID: the ID NVIDIA's device plugin assigns (with
    `deviceIDStrategy: uuid`) and puts in the container's NVIDIA_VISIBLE_DEVICES, so a Triton pod
    reports exactly its own devices. None is unknown."""

    uuid: str
    utilization: float | None = None  # 0..1
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None

    def merged(self, other: GpuDevice) -> GpuDevice:
        """Each figure from self where known, else from `other` (same device, second source)."""
        return GpuDevice(self.uuid, *(mine if mine is not None else theirs for mine, theirs in (
            (self.utilization, other.utilization), (self.memory_used_bytes, other.memory_used_bytes),
            (self.memory_total_bytes, other.memory_total_bytes))))

    @property
    def complete(self) -> bool:
        return None not in (self.utilization, self.memory_used_bytes, self.memory_total_bytes)


@dataclass
class PodScrape:
    """One pod's page, reduced to what monitoring needs. `models` is keyed by (model, version)."""

    pod: str
    at: float
    models: dict[tuple[str, int], ModelCounters] = field(default_factory=dict)
    gpus: dict[str, GpuDevice] = field(default_factory=dict)  # by UUID
    error: str | None = None


def _counter(sample_name: str, family: str) -> bool:
    # The parser names counter samples `<family>_total` when the page's own name lacks it.
    return sample_name in (family, family + "_total")


def parse_triton_metrics(text: str, pod: str = "", at: float | None = None) -> PodScrape:
    out = PodScrape(pod, time.time() if at is None else at)
    gpus: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if family.name in GPU_FAMILIES:
                if labels.get("gpu_uuid") and s.value == s.value:  # NaN: unknown
                    gpus.setdefault(labels["gpu_uuid"], {})[GPU_FAMILIES[family.name]] = s.value
                continue
            if "model" not in labels or not labels.get("version", "").isdigit():
                continue
            c = out.models.setdefault((labels["model"], int(labels["version"])), ModelCounters())
            if family.name.startswith("vllm:"):
                _generation(c, family.name, s.name, s.value)
            elif _counter(s.name, "nv_inference_request_success"):
                c.success += s.value
            elif _counter(s.name, "nv_inference_request_failure"):
                c.failure += s.value  # summed over reasons
            elif _counter(s.name, "nv_inference_count"):
                c.inferences += s.value
            elif _counter(s.name, "nv_inference_request_duration_us"):
                c.duration_us += s.value
            elif s.name == SUMMARY + "_count":
                c.summary_count = s.value
            # a quantile of NaN (NaN != NaN) means no observation in Triton's window: unknown, skipped
            elif s.name == SUMMARY and labels.get("quantile") in SUMMARY_QUANTILES and s.value == s.value:
                c.summary_us[SUMMARY_QUANTILES[labels["quantile"]]] = s.value
    out.gpus = {uuid: GpuDevice(uuid, **figures) for uuid, figures in gpus.items()}
    return out


def _generation(c: ModelCounters, family: str, sample: str, value: float) -> None:
    if value != value:  # NaN: unknown
        return
    g = c.generation = c.generation or Generation()
    if family in GENERATION_HISTOGRAMS:
        total, count = GENERATION_HISTOGRAMS[family]
        if sample == family + "_sum":
            setattr(g, total, getattr(g, total) + value)
        elif sample == family + "_count":
            setattr(g, count, getattr(g, count) + value)
    elif _counter(sample, "vllm:generation_tokens"):
        g.tokens += value
    elif sample == "vllm:gpu_cache_usage_perc":
        g.kv_cache = value


class Scraper:
    """Fetches metrics pages over one shared HTTP connection pool (one per operator, not per pod)."""

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                                  response_class=bounded_response(MAX_METRICS_BYTES))
        return self._session

    async def fetch(self, url: str) -> str:
        session = await self._http()
        async with session.get(url) as resp:
            resp.raise_for_status()
            return await resp.text()

    async def scrape(self, pod: str, url: str) -> PodScrape:
        """Never raises: an unreachable pod comes back with `error` set and no readings."""
        try:
            text = await self.fetch(url)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return PodScrape(pod, time.time(), error=f"{url}: {e or type(e).__name__}")
        return parse_triton_metrics(text, pod)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
