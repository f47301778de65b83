"""Helpers of the end-to-end tests (a module, not the conftest, so tests can import it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client


def wait_until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
               detail: Callable[[], Any] | None = None) -> Any:
    """Polls fn until it returns something truthy; on timeout fails with what was awaited, the
    last value seen and, if given, `detail()` (e.g. the object's status)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except client.ApiException as e:
            last = f"ApiException {e.status} {e.reason}"
        if time.monotonic() > deadline:
            extra = f"\n{detail()!r}" if detail else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}{extra}")
        time.sleep(interval)


GROUP, VERSION = "aiops.dev", "v1alpha1"
HOST_DIRS = Path("/var/lib/aiops-e2e")  # the tests' node directories
# The tier's chart values besides the local images: the tests' node directories may be mounted.
PLATFORM_VALUES = ("--set", f"hostPaths.allowed={{/var/lib/aiops,{HOST_DIRS}}}")


def status_of(custom: client.CustomObjectsApi, ns: str, plural: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


MODEL = '''import numpy as np
import triton_python_backend_utils as pb_utils

ANSWER = {answer!r}


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            labels = np.array([[ANSWER if b"charged" in row[0] else b"other"] for row in texts], dtype=np.object_)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("LABEL", labels)]))
        return out
'''


def write_model(repo: Path, version: int = 1, answer: bytes = b"billing") -> None:
    """A version of the example's ticket classifier (Python backend, numpy only) in a Triton
    repository on the node, readable by Triton's uid. `answer`: what it says to a billing text (a
    wrong one makes a version that fails validation)."""
    model = repo / "ticket-classifier"
    (model / str(version)).mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'name: "ticket-classifier"\nbackend: "python"\nmax_batch_size: 32\n'
        'input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'instance_group [ { kind: KIND_CPU count: 1 } ]\n')
    (model / str(version) / "model.py").write_text(MODEL.format(answer=answer))
    for path in (repo, *repo.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
