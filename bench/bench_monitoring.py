"""Performance monitoring: how fast a degradation is caught, how often noise raises a
false alarm, and what watching 200 ModelDeployments costs.

- Detection delay, real: the monitor's own scheduler (one asyncio task per object) on the real
  tritonserver (CPU), the fault switched on inside the serving model while real requests flow;
  wall time from the switch to a degraded verdict, against window 20 s / interval 5 s / 2 windows.
- Detection delay, spec defaults (interval 30 s, window 300 s, 3 windows): simulated series
  through the real window/analysis/damping code, 200 seeded runs per fault.
- False positives: 1000 simulated windows of healthy-but-noisy traffic (latency jitter, 1% errors,
  all under the thresholds): windows with a finding before damping, and Degraded transitions after.
- CPU: 200 ModelDeployments monitored for one interval — 200 scrapes of a real Triton metrics page
  (parsed with prometheus_client) plus the analysis — in this process; scaled to per minute at the
  default 30 s interval. Once without probes and once with the probes each tick sends.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the shared harness

from aiops import metrics  # noqa: E402
from aiops.api.modeldeployment import ModelDeploymentSpec, Monitoring  # noqa: E402
from aiops.monitoring.monitor import Monitor, PodIndex, Target  # noqa: E402
from aiops.monitoring.scrape import Scraper  # noqa: E402
from aiops.monitoring.verdict import VerdictRegistry  # noqa: E402
from harness.faultytriton import MetricsTriton, set_faults, write_fault_model  # noqa: E402
from harness.traffic import Traffic, simulate  # noqa: E402
from report import figure  # noqa: E402

X = [1.0, 2.0, 3.0, 4.0]
LIMITS = {"inferenceTime": {"percentile": "p95", "maxMilliseconds": 25}, "errorRate": {"max": 0.05},
          "accuracy": {"min": 0.9}}


def md_spec(monitoring: dict) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.from_wire({
        "model": {"name": "adder", "version": 1}, "repository": {"hostPath": {"path": "/m"}},
        "validation": {"samples": [{"name": "s", "inputs": [{"name": "INPUT0", "dataType": "FP32", "shape": [1, 4],
                                                              "data": X}],
                                    "expectedOutputs": [{"name": "OUTPUT0", "dataType": "FP32", "shape": [1, 4],
                                                         "data": [2 * v for v in X]}]}]},
        "monitoring": monitoring})


def pod(name: str, owner: str) -> dict:
    return {"metadata": {"name": name, "namespace": "bench", "labels": {"aiops.dev/modeldeployment": owner}},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}


def body(name: str, spec: ModelDeploymentSpec) -> dict:
    return {"metadata": {"name": name, "namespace": "bench", "generation": 1},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": {"servingVersion": 1}}


async def traffic(triton: MetricsTriton, sample, stop: asyncio.Event, per_second: float = 20) -> None:
    while not stop.is_set():
        await triton.client.infer_sample("adder", 1, sample)
        await asyncio.sleep(1 / per_second)


async def real_detection(triton: MetricsTriton, vdir: Path) -> None:
    mon = {"intervalSeconds": 5, "windowSeconds": 20, "consecutiveWindows": 2, "minSamples": 20,
           "thresholds": {"inferenceTime": {"percentile": "p95", "maxMilliseconds": 25}, "errorRate": {"max": 0.1}}}
    spec = md_spec(mon)
    for fault, label in (({"delay_ms": 60}, "latency"), ({"error_rate": 0.5, "seed": 2}, "errors")):
        set_faults(vdir)
        registry = VerdictRegistry()
        pods = PodIndex()
        pods.observe(pod("p0", "adder"), False)
        monitor = Monitor(registry, pods, metrics_port=triton.metrics_port, http_port=triton.http_port)
        stop = asyncio.Event()
        load = asyncio.create_task(traffic(triton, spec.validation.samples[0], stop))
        monitor.observe(body("adder", spec))  # starts the per-object task, as the Kopf handler does
        await asyncio.sleep(22)  # a healthy first window
        set_faults(vdir, **fault)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            v = registry.get(("bench", "adder"))
            if v is not None and v.degraded:
                break
            await asyncio.sleep(0.1)
        delay = time.monotonic() - t0
        stop.set()
        await load
        await monitor.stop()
        figure(f"detection delay, real server, {label}", delay, "s",
               f"window 20s, interval 5s, 2 windows; {v.reason if v else 'no verdict'}")
    set_faults(vdir)


def simulated_detection() -> None:
    spec = Monitoring.from_wire({"thresholds": LIMITS})  # defaults: 30 s interval, 300 s window, 3 windows
    for fault, label in ((Traffic(latency_ms=40), "latency 10->40ms"), (Traffic(error_rate=0.2), "errors 0.5%->20%"),
                         (Traffic(wrong_rate=0.5), "wrong answers 50%")):
        delays = []
        for seed in range(200):
            steps = list(simulate(spec, [(20, Traffic()), (20, fault)], seed=seed))
            first = next((i for i, s in enumerate(steps) if s.degraded), None)
            delays.append(float("inf") if first is None else (first - 19) * spec.interval_seconds)
        found = [d for d in delays if d != float("inf")]
        figure(f"detection delay, defaults, {label}, p50", statistics.median(found), "s",
               f"window {spec.window_seconds}s, {spec.consecutive_windows} windows; "
               f"{len(found)}/200 detected")
        figure(f"detection delay, defaults, {label}, max", max(found), "s")


def false_positives() -> None:
    for label, limits, noise in (
            ("thresholds + baseline shift", LIMITS, Traffic(latency_ms=10, jitter=0.25, error_rate=0.01)),
            ("baseline shift only", {}, Traffic(latency_ms=10, jitter=0.4, error_rate=0.02, rate=20))):
        spec = Monitoring.from_wire({"thresholds": limits})
        windows = findings = alarms = 0
        for seed in range(10):
            for step in simulate(spec, [(100, noise)], seed=100 + seed):
                windows += 1
                findings += bool(step.judgement.findings)
                alarms += step.changed and step.degraded
        figure(f"false positives, {label}, per window", findings / windows, "ratio",
               f"{findings} findings in {windows} noisy windows, before damping")
        figure(f"false alarms, {label}", alarms, "count", f"Degraded set in {windows} noisy windows")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def monitor_page(triton: MetricsTriton) -> str:
    scraper = Scraper()
    try:
        return await scraper.fetch(triton.metrics_url)
    finally:
        await scraper.close()


async def cpu_cost(triton: MetricsTriton) -> None:
    sample = md_spec({})
    for _ in range(200):  # a page with real numbers in it
        await triton.client.infer_sample("adder", 1, sample.validation.samples[0])
    page = await monitor_page(triton)
    figure("Triton metrics page scraped", len(page), "bytes", f"{page.count(chr(10))} lines, one model loaded")
    for probes in (False, True):
        spec = md_spec({"minSamples": 1})
        clock = [1e6]
        pods = PodIndex()
        monitor = Monitor(VerdictRegistry(), pods, clock=lambda c=clock: c[0], metrics_port=triton.metrics_port,
                          http_port=triton.http_port)
        for i in range(200):
            key = ("bench", f"md-{i}")
            pods.observe(pod(f"p{i}", key[1]), False)
            monitor.targets[key] = Target("adder", 1, spec.monitoring,
                                          tuple(spec.validation.samples) if probes else ())
        for _ in range(2):  # warm: first sight of each pod, connections opened
            clock[0] += 30
            await asyncio.gather(*(monitor.tick(k) for k in monitor.targets))
        rounds = 3
        errors0 = metrics.MONITORING_SCRAPE_ERRORS._value.get()
        cpu0, wall0, triton0 = time.process_time(), time.perf_counter(), cpu_seconds(triton.process.pid)
        for _ in range(rounds):
            clock[0] += 30
            await asyncio.gather(*(monitor.tick(k) for k in monitor.targets))
        cpu = (time.process_time() - cpu0) / rounds
        wall = (time.perf_counter() - wall0) / rounds
        served = (cpu_seconds(triton.process.pid) - triton0) / rounds
        await monitor.stop()
        what = "with probes (4 inferences each)" if probes else "scrape + analysis"
        errors = metrics.MONITORING_SCRAPE_ERRORS._value.get() - errors0
        if errors:
            raise SystemExit(f"{errors:.0f} scrapes failed: the CPU figure would be wrong")
        figure(f"monitoring CPU, 200 MDs, {what}", cpu * 2, "cpu-s/min",
               f"operator process, 30s interval; {cpu:.2f}s per round of 200, wall {wall:.2f}s")
        figure(f"  Triton side of it, {what}", served * 2, "cpu-s/min", "serving the pages (and probes)")


async def main() -> None:
    false_positives()
    simulated_detection()
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        repo = Path(tmp) / "repo"
        vdir = write_fault_model(repo, "adder", 1)
        async with MetricsTriton(repo, Path(tmp)) as triton:
            await triton.client._client.load_model("adder")
            await cpu_cost(triton)
            await real_detection(triton, vdir)


if __name__ == "__main__":
    asyncio.run(main())
