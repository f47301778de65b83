"""Finds the real `tritonserver` of the `nvidia-pytriton` wheel and makes it runnable on CPU.

The wheel ships NVIDIA's Triton 2.51 (`pytriton/tritonserver/bin/tritonserver`), its shared
libraries (`nvidia_pytriton.libs/`) and the Python backend, but the backend's stub process
(`triton_python_backend_stub`) is kept per Python version under `python_backend_stubs/<x.y>/`
and must sit in `backends/python/` beside `libtriton_python.so`. PyTriton copies the whole server
into a workspace for that; we link the three files into a backends dir of our own instead, so the
installed wheel is never modified.

Three things make the Python backend work outside NVIDIA's container:
- The stub embeds libpython and finds its environment the way `python3` would: it searches PATH
  for `python3`. With this interpreter's bin dir first on PATH, the stub uses this very virtual
  environment (its numpy, its packages), and models' `model.py` import what the project has.
- The stub links `libpython3.x.so.1.0`; found through the system path, that is Debian's libpython
  (3.11.2), which then runs pyenv's 3.11.7 standard library and fails with
  `'_thread.RLock' object has no attribute '_recursion_count'`. Putting this interpreter's own
  `<base prefix>/lib` on LD_LIBRARY_PATH (after the wheel's libs) makes the two match.
- The stub was built against numpy 1.x: with numpy 2 in the environment it loads models but
  reads input tensors wrongly (every element becomes the first) and rejects outputs. The wheel
  itself requires `numpy<2`, so installing it in the project's environment (the `devenv` extra) makes
  pip resolve numpy 1.26 for the whole venv, here and in CI; `locate_triton_runtime` checks that
  this still holds and says so plainly when it does not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from aiops.devenv.launchers import TritonRuntime
from aiops.devenv.toolchain import cache_dir

WHEEL = "nvidia-pytriton"


class TritonUnavailable(RuntimeError):
    """The wheel or a working Python-backend environment is missing; the message says what to do."""


def wheel_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonUnavailable(f"tritonserver is not installed: pip install '{WHEEL}' "
                                "(part of the project's `devenv` extra: pip install -e '.[devenv]')")
    return Path(next(iter(spec.submodule_search_locations)))


def python_library_dirs() -> tuple[str, ...]:
    """This interpreter's libpython directory, when it has a shared one (pyenv, python.org
    builds); a distribution's python keeps it on the system path, where the loader finds it."""
    lib = Path(sys.base_prefix) / "lib"
    name = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so"
    return (str(lib),) if any(lib.glob(name + "*")) else ()


def check_numpy() -> None:
    try:
        version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        raise TritonUnavailable("numpy is missing; the Python backend needs numpy<2") from None
    if int(version.split(".")[0]) >= 2:
        raise TritonUnavailable(
            f"numpy {version} is installed, but Triton's Python-backend stub (nvidia-pytriton) was "
            "built for numpy 1.x and corrupts tensors with numpy 2: pip install 'numpy<2'")


def prepare_backend_dir(root: Path, server: Path) -> Path:
    """`<root>/backends/python/` with the wheel's backend and this Python's stub, linked.
    Built beside and renamed into place, so a half-made dir is never used."""
    backends = root / "backends"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonUnavailable(f"{WHEEL} has no Python-backend stub for Python {version} ({stub})")
    sources = (server / "backends" / "python" / "libtriton_python.so",
               server / "backends" / "python" / "triton_python_backend_utils.py", stub)
    links = [backends / "python" / s.name for s in sources]
    if all(link.resolve() == s.resolve() for link, s in zip(links, sources)):
        return backends
    shutil.rmtree(backends, ignore_errors=True)  # made for another install of the wheel
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".backends-", dir=root))
    (tmp / "python").mkdir()
    for source in sources:
        os.symlink(source, tmp / "python" / source.name)
    try:
        tmp.rename(backends)
    except OSError:  # another agent on this state dir won the race: theirs is as good
        pass
    return backends


def locate_triton_runtime(state_dir: Path) -> TritonRuntime:
    """The runtime the Triton launcher needs; raises TritonUnavailable with what to install."""
    server = wheel_dir() / "tritonserver"
    binary = server / "bin" / "tritonserver"
    if not os.access(binary, os.X_OK):
        raise TritonUnavailable(f"{binary} is missing or not executable; reinstall {WHEEL}")
    check_numpy()
    libs = server.parent.parent / "nvidia_pytriton.libs"
    return TritonRuntime(
        binary=str(binary), backend_dir=str(prepare_backend_dir(state_dir / "triton", server)),
        cache_dir=str(server / "caches"), library_path=(str(libs), *python_library_dirs()),
        python_bin_dir=str(Path(sys.executable).parent))


# ---- `tritonserver` on PATH ------------------------------------------------------------------------

def triton_command_dir() -> Path:
    """Where this environment's `tritonserver` command lives: one per interpreter prefix, so two
    checkouts (two virtualenvs) sharing the cache never rewrite each other's."""
    return cache_dir() / "triton-command" / hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]


def install_triton_command(directory: Path | None = None) -> Path:
    """Writes `<directory>/tritonserver`: the wheel's server with the environment, backend and
    cache directories worked out above, so anything that finds `tritonserver` on PATH runs it as
    NVIDIA's image would run its own. Returns the directory; raises TritonUnavailable."""
    directory = directory or triton_command_dir()
    runtime = locate_triton_runtime(directory)
    q = shlex.quote
    script = (
        "#!/bin/sh\n"
        "# The nvidia-pytriton wheel's tritonserver, set up to run on this machine\n"
        "# (written by aiops.devenv.tritonruntime; rewritten when the environment changes).\n"
        f"export LD_LIBRARY_PATH={q(':'.join(runtime.library_path))}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n"
        f"export PATH={q(runtime.python_bin_dir)}:\"$PATH\"\n"
        f"exec {q(runtime.binary)} --backend-directory={q(runtime.backend_dir)} "
        f"--cache-directory={q(runtime.cache_dir)} \"$@\"\n")
    command = directory / "tritonserver"
    if not command.exists() or command.read_text() != script:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".tritonserver.{os.getpid()}"
        tmp.write_text(script)
        tmp.chmod(0o755)
        tmp.replace(command)
    return directory


def put_triton_on_path() -> str | None:
    """Puts the wheel's `tritonserver` first on this process's PATH (and so its children's: the
    validation worker, the simulated node's pods) unless one is there already. Returns why it
    could not, or None."""
    if shutil.which("tritonserver"):
        return None
    try:
        directory = install_triton_command()
    except TritonUnavailable as e:
        return str(e)
    os.environ["PATH"] = f"{directory}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    return None
