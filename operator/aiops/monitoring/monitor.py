"""The scheduler: one asyncio task per ModelDeployment whose version serves, started and stopped
as versions serve (from the ModelDeployment watch), each waking every
spec.monitoring.intervalSeconds — no busy loop, and nothing runs for objects that serve nothing.

Each wake-up (a *tick*): scrape every serving pod's Triton metrics page, add the interval to the
version's sliding window, send validation samples as probes (always a few, to score accuracy;
more when real traffic is too thin to judge), judge the window, damp, and publish a verdict. The
monitor reads the cached object and the pod index; it never writes to the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiops import logs, metrics
from aiops.api.modeldeployment import ModelDeploymentSpec, Monitoring, ValidationSample
from aiops.builders.triton import HTTP_PORT, KIND_LABEL, METRICS_PORT
from aiops.monitoring.accuracy import probes_needed, score
from aiops.monitoring.analysis import Damper, Finding, Judgement, baseline_worthy, judge
from aiops.monitoring.gpu import GpuReader, gpu_usage
from aiops.monitoring.podresources import PodResources
from aiops.monitoring.scrape import Scraper
from aiops.monitoring.verdict import MonitoringVerdict, VerdictRegistry
from aiops.monitoring.window import SlidingWindow, WindowStats, stats_from_snapshot
from aiops.triton.client import TritonServer

log = logging.getLogger(__name__)
Key = tuple[str, str]


@dataclass(frozen=True)
class Target:
    """What to watch, read from the ModelDeployment body."""

    model: str
    version: int
    monitoring: Monitoring
    samples: tuple[ValidationSample, ...]
    baseline: dict | None = None  # status.baseline, when it belongs to this version
    previous_baseline: dict | None = None
    previous_version: int | None = None
    degraded_reason: str | None = None  # status says this version was degraded (operator restarted)


def target_of(body: dict, spec: ModelDeploymentSpec | None) -> Target | None:
    status = body.get("status") or {}
    version = status.get("servingVersion")
    if spec is None or not version or not spec.monitoring.enabled:
        return None
    mon_status = status.get("monitoring") or {}
    own = status.get("baseline") if mon_status.get("version") == version else None
    mine = mon_status.get("version") == version
    return Target(spec.model.name, version, spec.monitoring, tuple(spec.validation.samples), own,
                  status.get("previousBaseline"), status.get("previousVersion"),
                  mon_status.get("reason") if mine and mon_status.get("degraded") else None)


class PodIndex:
    """Running Triton pods per ModelDeployment, from pod events: name -> pod IP."""

    def __init__(self) -> None:
        self._pods: dict[Key, dict[str, str]] = {}

    def observe(self, pod: dict, deleted: bool) -> None:
        meta = pod.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(KIND_LABEL)
        if not owner:
            return
        key = (meta.get("namespace"), owner)
        ip = (pod.get("status") or {}).get("podIP")
        running = (pod.get("status") or {}).get("phase") == "Running"
        pods = self._pods.setdefault(key, {})
        if deleted or meta.get("deletionTimestamp") or not running or not ip:
            pods.pop(meta.get("name"), None)
        else:
            pods[meta["name"]] = ip
        if not pods:
            del self._pods[key]

    def ips(self, key: Key) -> dict[str, str]:
        return dict(self._pods.get(key) or {})


@dataclass
class VersionState:
    """The monitor's memory of one serving version."""

    target: Target
    started_at: float
    window: SlidingWindow = field(init=False)
    damper: Damper = field(init=False)
    baseline: WindowStats | None = None
    previous: WindowStats | None = None
    cursor: int = 0

    def __post_init__(self) -> None:
        mon = self.target.monitoring
        self.window = SlidingWindow(mon.window_seconds)
        # A restart must not clear an alarm by forgetting it: what status says holds until
        # consecutiveWindows clean windows have been seen again.
        self.damper = Damper(mon.consecutive_windows, degraded=bool(self.target.degraded_reason))
        if self.target.baseline:
            self.baseline = stats_from_snapshot(self.target.baseline, mon.window_seconds)
        if self.target.previous_baseline:
            self.previous = stats_from_snapshot(self.target.previous_baseline, mon.window_seconds)


def _lead(findings: tuple[Finding, ...]) -> Finding:
    """Threshold breaches first (the user's own limits), then shifts."""
    return sorted(findings, key=lambda f: f.reason.endswith("Shift"))[0]


def _describe(state: VersionState, stats: WindowStats, judgement: Judgement) -> tuple[str, str, Finding | None]:
    """(reason, message, the finding that decided) for the verdict."""
    mon, d, version = state.target.monitoring, state.damper, state.target.version
    n = mon.consecutive_windows
    if d.degraded:
        action = (" spec.monitoring.action is rollback: returning to the previous good version."
                  if mon.action == "rollback" else " spec.monitoring.action is alert: no automatic action.")
        if not d.last:  # degraded before an operator restart, nothing seen since
            reason = state.target.degraded_reason or "Degraded"
            return reason, (f"Version {version} was judged degraded ({reason}) before the operator restarted; it "
                            f"stays so until {n} clean window(s) in a row.{action}"), None
        lead = _lead(d.last)
        clearing = f" Clearing: {d.clean} of {n} clean windows so far." if d.clean else ""
        return lead.reason, (f"Version {version} is degraded: {lead.detail}; seen in {n} consecutive "
                             f"window(s).{clearing}{action}"), lead
    if judgement.findings:
        lead = _lead(judgement.findings)
        return "WithinLimits", (f"Version {version}: {lead.detail}; {d.breaching} of {n} consecutive windows "
                                "needed before it counts as degraded."), lead
    if not judgement.judged:
        return "InsufficientData", (
            f"Version {version}: too little data to judge the last {mon.window_seconds}s window "
            f"({stats.requests} requests, minSamples {mon.min_samples}"
            + ("" if state.target.samples else "; no validation samples to probe with") + ")."), None
    probes = f", {stats.probes} of them probes" if stats.probes else ""
    return "WithinLimits", (f"Version {version} is within limits over the last {mon.window_seconds}s window "
                            f"({stats.requests} requests{probes})."), None


def build_verdict(state: VersionState, stats: WindowStats, judgement: Judgement, now: float) -> MonitoringVerdict:
    mon, d = state.target.monitoring, state.damper
    reason, message, lead = _describe(state, stats, judgement)
    if judgement.missing and reason != "InsufficientData":
        message += " Not judged: " + "; ".join(judgement.missing) + "."
    return MonitoringVerdict(
        version=state.target.version, degraded=d.degraded, reason=reason, message=message,
        rollback_requested=d.degraded and mon.action == "rollback", metric=lead.metric if lead else None,
        value=lead.value if lead else None, threshold=lead.threshold if lead else None,
        window_seconds=mon.window_seconds, breaching_windows=d.breaching, clean_windows=d.clean, evaluated_at=now,
        snapshot=stats.snapshot(), baseline=state.baseline.snapshot() if state.baseline is not None else None)


def _gauges(key: Key, version: int, stats: WindowStats | None, degraded: bool = False) -> None:
    """Exports one version's figures; stats None removes its series. Unknown values have none."""
    labels = (key[0], key[1], str(version))

    def ratio(percent: float | None) -> float | None:
        return None if percent is None else percent / 100

    known = stats is not None
    _set(metrics.MD_ERROR_RATE, labels, stats.error_rate if known else None)
    _set(metrics.MD_GPU_UTILIZATION, labels, ratio(stats.gpu_utilization_percent) if known else None)
    _set(metrics.MD_MEMORY_USAGE, labels, ratio(stats.memory_usage_percent) if known else None)
    _set(metrics.MD_ACCURACY, labels, stats.accuracy if known else None)
    _set(metrics.MD_WINDOW_REQUESTS, labels, stats.requests if known else None)
    _set(metrics.MD_TIME_TO_FIRST_TOKEN, labels, stats.ttft_ms / 1000 if known and stats.ttft_ms is not None else None)
    _set(metrics.MD_TIME_PER_OUTPUT_TOKEN, labels,
         stats.tpot_ms / 1000 if known and stats.tpot_ms is not None else None)
    _set(metrics.MD_TOKENS_PER_SECOND, labels, stats.tokens_per_second if known else None)
    _set(metrics.MD_KV_CACHE_USAGE, labels, ratio(stats.kv_cache_percent) if known else None)
    _set(metrics.MD_DEGRADED, labels, int(degraded) if known else None)
    for q, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
        ms = stats.percentile(name) if known else None
        _set(metrics.MD_INFERENCE_TIME, (*labels, q), None if ms is None else ms / 1000)


def _set(gauge, labels: tuple[str, ...], value: float | None) -> None:
    if value is None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
    else:
        gauge.labels(*labels).set(value)


class Monitor:
    def __init__(self, registry: VerdictRegistry, pods: PodIndex | None = None, scraper: Scraper | None = None,
                 nvml: GpuReader | None = None, pod_resources: PodResources | None = None,
                 clock: Callable[[], float] = time.time,
                 triton_timeout: float = 5.0, metrics_port: int = METRICS_PORT, http_port: int = HTTP_PORT):
        self.registry = registry
        self.pods = pods or PodIndex()
        self.scraper = scraper or Scraper(triton_timeout)
        self.nvml = nvml  # None: GPU figures only from Triton's pages (see controllers.monitoring)
        self.pod_resources = pod_resources  # None: the pods' GPUs only as their Triton pages name them
        self.clock = clock
        self.triton_timeout = triton_timeout
        self.metrics_port, self.http_port = metrics_port, http_port
        self.targets: dict[Key, Target] = {}
        self.states: dict[Key, VersionState] = {}
        self.tasks: dict[Key, asyncio.Task] = {}
        self._specs: dict[Key, tuple[object, ModelDeploymentSpec | None]] = {}
        self._clients: dict[Key, dict[str, TritonServer]] = {}

    # ---- what to watch ---------------------------------------------------------------------------
    def _spec(self, key: Key, body: dict) -> ModelDeploymentSpec | None:
        generation = body["metadata"].get("generation")
        cached = self._specs.get(key)
        if cached is None or cached[0] != generation:
            try:
                spec = ModelDeploymentSpec.from_wire(body.get("spec") or {})
            except Exception:  # invalid: the reconciler reports it; nothing to monitor by
                spec = None
            cached = self._specs[key] = (generation, spec)
        return cached[1]

    def observe(self, body: dict, deleted: bool = False) -> None:
        """A ModelDeployment event: start, retarget or stop its task."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        target = None if deleted else target_of(body, self._spec(key, body))
        if target is None:
            self._stop_one(key, forget_spec=deleted)
            return
        old = self.targets.get(key)
        self.targets[key] = target
        if old is not None and (old.version != target.version or old.monitoring != target.monitoring):
            self._retire(key, old.version)
        if key not in self.tasks:
            self.tasks[key] = asyncio.get_running_loop().create_task(self._loop(key), name=f"monitor-{key[0]}/{key[1]}")

    def _retire(self, key: Key, version: int) -> None:
        self.states.pop(key, None)
        _gauges(key, version, None)

    def _stop_one(self, key: Key, forget_spec: bool = False) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        target = self.targets.pop(key, None)
        if target is not None:
            self._retire(key, target.version)
        self.registry.forget(key)
        for client in (self._clients.pop(key, None) or {}).values():
            asyncio.get_running_loop().create_task(client.close())
        if forget_spec:
            self._specs.pop(key, None)

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        clients = [c for per_key in self._clients.values() for c in per_key.values()]
        self._clients.clear()
        for key in list(self.targets):
            self._stop_one(key)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await self.scraper.close()
        if self.pod_resources is not None:
            self.pod_resources.close()

    # ---- the loop --------------------------------------------------------------------------------
    async def _loop(self, key: Key) -> None:
        logs.set_about("ModelDeployment", *key)  # this task's lines are all about this object
        while key in self.targets:
            started = time.perf_counter()
            try:
                await self.tick(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitoring %s/%s failed; trying again next interval", *key)
            metrics.MONITORING_COLLECTION_SECONDS.observe(time.perf_counter() - started)
            target = self.targets.get(key)
            if target is None:
                return
            await asyncio.sleep(max(0.0, target.monitoring.interval_seconds - (time.perf_counter() - started)))

    def _servers(self, key: Key, ips: list[str]) -> list[TritonServer]:
        clients = self._clients.setdefault(key, {})
        for ip in set(clients) - set(ips):
            asyncio.get_running_loop().create_task(clients.pop(ip).close())
        for ip in ips:
            if ip not in clients:
                clients[ip] = TritonServer(f"{ip}:{self.http_port}", self.triton_timeout)
        return [clients[ip] for ip in ips]

    async def tick(self, key: Key) -> MonitoringVerdict | None:
        """One collection and judgement; returns the verdict published."""
        target = self.targets.get(key)
        if target is None:
            return None
        now = self.clock()
        state = self.states.get(key)
        if state is None or state.target.version != target.version:
            state = self.states[key] = VersionState(target, now)
        pods = self.pods.ips(key)
        scrapes = await asyncio.gather(*(self.scraper.scrape(pod, f"http://{ip}:{self.metrics_port}/metrics")
                                         for pod, ip in pods.items()))
        for s in scrapes:
            if s.error:
                metrics.MONITORING_SCRAPE_ERRORS.inc()
                log.debug("scraping %s failed: %s", s.pod, s.error)
        good = [s for s in scrapes if not s.error]
        # Only pods that have this version loaded count, and only they are probed (a pod that just
        # restarted and is waiting for the reconciler to load the model would fail every probe).
        serving = [s for s in good if (target.model, target.version) in s.models]
        state.window.add_counters(now, {s.pod: s.models[(target.model, target.version)] for s in serving})
        assigned = await self.pod_resources.assigned() if self.pod_resources is not None and pods else {}
        held = {uuid for pod in pods for uuid in assigned.get((key[0], pod), ())}
        state.window.gpu = gpu_usage([s.gpus for s in good], held, self.nvml)
        stats = state.window.stats(now)
        count = probes_needed(stats.requests, target.monitoring.min_samples, len(target.samples))
        servers = self._servers(key, [pods[s.pod] for s in serving])
        results = await score(servers, target.model, target.version, list(target.samples), count, state.cursor)
        state.cursor += len(results)
        if results:
            state.window.add_scores(now, [r.passed for r in results])
            state.window.add_probes(now, len(results))
            metrics.MONITORING_PROBES.inc(len(results))
            stats = state.window.stats(now)
        judgement = judge(stats, target.monitoring, state.baseline, state.previous, target.previous_version)
        state.damper.update(judgement)
        if state.baseline is None and baseline_worthy(stats, judgement, target.monitoring, now - state.started_at):
            state.baseline = stats
        verdict = build_verdict(state, stats, judgement, now)
        current = self.targets.get(key)
        if current is not None and current.version == target.version:  # not retargeted meanwhile
            self.registry.publish(key, verdict)
            _gauges(key, target.version, stats, state.damper.degraded)
        return verdict
