"""Training checkpoints: atomic files `step-<n>.pt` under the run's checkpoints directory; the
newest readable one that belongs to the same training settings is resumed from."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

KEEP = 2  # the newest two: if the very last write was cut short, the one before still loads

log = logging.getLogger(__name__)


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.pt"


def save_checkpoint(directory: Path, step: int, state: dict[str, Any]) -> Path:
    """Written to a temp file, synced and renamed: a kill mid-write leaves the previous one intact."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in sorted(directory.glob("step-*.pt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(directory: Path, fingerprint: str) -> dict[str, Any] | None:
    """The newest checkpoint made with the same settings and data, or None."""
    for path in sorted(directory.glob("step-*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or foreign file: try the one before
            log.warning("skipping unreadable checkpoint %s: %s", path, e)
            continue
        if state.get("fingerprint") == fingerprint:
            return state
        log.warning("ignoring checkpoint %s: made for other training settings or data", path)
    return None
