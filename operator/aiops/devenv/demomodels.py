"""Small real models for the real Triton server: tests and the dev demo build them on the spot.

Each is a Python-backend model in Triton's repository layout (`<repo>/<name>/config.pbtxt`,
`<repo>/<name>/<version>/model.py`) computing `y = scale * x` with numpy, so an inference result
is checkable to the digit, and a version that computes something else is caught. Behaviours make
the broken versions that rollback tests need, each failing the way real models fail:

- `double`: y = scale * x (scale 2 by default; give v2 another scale to tell versions apart)
- `wrong`: y = scale * x + 1, loads and answers, but wrongly (caught by sample checks)
- `slow`: answers correctly after `delay_seconds` (caught by latency budgets and timeouts)
- `fail-load`: raises in `initialize`, so Triton refuses to load the version
- `bad-config`: writes a config.pbtxt Triton cannot parse (the config is per model, not per
  version: this breaks every version of the model until a good config is written back)

The pure builders (`model_config_text`, `model_source`) return text; `write_python_backend_model`
writes the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BEHAVIOURS = ("double", "wrong", "slow", "fail-load", "bad-config")
INPUT, OUTPUT = "INPUT0", "OUTPUT0"


def model_config_text(name: str, *, max_batch_size: int = 8, dims: tuple[int, ...] = (4,),
                      input_name: str = INPUT, output_name: str = OUTPUT,
                      instance_count: int = 1, dynamic_batching: bool = False) -> str:
    """A config.pbtxt for an FP32 vector in, FP32 vector out Python-backend model on CPU."""
    shape = ", ".join(str(d) for d in dims)
    batching = "dynamic_batching { max_queue_delay_microseconds: 100 }\n" if dynamic_batching else ""
    return (
        f'name: "{name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "{input_name}" data_type: TYPE_FP32 dims: [ {shape} ] }} ]\n'
        f'output [ {{ name: "{output_name}" data_type: TYPE_FP32 dims: [ {shape} ] }} ]\n'
        f"instance_group [ {{ kind: KIND_CPU count: {instance_count} }} ]\n"
        f"{batching}")


def bad_config_text(name: str) -> str:
    """A config Triton rejects when parsing (an unknown data type)."""
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\n'
            'input [ { name: "INPUT0" data_type: TYPE_NOT_A_TYPE dims: [ 4 ] } ]\n')


def model_source(behaviour: str = "double", *, scale: float = 2.0, delay_seconds: float = 2.0,
                 input_name: str = INPUT, output_name: str = OUTPUT) -> str:
    """model.py for the Python backend. Only numpy: the stub runs it in the project's venv."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown demo model behaviour {behaviour!r}; one of {BEHAVIOURS}")
    offset = 1.0 if behaviour == "wrong" else 0.0
    delay = delay_seconds if behaviour == "slow" else 0.0
    fail = behaviour == "fail-load"
    return f'''"""Demo model built by aiops.devenv.demomodels: behaviour {behaviour!r}."""
import time

import numpy as np
import triton_python_backend_utils as pb_utils

SCALE, OFFSET, DELAY = {scale!r}, {offset!r}, {delay!r}


class TritonPythonModel:
    def initialize(self, args):
        if {fail!r}:
            raise RuntimeError("demo model {behaviour}: refusing to load (simulated broken version)")

    def execute(self, requests):
        if DELAY:
            time.sleep(DELAY)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, {input_name!r}).as_numpy()
            y = (x * SCALE + OFFSET).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor({output_name!r}, y)]))
        return responses
'''


def write_python_backend_model(repo: Path, name: str, version: int = 1, *,
                               behaviour: str = "double", scale: float = 2.0,
                               delay_seconds: float = 2.0, max_batch_size: int = 8,
                               dims: tuple[int, ...] = (4,), input_name: str = INPUT,
                               output_name: str = OUTPUT, write_config: bool = True,
                               dynamic_batching: bool = False) -> Path:
    """Writes (or adds) `version` of model `name` under `repo`; returns the model's directory.
    `write_config=False` adds a version beside existing ones without touching config.pbtxt."""
    model_dir = Path(repo) / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    source = model_source("double" if behaviour == "bad-config" else behaviour, scale=scale,
                          delay_seconds=delay_seconds, input_name=input_name, output_name=output_name)
    (version_dir / "model.py").write_text(source)
    if behaviour == "bad-config":
        (model_dir / "config.pbtxt").write_text(bad_config_text(name))
    elif write_config:
        (model_dir / "config.pbtxt").write_text(model_config_text(
            name, max_batch_size=max_batch_size, dims=dims, input_name=input_name,
            output_name=output_name, dynamic_batching=dynamic_batching))
    return model_dir


def sample_input(dims: tuple[int, ...] = (4,), batch: int = 1) -> np.ndarray:
    """A deterministic batch: 1, 2, 3, ... as FP32."""
    count = batch * int(np.prod(dims))
    return np.arange(1, count + 1, dtype=np.float32).reshape((batch, *dims))


def expected_output(x: np.ndarray, behaviour: str = "double", scale: float = 2.0) -> np.ndarray:
    """What the model of `behaviour` answers for `x` (for `wrong`: what it wrongly answers)."""
    return (x * scale + (1.0 if behaviour == "wrong" else 0.0)).astype(np.float32)
