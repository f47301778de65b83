"""Monitoring wiring (seed 2.2): the per-ModelDeployment monitor tasks start with the operator
and stop with it. The monitor follows ModelDeployments through its own Kopf event handler and
their Triton pods through a callback on the shared pod informer, publishes verdicts into the
registry that the ModelDeployment controller holds, and that registry enqueues the object when a
verdict changes: the reconciler alone writes status and acts."""

from __future__ import annotations

import os
from typing import Any

import kopf

from aiops.api.common import GROUP, VERSION
from aiops.controllers.watches import shared_watches
from aiops.monitoring.gpu import NvmlReader
from aiops.monitoring.monitor import Monitor, PodIndex


@kopf.on.startup()
async def start_monitoring(memo: kopf.Memo, **_: Any) -> None:
    model_deployments = getattr(memo, "model_deployments", None)
    if model_deployments is None:  # startup handlers run in import order; be safe if that changes
        raise kopf.TemporaryError("waiting for the ModelDeployment controller to start", delay=0.1)
    # NVML reads the GPUs of the machine the operator runs on: only meaningful when the operator
    # is pinned to the (single) GPU node it serves from, so it is opt-in. Triton's own GPU metrics
    # (--allow-gpu-metrics, set by the Deployment builder) are the normal source.
    nvml = NvmlReader() if os.environ.get("AIOPS_MONITOR_NVML") == "1" else None
    memo.monitor = monitor = Monitor(model_deployments.reconciler.verdicts, PodIndex(), nvml=nvml)
    shared_watches(memo).on("pods", lambda kind, pod: monitor.pods.observe(pod, kind == "DELETED"))


@kopf.on.cleanup()
async def stop_monitoring(memo: kopf.Memo, **_: Any) -> None:
    monitor = getattr(memo, "monitor", None)
    if monitor is not None:
        await monitor.stop()


# async: the monitor's tasks live on the operator's event loop (Kopf runs sync handlers in threads)
@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def model_deployment_for_monitoring(event: dict, memo: kopf.Memo, **_: Any) -> None:
    memo.monitor.observe(event["object"], event.get("type") == "DELETED")
