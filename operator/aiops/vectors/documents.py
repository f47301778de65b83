"""Reading a VectorIndex's document source: JSON Lines files, one {"id", "text", "metadata"} per line.

The source is a mounted ConfigMap (every key a file, or one key) or a path in a PVC (a file, or a
directory of them). Two hashes come out of it, for two different questions:
- `source_checksum`: has anything in the source changed at all? Computed from the bytes only, so
  the operator can ask it cheaply (`aiops worker embed --checksum-only`) without parsing or Milvus.
- `Document.content_hash`: does this one document need a new vector? It covers the text, the
  metadata and the embedding settings, so changing the model re-embeds everything, and changing
  one document re-embeds only that one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiops.api.vectorindex import DocumentSource, Embedding

MAX_ID_LENGTH = 512  # the primary key's VARCHAR max_length in the collection


class SourceError(RuntimeError):
    """The source cannot be read at all (missing path, unreadable file)."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any]
    content_hash: str


@dataclass(frozen=True)
class BadDocument:
    """A line that could not become a document; `id` when the line had a usable one."""

    where: str  # file:line
    id: str | None
    reason: str


@dataclass
class SourceDocuments:
    documents: list[Document] = field(default_factory=list)
    bad: list[BadDocument] = field(default_factory=list)


def source_files(path: Path, key: str | None = None) -> list[Path]:
    """The files to read, in a stable order. A directory: its regular files, recursively, without
    hidden entries (a mounted ConfigMap also holds `..data` and `..<timestamp>` links to the same
    files); `key` (ConfigMap.key): only that file."""
    path = Path(path)
    if key is not None and path.is_dir():
        path = path / key
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"document source {path} does not exist")
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))


def source_checksum(files: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over every file's name (relative to root) and bytes: any edit, rename, addition or
    removal changes it."""
    digest = hashlib.sha256()
    for file in files:
        name = str(file.relative_to(root)) if root and file.is_relative_to(root) else file.name
        digest.update(name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        except OSError as exc:
            raise SourceError(f"cannot read {file}: {exc}") from exc
    return "sha256:" + digest.hexdigest()


def embedding_identity(embedding: Embedding) -> str:
    """The settings that change a vector for the same text."""
    return json.dumps([embedding.model, embedding.normalize, embedding.max_sequence_length])


def content_hash(text: str, metadata: dict[str, Any], identity: str) -> str:
    payload = json.dumps([text, metadata, identity], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def parse_line(line: str, where: str, source: DocumentSource, identity: str) -> Document | BadDocument:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadDocument(where, None, f"not JSON: {exc.msg}")
    if not isinstance(obj, dict):
        return BadDocument(where, None, "not a JSON object")
    raw_id = obj.get(source.id_field)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or str(raw_id) == "":
        return BadDocument(where, None, f"missing or invalid {source.id_field!r}")
    doc_id = str(raw_id)
    if len(doc_id.encode()) > MAX_ID_LENGTH:
        return BadDocument(where, doc_id[:64], f"id longer than {MAX_ID_LENGTH} bytes")
    text = obj.get(source.text_field)
    if not isinstance(text, str) or not text.strip():
        return BadDocument(where, doc_id, f"missing or empty {source.text_field!r}")
    metadata = obj.get(source.metadata_field, {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        return BadDocument(where, doc_id, f"{source.metadata_field!r} is not an object")
    return Document(doc_id, text, metadata, content_hash(text, metadata, identity))


def read_documents(files: Iterable[Path], source: DocumentSource, embedding: Embedding) -> SourceDocuments:
    """Every line of every file; blank lines are skipped. A repeated id is bad (the first one
    stays): which of two texts should the id point to is the author's call, not ours."""
    identity = embedding_identity(embedding)
    out = SourceDocuments()
    seen: set[str] = set()
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.bad.append(BadDocument(str(file.name), None, f"unreadable: {exc}"))
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parsed = parse_line(line, f"{file.name}:{number}", source, identity)
            if isinstance(parsed, Document) and parsed.id in seen:
                parsed = BadDocument(f"{file.name}:{number}", parsed.id, "duplicate id")
            if isinstance(parsed, Document):
                seen.add(parsed.id)
                out.documents.append(parsed)
            else:
                out.bad.append(parsed)
    return out
