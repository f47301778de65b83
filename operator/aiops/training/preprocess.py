"""Preprocessing: the spec's steps, in the spec's order, over the raw rows.

Steps: normalizeWhitespace (every string value), lowercase (the text field only: labels and other
fields keep their case, so allowedValues still match), dropEmpty (empty text), dropInvalid (rows
that do not parse or break the schema's types or allowed values), deduplicate (identical rows,
the first kept). Rows missing a required field are set apart before the steps: whether they are
tolerated (and dropped) is the maxNullFraction rule's call, not a step's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiops.api.trainingjob import DatasetSchema, DataValidationRules
from aiops.training.rows import Row

JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


@dataclass
class Processed:
    """Rows after the steps, and what the rules need to judge them."""

    collected: int
    rows: list[Row]
    null_rows: list[Row]
    dropped: dict[str, int]
    duplicates: list[tuple[Row, Row]] = field(default_factory=list)  # (duplicate, first seen)
    rows_before_dedup: int = 0


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def missing_required(data: dict[str, Any], schema: DatasetSchema) -> list[str]:
    return [f.name for f in schema.fields if f.required and data.get(f.name) is None]


def field_problems(data: dict[str, Any], schema: DatasetSchema, rules: DataValidationRules,
                   text_field: str, label_field: str) -> list[tuple[str, str]]:
    """(field, message) for every type or allowed-value violation of a row; nulls are not here."""
    problems = []
    for f in schema.fields:
        value = data.get(f.name)
        if value is None:
            continue
        if not JSON_TYPES[f.type](value):
            problems.append((f.name, f"expected {f.type}, got {type(value).__name__} {_short(value)}"))
        elif f.allowed_values and f.type == "string" and value not in f.allowed_values:
            problems.append((f.name, f"{_short(value)} is not one of allowedValues"))
    text = data.get(text_field)
    if text is not None and not isinstance(text, str) and text_field not in {f.name for f in schema.fields}:
        problems.append((text_field, f"the text field must be a string, got {type(text).__name__}"))
    label = data.get(label_field)
    if rules.allowed_labels and label is not None and str(label) not in rules.allowed_labels:
        problems.append((label_field, f"label {_short(label)} is not one of allowedLabels"))
    return problems


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalize_whitespace(row: Row) -> Row:
    row.data = {k: " ".join(v.split()) if isinstance(v, str) else v for k, v in row.data.items()}
    return row


def is_empty(row: Row, text_field: str) -> bool:
    text = row.data.get(text_field)
    return isinstance(text, str) and not text.strip()


def preprocess(raw: list[Row], steps: list[str], schema: DatasetSchema, rules: DataValidationRules,
               text_field: str, label_field: str) -> Processed:
    null_rows = [r for r in raw if r.data is not None and missing_required(r.data, schema)]
    nulls = {id(r) for r in null_rows}
    rows = [r for r in raw if id(r) not in nulls]
    out = Processed(collected=len(raw), rows=rows, null_rows=null_rows, dropped={})
    deduplicated = False
    for step in steps:
        if step == "normalizeWhitespace":
            out.rows = [normalize_whitespace(r) if r.data is not None else r for r in out.rows]
        elif step == "lowercase":
            for r in out.rows:
                if r.data is not None and isinstance(r.data.get(text_field), str):
                    r.data[text_field] = r.data[text_field].lower()
        elif step == "dropEmpty":
            out.rows = _drop(out, "empty", lambda r: r.data is not None and is_empty(r, text_field))
        elif step == "dropInvalid":
            out.rows = _drop(out, "invalid", lambda r: r.data is None or bool(
                field_problems(r.data, schema, rules, text_field, label_field)))
        elif step == "deduplicate":
            find_duplicates(out)
            dups = {id(d) for d, _ in out.duplicates}
            out.rows = _drop(out, "duplicates", lambda r, dups=dups: id(r) in dups)
            deduplicated = True
    if not deduplicated:
        find_duplicates(out)
    return out


def _drop(out: Processed, what: str, predicate: Callable[[Row], bool]) -> list[Row]:
    kept = [r for r in out.rows if not predicate(r)]
    out.dropped[what] = out.dropped.get(what, 0) + len(out.rows) - len(kept)
    return kept


def find_duplicates(out: Processed) -> None:
    """Records duplicates of the rows as they are now (measured before de-duplication)."""
    seen: dict[str, Row] = {}
    out.duplicates = []
    for r in out.rows:
        if r.data is None:
            continue
        key = canonical(r.data)
        if key in seen:
            out.duplicates.append((r, seen[key]))
        else:
            seen[key] = r
    out.rows_before_dedup = len(out.rows)
