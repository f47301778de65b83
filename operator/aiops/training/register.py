"""The `register` step: the run's model as a new version in the Triton model repository.

Idempotent: a run registers one version. `<run>/registered.json` and a marker in the version
directory (`aiops-registration.json`: run, model digest, format) make a repeated call return the
same version; a version directory holding anything else is never overwritten. The version is
built in a hidden directory beside its final place and renamed into it, so Triton never sees a
half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiops.api.trainingjob import TrainingJobSpec
from aiops.conditions import ReasonedError
from aiops.training.export import config_text, write_version
from aiops.training.model import read_info
from aiops.training.onnxform import ExportError
from aiops.training.optimize import load_model_dir, recorded_result

MARKER = "aiops-registration.json"
RECORD = "registered.json"
AUTO_VERSION_ATTEMPTS = 3  # another run may take the next version number between look and rename


class RegisterError(ReasonedError):
    """Registering the model version failed."""


def chosen_model(run_dir: Path) -> tuple[Path, bool]:
    """(model directory, optimized): the optimized model if it passed the gate, else the trained one."""
    verdict = recorded_result(run_dir)
    if verdict is not None and not verdict.get("ok", True):
        raise RegisterError(verdict.get("reason", "QualityGateFailed"),
                            f"optimization failed and the spec says to register nothing: {verdict.get('message')}")
    if verdict is not None and verdict.get("passed"):
        return run_dir / "optimized", True
    if not (run_dir / "model" / "classifier.json").exists():
        raise RegisterError("ModelMissing", f"no trained model in {run_dir / 'model'}: run the train step first")
    return run_dir / "model", False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def numeric_versions(model_root: Path) -> list[int]:
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def register_run(spec: TrainingJobSpec, run_dir: Path, run: str, repository: Path) -> dict[str, Any]:
    out = spec.output
    model_dir, optimized = chosen_model(run_dir)
    info = read_info(model_dir)
    identity = {"run": run, "model": out.model_name, "format": out.format, "optimized": optimized,
                "digest": file_sha256(model_dir / info["weights"])}
    root = repository / out.model_name

    def done(version: int, reused: bool) -> dict[str, Any]:
        record = {**identity, "version": version, "path": str(root / str(version))}
        write_atomic(run_dir / RECORD, json.dumps(record, indent=2))
        return {"ok": True, "model": {"name": out.model_name, "version": version, "format": out.format,
                                      "optimized": optimized}, "path": record["path"], "reused": reused}

    def ours(version: int) -> bool:
        marker = read_json(root / str(version) / MARKER)
        return marker is not None and all(marker.get(k) == v for k, v in identity.items())

    previous = read_json(run_dir / RECORD)
    if previous and previous.get("model") == out.model_name and ours(previous["version"]):
        return done(previous["version"], True)
    if out.version is None:  # the record may be lost (a new workspace): the markers still tell
        for version in numeric_versions(root):
            if ours(version):
                return done(version, True)
    # The spec's version, else the one this run recorded before (its directory since removed), else auto.
    recorded = previous.get("version") if previous and previous.get("model") == out.model_name else None
    fixed = out.version or recorded
    for _ in range(AUTO_VERSION_ATTEMPTS if fixed is None else 1):
        version = fixed or max(numeric_versions(root), default=0) + 1
        target = root / str(version)
        if target.exists():
            if ours(version):
                return done(version, True)
            if fixed is not None:
                raise RegisterError("VersionExists", f"{target} already holds another model; choose another "
                                    "output.version or leave it unset for the next free one")
            continue
        # The model's config goes first: a validator looking meanwhile sees "version not there yet"
        # (which a ModelDeployment waits out), never a model directory without its config.
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / "labels.txt", "".join(f"{label}\n" for label in info["labels"]))
        write_atomic(root / "config.pbtxt", config_text(out.model_name, out.format, len(info["labels"])))
        if publish(model_dir, info, identity, out.format, root, version):
            return done(version, False)
        if fixed is not None and not ours(version):
            raise RegisterError("VersionExists", f"{target} was created by someone else meanwhile")
        if ours(version):
            return done(version, True)
    raise RegisterError("VersionExists", f"could not find a free version under {root} after "
                        f"{AUTO_VERSION_ATTEMPTS} attempts")


def publish(model_dir: Path, info: dict[str, Any], identity: dict[str, Any], fmt: str, root: Path,
            version: int) -> bool:
    """Builds the version in a hidden temp directory and renames it to `<root>/<version>`; False if
    that name was taken in the meantime."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=root))
    try:
        model, tokenizer, _ = load_model_dir(model_dir)
        write_version(model, tokenizer, info, model_dir, fmt, tmp)
        (tmp / MARKER).write_text(json.dumps({**identity, "version": version}, indent=2))
        os.chmod(tmp, 0o755)
        os.rename(tmp, root / str(version))
        return True
    except ExportError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not any(root.iterdir()):
            root.rmdir()  # no empty model directory for Triton to trip over
        raise RegisterError("ExportFailed", str(e)) from None
    except OSError:
        if (root / str(version)).exists():
            return False
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
