"""The demo models' files, and their model.py run against a stand-in for Triton's Python-backend
module (the real server runs them in tests/cluster/test_node_processes.py)."""

import importlib.util
import sys
import types

import numpy as np
import pytest

from aiops.devenv.demomodels import (
    expected_output,
    model_config_text,
    model_source,
    sample_input,
    write_python_backend_model,
)


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


@pytest.fixture
def pb_utils(monkeypatch):
    module = types.SimpleNamespace(
        Tensor=_Tensor, InferenceResponse=lambda tensors: tensors,
        get_input_tensor_by_name=lambda request, name: _Tensor(name, request[name]))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def load(path):
    spec = importlib.util.spec_from_file_location(f"model_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel()


def test_layout_and_config(tmp_path):
    model_dir = write_python_backend_model(tmp_path, "double", 1, max_batch_size=4, dims=(3,))
    assert model_dir == tmp_path / "double"
    config = (model_dir / "config.pbtxt").read_text()
    assert 'name: "double"' in config and 'backend: "python"' in config
    assert "max_batch_size: 4" in config and "dims: [ 3 ]" in config
    assert (model_dir / "1" / "model.py").exists()


@pytest.mark.parametrize("behaviour,scale", [("double", 2.0), ("double", 3.0), ("wrong", 2.0)])
def test_model_computes_what_expected_output_says(tmp_path, pb_utils, behaviour, scale):
    model_dir = write_python_backend_model(tmp_path, "m", 2, behaviour=behaviour, scale=scale)
    model = load(model_dir / "2" / "model.py")
    model.initialize({})
    x = sample_input((4,), batch=2)
    [[out]] = model.execute([{"INPUT0": x}])
    assert out.name == "OUTPUT0" and out.array.dtype == np.float32
    np.testing.assert_array_equal(out.array, expected_output(x, behaviour, scale))
    assert behaviour != "wrong" or not np.array_equal(out.array, expected_output(x, "double"))


def test_fail_load_refuses_to_initialize(tmp_path, pb_utils):
    model = load(write_python_backend_model(tmp_path, "m", 1, behaviour="fail-load") / "1" / "model.py")
    with pytest.raises(RuntimeError, match="refusing to load"):
        model.initialize({})


def test_bad_config_replaces_the_models_config(tmp_path):
    write_python_backend_model(tmp_path, "m", 1)
    write_python_backend_model(tmp_path, "m", 2, behaviour="bad-config")
    assert "TYPE_NOT_A_TYPE" in (tmp_path / "m" / "config.pbtxt").read_text()
    assert (tmp_path / "m" / "1" / "model.py").exists()


def test_adding_a_version_keeps_the_config(tmp_path):
    write_python_backend_model(tmp_path, "m", 1, max_batch_size=2)
    write_python_backend_model(tmp_path, "m", 2, max_batch_size=16, write_config=False)
    assert "max_batch_size: 2" in (tmp_path / "m" / "config.pbtxt").read_text()


def test_unknown_behaviour_is_rejected():
    with pytest.raises(ValueError, match="unknown demo model behaviour"):
        model_source("explode")


def test_dynamic_batching_is_optional():
    assert "dynamic_batching" not in model_config_text("m")
    assert "dynamic_batching" in model_config_text("m", dynamic_batching=True)
