"""`aiops worker validate-model`: validate a model version before it serves.

Runs in a Job pod that mounts the model repository, never in the operator: starting Triton and
running a model is slow, can crash, and may need a lot of memory. The steps:

1. Read the ModelDeployment spec (JSON or YAML; the whole object or its spec).
2. Static checks (`aiops.triton.repository.check_model_version`): the model and version exist,
   config.pbtxt parses and agrees with the spec. Any problem and the version is invalid; Triton
   is not started.
3. With samples (the spec's, plus the validation set's JSON Lines), start a private tritonserver,
   load only the requested version with the configuration the operator will load, run every
   sample, and hold the answers to the expected outputs and `minAccuracy` (unset: all must pass).
   The server is always stopped, also on errors, timeouts and SIGTERM.
4. Write one JSON verdict (schema: `aiops.worker.verdict`) to the result file — the container's
   termination message — and also print it as the last line of the log.

Exit codes: 0 valid; 3 invalid (the model is bad: reject the version); 1 the worker could not
judge (bad input from the operator, Triton would not start, timeout, interrupted): retry later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aiops.api.modeldeployment import LLM_GPU_ENGINES, ModelDeploymentSpec, ValidationSample
from aiops.builders.triton import cache_args, triton_model_config
from aiops.triton.client import TritonError, TritonServer
from aiops.triton.repository import Problem, check_model_version
from aiops.triton.samples import SampleResult, accuracy, meets_accuracy
from aiops.worker.tritonprocess import LocalTriton, TritonStartError, scratch_dir
from aiops.worker.verdict import (  # re-exported: the operator reads verdicts through this module
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_VALID,
    Outcome,
    VerdictError,
    build_verdict,
    encode_verdict,
    exit_code,
    parse_verdict,
)

__all__ = ["EXIT_ERROR", "EXIT_INVALID", "EXIT_VALID", "VerdictError", "build_verdict", "encode_verdict",
           "exit_code", "parse_verdict", "run"]

log = logging.getLogger(__name__)

# Backends that cannot run without a GPU at all: forcing their instances to CPU would only turn
# "no GPU in the validation pod" into a false ModelLoadFailed.
GPU_ONLY_BACKENDS = {"tensorrt", "tensorrt_plan"}


class Judgement(Exception):
    """Ends the validation early with this outcome."""

    def __init__(self, outcome: Outcome, reason: str, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.outcome, self.reason, self.message = outcome, reason, message
        self.problems = problems or []


# ---- inputs ----------------------------------------------------------------------------------------

def load_spec(path: Path) -> ModelDeploymentSpec:
    """The spec from a JSON or YAML file holding the ModelDeployment object or only its spec."""
    try:
        text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = yaml.safe_load(text)
        if isinstance(data, dict) and "spec" in data and "model" not in data:
            data = data["spec"]
        return ModelDeploymentSpec.from_wire(data)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as e:
        raise Judgement("error", "SpecUnreadable", f"cannot read the ModelDeployment spec {path}: "
                        f"{_first_line(e)}") from None


def load_validation_set(path: Path) -> list[ValidationSample]:
    """Samples from JSON Lines, each shaped like a spec sample ({"inputs", "expectedOutputs"}, a
    name optional: `line-<n>` by default, so a failure names the line). Blank lines are skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Judgement("error", "ValidationSetUnreadable", f"cannot read the validation set {path}: {e}") from None
    samples, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            samples.append(ValidationSample.from_wire({"name": f"line-{number}", **row}))
        except ValueError as e:  # JSONDecodeError and pydantic's ValidationError are ValueErrors
            problems.append(Problem("ValidationSetInvalid", f"validation set line {number}: {_first_line(e)}"))
    if problems:
        raise Judgement("invalid", "ValidationSetInvalid",
                        f"{len(problems)} line(s) of the validation set are not samples; first: "
                        f"{problems[0].message}", problems)
    return samples


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    lines = text.splitlines()
    if isinstance(error, ValidationError) and len(lines) > 1:
        return f"{lines[1].strip()}: {lines[2].strip() if len(lines) > 2 else ''}".rstrip(": ")
    return lines[0] if lines else type(error).__name__


# ---- the configuration Triton loads here --------------------------------------------------------------

def visible_gpus() -> int:
    """GPUs this pod can use (NVML); 0 when there is no driver, as in a GPU-less Job."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def instances_on_cpu(config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(config with GPU instance groups moved to CPU, whether any was moved).

    Why: the validation Job asks for no GPU — on the reference node the serving GPUs are all taken by
    the running Triton, so a GPU-requesting Job would sit Pending. A KIND_GPU instance group
    cannot load without a GPU, but the same model code on CPU still shows whether the version
    loads and answers correctly, which is what validation is for."""
    groups, moved = [], False
    for group in config.get("instance_group", []):
        kind = group.get("kind", "KIND_AUTO")
        if kind == "KIND_GPU" or (kind == "KIND_AUTO" and group.get("gpus")):
            group = {k: v for k, v in group.items() if k != "gpus"} | {"kind": "KIND_CPU"}
            moved = True
        groups.append(group)
    return ({**config, "instance_group": groups} if moved else config), moved


# ---- inference --------------------------------------------------------------------------------------

async def _run_sample(server: TritonServer, name: str, version: int, sample: ValidationSample) -> SampleResult:
    try:
        return await server.infer_sample(name, version, sample)
    except ValueError as e:  # the sample's own data cannot form a tensor
        return SampleResult(sample.name, False, f"the sample cannot be sent: {e}")


async def _load(triton: LocalTriton, server: TritonServer, spec: ModelDeploymentSpec, config: dict) -> None:
    name, version = spec.model.name, spec.model.version
    try:
        await server.load(name, config, timeout=spec.validation.timeout_seconds + 60)  # the overall deadline rules
    except TritonError as e:
        if e.reason == "TritonRequestFailed" or triton.process is None or triton.process.poll() is not None:
            log.warning("tritonserver log:\n%s", triton.log_tail())
            # Triton's own words (with the model's traceback), without our URL, on one line.
            detail = " ".join(str(e).removeprefix(f"loading {name} on {server.url}: ").split())
            message = f"Triton could not load version {version} of {name!r}: {detail}"
            raise Judgement("invalid", "ModelLoadFailed", message, [Problem("ModelLoadFailed", message)]) from None
        raise Judgement("error", "TritonUnreachable", f"the worker's own Triton stopped answering: {e}") from None
    health = await server.health(name, version)
    if not health.model_ready:
        raise Judgement("invalid", "ModelLoadFailed", f"Triton loaded {name!r} but version {version} is not "
                        f"ready{': ' + health.detail if health.detail else ''}")


async def infer_samples(repository: Path, spec: ModelDeploymentSpec, config: dict,
                        samples: list[ValidationSample], timeout: float) -> list[SampleResult]:
    """Every sample against the requested version in a private Triton, within `timeout` seconds."""
    phase = "starting Triton"
    with scratch_dir() as scratch:
        triton = LocalTriton(repository, Path(scratch), [*cache_args(spec), *spec.runtime.args])
        try:
            async with asyncio.timeout(timeout):
                t0 = time.monotonic()
                async with triton as server:
                    log.info("tritonserver ready at %s in %.1fs", server.url, time.monotonic() - t0)
                    phase = f"loading version {spec.model.version}"
                    await _load(triton, server, spec, config)
                    phase = "running the samples"
                    return [await _run_sample(server, spec.model.name, spec.model.version, s) for s in samples]
        except TimeoutError:
            raise Judgement("error", "ValidationTimeout", f"validation did not finish within "
                            f"spec.validation.timeoutSeconds ({spec.validation.timeout_seconds}s): it "
                            f"stalled while {phase}") from None
        except TritonStartError as e:
            raise Judgement("error", "TritonStartFailed", f"the worker could not start Triton: {e}") from None


# ---- judging ----------------------------------------------------------------------------------------

def _what(spec: ModelDeploymentSpec) -> str:
    return f"version {spec.model.version} of model {spec.model.name!r}"


def judge_results(spec: ModelDeploymentSpec, results: list[SampleResult]) -> tuple[Outcome, str, str]:
    """(outcome, reason, message) for the sample results under the spec's minAccuracy."""
    minimum = spec.validation.min_accuracy
    passed, total = sum(r.passed for r in results), len(results)
    score = accuracy(results) or 0.0
    first = next((r for r in results if not r.passed), None)
    first_text = f"; first failure: sample {first.sample!r}: {first.detail}" if first else ""
    if meets_accuracy(results, minimum):
        required = "all required" if minimum is None else f"at least {minimum:.2f} required"
        return "valid", "Validated", (f"{_what(spec)} is valid: config.pbtxt agrees with the spec and "
                                      f"{passed}/{total} samples matched (accuracy {score:.2f}, "
                                      f"{required}){first_text}")
    if minimum is None:
        return "invalid", "SampleMismatch", (f"{_what(spec)} answered {total - passed} of {total} samples "
                                             f"wrongly (all must match when minAccuracy is unset){first_text}")
    return "invalid", "AccuracyBelowMinimum", (f"{_what(spec)} scored accuracy {score:.2f} ({passed}/{total} "
                                               f"samples), below minAccuracy {minimum:.2f}{first_text}")


async def validate(spec_file: Path, repository: Path, validation_set: Path | None) -> dict[str, Any]:
    """The verdict's parts: outcome, reason, message and what it was based on."""
    started = time.monotonic()
    parts: dict[str, Any] = {}
    try:
        spec = load_spec(spec_file)
        parts.update(model=spec.model.name, version=spec.model.version)
        config, problems = check_model_version(repository, spec)
        parts["config"] = config
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise Judgement("invalid", problems[0].reason, f"{_what(spec)} is invalid: {problems[0].message}{more}",
                            problems)
        samples = list(spec.validation.samples)
        if spec.validation.validation_set and validation_set is None:
            ref = spec.validation.validation_set
            raise Judgement("error", "ValidationSetUnreadable", f"the spec names validation set "
                            f"{ref.config_map}/{ref.key} but the worker was given no --validation-set file")
        if validation_set is not None:
            samples += load_validation_set(validation_set)
        if not samples:
            raise Judgement("valid", "Validated", f"{_what(spec)} passed the static checks (config.pbtxt "
                            "agrees with the spec, the model file is there); no samples to run")
        gpus = visible_gpus()
        backend = config.get("backend") or config.get("platform") or ""
        if spec.llm is not None and spec.llm.engine in LLM_GPU_ENGINES:
            backend = spec.llm.engine
        if gpus == 0 and (backend in GPU_ONLY_BACKENDS or backend in LLM_GPU_ENGINES):
            raise Judgement("valid", "InferenceSkipped", f"{_what(spec)} passed the static checks; its "
                            f"{backend} backend needs a GPU, which the validation Job does not have, so "
                            "the samples run in the health check after deployment instead")
        load_config = triton_model_config(config, spec, [spec.model.version])
        note = ""
        if gpus == 0:
            load_config, moved = instances_on_cpu(load_config)
            note = " (its GPU instance groups ran on CPU: the validation Job has no GPU)" if moved else ""
        results = await infer_samples(repository, spec, load_config, samples,
                                      spec.validation.timeout_seconds - (time.monotonic() - started))
        parts["results"] = results
        outcome, reason, message = judge_results(spec, results)
        parts.update(outcome=outcome, reason=reason, message=message + note)
    except Judgement as j:
        parts.update(outcome=j.outcome, reason=j.reason, message=j.message, problems=j.problems)
    return parts


async def _validate_until_terminated(spec_file: Path, repository: Path, validation_set: Path | None) -> dict:
    """`validate`, but SIGTERM (Job deadline, pod deletion) cancels it, which stops Triton on the
    way out, and still yields a verdict for the termination message."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        pass
    try:
        return await validate(spec_file, repository, validation_set)
    except asyncio.CancelledError:
        return {"outcome": "error", "reason": "ValidationInterrupted",
                "message": "the validation worker was stopped (SIGTERM) before it finished"}
    finally:
        try:
            loop.remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


def run(spec_file: Path, repository: Path, validation_set: Path | None, result_file: Path) -> int:
    """The CLI entry point: validates, writes the verdict to `result_file`, returns the exit code."""
    started = time.monotonic()
    try:
        parts = asyncio.run(_validate_until_terminated(spec_file, repository, validation_set))
    except Exception as e:  # a bug here must still leave a verdict, and say it is not the model's fault
        log.exception("validation failed unexpectedly")
        parts = {"outcome": "error", "reason": "WorkerError", "message": f"the validation worker failed: {e!r}"}
    verdict = build_verdict(parts["outcome"], parts["reason"], parts["message"], model=parts.get("model"),
                            version=parts.get("version"), problems=parts.get("problems", ()),
                            results=parts.get("results"), config=parts.get("config"),
                            duration_seconds=time.monotonic() - started)
    text = encode_verdict(verdict)
    code = exit_code(verdict)
    print(text, flush=True)  # the log's last line: also there with terminationMessagePolicy FallbackToLogsOnError
    try:
        result_file.write_text(text)
    except OSError as e:
        log.error("cannot write the verdict to %s: %s", result_file, e)
        return EXIT_ERROR
    log.info("%s (%s): %s", parts["reason"], "valid" if code == EXIT_VALID else
             "retryable" if code == EXIT_ERROR else "invalid", parts["message"])
    return code
