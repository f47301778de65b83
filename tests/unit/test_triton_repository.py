"""Static validation of a model version in a Triton repository."""

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
