"""Launchers: which containers run for real, and how their argv and env are rewritten (pure)."""

import pytest
from kubernetes import client

from aiops.devenv.launchers import (
    AIOPS_WORKER,
    PYTHON,
    TRITON,
    LaunchContext,
    LaunchError,
    TritonRuntime,
    expand,
    launcher_for,
    normalize_options,
    translate_arg,
    translate_path,
)

RT = TritonRuntime(binary="/wheel/bin/tritonserver", backend_dir="/state/triton/backends",
                   cache_dir="/wheel/caches", library_path=("/sp/nvidia_pytriton.libs", "/py/lib"),
                   python_bin_dir="/venv/bin")
MOUNTS = {"/models": "/data/pvc/repo", "/dev/termination-log": "/pod/c/termination-log",
          "/models/cache": "/data/cache"}


def ctx(**kw) -> LaunchContext:
    base = {"pod_ip": "127.100.3.4", "env": {"PATH": "/usr/bin", "MODEL_DIR": "/models/m"},
            "mounts": MOUNTS, "workdir": "/pod/c/work", "python": "/venv/bin/python", "triton": RT}
    return LaunchContext(**{**base, **kw})


def container(command=None, args=None, image="img", ports=()):
    return client.V1Container(name="c", image=image, command=command, args=args,
                              ports=[client.V1ContainerPort(name=n, container_port=p) for n, p in ports])


def test_triton_args_are_rewritten_for_this_machine():
    c = container(["tritonserver"], ["--model-repository=/models", "--model-control-mode", "explicit",
                                     "--http-port=9000", "--http-address=0.0.0.0",
                                     "--backend-directory=/opt/tritonserver/backends"],
                  image="nvcr.io/nvidia/tritonserver:24.08-py3", ports=[("http", 9000), ("grpc", 9001)])
    spec = TRITON.build(c, ctx())
    assert spec.argv[0] == "/wheel/bin/tritonserver"
    assert "--model-repository=/data/pvc/repo" in spec.argv
    assert "--model-control-mode=explicit" in spec.argv
    assert "--http-port=9000" in spec.argv and "--grpc-port=9001" in spec.argv
    assert "--metrics-port" not in " ".join(spec.argv)  # no port given: Triton's default 8002
    for flag in ("http", "grpc", "metrics"):
        assert spec.argv.count(f"--{flag}-address=127.100.3.4") == 1
    assert "--http-address=0.0.0.0" not in spec.argv
    assert [a for a in spec.argv if a.startswith("--backend-directory")] == [
        "--backend-directory=/state/triton/backends"]
    assert spec.env["LD_LIBRARY_PATH"] == "/sp/nvidia_pytriton.libs:/py/lib"
    assert spec.env["PATH"].split(":")[0] == "/venv/bin"  # the stub finds its python there
    assert spec.env["MODEL_DIR"] == "/data/pvc/repo/m"
    assert spec.cwd == "/pod/c/work"


def test_triton_image_with_args_only_is_triton():
    c = container(args=["tritonserver", "--model-store", "/models"], image="nvcr.io/nvidia/tritonserver:24.08-py3")
    assert launcher_for(c) is TRITON
    assert "--model-store=/data/pvc/repo" in TRITON.build(c, ctx()).argv


def test_triton_image_running_something_else_stays_imaginary():
    c = container(["sh", "-c", "tritonserver --model-repository=/models"],
                  image="nvcr.io/nvidia/tritonserver:24.08-py3")
    assert launcher_for(c) is None


def test_triton_keeps_user_ld_library_path_after_the_runtime():
    spec = TRITON.build(container(["tritonserver"]), ctx(env={"LD_LIBRARY_PATH": "/custom"}))
    assert spec.env["LD_LIBRARY_PATH"].split(":") == ["/sp/nvidia_pytriton.libs", "/py/lib", "/custom"]


def test_triton_without_runtime_says_what_to_install():
    with pytest.raises(LaunchError, match="pip install"):
        TRITON.build(container(["tritonserver"]), ctx(triton=None, triton_error="pip install nvidia-pytriton"))


def test_aiops_worker_runs_this_interpreter_with_translated_paths():
    c = container(["aiops", "worker", "validate-model"], ["--repository=/models", "/dev/termination-log", "x"])
    assert launcher_for(c) is AIOPS_WORKER
    spec = AIOPS_WORKER.build(c, ctx())
    assert spec.argv == ["/venv/bin/python", "-m", "aiops", "worker", "validate-model",
                         "--repository=/data/pvc/repo", "/pod/c/termination-log", "x"]
    assert spec.env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize("program", ["python", "python3", "/usr/bin/python3.11"])
def test_python_commands_run_this_interpreter(program):
    c = container([program, "-c", "print(1)"], ["$(MODEL_DIR)/x"])
    assert launcher_for(c) is PYTHON
    assert PYTHON.build(c, ctx()).argv == ["/venv/bin/python", "-c", "print(1)", "/data/pvc/repo/m/x"]


def test_unknown_programs_stay_imaginary():
    assert launcher_for(container(["nginx"])) is None
    assert launcher_for(container()) is None
    assert launcher_for(container(["pythonista"])) is None


def test_expand_follows_kubelet_rules():
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)", env) == "1-two-$(C)"  # unknown references stay
    assert expand("$$(A) costs $$5", env) == "$(A) costs $5"


def test_translate_path_uses_the_longest_mount():
    assert translate_path("/models/cache/x", MOUNTS) == "/data/cache/x"
    assert translate_path("/models", MOUNTS) == "/data/pvc/repo"
    assert translate_path("/modelsX/a", MOUNTS) == "/modelsX/a"
    assert translate_path("/etc/hosts", MOUNTS) == "/etc/hosts"
    assert translate_path("/m/a", {"/m/": "/local"}) == "/local/a"


def test_translate_arg_only_touches_paths():
    assert translate_arg("--out=/models/a", MOUNTS) == "--out=/data/pvc/repo/a"
    assert translate_arg("--name=models", MOUNTS) == "--name=models"
    assert translate_arg("relative/models", MOUNTS) == "relative/models"


def test_normalize_options_joins_separate_values():
    assert normalize_options(["--a", "1", "--b=2", "--flag", "--c", "3", "pos"]) == [
        "--a=1", "--b=2", "--flag", "--c=3", "pos"]
