"""Validation: the processed rows against the schema and the spec's rules. Every
violation is listed, row-level ones with the row's 1-based line in its source file; the caller
stores nothing when there is any."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiops.api.trainingjob import TrainingJobSpec
from aiops.training.preprocess import Processed, field_problems, missing_required
from aiops.training.rows import Row

MESSAGE_LIMIT = 160


def error(message: str, row: Row | None = None, field: str | None = None, multi_file: bool = False) -> dict[str, Any]:
    if row is not None and multi_file:
        message = f"{row.file}: {message}"
    return {"row": row.line if row else None, "field": field, "message": message[:MESSAGE_LIMIT]}


def split_counts(n: int, spec: TrainingJobSpec) -> tuple[int, int, int]:
    """(train, validation, test) row counts: the fractions normalised to their sum."""
    s = spec.preprocessing.split
    total = s.train + s.validation + s.test
    validation = round(n * s.validation / total)
    test = round(n * s.test / total)
    return n - validation - test, validation, test


def validate(p: Processed, spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """Dataset-level violations first (few, and they say the most), then row-level ones by row."""
    rules, ds = spec.validation, spec.dataset
    multi = len({r.file for r in [*p.rows, *p.null_rows]}) > 1
    summary: list[dict[str, Any]] = []
    per_row: list[tuple[tuple[str, int], dict[str, Any]]] = []

    def row_error(r: Row, message: str, field: str | None = None) -> None:
        per_row.append(((r.file, r.line), error(message, r, field, multi)))

    for r in p.rows:
        if r.data is None:
            row_error(r, r.problem or "unreadable row")
            continue
        problems = field_problems(r.data, ds.schema_, rules, ds.text_field, ds.label_field)
        for field, message in problems:
            row_error(r, message, field)
        if not isinstance(r.data.get(ds.text_field), str) and all(f != ds.text_field for f, _ in problems):
            row_error(r, f"no text: the field {ds.text_field!r} is missing or not a string", ds.text_field)
        if r.data.get(ds.label_field) is None:
            row_error(r, f"no label: the field {ds.label_field!r} is missing", ds.label_field)

    null_fraction = len(p.null_rows) / p.collected if p.collected else 0.0
    if null_fraction > rules.max_null_fraction:
        summary.append(error(f"{len(p.null_rows)} of {p.collected} rows ({null_fraction:.1%}) miss a required "
                             f"field; maxNullFraction is {rules.max_null_fraction}"))
        for r in p.null_rows:
            missing = missing_required(r.data, ds.schema_)
            row_error(r, f"required field(s) missing or null: {', '.join(missing)}", missing[0])

    dup_fraction = len(p.duplicates) / p.rows_before_dedup if p.rows_before_dedup else 0.0
    if dup_fraction > rules.max_duplicate_fraction:
        summary.append(error(f"{len(p.duplicates)} of {p.rows_before_dedup} rows ({dup_fraction:.1%}) are "
                             f"duplicates; maxDuplicateFraction is {rules.max_duplicate_fraction}"))
        for dup, first in p.duplicates:
            row_error(dup, f"duplicate of row {first.line}" + (f" in {first.file}" if multi else ""))

    usable = [r for r in p.rows if r.data is not None]
    if len(usable) < rules.min_rows:
        summary.append(error(f"{len(usable)} rows after preprocessing; minRows is {rules.min_rows}"))
    labels = Counter(str(r.data.get(ds.label_field)) for r in usable if r.data.get(ds.label_field) is not None)
    for label, count in sorted(labels.items()):
        if count / len(usable) < rules.min_class_fraction:
            summary.append(error(f"label {label!r} has {count} of {len(usable)} rows ({count / len(usable):.1%}); "
                                 f"minClassFraction is {rules.min_class_fraction}", field=ds.label_field))
    if usable and len(labels) < 2:
        summary.append(error(f"{len(labels)} distinct label(s); a classifier needs at least 2", field=ds.label_field))
    train, validation, _ = split_counts(len(usable), spec)
    if usable and (train < 1 or validation < 1):
        summary.append(error(f"{len(usable)} rows give {train} training and {validation} validation rows; "
                             "both splits need at least one"))
    per_row.sort(key=lambda item: item[0])
    return summary + [e for _, e in per_row]
