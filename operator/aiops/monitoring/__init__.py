"""Performance monitoring of serving ModelDeployments: collect the five metrics from
the serving Triton pods, judge them against the spec's thresholds and the version's baseline, and
hand verdicts to the reconciler, which alone writes status and acts (alert or rollback).

Layers, lowest first: scrape (Triton's /metrics, parsed), gpu (NVML adapter), window (rates and
percentiles over a sliding window), accuracy (validation samples against the live endpoint),
analysis (pure judgement and damping), verdict (what the reconciler reads), monitor (the
per-ModelDeployment tasks)."""
