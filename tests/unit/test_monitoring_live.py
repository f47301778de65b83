"""The monitor against the real tritonserver (CPU, from the nvidia-pytriton wheel) with real
traffic: a model whose faults are switched while it serves (latency, errors, wrong answers).
The monitor's clock is advanced by hand, one interval per tick, so a 20 s window is walked in a
few real seconds; requests, Triton's counters, the metrics page and probes are all real."""

from __future__ import annotations

import asyncio

import pytest

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.monitoring.gpu import NvmlReader
from aiops.monitoring.monitor import Monitor, PodIndex, Target
from aiops.monitoring.verdict import VerdictRegistry
from harness.faultytriton import MetricsTriton, set_faults, write_fault_model

pytestmark = pytest.mark.timeout(240)
KEY = ("ns", "adder")
X = [1.0, 2.0, 3.0, 4.0]


def spec(**monitoring) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.from_wire({
        "model": {"name": "adder", "version": 1}, "repository": {"hostPath": {"path": "/m"}},
        "validation": {"samples": [{"name": "s", "inputs": [{"name": "INPUT0", "dataType": "FP32", "shape": [1, 4],
                                                              "data": X}],
                                    "expectedOutputs": [{"name": "OUTPUT0", "dataType": "FP32", "shape": [1, 4],
                                                         "data": [2 * v for v in X]}]}]},
        "monitoring": {"intervalSeconds": 5, "windowSeconds": 20, "consecutiveWindows": 2, "minSamples": 20,
                       **monitoring}})


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Bed:
    """A monitor on one real server, a hand-driven clock, and a traffic generator."""

    def __init__(self, triton: MetricsTriton, md: ModelDeploymentSpec, **monitor_args):
        self.triton, self.md, self.clock = triton, md, Clock()
        self.queued: list = []
        self.pods = PodIndex()
        self.pods.observe({"metadata": {"name": "p0", "namespace": "ns", "labels": {"aiops.dev/modeldeployment":
                                                                                    "adder"}},
                           "status": {"phase": "Running", "podIP": "127.0.0.1"}}, False)
        self.monitor = Monitor(VerdictRegistry(self.queued.append), self.pods, clock=self.clock,
                               metrics_port=triton.metrics_port, http_port=triton.http_port, **monitor_args)
        self.monitor.targets[KEY] = Target("adder", 1, md.monitoring, tuple(md.validation.samples))

    async def traffic(self, n: int) -> None:
        sample = self.md.validation.samples[0]
        gate = asyncio.Semaphore(4)

        async def one():
            async with gate:
                await self.triton.client.infer_sample("adder", 1, sample)
        await asyncio.gather(*(one() for _ in range(n)))

    async def tick(self, requests: int = 30):
        if requests:
            await self.traffic(requests)
        self.clock.now += self.md.monitoring.interval_seconds
        return await self.monitor.tick(KEY)

    async def close(self):
        await self.monitor.stop()


async def _scenario(tmp_path, extra_args=()):
    repo = tmp_path / "repo"
    version_dir = write_fault_model(repo, "adder", 1)
    async with MetricsTriton(repo, tmp_path, extra_args) as triton:
        await triton.client._client.load_model("adder")  # its own config.pbtxt
        yield triton, version_dir


def run(coro):
    return asyncio.run(coro)


def test_latency_errors_and_wrong_answers_are_detected_and_cleared(tmp_path):
    md = spec(thresholds={"inferenceTime": {"percentile": "p95", "maxMilliseconds": 25},
                          "errorRate": {"max": 0.1}, "accuracy": {"min": 0.9}})

    async def go():
        async for triton, vdir in _scenario(tmp_path):
            bed = Bed(triton, md)
            try:
                for _ in range(6):  # healthy: a full window, baseline taken
                    v = await bed.tick()
                assert not v.degraded and v.reason == "WithinLimits", v.message
                assert v.baseline is not None and v.snapshot["requests"] >= 20

                for fault, reason in (({"delay_ms": 60}, "InferenceTimeAboveThreshold"),
                                      ({"error_rate": 0.5, "seed": 1}, "ErrorRateAboveThreshold"),
                                      ({"offset": 1.0}, "AccuracyBelowThreshold")):
                    set_faults(vdir, **fault)
                    ticks = 0
                    while not v.degraded:
                        v = await bed.tick(15 if "delay_ms" in fault else 30)
                        ticks += 1
                        assert ticks * md.monitoring.interval_seconds <= md.monitoring.window_seconds, v.message
                    assert v.reason == reason, v.message
                    assert v.metric and v.value is not None and v.threshold is not None and v.window_seconds == 20
                    assert KEY in bed.queued
                    set_faults(vdir)
                    ticks = 0
                    while v.degraded:
                        v = await bed.tick()
                        ticks += 1
                        assert ticks <= 10, v.message
            finally:
                await bed.close()

    run(go())


def test_jitter_under_the_threshold_raises_nothing_on_the_real_server(tmp_path):
    md = spec(thresholds={"inferenceTime": {"percentile": "p95", "maxMilliseconds": 40}, "errorRate": {"max": 0.1}})

    async def go():
        async for triton, vdir in _scenario(tmp_path):
            set_faults(vdir, delay_ms=2, jitter_ms=8, seed=4)
            bed = Bed(triton, md)
            try:
                verdicts = [await bed.tick(20) for _ in range(16)]
            finally:
                await bed.close()
            assert not any(v.degraded for v in verdicts), [v.message for v in verdicts if v.degraded]
            assert all(v.breaching_windows == 0 for v in verdicts[4:]), [v.message for v in verdicts]

    run(go())


def test_thin_traffic_is_topped_up_with_probes_and_summaries_are_used(tmp_path):
    # Triton's summary covers its own recent window, which here includes the model's first (cold)
    # requests: tens of ms on a busy 2-core machine. The limit is loose; the point is the probes.
    md = spec(thresholds={"inferenceTime": {"percentile": "p95", "maxMilliseconds": 1000}})

    async def go():
        async for triton, _ in _scenario(tmp_path, ("--metrics-config=summary_latencies=true",)):
            bed = Bed(triton, md)
            try:
                verdicts = [await bed.tick(0) for _ in range(4)]  # no real traffic at all
            finally:
                await bed.close()
            last = verdicts[-1]
            assert last.snapshot["probes"] >= 20 and last.snapshot["requests"] >= 20, last.snapshot
            assert last.reason == "WithinLimits", last.message
            assert last.snapshot["latencySource"] == "summary" and last.snapshot["accuracy"] == 1.0
            assert "gpuUtilizationPercent" not in last.snapshot  # CPU: unknown, not 0

    run(go())


class Assigned:
    """The kubelet's device assignment as PodResources answers it (its client has its own tests
    against a gRPC server and, in the e2e tier, the real kubelet)."""

    def __init__(self, assignment):
        self.assignment = assignment

    async def assigned(self):
        return self.assignment

    def close(self):
        pass


def test_gpu_figures_are_the_serving_pods_own_devices(tmp_path):
    from test_monitoring_collect import HOST, FakeNvml

    md = spec()

    async def go():
        async for triton, _ in _scenario(tmp_path):
            nvml = FakeNvml(HOST)  # GPU-2 is training's, at 100%: never in the serving pod's figures
            bed = Bed(triton, md, nvml=NvmlReader(nvml),
                      pod_resources=Assigned({("ns", "p0"): {"GPU-0", "GPU-1"}, ("ns", "trainer"): {"GPU-2"}}))
            try:
                v = await bed.tick(5)
            finally:
                await bed.close()
            assert v.snapshot["gpuUtilizationPercent"] == 40.0 and v.snapshot["memoryUsagePercent"] == 25.0
            assert v.snapshot["gpuDevices"] == ["GPU-0", "GPU-1"] and v.snapshot["gpuSource"] == "nvml"
            assert "GPU-2" not in nvml.asked

    run(go())
