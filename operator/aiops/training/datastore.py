"""Immutable, content-addressed dataset versions under `<workspace>/datasets/`.

The version id is a short hash of the processed rows of every split and the split settings: the
same input gives the same version and never a second directory. A version is written to a temp
directory and renamed into place, so a reader sees all of it or none; an existing one is reused,
never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
VERSION_CHARS = 12


def stratified_split(rows: list[dict[str, Any]], label_field: str, counts: tuple[int, int, int],
                     seed: int) -> dict[str, list[dict[str, Any]]]:
    """Rows shuffled with `seed` and dealt so each split gets each label in proportion; the totals
    are exactly `counts` (train, validation, test)."""
    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(label_field)), []).append(row)
    keyed = []
    for label in sorted(groups):
        group = groups[label]
        rng.shuffle(group)
        # Position within its label, as a fraction: sorted on it, every prefix is label-balanced.
        keyed.extend(((j + 0.5) / len(group), label, j, row) for j, row in enumerate(group))
    keyed.sort(key=lambda t: t[:3])
    dealt = [t[3] for t in keyed]
    _, n_val, n_test = counts
    parts = {"validation": dealt[:n_val], "test": dealt[n_val:n_val + n_test], "train": dealt[n_val + n_test:]}
    for name in SPLITS:
        rng.shuffle(parts[name])
    return parts


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for r in rows).encode()


def content_digest(files: dict[str, bytes], split_settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(split_settings, sort_keys=True).encode())
    for name in SPLITS:
        digest.update(f"\0{name}\0".encode())
        digest.update(files[name])
    return digest.hexdigest()


def store_version(root: Path, parts: dict[str, list[dict[str, Any]]], split_settings: dict[str, Any],
                  extra: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(manifest, reused): writes the version unless it exists."""
    files = {name: jsonl(parts[name]) for name in SPLITS}
    checksum = content_digest(files, split_settings)
    version = checksum[:VERSION_CHARS]
    final = root / version
    if (final / "manifest.json").exists():
        return read_manifest(root, version), True
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": version, "checksum": checksum,
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rows": sum(len(p) for p in parts.values()),
        "files": {f"{name}.jsonl": {"rows": len(parts[name]), "sha256": hashlib.sha256(files[name]).hexdigest(),
                                    "bytes": len(files[name])} for name in SPLITS},
        "split": split_settings, **extra,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=root))
    try:
        for name in SPLITS:
            _write_synced(tmp / f"{name}.jsonl", files[name])
        _write_synced(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a version is for every reader of the volume
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (final / "manifest.json").exists():  # another worker stored the same version first
            return read_manifest(root, version), True
        raise
    return manifest, False


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(root: Path, version: str) -> dict[str, Any]:
    return json.loads((root / version / "manifest.json").read_text())


def load_split(root: Path, version: str, split: str) -> list[dict[str, Any]]:
    path = root / version / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
