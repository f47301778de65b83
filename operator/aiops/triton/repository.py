"""Static checks of a model version in a Triton model repository: does what the spec names exist,
does config.pbtxt parse, and does it agree with the spec? For a large language model, is the
version built for the GPUs the spec gives it?

Runs inside the validation Job (`aiops worker validate-model`), where the repository is mounted;
the operator itself never reads model files.
"""

from __future__ import annotations

import json
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
    "vllm": "model.json",  # the engine arguments; the weights are wherever its "model" says
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
        if spec.llm is not None:
            problems += llm_problems(repo, config, version_dir, spec)
    return config, problems


def tensor_parallel(spec: ModelDeploymentSpec) -> int:
    """GPUs one copy of the language model is split over."""
    return (spec.llm.tensor_parallel_size if spec.llm and spec.llm.tensor_parallel_size else
            max(1, spec.resources.gpus))


def llm_problems(repo: Path, config: dict, version_dir: Path, spec: ModelDeploymentSpec) -> list[Problem]:
    """Is the version built for the GPUs the spec gives it, as its engine reads the repository?"""
    engine = spec.llm.engine
    where = f"{spec.model.name}/{spec.model.version}"
    if engine == "python":
        names = {t.get("name") for t in config.get("input", [])} | {t.get("name") for t in config.get("output", [])}
        missing = [n for n in ("text_input", "text_output") if n not in names]
        return [Problem("ConfigMismatch", f"config.pbtxt lacks {' and '.join(missing)}: the generate endpoint "
                        "sends the prompt as text_input and reads text_output")] if missing else []
    if engine == "vllm":
        return _vllm_problems(config, version_dir, where, spec)
    return _tensorrtllm_problems(repo, tensor_parallel(spec))


def _vllm_problems(config: dict, version_dir: Path, where: str, spec: ModelDeploymentSpec) -> list[Problem]:
    problems = []
    if _backend(config) != "vllm":
        problems.append(Problem("ConfigMismatch", f"config.pbtxt uses {_backend(config)!r}; llm.engine vllm "
                                "needs backend: \"vllm\""))
    engine_file = version_dir / "model.json"
    if not engine_file.is_file():
        return problems  # missing: said by the check of the version's files
    try:
        engine_args = json.loads(engine_file.read_text())
        if not isinstance(engine_args, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        return [*problems, Problem("ConfigInvalid", f"{where}/model.json does not parse: {e}")]
    want = tensor_parallel(spec)
    # vLLM's defaults where model.json is silent: one GPU, 90% of its memory.
    got = int(engine_args.get("tensor_parallel_size", 1)) * int(engine_args.get("pipeline_parallel_size", 1))
    if got != want:
        problems.append(Problem("TensorParallelMismatch", f"{where}/model.json splits the model over {got} GPU(s) "
                                f"(tensor_parallel_size x pipeline_parallel_size); the spec runs it on {want} "
                                "(llm.tensorParallelSize, else resources.gpus): make them agree"))
    share = float(engine_args.get("gpu_memory_utilization", 0.9))
    limit = spec.llm.gpu_memory_utilization
    if limit is not None and share > limit:
        problems.append(Problem("GpuMemoryShareExceeded", f"{where}/model.json asks for gpu_memory_utilization "
                                f"{share:g}, above the spec's llm.gpuMemoryUtilization {limit:g}"))
    if want > 1 and any(g.get("kind") == "KIND_GPU" for g in config.get("instance_group", [])):
        problems.append(Problem("InstanceKindUnsupported", "config.pbtxt places the model with KIND_GPU, which "
                                f"the vLLM backend refuses for a model split over {want} GPUs: use kind: KIND_MODEL"))
    return problems


def _tensorrtllm_problems(repo: Path, want: int) -> list[Problem]:
    """The engines: a model of the repository with backend tensorrtllm, one rank<N>.engine per GPU
    in its engine directory (the gpt_model_path parameter where it points into the repository,
    else its version 1)."""
    for config_file in sorted(repo.glob("*/config.pbtxt")):
        try:
            config = parse_model_config(config_file.read_text())
        except ConfigError:
            continue
        if _backend(config) != "tensorrtllm":
            continue
        engine_dir = config_file.parent / "1"
        path = config.get("parameters", {}).get("gpt_model_path", {}).get("string_value", "")
        if path and (repo / path).is_dir():
            engine_dir = repo / path
        ranks = sorted(engine_dir.glob("rank*.engine"))
        if len(ranks) != want:
            return [Problem("TensorParallelMismatch", f"{engine_dir.relative_to(repo)} holds {len(ranks)} engine "
                            f"rank(s); the spec runs the model on {want} GPU(s): build the engines with "
                            f"tp_size {want}")]
        return []
    return [Problem("EngineNotFound", "no model in the repository uses backend tensorrtllm: llm.engine "
                    "tensorrtllm serves TensorRT-LLM engines behind the model the spec names")]
