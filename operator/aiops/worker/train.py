"""`aiops worker train data|train|optimize|register`: one step of a TrainingJob per Job pod.

    aiops worker train data     --spec SPEC.json --source PATH --workspace W --result R
    aiops worker train train    --spec SPEC.json --workspace W --dataset-version V --run RUN --result R
    aiops worker train optimize --spec SPEC.json --workspace W --dataset-version V --run RUN --result R
    aiops worker train register --spec SPEC.json --workspace W --repository REPO --run RUN --result R

SPEC.json is the TrainingJob spec in wire form (the whole object is accepted too). The result is
one JSON object written to `--result` (default: $AIOPS_RESULT_FILE, else /dev/termination-log,
which Kubernetes caps at 4096 bytes: results are kept under 3000) and printed as the last log line.
Exit codes: 0 ok; 1 a handled failure (`ok: false` with a CamelCase `reason` and a `message`);
2 an unexpected error (reason `WorkerError`, naming the exception).

Layout of the workspace W: `datasets/<version>/` (immutable dataset versions), `runs/<RUN>/`
(`checkpoints/`, `model/`, `optimized/`, and each step's recorded result).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

RESULT_LIMIT = 3000
MESSAGE_LIMIT = 1000
TRAIN_RESULT = "train-result.json"

log = logging.getLogger("aiops.worker.train")


class StepFailed(Exception):
    def __init__(self, reason: str, message: str, **extra: Any):
        super().__init__(message)
        self.reason, self.extra = reason, extra


# ---- arguments and results ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiops worker train", description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    default_result = os.environ.get("AIOPS_RESULT_FILE", "/dev/termination-log")

    options = {"source": "the mounted data (a file or a directory of files) or an http(s) URL",
               "dataset-version": "the dataset version the data step stored", "run": "name of this training run",
               "repository": "the mounted Triton model repository"}

    def step(name: str, help_text: str, *required: str) -> None:
        p = steps.add_parser(name, help=help_text)
        p.add_argument("--spec", required=True, help="the TrainingJob spec, wire form (camelCase JSON)")
        p.add_argument("--workspace", required=True, help="the output volume: datasets/ and runs/")
        p.add_argument("--result", default=default_result, help="where the JSON result goes")
        for option in required:
            p.add_argument(f"--{option}", required=True, help=options[option])

    step("data", "collect, preprocess, validate and store a dataset version", "source")
    step("train", "train (or resume) the classifier", "dataset-version", "run")
    step("optimize", "quantize and prune, measure before/after, apply the quality gate", "dataset-version", "run")
    step("register", "export the chosen model into the Triton repository as a new version", "repository", "run")
    return parser


def fit(result: dict[str, Any], limit: int = RESULT_LIMIT) -> str:
    """The result as compact JSON under `limit` bytes: long messages and lists are cut first."""
    result = dict(result)
    if isinstance(result.get("message"), str) and len(result["message"]) > MESSAGE_LIMIT:
        result["message"] = result["message"][:MESSAGE_LIMIT - 3] + "..."
    text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    while len(text.encode()) > limit and result.get("errors"):
        result["errors"] = result["errors"][:-1]
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > limit:
        keep = {k: result[k] for k in ("ok", "reason", "errorCount") if k in result}
        text = json.dumps({**keep, "message": str(result.get("message", ""))[:limit // 2]}, ensure_ascii=False)
    return text


def write_result(path: str, result: dict[str, Any]) -> None:
    text = fit(result)
    try:
        Path(path).write_text(text)
    except OSError as e:  # not in a pod: the log line below still carries it
        log.warning("cannot write the result to %s: %s", path, e)
    print(text, flush=True)


def load_spec(path: str):
    from pydantic import ValidationError

    from aiops.api.trainingjob import TrainingJobSpec

    try:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and "spec" in data and "dataset" not in data:
            data = data["spec"]
        return TrainingJobSpec.from_wire(data)
    except (OSError, ValueError, ValidationError) as e:
        lines = str(e).strip().splitlines()
        raise StepFailed("SpecInvalid", f"cannot read the TrainingJob spec {path}: {' '.join(lines[:3])}") from None


# ---- steps ----------------------------------------------------------------------------------------------

def run_dir(args: argparse.Namespace) -> Path:
    if not args.run or "/" in args.run or args.run.startswith("."):
        raise StepFailed("InvalidArguments", f"--run must be a plain name, got {args.run!r}")
    return Path(args.workspace) / "runs" / args.run


def dataset_split(workspace: Path, version: str, split: str) -> tuple[list[str], list[int], list[str], dict]:
    """(texts, label indices, labels, manifest) of one split of a stored dataset version."""
    from aiops.training.datastore import load_split, read_manifest

    root = workspace / "datasets"
    if "/" in version or not (root / version / "manifest.json").exists():
        raise StepFailed("DatasetVersionMissing", f"dataset version {version!r} is not in {root}")
    manifest = read_manifest(root, version)
    rows = load_split(root, version, split)
    labels = manifest["labels"]
    texts = [str(r[manifest["textField"]]) for r in rows]
    return texts, [labels.index(str(r[manifest["labelField"]])) for r in rows], labels, manifest


def step_data(args: argparse.Namespace, spec) -> dict[str, Any]:
    from aiops.training.dataset import prepare_dataset

    return prepare_dataset(spec, args.source, Path(args.workspace))


def step_train(args: argparse.Namespace, spec) -> dict[str, Any]:
    import torch

    from aiops.progress import Reporter
    from aiops.training.model import UnsupportedBaseModel
    from aiops.training.train import Faults, TrainSettings, fingerprint, is_out_of_memory, train_classifier

    if spec.training.task != "text-classification":
        raise StepFailed("UnsupportedTask", "the worker runs only the built-in task text-classification; "
                         "a training image runs its own container")
    texts, targets, labels, _ = dataset_split(Path(args.workspace), args.dataset_version, "train")
    directory = run_dir(args)
    settings = TrainSettings.from_spec(spec.training)
    recorded = directory / TRAIN_RESULT
    mark = fingerprint(settings, args.dataset_version, labels)
    if recorded.exists() and (directory / "model" / "classifier.json").exists():
        previous = json.loads(recorded.read_text())
        if previous.get("fingerprint") == mark:  # a re-run of a finished step: same answer, no work
            return {**previous, "reused": True}
    try:
        result = train_classifier(settings, texts, targets, labels, directory, args.dataset_version,
                                  faults=Faults.from_env(), report=Reporter())
    except UnsupportedBaseModel as e:
        raise StepFailed("UnsupportedBaseModel", str(e)) from None
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise StepFailed("OutOfMemory", f"out of memory at batch size {spec.training.batch_size}: use a smaller "
                         f"batchSize or \"auto\" ({str(e).splitlines()[0][:200]})") from None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TRAIN_RESULT).write_text(json.dumps(result, indent=2))
    return result


def step_optimize(args: argparse.Namespace, spec) -> dict[str, Any]:
    from aiops.training.optimize import optimize_run

    directory = run_dir(args)
    if not (directory / "model" / "classifier.json").exists():
        raise StepFailed("ModelMissing", f"no trained model in {directory / 'model'}: run the train step first")
    texts, targets, _, _ = dataset_split(Path(args.workspace), args.dataset_version, "validation")
    return optimize_run(spec.optimization, directory, texts, targets, spec.output.format)


def step_register(args: argparse.Namespace, spec) -> dict[str, Any]:
    from aiops.training.register import RegisterError, register_run

    try:
        return register_run(spec, run_dir(args), args.run, Path(args.repository))
    except RegisterError as e:
        raise StepFailed(e.reason, str(e)) from None


STEPS = {"data": step_data, "train": step_train, "optimize": step_optimize, "register": step_register}


def require_writable(path: Path, what: str, reason: str) -> None:
    """Fails the step at once, saying what to do, when a volume it writes is not writable by this
    pod's user: a hostPath directory that the kubelet created (`DirectoryOrCreate`) is root's and
    0755, and fsGroup does not apply to hostPath volumes."""
    if not path.exists() or os.access(path, os.W_OK | os.X_OK):
        return  # a path that is not there yet is made by the step (a mount always exists)
    uid, gid = os.getuid(), os.getgid()
    st = path.stat()
    found = f"it belongs to uid {st.st_uid}, gid {st.st_gid}, mode {stat.filemode(st.st_mode)}"
    raise StepFailed(reason, f"{what} ({path}) is not writable by this pod's user (uid {uid}, gid {gid}): {found}. "
                     f"For a hostPath, create the directory on the node as `install -d -o {uid} -g {gid} -m 0775 "
                     "<path>`; or use a PersistentVolumeClaim, which the pod's user can write")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        require_writable(Path(args.workspace), "the workspace", "WorkspaceNotWritable")
        if args.step == "register":
            require_writable(Path(args.repository), "the model repository", "RepositoryNotWritable")
        result = STEPS[args.step](args, load_spec(args.spec))
    except StepFailed as e:
        result = {"ok": False, "reason": e.reason, "message": str(e), **e.extra}
    except Exception as e:
        log.exception("%s step failed unexpectedly", args.step)
        write_result(args.result, {"ok": False, "reason": "WorkerError",
                                   "message": f"{type(e).__name__}: {e}"})
        return 2
    write_result(args.result, result)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
