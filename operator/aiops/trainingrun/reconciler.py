"""The TrainingJob reconciler: data -> train -> optimize (+ evaluate) -> register, one Job per step.

Level-triggered: each pass reads the step Jobs that exist and moves on from there, so a restarted
operator picks up exactly where the run stands. Each step's outcome is copied into status as soon
as its Job ends, so later steps never depend on an old Job still existing. The run's identity is
the spec's hash: re-applying the same spec (Argo CD self-heal) changes nothing, a changed spec
starts a new run and deletes the old run's unfinished Jobs so their GPU is free at once.
"""

from __future__ import annotations

import logging

from aiops.api.registry import TRAINING_JOB
from aiops.api.trainingjob import TrainingJobSpec
from aiops.builders.training_job import (
    STEPS,
    TRAINING_JOB_LABEL,
    build_spec_configmap,
    build_step_job,
    build_workspace_claim,
    run_id,
    spec_hash,
    step_job_name,
)
from aiops.capacity import CAPACITY_REASONS
from aiops.conditions import get_condition, now_iso, set_condition
from aiops.kube.client import KubeClient
from aiops.kube.objects import owned_by
from aiops.passes import Pass, run_pass
from aiops.progress import READ_EVERY, read_progress
from aiops.rollout.pods import pod_problem, unschedulable_reason
from aiops.rollout.verdict import job_outcome, parse_step_result
from aiops.trainingrun import figures
from aiops.trainingrun.results import (
    STEP_NAMES,
    STEP_PHASE,
    apply_failure,
    apply_result,
    fresh_steps,
    set_step,
    worker_step_done,
)
from aiops.validity import judge_spec

log = logging.getLogger(__name__)
PENDING_POLL = 15.0  # a pod waiting for the scheduler: look again to report why, events may not come
TRAINING_PROGRESS = ("epoch", "epochs", "steps", "loss", "samplesPerSecond", "percent", "etaSeconds")


class TrainingJobReconciler:
    def __init__(self, kube: KubeClient, worker_image: str, step_job_ttl: int | None = None,
                 host_paths: tuple[str, ...] | None = None, log_format: str = "text"):
        self.kube = kube
        self.log_format = log_format  # of the step Jobs' lines (aiops.logs)
        self.host_paths = host_paths  # the node directories a spec may mount; None: not restricted
        self.worker_image = worker_image
        self.step_job_ttl = step_job_ttl  # seconds a finished step Job stays

    async def reconcile(self, tj: dict, nodes: list[dict]) -> tuple[float | None, dict | None]:
        """Returns (seconds until the next look, the object as written back or None)."""
        return await run_pass(TRAINING_JOB, tj, self.kube, lambda ctx: self._figures(ctx, nodes))

    async def _figures(self, ctx: Pass, nodes: list[dict]) -> float | None:
        try:
            return await self._reconcile(ctx, nodes)
        finally:  # the status as this pass leaves it, whatever it did
            figures.publish(ctx.namespace, ctx.name, ctx.status)

    async def _reconcile(self, ctx: Pass, nodes: list[dict]) -> float | None:
        tj, status, events = ctx.obj, ctx.status, ctx.events
        meta = tj["metadata"]
        generation = meta.get("generation")
        spec = self._validate(tj, status, events, nodes)
        if spec is None:
            return None
        status["observedGeneration"] = generation
        digest = spec_hash(spec)
        if status.get("specHash") != digest:
            await self._start_run(tj, status, events, digest)
        if status.get("phase") in ("Registered", "Failed"):
            return None  # this spec's run is over; a new spec starts the next one
        await self._ensure_inputs(tj, spec, digest)
        for step in STEPS:
            if worker_step_done(status, step):
                continue
            return await self._drive(tj, spec, status, events, step, digest)
        now = now_iso()
        model = status.get("producedModel") or {}
        status.update(phase="Registered", completionTime=now)
        status.pop("job", None)
        status["conditions"] = set_condition(
            status.get("conditions"), "Ready", True, "ModelRegistered",
            f"{model.get('name')} version {model.get('version')} is in the repository; point a "
            f"ModelDeployment at it.", generation)
        return None

    def _validate(self, tj: dict, status: dict, events: list, nodes: list[dict]) -> TrainingJobSpec | None:
        spec, found = judge_spec(TRAINING_JOB.kind, tj, status, nodes, self.host_paths)
        events += found
        return spec

    async def _start_run(self, tj: dict, status: dict, events: list, digest: str) -> None:
        """A new spec: forget the old run's results, stop its Jobs, start from the data step."""
        meta = tj["metadata"]
        previous = status.get("specHash")
        for job in await self.kube.list("Job", meta["namespace"], selector=f"{TRAINING_JOB_LABEL}={meta['name']}"):
            if (job["metadata"].get("labels") or {}).get("aiops.dev/spec-hash") != digest and \
                    not (job.get("status") or {}).get("completionTime"):
                await self.kube.delete("Job", meta["namespace"], job["metadata"]["name"])
        for key in ("datasetVersion", "datasetStats", "validationErrors", "training", "metricsBefore",
                    "metricsAfter", "qualityDrop", "producedModel", "completionTime", "job", "run", "progress"):
            status.pop(key, None)
        keep = {"Valid"}
        status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") in keep]
        status.update(specHash=digest, steps=fresh_steps(), phase="Pending", startTime=now_iso())
        events.append(("Normal", "RunStarted", "Starting a training run" +
                       (" for the changed spec" if previous else "")))

    async def _ensure_inputs(self, tj: dict, spec: TrainingJobSpec, digest: str) -> None:
        name = tj["metadata"]["name"]
        configmap = build_spec_configmap(name, spec, digest)  # only a spec too big for an annotation
        if configmap is not None:
            await self.kube.create_if_missing(owned_by(configmap, tj))
        claim = build_workspace_claim(name, spec)
        if claim is not None:
            await self.kube.create_if_missing(owned_by(claim, tj))

    async def _drive(self, tj: dict, spec: TrainingJobSpec, status: dict, events: list, step: str,
                     digest: str) -> float | None:
        meta = tj["metadata"]
        name, ns, generation = meta["name"], meta["namespace"], meta.get("generation")
        job_name = step_job_name(name, step, digest)
        now = now_iso()
        status["phase"] = STEP_PHASE[step]
        status["job"] = job_name
        job, pods = await self.kube.read_job(ns, job_name)
        if job is None:
            dataset, run = status.get("datasetVersion"), None
            if step != "data":
                run = status.get("run") or run_id(digest, dataset or "")
                status["run"] = run
            body = build_step_job(name, spec, step, digest, self.worker_image, dataset_version=dataset, run=run,
                                  ttl_seconds=self.step_job_ttl, log_format=self.log_format)
            await self.kube.create_if_missing(owned_by(body, tj))
            for step_name in STEP_NAMES[step]:
                set_step(status, step_name, "Running", now, f"Job {job_name} started")
            events.append(("Normal", "StepStarted", f"{STEP_NAMES[step][0]}: started Job {job_name}"))
            return None  # the Job's events wake us
        outcome = job_outcome(job, pods, parse=parse_step_result)
        if not outcome.finished:
            for step_name in STEP_NAMES[step]:
                set_step(status, step_name, "Running", now)
            waiting = next((p for p in map(pod_problem, pods) if p and p.reason == "Unschedulable"), None)
            ready = get_condition(status.get("conditions"), "Ready") or {}
            if waiting:
                set_step(status, STEP_NAMES[step][0], "Running", now, f"waiting for the scheduler: {waiting.message}")
                reason = unschedulable_reason(waiting.message)
                if ready.get("reason") != reason:
                    events.append(("Warning", reason, f"Job {job_name} waits for the scheduler: {waiting.message}"))
                status["conditions"] = set_condition(
                    status.get("conditions"), "Ready", False, reason,
                    f"{STEP_NAMES[step][0]}: Job {job_name} waits for the scheduler: {waiting.message}", generation)
                return PENDING_POLL
            if ready.get("reason") in (*CAPACITY_REASONS, "Unschedulable"):
                status["conditions"] = set_condition(status.get("conditions"), "Ready", False, "Running",
                                                     f"{STEP_NAMES[step][0]}: Job {job_name} is running.", generation)
            set_step(status, STEP_NAMES[step][0], "Running", now, f"Job {job_name} is running")
            if step != "train":
                return None  # the other steps take seconds: their Job's end wakes us
            progress = await read_progress(self.kube, ns, pods, step, TRAINING_PROGRESS, now, status.get("progress"))
            if progress:
                status["progress"] = progress
            return READ_EVERY
        result = outcome.verdict
        if outcome.succeeded and result.get("ok"):
            events += apply_result(status, step, result, now, generation)
            if step == "train" and status.get("progress"):  # its last line may not have been read
                status["progress"].update(epoch=result.get("epochs"), percent=100.0, etaSeconds=0, updatedAt=now)
            return 0.1  # straight on to the next step
        reason = result.get("reason") or ("StepFailed" if result else "WorkerFailed")
        message = result.get("message") or outcome.detail or f"Job {job_name} failed (exit code {outcome.exit_code})"
        apply_failure(status, step, reason, message, now, result, generation)
        events.append(("Warning", reason, f"{STEP_NAMES[step][0]} failed: {message}"))
        log.warning("%s/%s: step %s failed: %s: %s", ns, name, step, reason, message)
        return None
