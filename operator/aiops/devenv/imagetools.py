"""What building the project's images rests on: the errors, running the build tools with their
output logged, the build context of a directory (after its .dockerignore, as Docker sends it), and
the wheelhouse that pip reads offline inside the builds, digests, and what a containerd holds.
Used by `imagerecipes` and `images`."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiops.devenv.toolchain import cache_dir

REPO = Path(__file__).resolve().parents[3]
IMAGES_DIR = REPO / "images"
LOG_TAIL_LINES = 30


class ImageBuildError(RuntimeError):
    """An image could not be built or imported; the message says why and what to do."""


# ---- build contexts ----------------------------------------------------------------------------

def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """(is an exception, pattern) per line of a .dockerignore, in order; Docker's syntax: `*` and
    `?` within a path segment, `**` across segments, `!` re-includes."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line[1:].strip() if exception else line
        rules.append((exception, re.compile(_translate(os.path.normpath(pattern).strip("/")))))
    return rules


def _translate(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent dirs decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for exception, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            ignored = not exception
    return ignored


def context_files(root: Path) -> dict[str, Path]:
    """The files a build of `root` sends, after its .dockerignore (all of them without one).
    Ignored dirs are not walked unless an exception pattern names something inside them."""
    ignore = root / ".dockerignore"
    rules = dockerignore_rules(ignore.read_text()) if ignore.exists() else []
    exceptions = [p.pattern for exception, p in rules if exception]
    files: dict[str, Path] = {}
    for directory, dirs, names in os.walk(root):
        base = Path(directory).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if not is_ignored(prefix + d, rules)
                         or any(e.startswith(re.escape(prefix + d + "/")) for e in exceptions))
        for name in sorted(names):
            if not is_ignored(prefix + name, rules):
                files[prefix + name] = Path(directory) / name
    return files


def repo_context() -> dict[str, Path]:
    return context_files(REPO)


def recipe_dir_context(name: str) -> Callable[[], dict[str, Path]]:
    return lambda: context_files(IMAGES_DIR / name)


def stage_context(files: dict[str, Path], context: Path) -> None:
    for relative, source in files.items():
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


# ---- the wheelhouse ----------------------------------------------------------------------------

# Fetched without their dependencies by images/tritonserver and images/milvus: only the server
# binaries (and numpy 1.x for Triton's Python backend) go into those images.
IMAGE_WHEELS = ("nvidia-pytriton==0.7.0", "milvus==2.3.5", "numpy==1.26.4")


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    key: str
    manifest: str  # digest of the wheel names and sizes


def wheelhouse_requirements(pyproject: Path = REPO / "pyproject.toml") -> dict[str, list[str]]:
    """`resolved`: what the operator and worker venvs install, resolved together as pip does in
    the images. `no_deps`: the package build's requirements and the server wheels."""
    project = tomllib.loads(pyproject.read_text())
    build = project["build-system"]["requires"]
    return {"resolved": [*project["project"]["dependencies"],
                         *project["project"]["optional-dependencies"]["worker"]],
            "no_deps": [*build, *IMAGE_WHEELS]}


def wheelhouse_key(requirements: dict[str, list[str]], python: str, machine: str) -> str:
    return digest({"requirements": requirements, "python": python, "machine": machine})[:16]


def ensure_wheelhouse() -> Wheelhouse:
    """The wheelhouse for the current requirements, made once with this machine's pip (the images'
    Python is Debian's 3.11, so the wheels must be for 3.11)."""
    if sys.version_info[:2] != (3, 11):
        raise ImageBuildError(f"the images run Python 3.11 and their wheels are collected with this "
                              f"interpreter, which is {sys.version.split()[0]}: run with a 3.11 venv")
    requirements = wheelhouse_requirements()
    key = wheelhouse_key(requirements, "cp311", os.uname().machine)
    path = cache_dir() / "wheelhouse" / key
    if not (path / "manifest.json").exists():
        _make_wheelhouse(path, requirements)
    return Wheelhouse(path, key, digest(json.loads((path / "manifest.json").read_text())))


def _make_wheelhouse(path: Path, requirements: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    pip = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(partial)]
    print(f"aiops: collecting the images' wheels into {path} (once per requirements)", flush=True)
    run_logged([*pip, *requirements["resolved"]], partial.parent / f"{path.name}.log", "pip wheel")
    run_logged([*pip, "--no-deps", *requirements["no_deps"]], partial.parent / f"{path.name}.log", "pip wheel")
    manifest = {f.name: f.stat().st_size for f in sorted(partial.glob("*.whl"))}
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


# ---- digests -----------------------------------------------------------------------------------

def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() + ("+x" if os.access(path, os.X_OK) else "")


def code_digest(*functions: Callable) -> str:
    """What a recipe does, for its key: editing how the base's root filesystem is made rebuilds it."""
    return digest([inspect.getsource(f) for f in functions])


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# ---- running tools -----------------------------------------------------------------------------

def require_tool(tool: str, install: str) -> None:
    if shutil.which(tool) is None:
        raise ImageBuildError(f"{tool} is missing: {install}")


def run_logged(argv: list[str], log: Path, what: str) -> None:
    """Runs with output appended to `log`; a failure quotes the log's tail."""
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise ImageBuildError(f"{what} failed (exit {result.returncode}); the end of {log}:\n{tail}")


def run_checked(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise ImageBuildError(f"{what} failed: {' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


# ---- containerd ----------------------------------------------------------------------------------

def containerd_config_digest(ctr: str, address: str, namespace: str, ref: str) -> str | None:
    """The config digest of `ref` in a containerd (None: no such image): of its manifest, or of
    the linux/amd64 manifest of an index."""
    base = [ctr, "-a", address, "-n", namespace]
    listing = run_checked([*base, "images", "ls", f"name=={ref}"], f"listing images in containerd at {address}")
    target = listed_target(listing, ref)
    if target is None:
        return None
    document = json.loads(run_checked([*base, "content", "get", target], f"reading {ref}'s manifest"))
    if "manifests" in document:
        target = manifest_for_platform(document)
        document = json.loads(run_checked([*base, "content", "get", target], f"reading {ref}'s manifest"))
    return document["config"]["digest"]


def listed_target(listing: str, ref: str) -> str | None:
    """The target digest of `ref` in `ctr images ls` output (REF TYPE DIGEST SIZE PLATFORMS LABELS)."""
    for line in listing.splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[0] == ref:
            return words[2]
    return None


def manifest_for_platform(index: dict, os_name: str = "linux", architecture: str = "amd64") -> str:
    for manifest in index["manifests"]:
        platform = manifest.get("platform", {})
        if platform.get("os") == os_name and platform.get("architecture") == architecture:
            return manifest["digest"]
    raise ImageBuildError(f"the image index has no {os_name}/{architecture} manifest")
