"""Monitoring wiring: the per-ModelDeployment monitor tasks start with the operator
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
from aiops.monitoring.podresources import PodResources


@kopf.on.startup()
async def start_monitoring(memo: kopf.Memo, **_: Any) -> None:
    model_deployments = getattr(memo, "model_deployments", None)
    if model_deployments is None:  # startup handlers run in import order; be safe if that changes
        raise kopf.TemporaryError("waiting for the ModelDeployment controller to start", delay=0.1)
    # GPU figures of the serving pods' own devices: Triton's nv_gpu_* (--allow-gpu-metrics, set by
    # the Deployment builder) first; NVML by UUID and the kubelet's device assignment wherever this
    # process can see them (on the GPU node as root), silently absent elsewhere.
    # AIOPS_MONITOR_NVML=0 turns both off.
    local = os.environ.get("AIOPS_MONITOR_NVML", "1") != "0"
    memo.monitor = monitor = Monitor(model_deployments.reconciler.verdicts, PodIndex(),
                                     nvml=NvmlReader() if local else None,
                                     pod_resources=PodResources() if local else None)
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
