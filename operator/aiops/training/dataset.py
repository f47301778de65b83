"""The `data` step: collect, preprocess, validate and store one dataset version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiops.api.trainingjob import TrainingJobSpec
from aiops.training.datastore import store_version, stratified_split
from aiops.training.preprocess import preprocess
from aiops.training.rows import SourceError, collect_rows
from aiops.training.rules import split_counts, validate

MAX_REPORTED_ERRORS = 20


def datasets_root(workspace: Path) -> Path:
    return workspace / "datasets"


def prepare_dataset(spec: TrainingJobSpec, source: str, workspace: Path) -> dict[str, Any]:
    """The step's result: `ok` with the stored version, or the violations (nothing stored)."""
    ds = spec.dataset
    try:
        raw = collect_rows(source, ds.format, ds.schema_)
    except SourceError as e:
        return {"ok": False, "reason": e.reason, "message": str(e)}
    processed = preprocess(raw, list(spec.preprocessing.steps), ds.schema_, spec.validation,
                           ds.text_field, ds.label_field)
    errors = validate(processed, spec)
    if errors:
        first = next(e["message"] for e in errors)
        return {"ok": False, "reason": "DataValidationFailed",
                "message": f"{len(errors)} violation(s) in the data; nothing stored. First: {first}",
                "errorCount": len(errors), "errors": errors[:MAX_REPORTED_ERRORS]}
    dropped = {**processed.dropped, "nullRows": len(processed.null_rows)}
    rows = [r.data for r in processed.rows]
    s = spec.preprocessing.split
    split_settings = {"train": s.train, "validation": s.validation, "test": s.test, "seed": s.seed}
    parts = stratified_split(rows, ds.label_field, split_counts(len(rows), spec), s.seed)
    labels = sorted({str(r[ds.label_field]) for r in rows})
    manifest, reused = store_version(datasets_root(workspace), parts, split_settings, {
        "textField": ds.text_field, "labelField": ds.label_field, "labels": labels,
        "preprocessing": list(spec.preprocessing.steps), "validation": spec.validation.to_wire(),
        "dropped": dropped, "collectedRows": processed.collected})
    files = manifest["files"]
    return {"ok": True, "datasetVersion": manifest["version"], "reused": reused,
            "stats": {"rows": manifest["rows"], "trainRows": files["train.jsonl"]["rows"],
                      "validationRows": files["validation.jsonl"]["rows"],
                      "testRows": files["test.jsonl"]["rows"], "checksum": manifest["checksum"],
                      "createdAt": manifest["createdAt"]},
            "dropped": dropped}
