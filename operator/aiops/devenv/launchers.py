"""Launchers: how the simulated node turns a container it knows into a real local process.

A real kubelet runs the container's image; this node has no container runtime, so for a few images
it knows it runs the same program from the local Python environment instead: the real NVIDIA
`tritonserver` (bundled in the `nvidia-pytriton` wheel), a standalone Milvus for the Milvus image
(the PyPI `milvus` package's server, see milvusserver.py), the project's own worker (`aiops ...`)
and plain `python` commands. Everything here is pure: a launcher reads the container (and a
`LaunchContext` the caller resolved: env, mounts, pod IP) and returns the argv and env to run, so
the rewriting rules are tested without starting anything.

Containers no launcher matches stay imaginary (Running/Ready as before).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client

TERMINATION_ENV = "AIOPS_TERMINATION_MESSAGE_PATH"  # where, on this machine, to write the result


class LaunchError(RuntimeError):
    """A launcher matched the container but cannot run it here; the message says what to install."""


@dataclass(frozen=True)
class TritonRuntime:
    """Where the wheel's Triton lives (found by `tritonruntime.locate_triton_runtime`)."""

    binary: str
    backend_dir: str  # a backends/ dir whose python/ holds the stub for this interpreter
    cache_dir: str
    library_path: tuple[str, ...]  # prepended to LD_LIBRARY_PATH (see tritonruntime for why)
    python_bin_dir: str  # first on PATH: the Python-backend stub finds its environment there


@dataclass(frozen=True)
class LaunchContext:
    """What the caller resolved for one container of one pod, as paths on this machine."""

    pod_ip: str
    env: dict[str, str]  # the container's environment, valueFrom resolved, before launcher additions
    mounts: dict[str, str]  # container path -> local path (volumes and the termination message file)
    workdir: str  # local working directory
    python: str  # interpreter for `python` and `aiops` commands (the agent's own)
    triton: TritonRuntime | None = None
    triton_error: str = ""  # why `triton` is None, for the container's status


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str


@dataclass(frozen=True)
class Launcher:
    name: str
    matches: Callable[[client.V1Container], bool]
    build: Callable[[client.V1Container, LaunchContext], LaunchSpec]


# ---- helpers shared by launchers -------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env: unknown references stay as they
    are and `$$` escapes a dollar, exactly as the kubelet does."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def translate_path(path: str, mounts: dict[str, str]) -> str:
    """A path as the container sees it -> the local path behind the longest matching mount."""
    best, local = "", ""
    for mount, target in mounts.items():
        m = mount.rstrip("/") or "/"
        if (path == m or path.startswith(m.rstrip("/") + "/")) and len(m) > len(best):
            best, local = m, target
    if not best:
        return path
    rest = path[len(best):].lstrip("/")
    return os.path.join(local, rest) if rest else local


def translate_arg(arg: str, mounts: dict[str, str]) -> str:
    """Translates `/abs/path` and `--flag=/abs/path` args; anything else is left alone."""
    if arg.startswith("/"):
        return translate_path(arg, mounts)
    if arg.startswith("-") and "=" in arg:
        flag, _, value = arg.partition("=")
        if value.startswith("/"):
            return f"{flag}={translate_path(value, mounts)}"
    return arg


def full_command(container: client.V1Container, env: dict[str, str]) -> list[str]:
    """command + args with `$(VAR)` expanded; an image's default entrypoint is unknown here, so a
    container without `command` is taken to run its first arg."""
    return [expand(a, env) for a in [*(container.command or []), *(container.args or [])]]


def _program(container: client.V1Container) -> str:
    argv = [*(container.command or []), *(container.args or [])]
    return os.path.basename(argv[0]) if argv else ""


def _process_env(ctx: LaunchContext, **extra: str) -> dict[str, str]:
    env = {k: translate_arg(v, ctx.mounts) if v.startswith("/") else v for k, v in ctx.env.items()}
    return {**env, **extra}


# ---- tritonserver ------------------------------------------------------------------------------

# Options the node owns: where the server listens and where its backends are on this machine.
_TRITON_OWNED = ("--http-address", "--grpc-address", "--metrics-address", "--backend-directory",
                 "--cache-directory")
_TRITON_PATHS = ("--model-repository", "--model-store")
_TRITON_PORTS = {"http": ("--http-port", 8000), "grpc": ("--grpc-port", 8001),
                 "metrics": ("--metrics-port", 8002)}


def is_triton(container: client.V1Container) -> bool:
    """`tritonserver ...` in any image, or a Triton image given only options (or nothing): a
    Triton image running something else (`sh -c ...`) is not understood and stays imaginary."""
    program = _program(container)
    if program == "tritonserver":
        return True
    return "tritonserver" in (container.image or "") and (program == "" or program.startswith("-"))


def normalize_options(argv: list[str]) -> list[str]:
    """`--opt value` -> `--opt=value`, so each option is one token (Triton takes both forms)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def triton_argv(container: client.V1Container, ctx: LaunchContext, runtime: TritonRuntime) -> list[str]:
    argv = full_command(container, ctx.env)
    if argv and os.path.basename(argv[0]) == "tritonserver":
        argv = argv[1:]
    out = [runtime.binary]
    seen: set[str] = set()
    for opt in normalize_options(argv):
        name, _, value = opt.partition("=")
        seen.add(name)
        if name in _TRITON_OWNED:
            continue
        if name in _TRITON_PATHS and value.startswith("/"):
            opt = f"{name}={translate_path(value, ctx.mounts)}"
        out.append(opt)
    ports = {p.name: p.container_port for p in container.ports or [] if p.name}
    for port_name, (flag, _default) in _TRITON_PORTS.items():
        if flag not in seen and port_name in ports:
            out.append(f"{flag}={ports[port_name]}")
    # Every pod has its own loopback IP, so Triton's default ports never collide between pods.
    out += [f"--http-address={ctx.pod_ip}", f"--grpc-address={ctx.pod_ip}",
            f"--metrics-address={ctx.pod_ip}", f"--backend-directory={runtime.backend_dir}",
            f"--cache-directory={runtime.cache_dir}"]
    return out


def triton_env(ctx: LaunchContext, runtime: TritonRuntime) -> dict[str, str]:
    env = _process_env(ctx)
    lib = [*runtime.library_path, *([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else [])]
    path = [runtime.python_bin_dir, *([env["PATH"]] if env.get("PATH") else [])]
    return {**env, "LD_LIBRARY_PATH": ":".join(lib), "PATH": ":".join(path)}


def build_triton(container: client.V1Container, ctx: LaunchContext) -> LaunchSpec:
    if ctx.triton is None:
        raise LaunchError(ctx.triton_error or "tritonserver is not available on this node")
    return LaunchSpec(triton_argv(container, ctx, ctx.triton), triton_env(ctx, ctx.triton), ctx.workdir)


# ---- the project's worker and plain python -------------------------------------------------------

def is_aiops(container: client.V1Container) -> bool:
    return _program(container) == "aiops"


def build_aiops(container: client.V1Container, ctx: LaunchContext) -> LaunchSpec:
    argv = full_command(container, ctx.env)[1:]
    return LaunchSpec([ctx.python, "-m", "aiops", *(translate_arg(a, ctx.mounts) for a in argv)],
                      _process_env(ctx, PYTHONUNBUFFERED="1"), ctx.workdir)


_PYTHON = re.compile(r"python(3(\.\d+)?)?")


def is_python(container: client.V1Container) -> bool:
    return bool(_PYTHON.fullmatch(_program(container)))


def build_python(container: client.V1Container, ctx: LaunchContext) -> LaunchSpec:
    argv = full_command(container, ctx.env)[1:]
    return LaunchSpec([ctx.python, *(translate_arg(a, ctx.mounts) for a in argv)],
                      _process_env(ctx, PYTHONUNBUFFERED="1"), ctx.workdir)


# ---- Milvus standalone ---------------------------------------------------------------------------

MILVUS_DATA_PATH = "/var/lib/milvus"  # the official image's data dir (etcd, rocksmq, segments)
MILVUS_PORT, MILVUS_HEALTH_PORT = 19530, 9091  # where the image's Milvus listens: gRPC, /healthz+/metrics
_MILVUS_AUTH_ENV = "COMMON_SECURITY_AUTHORIZATIONENABLED"  # Milvus's env override of the config key


def is_milvus(container: client.V1Container) -> bool:
    """The Milvus image running `milvus run standalone` (or its entrypoint with no command);
    other Milvus roles (cluster mode) and shells stay imaginary."""
    if "milvusdb/milvus" not in (container.image or ""):
        return False
    argv = [os.path.basename(a) for a in [*(container.command or []), *(container.args or [])]]
    return not argv or argv == ["milvus", "run", "standalone"]


def build_milvus(container: client.V1Container, ctx: LaunchContext) -> LaunchSpec:
    """Runs the embedded Milvus 2.3 server on the pod IP's 19530 and 9091, with its data where
    the container's /var/lib/milvus is mounted (the PVC), else in the container's own dir (lost
    with the pod, as the container's filesystem would be)."""
    if importlib.util.find_spec("milvus") is None:
        raise LaunchError("Milvus pods run the PyPI `milvus` package's standalone server, which is "
                          "not installed: install the project's `devenv` extra (pip install -e '.[devenv]')")
    base = translate_path(MILVUS_DATA_PATH, ctx.mounts)
    if base == MILVUS_DATA_PATH:
        base = os.path.join(ctx.workdir, "var-lib-milvus")
    argv = [ctx.python, "-m", "aiops.devenv.milvusserver", "--base-dir", base, "--host", ctx.pod_ip,
            "--port", str(MILVUS_PORT), "--health-port", str(MILVUS_HEALTH_PORT)]
    if ctx.env.get(_MILVUS_AUTH_ENV, "").lower() == "true":
        argv.append("--authorization")
    # The embedded server is always standalone with embedded etcd and local storage, which is what
    # these variables select in the real image; their ports and config file are the server's own.
    env = {k: v for k, v in _process_env(ctx, PYTHONUNBUFFERED="1").items()
           if not k.startswith("ETCD_") and k != "COMMON_STORAGETYPE"}
    return LaunchSpec(argv, env, ctx.workdir)


TRITON = Launcher("tritonserver", is_triton, build_triton)
MILVUS = Launcher("milvus", is_milvus, build_milvus)
AIOPS_WORKER = Launcher("aiops", is_aiops, build_aiops)
PYTHON = Launcher("python", is_python, build_python)
DEFAULT_LAUNCHERS: tuple[Launcher, ...] = (TRITON, MILVUS, AIOPS_WORKER, PYTHON)


def launcher_for(container: client.V1Container,
                 launchers: tuple[Launcher, ...] | list[Launcher] = DEFAULT_LAUNCHERS) -> Launcher | None:
    return next((launcher for launcher in launchers if launcher.matches(container)), None)
