"""Log lines as text or JSON (Kopf's formatters), each naming the custom resource it is about:
in a reconcile (`logs.about`), in a task of its own (the monitor's loop), in a worker Job (its
environment), and for library lines logged inside them. Run in a fresh interpreter: the logging
set-up is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.api.trainingjob import TrainingJobSpec
from aiops.api.vectorindex import VectorIndexSpec
from aiops.builders.ingest_job import build_ingest_job
from aiops.builders.training_job import build_step_job
from aiops.builders.validation_job import build_validation_objects

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPT = textwrap.dedent("""
    import asyncio, logging, sys
    from aiops import logs
    logs.configure("INFO", sys.argv[1])
    log = logging.getLogger("aiops.indexing")
    log.info("outside")
    with logs.about("VectorIndex", "search", "manuals", "uid-1"):
        log.warning("ingest %d started", 3)
        logging.getLogger("pymilvus").warning("a library line")
    async def monitor():
        logs.set_about("ModelDeployment", "ai", "llm")
        log.info("in the monitor's task")
    asyncio.run(monitor())
    log.info("after")
    logs.about_from_environment()
    log.error("in a worker")
""")


def run(log_format: str, **env: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, log_format], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


WORKER_ENV = {"AIOPS_OBJECT_KIND": "TrainingJob", "AIOPS_OBJECT_NAMESPACE": "ml", "AIOPS_OBJECT_NAME": "tickets"}


def test_json_lines_carry_the_object_they_are_about():
    lines = [json.loads(line) for line in run("json", **WORKER_ENV)]
    by_message = {line["message"]: line for line in lines}
    assert set(by_message) == {"outside", "ingest 3 started", "a library line", "in the monitor's task", "after",
                               "in a worker"}
    assert "object" not in by_message["outside"] and "object" not in by_message["after"]
    assert by_message["ingest 3 started"]["object"] == {
        "apiVersion": "aiops.dev/v1alpha1", "kind": "VectorIndex", "namespace": "search", "name": "manuals",
        "uid": "uid-1"}
    assert by_message["a library line"]["object"]["name"] == "manuals"
    assert by_message["in the monitor's task"]["object"]["name"] == "llm"
    assert by_message["in a worker"]["object"] == {"apiVersion": "aiops.dev/v1alpha1", "kind": "TrainingJob",
                                                   "namespace": "ml", "name": "tickets"}
    assert by_message["ingest 3 started"]["severity"] == "warn" and "timestamp" in by_message["after"]


def test_text_lines_are_prefixed_with_the_object():
    lines = run("text", **WORKER_ENV)
    assert any(line.endswith("aiops.indexing: outside") for line in lines)
    assert any(line.endswith("[search/manuals] ingest 3 started") for line in lines)
    assert any(line.endswith("[ai/llm] in the monitor's task") for line in lines)
    assert any(line.endswith("[ml/tickets] in a worker") for line in lines)


def test_an_unknown_format_is_refused_with_the_choices():
    result = subprocess.run([sys.executable, "-c", SCRIPT, "xml"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "log format must be one of text, json, not 'xml'" in result.stderr


def example_spec(name: str, kind: str):
    return next(d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d and d["kind"] == kind)["spec"]


@pytest.mark.parametrize("kind", ["VectorIndex", "TrainingJob", "ModelDeployment"])
def test_every_worker_job_logs_in_the_operators_format_about_its_object(kind):
    if kind == "VectorIndex":
        job = build_ingest_job("manuals", VectorIndexSpec.from_wire(example_spec("vectorindex.yaml", kind)), "k",
                               "http://m:19530", "img", "search", log_format="json")
    elif kind == "TrainingJob":
        spec = TrainingJobSpec.model_validate(example_spec("trainingjob.yaml", kind))
        job = build_step_job("manuals", spec, "train", "h", "img", dataset_version="v", run="r", log_format="json")
    else:
        spec = ModelDeploymentSpec.from_wire(example_spec("modeldeployment.yaml", kind))
        job = build_validation_objects("manuals", spec, 1, "abcdef", "img", log_format="json")[-1]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AIOPS_LOG_FORMAT"]["value"] == "json"
    assert (env["AIOPS_OBJECT_KIND"]["value"], env["AIOPS_OBJECT_NAME"]["value"]) == (kind, "manuals")
    assert env["AIOPS_OBJECT_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
