"""`aiops worker validate-model` against real model repositories (the demo models) and, where
samples are given, the real Triton server from the nvidia-pytriton wheel.

The runs that start Triton are independent worker processes, launched together by one
module fixture (`python -m aiops worker validate-model`, as the Job runs it), so the suite costs
about one Triton start instead of seven. Static failures run in-process, with Triton made
unstartable, which proves they never get that far.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aiops.devenv.demomodels import model_config_text, write_python_backend_model
from aiops.worker import validate_model
from aiops.worker.validate_model import instances_on_cpu, load_spec, load_validation_set, run, visible_gpus
from aiops.worker.verdict import parse_verdict

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- specs and samples -------------------------------------------------------------------------------

def tensor(name: str, values: list[float]) -> dict:
    return {"name": name, "dataType": "FP32", "shape": [1, len(values)], "data": values}


def sample(name: str, x: list[float], y: list[float] | None = None) -> dict:
    """A sample for the demo models (y = 2x unless `y` says otherwise)."""
    return {"name": name, "inputs": [tensor("INPUT0", x)],
            "expectedOutputs": [tensor("OUTPUT0", y if y is not None else [2 * v for v in x])]}


GOOD_SAMPLES = [sample("ones", [1, 1, 1, 1]), sample("ramp", [1, 2, 3, 4]), sample("negative", [-1, 0, 0.5, 8])]
# Two right, one whose expected answer is wrong: accuracy 2/3.
TWO_OF_THREE = [*GOOD_SAMPLES[:2], sample("mislabelled", [1, 2, 3, 4], [0, 0, 0, 0])]


def spec(model: str, version: int, samples: list[dict] | None = None, **validation) -> dict:
    return {"model": {"name": model, "version": version, "backend": "python",
                      "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [4]}],
                      "outputs": [{"name": "OUTPUT0", "dataType": "FP32", "dims": [4]}]},
            "repository": {"hostPath": {"path": "/var/lib/aiops/models"}},
            "validation": {"samples": samples or [], **validation}}


def make_repository(repo: Path) -> Path:
    write_python_backend_model(repo, "double", 1)
    write_python_backend_model(repo, "double", 2, behaviour="wrong", write_config=False)
    write_python_backend_model(repo, "broken", 1, behaviour="fail-load")
    write_python_backend_model(repo, "slow", 1, behaviour="slow", delay_seconds=30)
    write_python_backend_model(repo, "badcfg", 1, behaviour="bad-config")
    # A model that asks for a GPU, as real ones do; the validation Job has none.
    gpu_dir = write_python_backend_model(repo, "ongpu", 1)
    (gpu_dir / "config.pbtxt").write_text(
        model_config_text("ongpu").replace("kind: KIND_CPU", "kind: KIND_GPU gpus: [ 0 ]"))
    return repo


# ---- the real worker, with real Triton -------------------------------------------------------------------

SCENARIOS = {
    # name: (spec (as the whole object, in YAML for the first), validation set rows or None)
    "good": ({"apiVersion": "aiops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "double"},
              "spec": spec("double", 1, GOOD_SAMPLES, validationSet={"configMap": "double-set"})},
             [sample("s4", [4, 3, 2, 1]), {k: v for k, v in sample("x", [0, 0, 0, 1]).items() if k != "name"}]),
    "wrong": (spec("double", 2, GOOD_SAMPLES), None),
    "min-accuracy-met": (spec("double", 1, TWO_OF_THREE, minAccuracy=0.6), None),
    "min-accuracy-missed": (spec("double", 1, TWO_OF_THREE, minAccuracy=0.9), None),
    "fail-load": (spec("broken", 1, GOOD_SAMPLES), None),
    "gpu-config": (spec("ongpu", 1, GOOD_SAMPLES), None),
    "timeout": (spec("slow", 1, GOOD_SAMPLES, timeoutSeconds=4), None),
}


def worker_argv(spec_file: Path, repo: Path, result: Path, validation_set: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "aiops", "worker", "validate-model", "--spec", str(spec_file),
            "--repository", str(repo), "--result", str(result)]
    return argv + (["--validation-set", str(validation_set)] if validation_set else [])


def tritons_serving(repo: Path) -> list[int]:
    """Pids of tritonserver processes started on `repo` (by any worker of this module)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "tritonserver" in cmdline and f"--model-repository={repo}" in cmdline:
            pids.append(int(proc.name))
    return pids


class WorkerRun:
    def __init__(self, pid: int, code: int, result: Path, log: str):
        self.pid, self.code, self.log = pid, code, log
        self.text = result.read_text() if result.exists() else ""
        self.verdict = parse_verdict(self.text)

    def __repr__(self) -> str:
        return f"exit {self.code}: {self.text}\n--- log ---\n{self.log[-3000:]}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def outcomes(repo, tmp_path_factory) -> dict[str, WorkerRun]:
    """Every scenario's worker run as a subprocess, all at once."""
    work = tmp_path_factory.mktemp("runs")
    procs = {}
    for name, (body, rows) in SCENARIOS.items():
        spec_file = work / f"{name}.yaml"
        spec_file.write_text(yaml.safe_dump(body) if name == "good" else json.dumps(body))
        rows_file = None
        if rows is not None:
            rows_file = work / f"{name}.jsonl"
            rows_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
        log = open(work / f"{name}.log", "w+")
        procs[name] = (subprocess.Popen(worker_argv(spec_file, repo, work / f"{name}.json", rows_file),
                                        stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT), log)
    out = {}
    for name, (proc, log) in procs.items():
        code = proc.wait(timeout=240)
        log.seek(0)
        out[name] = WorkerRun(proc.pid, code, work / f"{name}.json", log.read())
        log.close()
    return out


def test_a_good_version_is_valid(outcomes):
    run_ = outcomes["good"]
    assert run_.code == 0, run_
    v = run_.verdict
    assert (v["valid"], v["retryable"], v["reason"]) == (True, False, "Validated")
    assert (v["model"], v["version"]) == ("double", 1)
    # 3 spec samples + 2 rows of the validation set (one without a name: named by its line)
    assert v["samples"] == {"total": 5, "passed": 5, "accuracy": 1.0, "failures": []}, run_
    assert v["config"]["name"] == "double" and v["config"]["backend"] == "python"
    assert "configTruncated" not in json.loads(run_.text)
    assert v["durationSeconds"] > 0
    assert run_.text in run_.log  # also the log's last line, for FallbackToLogsOnError


def test_wrong_answers_reject_the_version(outcomes):
    run_ = outcomes["wrong"]
    assert run_.code == 3, run_
    v = run_.verdict
    assert (v["valid"], v["retryable"], v["reason"]) == (False, False, "SampleMismatch")
    assert v["samples"]["passed"] == 0 and v["samples"]["total"] == 3
    assert v["samples"]["failures"][0]["sample"] == "ones"
    assert "differs by up to 1" in v["samples"]["failures"][0]["detail"]
    assert "sample 'ones'" in v["message"] and "version 2" in v["message"]


def test_min_accuracy_met_with_a_failing_sample(outcomes):
    run_ = outcomes["min-accuracy-met"]
    assert run_.code == 0, run_
    v = run_.verdict
    assert v["reason"] == "Validated" and v["samples"]["passed"] == 2
    assert v["samples"]["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert [f["sample"] for f in v["samples"]["failures"]] == ["mislabelled"]


def test_min_accuracy_missed(outcomes):
    run_ = outcomes["min-accuracy-missed"]
    assert run_.code == 3, run_
    v = run_.verdict
    assert v["reason"] == "AccuracyBelowMinimum" and "below minAccuracy 0.90" in v["message"]
    assert "mislabelled" in v["message"]


def test_a_model_that_fails_to_load(outcomes):
    run_ = outcomes["fail-load"]
    assert run_.code == 3, run_
    v = run_.verdict
    assert v["reason"] == "ModelLoadFailed" and not v["retryable"]
    assert "refusing to load" in v["message"]  # Triton's own message, with the model's error
    assert v["problems"][0]["reason"] == "ModelLoadFailed"
    assert v["samples"]["total"] == 0


def test_gpu_instance_groups_run_on_cpu_when_there_is_no_gpu(outcomes):
    run_ = outcomes["gpu-config"]
    assert run_.code == 0, run_
    assert run_.verdict["samples"]["accuracy"] == 1.0
    if visible_gpus() == 0:
        assert "ran on CPU" in run_.verdict["message"]
    assert run_.verdict["config"]["instance_group"][0]["kind"] == "KIND_GPU"  # the repository's, unchanged


def test_timeout_is_a_retryable_worker_error(outcomes):
    run_ = outcomes["timeout"]
    assert run_.code == 1, run_
    v = run_.verdict
    assert (v["valid"], v["retryable"], v["reason"]) == (False, True, "ValidationTimeout")
    assert "timeoutSeconds (4s)" in v["message"] and "stalled while" in v["message"]
    assert v["durationSeconds"] < 30


def leftover_shared_memory(worker_pid: int) -> list[Path]:
    """The Python backend's /dev/shm regions of a worker's Triton (named with the worker's pid)."""
    return list(Path("/dev/shm").glob(f"aiops-validate-{worker_pid}-*"))


def test_no_triton_outlives_its_worker(outcomes, repo):
    assert len(outcomes) == len(SCENARIOS)
    assert tritons_serving(repo) == []
    # the timeout scenario stopped Triton with a request in flight, which leaves regions behind
    assert [leftover_shared_memory(r.pid) for r in outcomes.values()] == [[]] * len(outcomes)


def test_sigterm_stops_triton_and_still_leaves_a_verdict(repo, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec("slow", 1, GOOD_SAMPLES)))
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(worker_argv(spec_file, repo, tmp_path / "result.json"), stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while "tritonserver ready" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        mine = [p for p in tritons_serving(repo) if _parent(p) == proc.pid]
        assert mine, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 1, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    verdict = parse_verdict((tmp_path / "result.json").read_text())
    assert verdict["reason"] == "ValidationInterrupted" and verdict["retryable"]
    assert not any(Path(f"/proc/{p}").exists() for p in mine)
    assert leftover_shared_memory(proc.pid) == []


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


# ---- in-process: failures that must not start Triton ----------------------------------------------------

class _NoTriton:
    def __init__(self, *args, **kwargs):
        raise AssertionError("Triton must not be started for this case")


@pytest.fixture
def no_triton(monkeypatch):
    monkeypatch.setattr(validate_model, "LocalTriton", _NoTriton)


def run_inprocess(tmp_path: Path, repo: Path, body: dict | str, rows: str | None = None) -> tuple[int, dict]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(body if isinstance(body, str) else json.dumps(body))
    rows_file = None
    if rows is not None:
        rows_file = tmp_path / "set.jsonl"
        rows_file.write_text(rows)
    result = tmp_path / "result.json"
    code = run(spec_file, repo, rows_file, result)
    return code, parse_verdict(result.read_text())


def test_bad_config_is_invalid_without_starting_triton(repo, tmp_path, no_triton):
    code, v = run_inprocess(tmp_path, repo, spec("badcfg", 1, GOOD_SAMPLES))
    assert code == 3 and v["reason"] == "ConfigInvalid" and not v["retryable"]
    assert "TYPE_NOT_A_TYPE" in v["message"] and v["config"] is None
    assert v["problems"][0]["reason"] == "ConfigInvalid"


def test_missing_version_is_invalid_without_starting_triton(repo, tmp_path, no_triton):
    code, v = run_inprocess(tmp_path, repo, spec("double", 3, GOOD_SAMPLES))
    assert code == 3 and v["reason"] == "VersionNotFound"
    assert "versions present: [1, 2]" in v["message"]
    assert v["config"]["name"] == "double"  # the config itself was fine


def test_spec_mismatch_lists_every_problem(repo, tmp_path, no_triton):
    body = spec("double", 1, GOOD_SAMPLES)
    body["model"]["backend"] = "onnxruntime"
    body["model"]["outputs"][0]["dims"] = [8]
    code, v = run_inprocess(tmp_path, repo, body)
    assert code == 3 and v["reason"] == "ConfigMismatch"
    assert len(v["problems"]) == 2 and "1 more problem" in v["message"]


def test_without_samples_the_static_checks_decide(repo, tmp_path, no_triton):
    code, v = run_inprocess(tmp_path, repo, spec("double", 2))  # the wrong model: nothing to catch it
    assert code == 0 and v["reason"] == "Validated" and "no samples" in v["message"]


def test_a_vllm_model_without_a_gpu_is_checked_statically_and_sampled_after_deployment(tmp_path, no_triton,
                                                                                        monkeypatch):
    monkeypatch.setattr(validate_model, "visible_gpus", lambda: 0)
    repo = tmp_path / "repo"
    (repo / "llm" / "1").mkdir(parents=True)
    (repo / "llm" / "config.pbtxt").write_text(
        'name: "llm"\nbackend: "vllm"\nmax_batch_size: 0\nmodel_transaction_policy { decoupled: true }\n'
        'input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]\n'
        "instance_group [ { kind: KIND_MODEL } ]\n")
    (repo / "llm" / "1" / "model.json").write_text(json.dumps({"model": "/models/w", "tensor_parallel_size": 2}))
    body = {"model": {"name": "llm", "version": 1}, "repository": {"hostPath": {"path": "/m"}},
            "resources": {"gpus": 2}, "llm": {"engine": "vllm"},
            "validation": {"samples": [{"name": "capital", "generate": {"prompt": "The capital of France is"},
                                        "expectedText": {"contains": ["Paris"]}}]}}
    code, v = run_inprocess(tmp_path, repo, body)
    assert code == 0 and v["reason"] == "InferenceSkipped" and "vllm backend needs a GPU" in v["message"]
    (repo / "llm" / "1" / "model.json").write_text(json.dumps({"model": "/models/w"}))  # built for one GPU
    code, v = run_inprocess(tmp_path, repo, body)
    assert code == 3 and v["reason"] == "TensorParallelMismatch"


def test_an_unreadable_spec_is_a_worker_error(repo, tmp_path, no_triton):
    code, v = run_inprocess(tmp_path, repo, "model: [unclosed")
    assert code == 1 and v["reason"] == "SpecUnreadable" and v["retryable"] and v["model"] is None
    code, v = run_inprocess(tmp_path, repo, json.dumps({"model": {"name": "double"}}))
    assert code == 1 and v["reason"] == "SpecUnreadable"


def test_a_bad_validation_set_line_is_named(repo, tmp_path, no_triton):
    rows = json.dumps(sample("a", [1, 2, 3, 4])) + "\n{not json\n" + json.dumps({"inputs": []}) + "\n"
    code, v = run_inprocess(tmp_path, repo, spec("double", 1, GOOD_SAMPLES), rows)
    assert code == 3 and v["reason"] == "ValidationSetInvalid"
    assert [p["message"].split(":")[0] for p in v["problems"]] == ["validation set line 2", "validation set line 3"]


def test_a_declared_validation_set_must_be_given(repo, tmp_path, no_triton):
    code, v = run_inprocess(tmp_path, repo, spec("double", 1, validationSet={"configMap": "rows"}))
    assert code == 1 and v["reason"] == "ValidationSetUnreadable" and "rows/samples.jsonl" in v["message"]


def test_triton_that_cannot_start_is_a_worker_error(repo, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "tritonserver"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'error: creating server: Internal - simulated failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    code, v = run_inprocess(tmp_path, repo, spec("double", 1, GOOD_SAMPLES))
    assert code == 1 and v["reason"] == "TritonStartFailed" and v["retryable"]
    assert "simulated failure" in v["message"] and "exited with code 1" in v["message"]


# ---- pure pieces ------------------------------------------------------------------------------------------

def test_spec_file_forms(tmp_path):
    body = spec("double", 1, GOOD_SAMPLES)
    for name, text in [("a.json", json.dumps(body)), ("b.yaml", yaml.safe_dump(body)),
                       ("c.yaml", yaml.safe_dump({"kind": "ModelDeployment", "spec": body}))]:
        (tmp_path / name).write_text(text)
        parsed = load_spec(tmp_path / name)
        assert parsed.model.name == "double" and len(parsed.validation.samples) == 3


def test_validation_set_rows_are_named_by_line(tmp_path):
    rows = tmp_path / "set.jsonl"
    named = sample("given", [1, 2, 3, 4])
    unnamed = {k: v for k, v in sample("x", [1, 1, 1, 1]).items() if k != "name"}
    rows.write_text(f"{json.dumps(named)}\n\n{json.dumps(unnamed)}\n")
    assert [s.name for s in load_validation_set(rows)] == ["given", "line-3"]


def test_instances_on_cpu():
    config = {"name": "m", "instance_group": [{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]},
                                              {"kind": "KIND_CPU", "count": 1}, {"count": 1, "gpus": [1]}]}
    moved, changed = instances_on_cpu(config)
    assert changed and moved["instance_group"] == [{"kind": "KIND_CPU", "count": 2}, {"kind": "KIND_CPU", "count": 1},
                                                   {"kind": "KIND_CPU", "count": 1}]
    assert config["instance_group"][0]["kind"] == "KIND_GPU"  # not modified in place
    cpu_only = {"instance_group": [{"kind": "KIND_CPU"}]}
    assert instances_on_cpu(cpu_only) == (cpu_only, False)
    assert instances_on_cpu({"name": "m"}) == ({"name": "m"}, False)
