"""Each built image, run the way the operator's pods run it (tests/images/runimage.py: runc, the
pod's uid, a read-only root filesystem, /tmp and /dev/shm writable, no capabilities): Triton serves
a Python-backend model, Milvus stores and finds vectors as uid 1000, the worker validates a model
with its private Triton, the operator starts without the ML stack, pause waits for its signal."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from runimage import ImageContainer, Mount

from aiops.devenv.demomodels import model_config_text, write_python_backend_model
from aiops.devenv.images import ImageBuildError

TRITON_UID = 1000  # aiops.builders.triton.RUN_AS_USER
AIOPS_UID = 10001  # the chart's runAsUser; the Jobs' too


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False


def wait_http_ok(url: str, container: ImageContainer, timeout: float, expect: bytes = b"") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert container.running(), f"exited early:\n{container.log()[-4000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and expect in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout:.0f}s:\n{container.log()[-4000:]}")


def run_to_exit(container: ImageContainer, timeout: float) -> tuple[int, str]:
    with container:
        code = container.wait(timeout)
        return code, container.log()


# ---- Triton ------------------------------------------------------------------------------------

NEEDS_TORCH = '''import torch  # not in NVIDIA's pyt-python-py3 image's Python either


class TritonPythonModel:
    def execute(self, requests):
        return []
'''


def triton_repository(root: Path) -> Path:
    repo = root / "models"
    write_python_backend_model(repo, "double", 1)
    (repo / "needs_torch" / "1").mkdir(parents=True)
    (repo / "needs_torch" / "config.pbtxt").write_text(model_config_text("needs_torch"))
    (repo / "needs_torch" / "1" / "model.py").write_text(NEEDS_TORCH)
    os.chmod(root, 0o755)
    return repo


def test_triton_serves_a_python_backend_model_as_the_operators_pods_run_it(image, tmp_path):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    built = image("tritonserver")
    repo = triton_repository(tmp_path)
    http, grpc, metrics = free_port(), free_port(), free_port()
    # The operator's command and args (aiops.builders.triton.triton_args), on free host ports.
    args = ["--model-repository=/models", "--model-control-mode=explicit", f"--http-port={http}",
            f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--allow-metrics=true", "--allow-gpu-metrics=true",
            "--metrics-config=summary_latencies=true"]
    with ImageContainer(built.ref, tmp_path / "run", command=["tritonserver"], args=args, user=(TRITON_UID,) * 2,
                        mounts=(Mount("/models", repo),)) as triton:
        wait_http_ok(f"http://127.0.0.1:{http}/v2/health/ready", triton, timeout=60)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        client.load_model("double")
        x = np.array([[1.0, 2.0, 3.0, 4.5]], dtype=np.float32)
        given = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        given.set_data_from_numpy(x)
        result = client.infer("double", [given])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * x)
        with pytest.raises(InferenceServerException):
            client.load_model("needs_torch")
        assert "No module named 'torch'" in triton.log(), triton.log()[-3000:]
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        assert 'nv_inference_request_success{model="double",version="1"} 1' in metrics_text


def test_triton_is_the_default_command_and_prints_its_options(image, tmp_path):
    """The image's CMD is `tritonserver --help` (which exits 1 after the usage, as NVIDIA's does)."""
    code, log = run_to_exit(ImageContainer(image("tritonserver").ref, tmp_path, user=(TRITON_UID,) * 2), 60)
    assert "Usage: tritonserver [options]" in log and "--model-repository" in log, log[-2000:]


# ---- Milvus ------------------------------------------------------------------------------------

MILVUS_PORTS = (19530, 9091, 2379, 2380, 53100, 19529, 19531, 21123, 22930, 21121, 13333, 21124)


def test_milvus_stores_and_searches_as_uid_1000_with_its_data_on_the_volume(image, tmp_path):
    """The StatefulSet's container as the operator builds it: its args, env and config mounts;
    the PVC's dir owned by the pod's fsGroup."""
    import yaml
    from pymilvus import MilvusClient

    from aiops.api.vectorindex import VectorIndexSpec
    from aiops.builders.milvus import build_milvus_configmap, build_milvus_statefulset

    busy = [p for p in MILVUS_PORTS if not port_free(p)]
    if busy:
        pytest.skip(f"Milvus's fixed ports are taken on this host: {busy}")
    example = next(d for d in yaml.safe_load_all(Path("examples/vectorindex.yaml").read_text())
                   if d["kind"] == "VectorIndex")
    spec = VectorIndexSpec.model_validate(example["spec"])
    pod = build_milvus_statefulset("idx", spec)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    data, configs = tmp_path / "pvc", tmp_path / "configmap"
    data.mkdir()
    configs.mkdir()
    os.chown(data, pod["securityContext"]["fsGroup"], pod["securityContext"]["fsGroup"])
    for name, text in build_milvus_configmap("idx", spec)["data"].items():
        (configs / name).write_text(text)
    mounts = tuple(Mount(m["mountPath"], data if m["name"] == "data" else configs / m["subPath"],
                         m.get("readOnly", False)) for m in container["volumeMounts"])
    uid = pod["securityContext"]["runAsUser"]
    env = {e["name"]: e["value"] for e in container["env"]}
    with ImageContainer(image("milvus").ref, tmp_path / "run",
                        args=container["args"], user=(uid, pod["securityContext"]["runAsGroup"]), env=env,
                        mounts=mounts) as milvus:
        wait_http_ok("http://127.0.0.1:9091/healthz", milvus, timeout=180, expect=b"OK")
        # Sign-in is on (the StatefulSet's env): no anonymous client gets in, root with its
        # built-in password does (the operator replaces that password first, indexing/probe.py).
        with pytest.raises(Exception, match="(?i)auth|connect"):
            MilvusClient(uri="http://127.0.0.1:19530", timeout=10).list_collections()
        client = MilvusClient(uri="http://127.0.0.1:19530", token="root:Milvus")
        client.create_collection("docs", dimension=4)
        client.insert("docs", [{"id": i, "vector": [float(i), 1.0, 0.0, 0.0]} for i in range(10)])
        client.flush("docs")
        hits = client.search("docs", data=[[3.0, 1.0, 0.0, 0.0]], limit=1)
        assert hits[0][0]["id"] == 3
        client.close()
        # Outside the volume it writes only its pid files, under /tmp (not root: no /run/milvus).
        scratch = milvus.exec("find", "/tmp", "-mindepth", "1").split()
        assert scratch and all(p.startswith("/tmp/milvus") for p in scratch), scratch
    written = {p.relative_to(data).parts[0] for p in data.rglob("*")}
    assert {"etcd", "rdb_data", "data"} <= written, written
    assert {p.stat().st_uid for p in data.rglob("*")} == {uid}, "everything on the volume is the pod's uid's"


# ---- the worker and the operator ---------------------------------------------------------------

def test_the_worker_validates_a_model_with_its_private_triton(image, tmp_path):
    repo = tmp_path / "models"
    write_python_backend_model(repo, "double", 1)
    samples = [{"name": "ramp", "inputs": [{"name": "INPUT0", "dataType": "FP32", "shape": [1, 4],
                                            "data": [1, 2, 3, 4]}],
                "expectedOutputs": [{"name": "OUTPUT0", "dataType": "FP32", "shape": [1, 4], "data": [2, 4, 6, 8]}]}]
    spec = {"model": {"name": "double", "version": 1, "backend": "python",
                      "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [4]}],
                      "outputs": [{"name": "OUTPUT0", "dataType": "FP32", "dims": [4]}]},
            "repository": {"hostPath": {"path": "/models"}}, "validation": {"samples": samples}}
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "spec.json").write_text(json.dumps(spec))
    os.chmod(tmp_path, 0o755)
    container = ImageContainer(image("worker").ref, tmp_path / "run", command=["aiops", "worker", "validate-model"],
                               args=["--spec=/spec/spec.json", "--repository=/models", "--result=/tmp/verdict.json"],
                               user=(AIOPS_UID,) * 2,
                               mounts=(Mount("/models", repo), Mount("/spec", tmp_path / "spec")))
    code, log = run_to_exit(container, timeout=300)
    verdict = json.loads(next(line for line in reversed(log.splitlines()) if line.startswith("{")))
    assert code == 0 and verdict["valid"] is True and verdict["reason"] == "Validated", log[-4000:]


def test_the_worker_embeds_with_the_packaged_model_offline(image, tmp_path):
    """What `aiops worker embed` does per batch, as uid 10001 on a read-only root: the model is in
    the image (HF_HUB_OFFLINE), torch is the CPU build."""
    script = ("import torch; from aiops.vectors.embedder import Embedder, PACKAGED_MODELS; "
              "e = Embedder(sorted(PACKAGED_MODELS)[0], device='cpu'); v = e.encode(['a ticket', 'another']); "
              "print('embedded', v.shape, torch.__version__)")
    container = ImageContainer(image("worker").ref, tmp_path, command=["python", "-c", script], user=(AIOPS_UID,) * 2)
    code, log = run_to_exit(container, timeout=300)
    assert code == 0 and "embedded (2, 384) 2.13.0+cpu" in log, log[-3000:]


def test_the_operator_image_starts_without_the_ml_stack(image, tmp_path):
    check = ("import importlib.util, sys, aiops.cli, aiops.runner; "
             "assert 'torch' not in sys.modules; "
             "missing = [m for m in ('torch', 'sentence_transformers', 'pytriton', 'milvus', 'milvus_lite') "
             "if importlib.util.find_spec(m)]; assert not missing, missing; print('operator-ok')")
    container = ImageContainer(image("operator").ref, tmp_path, command=["python", "-c", check],
                               user=(AIOPS_UID,) * 2)
    code, log = run_to_exit(container, timeout=120)
    assert code == 0 and "operator-ok" in log, log[-3000:]
    code, log = run_to_exit(ImageContainer(image("operator").ref, tmp_path / "help", args=["--help"],
                                           user=(AIOPS_UID,) * 2), timeout=60)
    assert code == 0 and "run the operator" in log, log[-3000:]


def test_the_base_makes_working_venvs_as_any_user(image, tmp_path):
    script = "python -m venv /tmp/v && /tmp/v/bin/python -c 'import ssl, sqlite3, ensurepip; print(\"base-ok\")'"
    container = ImageContainer(image("debian-python").ref, tmp_path, command=["sh", "-c", script],
                               user=(4242, 4242))
    code, log = run_to_exit(container, timeout=120)
    assert code == 0 and "base-ok" in log, log[-3000:]


# ---- pause -------------------------------------------------------------------------------------

def test_pause_waits_and_stops_on_sigterm(image, tmp_path):
    import signal

    try:
        built = image("pause")
    except ImageBuildError as e:
        pytest.skip(str(e))
    with ImageContainer(built.ref, tmp_path, user=(65535, 65535)) as pause:
        time.sleep(1)
        assert pause.running(), pause.log()
        pause.signal(signal.SIGTERM)
        assert pause.wait(10) == 0
    assert "Shutting down, got signal" in pause.log()
