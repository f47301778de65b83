"""Live accuracy and synthetic probes: the spec's validation samples sent to the serving version
on its pods, and each answer scored with the same comparison the health check and the
pre-deploy validation use (`aiops.triton.samples`), so a version is held to one standard
before and while it serves.

The same requests double as probes: when real traffic is too thin to judge latency and error
rate, enough of them are sent to fill the window to spec.monitoring.minSamples; Triton counts
them like any request, so they show in the next collection.
"""

from __future__ import annotations

import asyncio
import itertools

from aiops.api.modeldeployment import ValidationSample
from aiops.triton.client import TritonServer
from aiops.triton.samples import SampleResult

MAX_PROBES_PER_TICK = 50  # bounds the load one ModelDeployment's monitor adds per interval
SCORED_PER_TICK = 4  # sample requests scored every interval even when traffic is plentiful
CONCURRENCY = 4


def probes_needed(window_requests: int, min_samples: int, samples: int) -> int:
    """Requests to send this interval: enough to top the window up to min_samples (bounded), and
    never fewer than a few scored samples (accuracy is watched even on a busy endpoint)."""
    if not samples:
        return 0
    deficit = max(0, min_samples - window_requests)
    return min(MAX_PROBES_PER_TICK, max(deficit, SCORED_PER_TICK))


async def score(servers: list[TritonServer], model: str, version: int, samples: list[ValidationSample],
                count: int, start: int = 0) -> list[SampleResult]:
    """`count` requests cycling through `samples` from index `start`, spread over `servers`."""
    if not samples or not servers or count <= 0:
        return []
    gate = asyncio.Semaphore(CONCURRENCY)
    picks = list(itertools.islice(itertools.cycle(range(len(samples))), start % len(samples),
                                  start % len(samples) + count))

    async def one(i: int, sample_index: int) -> SampleResult:
        async with gate:
            return await servers[i % len(servers)].infer_sample(model, version, samples[sample_index])

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(picks))))
