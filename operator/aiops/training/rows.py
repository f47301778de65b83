"""Collecting raw rows: JSON Lines or CSV, from a file, a directory of files (a
ConfigMap mount) or an http(s) URL. Every row keeps its 1-based line in its file, so a violation
can name it."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiops.api.trainingjob import DatasetSchema
from aiops.conditions import ReasonedError

MAX_DOWNLOAD_BYTES = 1 << 30
DOWNLOAD_TIMEOUT_S = 120


class SourceError(ReasonedError):
    """The source cannot be read; `reason` is the CamelCase word for the condition."""


@dataclass
class Row:
    """One raw row; `data` is None when the line could not be parsed (`problem` says why)."""

    file: str
    line: int
    data: dict[str, Any] | None
    problem: str | None = None


def source_files(path: Path) -> list[Path]:
    """The files of a source: the file itself, or a directory's regular files by name. Hidden
    entries are skipped: a ConfigMap mount holds `..data` and timestamped dirs beside the keys."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    raise SourceError("SourceUnavailable", f"the data source {path} does not exist")


def parse_jsonl(text: str, file: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(Row(file, number, None, f"not JSON: {e.msg}"))
            continue
        if isinstance(data, dict):
            rows.append(Row(file, number, data))
        else:
            rows.append(Row(file, number, None, f"expected a JSON object, got {type(data).__name__}"))
    return rows


def csv_value(text: str, kind: str | None) -> Any:
    """A CSV cell as the schema's JSON type when it reads as one; empty is null; anything else stays
    a string, so the type check reports it."""
    if text == "":
        return None
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        return text
    if kind == "boolean" and text.strip().lower() in ("true", "false", "1", "0"):
        return text.strip().lower() in ("true", "1")
    return text


def parse_csv(text: str, file: str, schema: DatasetSchema) -> list[Row]:
    kinds = {f.name: f.type for f in schema.fields}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    rows, start = [], reader.line_num + 1
    for cells in reader:
        line, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            rows.append(Row(file, line, None, f"{len(cells)} cells, the header has {len(header)}"))
            continue
        rows.append(Row(file, line, {h: csv_value(c, kinds.get(h)) for h, c in zip(header, cells)}))
    return rows


def parse_text(text: str, file: str, fmt: str, schema: DatasetSchema) -> list[Row]:
    return parse_csv(text, file, schema) if fmt == "csv" else parse_jsonl(text, file)


def download(url: str) -> str:
    """The body of an http(s) URL as text; object stores need credentials this worker lacks."""
    if not url.startswith(("http://", "https://")):
        raise SourceError("UnsupportedSource", f"{url.split(':', 1)[0]}:// sources are not supported by the "
                          "built-in task yet; serve the file over http(s) or put it in a PVC")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            body = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise SourceError("SourceUnavailable", f"cannot download {url}: {e}") from None
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise SourceError("SourceTooLarge", f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


def collect_rows(source: str, fmt: str, schema: DatasetSchema) -> list[Row]:
    """Every raw row of the source, in file-name then line order."""
    if "://" in source:
        return parse_text(download(source), source.rsplit("/", 1)[-1] or source, fmt, schema)
    rows: list[Row] = []
    for path in source_files(Path(source)):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise SourceError("SourceUnavailable", f"cannot read {path}: {e}") from None
        rows.extend(parse_text(text, path.name, fmt, schema))
    return rows
