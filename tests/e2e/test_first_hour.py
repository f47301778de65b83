"""docs/first-hour.md, run as written against the real node: every `sh` block in order, in one
shell environment (kubectl and helm on PATH, the cluster's kubeconfig, the repository as the
working directory). Two changes, both what this node needs and nothing the guide could say
better: the `helm upgrade --install` line gets the flags that point the chart at the images built
here (and the tier's allowed host paths), and the manifest applied with `kubectl apply` is fitted
to the node (local Triton image, memory scaled), as the examples are."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from e2ehelpers import PLATFORM_VALUES

from aiops.devenv.realcluster import REPO

GUIDE = REPO / "docs" / "first-hour.md"
MODEL_DIR = Path("/var/lib/aiops/models/shout")
pytestmark = pytest.mark.timeout(1500)


def blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def localized(block: str, platform, tmp_path: Path) -> str:
    """The block with this node's two changes (see the module docstring)."""
    flags = shlex.join([*platform.operator_values(), *PLATFORM_VALUES])
    block = re.sub(r"^(helm upgrade --install .*)$", lambda m: f"{m.group(1)} {flags}", block, flags=re.M)

    def fit(match: re.Match) -> str:
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(match.group(2))
        fitted, changes = platform.fitted([manifest])
        print("fitted: " + "; ".join(changes))
        return f"{match.group(1)}\n{fitted}\nEOF\n"

    return re.sub(r"^(kubectl apply .*<<'EOF')\n(.*?)^EOF\n", fit, block, flags=re.S | re.M)


def test_every_command_of_the_first_hour_guide_works_on_the_real_node(platform, core, tmp_path):
    steps = blocks(GUIDE.read_text())
    assert len(steps) == 6, "the guide's sh blocks changed: check this test still runs each"
    assert not MODEL_DIR.exists(), f"{MODEL_DIR} exists already: remove what an earlier run left"
    env = {**os.environ, **platform.env(),
           "PATH": os.pathsep.join([str(platform.kubectl.parent), str(platform.helm.parent), os.environ["PATH"]])}
    outputs = []

    def what_the_cluster_says() -> str:
        return "\n".join(subprocess.run([str(platform.kubectl), "-n", "first-hour", *args], env=env, text=True,
                                         capture_output=True, timeout=60).stdout[-6000:] for args in (
            ["get", "modeldeployment", "shout", "-o", "yaml"], ["get", "pods", "-o", "wide"],
            ["get", "events", "--sort-by=.lastTimestamp"]))

    try:
        for step in steps:
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", localized(step, platform, tmp_path)],
                                    cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
            assert result.returncode == 0, (f"{step}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}\n"
                                            f"{what_the_cluster_says()}")
            outputs.append(result.stdout)
            if len(outputs) == 4:  # deployed: it stays Ready
                assert "shout" in result.stdout and " Ready " in result.stdout, \
                    f"{result.stdout}\n{what_the_cluster_says()}"
    finally:
        shutil.rmtree(MODEL_DIR, ignore_errors=True)
        subprocess.run([str(platform.kubectl), "delete", "namespace", "first-hour", "--ignore-not-found",
                        "--wait=false"], env=env, capture_output=True, timeout=60)
    gpus, _install, _repository, _deploy, ask, _clean = outputs
    assert re.search(r"\s[1-9]\d*\s*$", gpus.strip().splitlines()[-1]), gpus
    answer = json.loads(ask)
    assert answer["outputs"][0]["data"] == ["IS ANYONE THERE?"], answer
