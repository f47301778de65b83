"""The operator's own Prometheus metrics. Names are stable: the Helm chart's ServiceMonitor,
alerts and Grafana dashboard are built on them (see the README's metrics reference)."""

from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram, Info

from aiops import __version__

RECONCILE_SECONDS = Histogram(
    "aiops_reconcile_duration_seconds", "Time one reconcile of one object took.", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RECONCILE_ERRORS = Counter("aiops_reconcile_errors_total", "Reconciles that raised and were retried.", ["kind"])
ROLLOUT_PHASE_SECONDS = Histogram(
    "aiops_rollout_phase_duration_seconds", "Duration of each ModelDeployment rollout step.", ["phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
ROLLBACKS_TOTAL = Counter("aiops_rollbacks_total", "ModelDeployment rollbacks, by the cause.", ["reason"])

# ---- The operator itself: what it runs, whether it leads, how its work queues keep up ----------
BUILD = Info("aiops_build", "The operator's version and the Python it runs on (value 1).")
BUILD.info({"version": __version__, "python_version": platform.python_version()})
LEADER = Gauge("aiops_leader", "1 while this replica holds the leader Lease (or runs without leader "
               "election), 0 while it stands by.")
WORKQUEUE_DEPTH = Gauge("aiops_workqueue_depth", "Objects waiting in a controller's work queue.", ["kind"])
WORKQUEUE_ADDS = Counter("aiops_workqueue_adds_total", "Objects put in a controller's work queue (a key "
                         "already waiting is not counted again).", ["kind"])
WORKQUEUE_WAIT_SECONDS = Histogram(
    "aiops_workqueue_queue_duration_seconds", "Time an object waited in the work queue before a worker took it.",
    ["kind"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# ---- Performance monitoring of ModelDeployments -----------------------------------
# One series per ModelDeployment and serving version, refreshed every monitoring interval. A value
# the monitor does not know (no GPU metrics, no traffic and no samples to probe with) has no
# series at all, never a 0; the series of a version that stopped serving are removed.
# Units follow Prometheus conventions (seconds, ratios 0..1); status.metrics has ms and percent.
MD_LABELS = ["namespace", "name", "version"]
MD_INFERENCE_TIME = Gauge(
    "aiops_modeldeployment_inference_time_seconds",
    "inference_time: request latency of the serving version over the monitoring window, by quantile "
    "(0.5, 0.95, 0.99).", [*MD_LABELS, "quantile"])
MD_ERROR_RATE = Gauge(
    "aiops_modeldeployment_error_rate_ratio",
    "error_rate: failed over all requests of the serving version in the monitoring window (0..1).", MD_LABELS)
MD_GPU_UTILIZATION = Gauge(
    "aiops_modeldeployment_gpu_utilization_ratio",
    "gpu_utilization: mean busy share of the serving pods' GPUs (0..1).", MD_LABELS)
MD_MEMORY_USAGE = Gauge(
    "aiops_modeldeployment_memory_usage_ratio",
    "memory_usage: GPU memory used over GPU memory of the serving pods (0..1).", MD_LABELS)
MD_ACCURACY = Gauge(
    "aiops_modeldeployment_accuracy_ratio",
    "accuracy: share of validation samples answered correctly by the live endpoint in the window (0..1).",
    MD_LABELS)
MD_TIME_TO_FIRST_TOKEN = Gauge(
    "aiops_modeldeployment_time_to_first_token_seconds",
    "LLMs: mean time to the first generated token over the monitoring window (the engine's histogram).", MD_LABELS)
MD_TIME_PER_OUTPUT_TOKEN = Gauge(
    "aiops_modeldeployment_time_per_output_token_seconds",
    "LLMs: mean time per generated token after the first over the monitoring window.", MD_LABELS)
MD_TOKENS_PER_SECOND = Gauge(
    "aiops_modeldeployment_generation_tokens_per_second",
    "LLMs: tokens generated per second over the monitoring window, all serving pods.", MD_LABELS)
MD_KV_CACHE_USAGE = Gauge(
    "aiops_modeldeployment_kv_cache_usage_ratio",
    "LLMs: KV-cache use of the fullest serving pod's engine (0..1).", MD_LABELS)
MD_WINDOW_REQUESTS = Gauge(
    "aiops_modeldeployment_window_requests",
    "Requests (real and synthetic probes) in the monitoring window.", MD_LABELS)
MD_DEGRADED = Gauge(
    "aiops_modeldeployment_degraded",
    "1 while the monitor judges the serving version degraded (after damping), else 0.", MD_LABELS)
MONITORING_COLLECTION_SECONDS = Histogram(
    "aiops_monitoring_collection_duration_seconds",
    "One collection and judgement of one ModelDeployment (scrape, probes, analysis).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
MONITORING_SCRAPE_ERRORS = Counter(
    "aiops_monitoring_scrape_errors_total", "Triton metrics pages that could not be fetched.")
MONITORING_PROBES = Counter(
    "aiops_monitoring_probes_total", "Synthetic probe requests sent because real traffic was too thin to judge.")

# ---- VectorIndex -------------------------------------------------------------------------------
VI_LABELS = ["namespace", "name"]
VECTOR_DOCUMENTS = Gauge(
    "aiops_vectorindex_documents", "Documents stored with a current vector after the last ingest.", VI_LABELS)
VECTOR_RECALL = Gauge(
    "aiops_vectorindex_recall_ratio",
    "recall@k of the live index against exact search on held-out queries (0..1).", VI_LABELS)

# ---- TrainingJob -------------------------------------------------------------------------------
# From the status after each pass: the last run's figures, one series per TrainingJob (and step or
# model), removed with the object (`forget`).
TJ_LABELS = ["namespace", "name"]
TRAINING_RUN_SECONDS = Gauge(
    "aiops_trainingjob_run_duration_seconds", "The last run, start to end (or to now while it runs).", TJ_LABELS)
TRAINING_STEP_SECONDS = Gauge(
    "aiops_trainingjob_step_duration_seconds", "Each step of the last run that ended (data, train, optimize, "
    "register).", [*TJ_LABELS, "step"])
TRAINING_ACCURACY = Gauge(
    "aiops_trainingjob_model_accuracy_ratio", "Held-out accuracy of the trained and the optimized model (0..1).",
    [*TJ_LABELS, "model"])
TRAINING_SIZE = Gauge(
    "aiops_trainingjob_model_size_bytes", "Stored size of the trained and the optimized model.", [*TJ_LABELS, "model"])
TRAINING_QUALITY_DROP = Gauge(
    "aiops_trainingjob_quality_drop_ratio", "Accuracy lost by optimization (the gate is maxQualityDrop).", TJ_LABELS)
TRAINING_THROUGHPUT = Gauge(
    "aiops_trainingjob_samples_per_second", "Training throughput of the last run.", TJ_LABELS)
TRAINING_SUCCEEDED = Gauge(
    "aiops_trainingjob_succeeded", "1 when the last run registered its model, 0 when it failed; no series while "
    "it runs.", TJ_LABELS)

PER_OBJECT = {"TrainingJob": (TRAINING_RUN_SECONDS, TRAINING_STEP_SECONDS, TRAINING_ACCURACY, TRAINING_SIZE,
                              TRAINING_QUALITY_DROP, TRAINING_THROUGHPUT, TRAINING_SUCCEEDED),
              "VectorIndex": (VECTOR_DOCUMENTS, VECTOR_RECALL)}


def forget(kind: str, namespace: str, name: str) -> None:
    """Removes every series about one deleted object of `kind` (ModelDeployments' go with their
    monitoring)."""
    for gauge in PER_OBJECT.get(kind, ()):
        for labels in [k for k in list(gauge._metrics) if k[:2] == (namespace, name)]:  # noqa: SLF001
            gauge.remove(*labels)
