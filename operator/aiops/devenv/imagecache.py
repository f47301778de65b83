"""The cache of built images under ~/.cache/aiops/images/: one docker-archive per image, named by
its key, with the metadata that makes it count as complete; the record of a cached image
(`BuiltImage`) and the table that shows such records; the lock that serialises builders.

What goes into a key and how an image is built are images.py's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiops.devenv.toolchain import cache_dir

if TYPE_CHECKING:
    from aiops.devenv.images import ImageSpec


@dataclass(frozen=True)
class BuiltImage:
    """One image in the cache: its archive and what was measured of it when it was built."""

    name: str
    ref: str
    key: str
    archive: Path
    config_digest: str  # the image ID: what a containerd's copy is compared by
    size_bytes: int  # uncompressed: the sum of its layers
    archive_bytes: int
    build_seconds: float  # how long it took when it was built
    cached: bool = False  # found in the cache by this call


def images_cache() -> Path:
    return cache_dir() / "images"


def archive_path(name: str, key: str) -> Path:
    return images_cache() / f"{name}-{key}.tar"


def read_cached(spec: ImageSpec, key: str) -> BuiltImage | None:
    """The cached image for this key, if its archive is complete (the metadata is written after
    the archive is renamed into place, and records its size)."""
    archive = archive_path(spec.name, key)
    try:
        meta = json.loads(archive.with_suffix(".json").read_text())
        if archive.stat().st_size != meta["archive_bytes"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return BuiltImage(name=spec.name, ref=spec.ref, key=key, archive=archive, config_digest=meta["config_digest"],
                      size_bytes=meta["size_bytes"], archive_bytes=meta["archive_bytes"],
                      build_seconds=meta["build_seconds"], cached=True)


def archive_facts(archive: Path) -> tuple[str, int]:
    """(config digest, uncompressed size) of a docker-archive: its manifest names the config
    file (sha256 of the image config) and its layers, which are plain tars."""
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        (manifest,) = json.load(tar.extractfile(members["manifest.json"]))
    config = manifest["Config"].removesuffix(".json").rsplit("/", 1)[-1]
    return f"sha256:{config}", sum(members[layer].size for layer in manifest["Layers"])


def record(spec: ImageSpec, key: str, archive: Path, seconds: float) -> BuiltImage:
    config_digest, size = archive_facts(archive)
    image = BuiltImage(name=spec.name, ref=spec.ref, key=key, archive=archive, config_digest=config_digest,
                       size_bytes=size, archive_bytes=archive.stat().st_size, build_seconds=round(seconds, 1))
    meta = {k: v for k, v in asdict(image).items() if k not in ("archive", "cached")}
    partial = archive.with_name(f".{archive.stem}.json.partial")
    partial.write_text(json.dumps(meta, indent=1))
    partial.rename(archive.with_suffix(".json"))
    return image


def drop_older_archives(spec: ImageSpec, key: str) -> None:
    """One archive (and build log) per image: the others are earlier builds (the worker's is
    gigabytes)."""
    earlier = re.compile(rf"{re.escape(spec.name)}-(?!{key})[0-9a-f]{{20}}\.")
    for directory in (images_cache(), images_cache() / "logs"):
        for old in directory.iterdir() if directory.is_dir() else ():
            if earlier.match(old.name):
                old.unlink(missing_ok=True)


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One builder at a time on this machine: builds share buildah's storage and the cache."""
    images_cache().mkdir(parents=True, exist_ok=True)
    with open(images_cache() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def format_table(images: Iterable[BuiltImage]) -> str:
    """What `aiops dev images` prints: each image's sizes and whether this call built it."""
    rows = [("IMAGE", "SIZE", "ARCHIVE", "BUILD")]
    for image in images:
        seconds = f"{image.build_seconds:.0f} s"
        rows.append((image.ref, _megabytes(image.size_bytes), _megabytes(image.archive_bytes),
                     f"cached (built in {seconds})" if image.cached else f"built in {seconds}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
