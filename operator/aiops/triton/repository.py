"""Static checks of a model version in a Triton model repository: does what the spec names exist,
does config.pbtxt parse, and does it agree with the spec? (Seed 2.1, step 1: validate the model.)

Runs inside the validation Job (`aiops worker validate-model`), where the repository is mounted;
the operator itself never reads model files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from aiops.api.modeldeployment import ModelDeploymentSpec, TensorSpec

# Files Triton looks for in a version directory when config.pbtxt names no default_model_filename.
DEFAULT_MODEL_FILES = {
    "python": "model.py", "onnxruntime": "model.onnx", "onnxruntime_onnx": "model.onnx",
    "pytorch": "model.pt", "pytorch_libtorch": "model.pt", "tensorrt": "model.plan",
    "tensorrt_plan": "model.plan", "tensorflow": "model.savedmodel",
    "tensorflow_savedmodel": "model.savedmodel", "openvino": "model.xml",
}


@dataclass(frozen=True)
class Problem:
    """One reason a model version cannot serve, with a CamelCase reason for conditions."""

    reason: str
    message: str


class ConfigError(ValueError):
    pass


def parse_model_config(text: str) -> dict[str, Any]:
    """config.pbtxt (protobuf text format) as the JSON-shaped dict Triton's load API accepts."""
    try:
        message = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise ConfigError(str(e)) from None
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _backend(config: dict) -> str:
    return config.get("backend") or config.get("platform") or ""


def _tensor_problems(kind: str, declared: list[TensorSpec], actual: list[dict]) -> list[Problem]:
    problems = []
    by_name = {t.get("name"): t for t in actual}
    for want in declared:
        got = by_name.get(want.name)
        if got is None:
            problems.append(Problem("ConfigMismatch", f"config.pbtxt has no {kind} named {want.name!r} "
                                    f"(it has {sorted(by_name) or 'none'})"))
            continue
        # Triton's config calls BYTES tensors TYPE_STRING (model_config.proto has no TYPE_BYTES).
        got_type = got.get("data_type", "").removeprefix("TYPE_")
        got_type = {"STRING": "BYTES"}.get(got_type, got_type)
        if got_type != want.data_type:
            problems.append(Problem("ConfigMismatch", f"{kind} {want.name!r} is {got_type} in "
                                    f"config.pbtxt, the spec expects {want.data_type}"))
        got_dims = [int(d) for d in got.get("dims", [])]
        if got_dims != list(want.dims):
            problems.append(Problem("ConfigMismatch", f"{kind} {want.name!r} has dims {got_dims} in "
                                    f"config.pbtxt, the spec expects {list(want.dims)}"))
    return problems


def check_model_version(repo: Path, spec: ModelDeploymentSpec) -> tuple[dict | None, list[Problem]]:
    """(parsed config or None, problems) for the version the spec names."""
    name, version = spec.model.name, spec.model.version
    model_dir = repo / name
    if not model_dir.is_dir():
        present = sorted(p.name for p in repo.iterdir() if p.is_dir()) if repo.is_dir() else []
        return None, [Problem("ModelNotFound", f"no model {name!r} in the repository "
                              f"(models present: {present or 'none'})")]
    config_file = model_dir / "config.pbtxt"
    if not config_file.is_file():
        return None, [Problem("ConfigMissing", f"{name}/config.pbtxt is missing")]
    try:
        config = parse_model_config(config_file.read_text())
    except ConfigError as e:
        return None, [Problem("ConfigInvalid", f"{name}/config.pbtxt does not parse: {e}")]

    problems: list[Problem] = []
    if config.get("name") and config["name"] != name:
        problems.append(Problem("ConfigMismatch", f"config.pbtxt names the model {config['name']!r}, "
                                f"but its directory (and the spec) say {name!r}"))
    backend = _backend(config)
    if not backend:
        problems.append(Problem("ConfigInvalid", "config.pbtxt sets neither backend nor platform"))
    elif spec.model.backend and spec.model.backend != backend:
        problems.append(Problem("ConfigMismatch", f"config.pbtxt uses {backend!r}, the spec expects "
                                f"{spec.model.backend!r}"))
    problems += _tensor_problems("input", spec.model.inputs, config.get("input", []))
    problems += _tensor_problems("output", spec.model.outputs, config.get("output", []))
    max_batch = int(config.get("max_batch_size", 0))
    if spec.batching.enabled and max_batch == 0 and "batching" in spec.model_fields_set:
        problems.append(Problem("BatchingUnsupported", "spec.batching is set but config.pbtxt has "
                                "max_batch_size 0: the model does not accept batches"))

    version_dir = model_dir / str(version)
    if not version_dir.is_dir():
        present = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        problems.append(Problem("VersionNotFound", f"{name} has no version directory {version} "
                                f"(versions present: {present or 'none'})"))
    else:
        filename = config.get("default_model_filename") or DEFAULT_MODEL_FILES.get(backend)
        if filename and not (version_dir / filename).exists():
            problems.append(Problem("ModelFileMissing", f"{name}/{version}/{filename} is missing"))
        elif not any(version_dir.iterdir()):
            problems.append(Problem("ModelFileMissing", f"{name}/{version}/ is empty"))
    return config, problems
