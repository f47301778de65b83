"""Static validation of a model version in a Triton repository."""

import json

import pytest

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.triton.repository import check_model_version, parse_model_config

CONFIG = """
name: "adder"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def spec(version=1, **model):
    return ModelDeploymentSpec.model_validate({
        "model": {"name": "adder", "version": version, **model},
        "repository": {"hostPath": {"path": "/srv/models"}}})


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "adder" / "1").mkdir(parents=True)
    (tmp_path / "adder" / "config.pbtxt").write_text(CONFIG)
    (tmp_path / "adder" / "1" / "model.py").write_text("class TritonPythonModel: pass\n")
    return tmp_path


def reasons(problems):
    return [p.reason for p in problems]


def test_good_version_passes_and_config_is_json_shaped(repo):
    config, problems = check_model_version(repo, spec(backend="python", inputs=[
        {"name": "INPUT0", "dataType": "FP32", "dims": [4]}]))
    assert problems == []
    assert config["max_batch_size"] == 8 and config["input"][0]["data_type"] == "TYPE_FP32"


def test_missing_model_names_what_is_there(repo):
    _, problems = check_model_version(repo, ModelDeploymentSpec.model_validate({
        "model": {"name": "nope", "version": 1}, "repository": {"hostPath": {"path": "/x"}}}))
    assert reasons(problems) == ["ModelNotFound"] and "adder" in problems[0].message


def test_missing_version_lists_present_versions(repo):
    _, problems = check_model_version(repo, spec(version=2))
    assert reasons(problems) == ["VersionNotFound"] and "[1]" in problems[0].message


def test_unparseable_config(repo):
    (repo / "adder" / "config.pbtxt").write_text("name: adder\nbackend: {{{")
    _, problems = check_model_version(repo, spec())
    assert reasons(problems) == ["ConfigInvalid"]


def test_missing_model_file(repo):
    (repo / "adder" / "1" / "model.py").unlink()
    (repo / "adder" / "1" / "other.txt").write_text("x")
    _, problems = check_model_version(repo, spec())
    assert reasons(problems) == ["ModelFileMissing"] and "adder/1/model.py" in problems[0].message


def test_config_disagreeing_with_the_spec_lists_every_difference(repo):
    _, problems = check_model_version(repo, spec(
        backend="onnxruntime",
        inputs=[{"name": "INPUT0", "dataType": "INT32", "dims": [4]}],
        outputs=[{"name": "OUT", "dataType": "FP32", "dims": [4]}]))
    assert reasons(problems) == ["ConfigMismatch"] * 3
    text = " ".join(p.message for p in problems)
    assert "onnxruntime" in text and "INT32" in text and "'OUT'" in text


def test_config_name_must_match_directory(repo):
    (repo / "adder" / "config.pbtxt").write_text(CONFIG.replace('name: "adder"', 'name: "other"'))
    _, problems = check_model_version(repo, spec())
    assert reasons(problems) == ["ConfigMismatch"]


def test_dims_parse_as_ints():
    assert parse_model_config('input [{name: "a" data_type: TYPE_INT64 dims: [-1, 3]}]')["input"][0]["dims"] \
        == ["-1", "3"]


# ---- large language models: is the version built for the GPUs the spec gives it? ----------------------

VLLM_CONFIG = """
name: "llm"
backend: "vllm"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_MODEL } ]
"""


def llm_spec(gpus=2, **llm):
    return ModelDeploymentSpec.model_validate({
        "model": {"name": "llm", "version": 1}, "repository": {"hostPath": {"path": "/srv/models"}},
        "resources": {"gpus": gpus}, "llm": llm})


def vllm_repo(tmp_path, engine_args, config=VLLM_CONFIG):
    (tmp_path / "llm" / "1").mkdir(parents=True)
    (tmp_path / "llm" / "config.pbtxt").write_text(config)
    if engine_args is not None:
        (tmp_path / "llm" / "1" / "model.json").write_text(engine_args if isinstance(engine_args, str)
                                                           else json.dumps(engine_args))
    return tmp_path


def test_a_vllm_version_built_for_the_pods_gpus_passes(tmp_path):
    repo = vllm_repo(tmp_path, {"model": "/models/weights", "tensor_parallel_size": 2,
                                "gpu_memory_utilization": 0.85})
    assert check_model_version(repo, llm_spec(gpuMemoryUtilization=0.9))[1] == []


@pytest.mark.parametrize("engine_args, llm, reason", [
    # vLLM's default is one GPU: a model.json that says nothing is not split over the pod's two.
    ({"model": "/models/weights"}, {}, "TensorParallelMismatch"),
    ({"model": "/w", "tensor_parallel_size": 2, "pipeline_parallel_size": 2}, {}, "TensorParallelMismatch"),
    ({"model": "/w", "tensor_parallel_size": 1}, {"tensorParallelSize": 1}, None),
    ({"model": "/w", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.95}, {"gpuMemoryUtilization": 0.8},
     "GpuMemoryShareExceeded"),
    # Not said: vLLM's own default (0.9) is what would be taken.
    ({"model": "/w", "tensor_parallel_size": 2}, {"gpuMemoryUtilization": 0.5}, "GpuMemoryShareExceeded"),
    ("{not json", {}, "ConfigInvalid"),
    (["a list"], {}, "ConfigInvalid"),
    (None, {}, "ModelFileMissing"),
])
def test_vllm_engine_arguments_that_disagree_with_the_spec_are_named(tmp_path, engine_args, llm, reason):
    problems = check_model_version(vllm_repo(tmp_path, engine_args), llm_spec(**llm))[1]
    assert reasons(problems) == ([reason] if reason else [])
    assert all("model.json" in p.message for p in problems)


def test_a_split_vllm_model_placed_with_kind_gpu_is_refused_as_the_backend_would(tmp_path):
    config = VLLM_CONFIG.replace("kind: KIND_MODEL", "kind: KIND_GPU")
    repo = vllm_repo(tmp_path, {"model": "/w", "tensor_parallel_size": 2}, config)
    assert reasons(check_model_version(repo, llm_spec())[1]) == ["InstanceKindUnsupported"]


def test_engine_vllm_needs_the_vllm_backend(tmp_path):
    repo = vllm_repo(tmp_path, {"model": "/w", "tensor_parallel_size": 2}, VLLM_CONFIG.replace('"vllm"', '"python"'))
    problems = check_model_version(repo, llm_spec())[1]
    assert "ConfigMismatch" in reasons(problems)


def trtllm_repo(tmp_path, ranks: int, engine_path: str | None = None):
    (tmp_path / "llm" / "1").mkdir(parents=True)
    (tmp_path / "llm" / "config.pbtxt").write_text('name: "llm"\nplatform: "ensemble"\nmax_batch_size: 0\n')
    (tmp_path / "tensorrt_llm" / "1").mkdir(parents=True)
    param = (f'parameters {{ key: "gpt_model_path" value: {{ string_value: "{engine_path}" }} }}\n'
             if engine_path else "")
    (tmp_path / "tensorrt_llm" / "config.pbtxt").write_text(
        f'name: "tensorrt_llm"\nbackend: "tensorrtllm"\nmax_batch_size: 8\n{param}')
    engines = tmp_path / (engine_path or "tensorrt_llm/1")
    engines.mkdir(parents=True, exist_ok=True)
    for rank in range(ranks):
        (engines / f"rank{rank}.engine").write_bytes(b"engine")
    (tmp_path / "llm" / "1" / "placeholder").write_text("")
    return tmp_path


@pytest.mark.parametrize("ranks, engine_path, reason", [
    (2, None, None), (1, None, "TensorParallelMismatch"),
    (2, "engines/tp2", None), (4, "engines/tp4", "TensorParallelMismatch"),
])
def test_tensorrtllm_needs_one_engine_per_gpu(tmp_path, ranks, engine_path, reason):
    problems = check_model_version(trtllm_repo(tmp_path, ranks, engine_path), llm_spec(engine="tensorrtllm"))[1]
    assert reasons(problems) == ([reason] if reason else [])


def test_tensorrtllm_without_engines_is_named(tmp_path):
    repo = vllm_repo(tmp_path, {"model": "/w"}, VLLM_CONFIG.replace('"vllm"', '"python"'))
    assert "EngineNotFound" in reasons(check_model_version(repo, llm_spec(engine="tensorrtllm"))[1])


def test_a_python_llm_needs_the_text_interface(tmp_path):
    (tmp_path / "adder" / "1").mkdir(parents=True)
    (tmp_path / "adder" / "config.pbtxt").write_text(CONFIG)
    (tmp_path / "adder" / "1" / "model.py").write_text("")
    spec_ = ModelDeploymentSpec.model_validate({"model": {"name": "adder", "version": 1}, "llm": {"engine": "python"},
                                                "repository": {"hostPath": {"path": "/m"}}})
    problems = check_model_version(tmp_path, spec_)[1]
    assert reasons(problems) == ["ConfigMismatch"] and "text_input and text_output" in problems[0].message
