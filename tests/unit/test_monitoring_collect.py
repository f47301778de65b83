"""Collection pieces: the parser on Triton's exposition, counters to windows (resets included),
GPU figures (unknown is not zero), the verdict registry, and the reconciler's handling of
verdicts (status, Degraded, Event, and demotion through the one rollback path)."""

from __future__ import annotations

import asyncio
import json

from aiops.api.modeldeployment import Monitoring
from aiops.monitoring.gpu import UNKNOWN, NvmlReader, gpu_usage
from aiops.monitoring.scrape import GpuDevice, ModelCounters, parse_triton_metrics
from aiops.monitoring.verdict import STATUS_REFRESH, MonitoringVerdict, VerdictRegistry
from aiops.monitoring.window import SlidingWindow, stats_from_snapshot, weighted_quantile

PAGE = """# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="adder",version="1"} 90
nv_inference_request_success{model="adder",version="2"} 7
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="adder",reason="OTHER",version="1"} 1
nv_inference_request_failure{model="adder",reason="BACKEND",version="1"} 9
# TYPE nv_inference_count counter
nv_inference_count{model="adder",version="1"} 100
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="adder",version="1"} 250000
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="adder",version="1"} 100
nv_inference_request_summary_us_sum{model="adder",version="1"} 250000
nv_inference_request_summary_us{model="adder",version="1",quantile="0.5"} 2000
nv_inference_request_summary_us{model="adder",version="1",quantile="0.95"} 6000
nv_inference_request_summary_us{model="adder",version="1",quantile="0.99"} NaN
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.7
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} 5e9
nv_gpu_memory_used_bytes{gpu_uuid="GPU-b"} 3e9
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-a"} 2e10
nv_gpu_memory_total_bytes{gpu_uuid="GPU-b"} 2e10
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.125
"""


def test_parser_reads_counters_summaries_and_gpus():
    page = parse_triton_metrics(PAGE, "p")
    c = page.models[("adder", 1)]
    assert (c.success, c.failure, c.inferences, c.duration_us) == (90, 10, 100, 250000)
    assert c.summary_us == {"p50": 2000, "p95": 6000}  # NaN: unknown, left out
    assert page.models[("adder", 2)].success == 7
    assert page.gpus == {"GPU-a": GpuDevice("GPU-a", 0.5, 5e9, 2e10), "GPU-b": GpuDevice("GPU-b", 0.7, 3e9, 2e10)}


def test_window_takes_differences_and_survives_a_pod_restart():
    w = SlidingWindow(100)
    w.add_counters(0, {"a": ModelCounters(success=50, duration_us=50_000)})  # first sight: no interval
    w.add_counters(10, {"a": ModelCounters(success=60, failure=2, duration_us=70_000)})
    w.add_counters(20, {"a": ModelCounters(success=5, duration_us=25_000)})  # restarted: counts from 0
    st = w.stats(20)
    assert (st.requests, st.failures) == (12 + 5, 2)
    assert st.interval_means_ms == [20_000 / 12 / 1000, 5.0] and st.latency_source == "counters"
    w.add_counters(200, {"a": ModelCounters(success=6, duration_us=26_000)})
    assert w.stats(200).requests == 1  # the old intervals slid out of the window


def test_summary_quantiles_win_over_counter_means_when_present():
    w = SlidingWindow(100)
    w.add_counters(0, {"a": ModelCounters(success=1, summary_count=1, summary_us={"p95": 1000})})
    w.add_counters(10, {"a": ModelCounters(success=11, duration_us=1, summary_count=11, summary_us={"p95": 9000})})
    st = w.stats(10)
    assert st.latency_source == "summary" and st.p95_ms == 9.0


def test_weighted_quantile():
    assert weighted_quantile([1, 2, 3], [1, 1, 98], 0.5) == 3
    assert weighted_quantile([5, 1], [10, 90], 0.95) == 5
    assert weighted_quantile([], [], 0.5) is None


class FakeNvml:
    """pynvml at the library boundary: devices by UUID -> (util %, used, total); nvmlInit fails
    with no devices at all, as on a machine without the driver."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: dict | None = None):
        self.devices = devices
        self.asked: list[str] = []

    def nvmlInit(self):
        if self.devices is None:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.asked.append(uuid)
        if uuid not in self.devices:
            raise self.NVMLError("Not Found")  # pynvml's NVMLError_NotFound
        return uuid

    def nvmlDeviceGetUtilizationRates(self, h):
        return type("U", (), {"gpu": self.devices[h][0]})

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"used": self.devices[h][1], "total": self.devices[h][2]})


# The reference node: Triton holds GPUs 0 and 1, training keeps GPU 2 busy.
HOST = {"GPU-0": (30, 4, 20), "GPU-1": (50, 6, 20), "GPU-2": (100, 19, 20)}


def test_triton_pages_give_each_pod_its_own_devices_counted_once():
    pods = [{"GPU-0": GpuDevice("GPU-0", 0.3, 4, 20)}, {"GPU-1": GpuDevice("GPU-1", 0.5, 6, 20)},
            {"GPU-1": GpuDevice("GPU-1", 0.5, 6, 20)}]  # a second server on the same device
    usage = gpu_usage(pods)
    assert (usage.utilization_percent, usage.memory_percent) == (40.0, 25.0)
    assert (usage.source, usage.devices) == ("triton", ("GPU-0", "GPU-1"))


def test_nvml_reads_only_the_devices_the_pods_hold_never_the_host():
    nvml = FakeNvml(HOST)
    usage = gpu_usage([{}], {"GPU-0", "GPU-1"}, NvmlReader(nvml))  # the kubelet's assignment, no Triton figures
    assert (usage.utilization_percent, usage.memory_percent, usage.source) == (40.0, 25.0, "nvml")
    assert usage.devices == ("GPU-0", "GPU-1") and sorted(nvml.asked) == ["GPU-0", "GPU-1"]  # GPU-2 never read
    # Triton's figures win; NVML fills only what a page lacks, for that device.
    partial = gpu_usage([{"GPU-0": GpuDevice("GPU-0", 0.9)}], (), NvmlReader(FakeNvml(HOST)))
    assert (partial.utilization_percent, partial.memory_percent, partial.source) == (90.0, 20.0, "triton+nvml")


def test_gpu_figures_without_a_readable_device_are_unknown_not_zero():
    assert gpu_usage([{}], (), NvmlReader(FakeNvml(HOST))) == UNKNOWN  # no device known: nothing read
    assert gpu_usage([{}], {"GPU-elsewhere"}, NvmlReader(FakeNvml(HOST))) == UNKNOWN  # another node's GPU
    assert gpu_usage([{}], {"GPU-0"}, NvmlReader(FakeNvml(None))) == UNKNOWN  # no driver
    assert gpu_usage([{}], {"GPU-0"}, NvmlReader()) == UNKNOWN  # this machine: no NVIDIA driver
    assert UNKNOWN.utilization_percent is None and UNKNOWN.memory_percent is None and UNKNOWN.source is None


def test_registry_enqueues_on_state_changes_only():
    queued = []
    reg = VerdictRegistry(on_change=queued.append)
    v = MonitoringVerdict(1, False, "WithinLimits", "ok", evaluated_at=100)
    assert reg.publish("k", v) and queued == ["k"]
    assert not reg.publish("k", MonitoringVerdict(1, False, "WithinLimits", "ok 2", evaluated_at=110))
    assert reg.get("k").message == "ok"  # snapshot-only change: not stored until stale
    reg.publish("k", MonitoringVerdict(1, False, "WithinLimits", "ok 3", evaluated_at=100 + STATUS_REFRESH))
    assert reg.get("k").message == "ok 3" and queued == ["k"]
    assert reg.publish("k", MonitoringVerdict(1, True, "ErrorRateAboveThreshold", "bad", evaluated_at=200))
    assert queued == ["k", "k"]


def test_snapshot_round_trip_keeps_what_the_tests_need():
    w = SlidingWindow(300)
    w.add_counters(0, {"a": ModelCounters()})
    for t in range(1, 7):
        w.add_counters(t * 30, {"a": ModelCounters(success=t * 40, failure=t, duration_us=t * 40_000)})
    w.add_scores(180, [True, True, False, True])
    st = w.stats(180)
    back = stats_from_snapshot(st.snapshot(), 300)
    assert (back.requests, back.failures, back.scored, back.passed) == (st.requests, st.failures, 4, 3)
    assert back.interval_means_ms == [round(v, 3) for v in st.interval_means_ms]


# ---- the reconciler's side ----------------------------------------------------------------------

class NoKube:
    async def observe(self, *a, **k):
        from aiops.rollout.world import World
        return World(None, [])


def reconciler_with(verdict):
    from aiops.rollout.reconciler import ModelDeploymentReconciler
    reg = VerdictRegistry()
    if verdict is not None:
        reg.publish(("ns", "md"), verdict)
    return ModelDeploymentReconciler(NoKube(), "img", verdicts=reg)


def ctx_for(status, action="rollback"):
    from aiops.api.modeldeployment import ModelDeploymentSpec
    from aiops.rollout.reconciler import Ctx
    spec = ModelDeploymentSpec.from_wire({
        "model": {"name": "adder", "version": 2}, "repository": {"hostPath": {"path": "/m"}},
        "monitoring": {"action": action, "thresholds": {"errorRate": {"max": 0.1}}}})
    md = {"metadata": {"name": "md", "namespace": "ns", "generation": 1}, "spec": {}}
    return Ctx(md, status), spec


SERVING_V2 = {"servingVersion": 2, "servingRevision": "r2", "servingModelConfigJson": json.dumps({"name": "adder"}),
              "servingDeploymentRevision": 1, "previousVersion": 1, "previousRevision": "r1",
              "previousModelConfigJson": json.dumps({"name": "adder"}), "previousDeploymentRevision": 1,
              "previousBaseline": {"requests": 100}, "baseline": {"requests": 90}, "phase": "Ready"}
BAD = MonitoringVerdict(2, True, "ErrorRateAboveThreshold", "error_rate is 0.5 (threshold 0.1)",
                        rollback_requested=True, metric="error_rate", value=0.5, threshold=0.1, window_seconds=20)


def test_degraded_verdict_with_rollback_demotes_through_the_rollback_path():
    from aiops.rollout.world import World
    ctx, spec = ctx_for(dict(SERVING_V2))
    r = reconciler_with(BAD)
    assert asyncio.run(r.demotion.apply(ctx, spec, World(None, []), True, may_roll_back=True))
    st = ctx.status
    assert st["servingVersion"] == 1 and st["servingRevision"] == "r1" and st["rejectedVersions"] == [2]
    assert st["rejected"][0]["revision"] == "r2" and st["baseline"] == {"requests": 100}
    assert [(h["version"], h["outcome"]) for h in st["history"][:2]] == [(1, "Serving"), (2, "RolledBack")]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["RolledBack"]["status"] == "True" and "error_rate is 0.5" in conds["RolledBack"]["message"]
    assert conds["Degraded"]["status"] == "False"
    assert "previousVersion" not in st
    assert [e[1] for e in ctx.events] == ["ErrorRateAboveThreshold", "RolledBack"]


def test_alert_only_and_no_previous_version_never_roll_back():
    from aiops.rollout.world import World
    for status, action in ((dict(SERVING_V2), "alert"),
                           ({k: v for k, v in SERVING_V2.items() if not k.startswith("previous")}, "rollback")):
        ctx, spec = ctx_for(status, action)
        verdict = BAD if action == "rollback" else MonitoringVerdict(
            2, True, "ErrorRateAboveThreshold", "error_rate is 0.5", metric="error_rate")
        assert not asyncio.run(reconciler_with(verdict).demotion.apply(ctx, spec, World(None, []), True, True))
        cond = next(c for c in ctx.status["conditions"] if c["type"] == "Degraded")
        assert cond["status"] == "True" and ctx.status["servingVersion"] == 2 and ctx.status["phase"] == "Degraded"
        assert ctx.status["monitoring"]["degraded"] is True


def test_monitoring_spec_defaults_parse():
    assert Monitoring.from_wire({}).action == "alert"


def test_one_task_per_serving_object_started_and_stopped_as_versions_serve():
    from aiops.monitoring.monitor import Monitor
    from aiops.monitoring.scrape import PodScrape

    class NoScrape:
        async def scrape(self, pod, url):
            return PodScrape(pod, 0.0, error="none")

        async def close(self):
            pass

    spec = {"model": {"name": "adder", "version": 1}, "repository": {"hostPath": {"path": "/m"}},
            "monitoring": {"intervalSeconds": 5}}

    def body(status, generation=1, monitoring=None):
        return {"metadata": {"namespace": "ns", "name": "md", "generation": generation},
                "spec": {**spec, "monitoring": monitoring or spec["monitoring"]}, "status": status}

    async def go():
        reg = VerdictRegistry()
        m = Monitor(reg, scraper=NoScrape())
        m.observe(body({}))  # nothing serves yet: nothing to watch
        assert not m.tasks
        m.observe(body({"servingVersion": 1}))
        task = m.tasks[("ns", "md")]
        await asyncio.sleep(0.05)  # the first tick runs at once
        assert reg.get(("ns", "md")).reason == "InsufficientData"
        m.observe(body({"servingVersion": 2}))  # a new version: same task, fresh state
        assert m.tasks[("ns", "md")] is task and m.targets[("ns", "md")].version == 2
        m.observe(body({"servingVersion": 2}, 2, {"enabled": False}))  # monitoring switched off
        await asyncio.sleep(0)
        assert not m.tasks and task.cancelled() and reg.get(("ns", "md")) is None
        m.observe(body({"servingVersion": 2}, 3))
        m.observe(body({"servingVersion": 2}, 3), deleted=True)
        assert not m.tasks
        await m.stop()

    asyncio.run(go())


def test_an_alarm_survives_an_operator_restart_until_clean_windows_clear_it():
    from aiops.api.modeldeployment import ModelDeploymentSpec
    from aiops.monitoring.analysis import Judgement
    from aiops.monitoring.monitor import VersionState, build_verdict, target_of
    from aiops.monitoring.window import WindowStats

    spec = ModelDeploymentSpec.from_wire({"model": {"name": "adder", "version": 2},
                                          "repository": {"hostPath": {"path": "/m"}},
                                          "monitoring": {"consecutiveWindows": 2}})
    body = {"status": {"servingVersion": 2, "monitoring": {"version": 2, "degraded": True,
                                                          "reason": "ErrorRateAboveThreshold"}}}
    state = VersionState(target_of(body, spec), 0.0)
    stats = WindowStats(300, 1.0, requests=100)
    v = build_verdict(state, stats, Judgement(), 1.0)
    assert v.degraded and v.reason == "ErrorRateAboveThreshold" and "restarted" in v.message
    state.damper.update(Judgement())
    assert state.damper.update(Judgement()) and not build_verdict(state, stats, Judgement(), 2.0).degraded
