"""The project's container images, built offline from the repository with buildah and cached as
archives that a containerd imports.

No registry is reachable here, so every image is made from what this machine has: a Debian base
from debootstrap (the apt mirror) stands in for python:3.11-slim; the operator and worker images
are the two targets of the shipped Dockerfile; Triton, Milvus, the pod sandbox's pause container
and the local node's cluster DNS are `images/<name>/` around what the project already runs (the
nvidia-pytriton and milvus wheels, Kubernetes' pause.c, Debian's dnsmasq).

The cache: one docker-archive per image under ~/.cache/aiops/images/, named by a key that hashes
every build input (the Dockerfile, each file of the build context, the build args, the keys of the
local images it builds FROM, the recipe of files made here such as the base's root filesystem, and
the wheelhouse). An archive is written under a temporary name and renamed when complete, so an
interrupted build is never reused; a changed input gives a new key and a new build. What is
fetched while building (Debian's packages and updates, the wheels) is pinned by the key's inputs
where they name versions, and otherwise is what the mirrors had when the key was first built.

Offline pip: builds run with `--network none`. pip inside them reads only a wheelhouse made on
this machine with its own pip configuration (the local wheel folders, torch's CPU wheel among them,
and the PyPI proxy), mounted read-only at /wheels/<wheelhouse key> and named by the build args
PIP_FIND_LINKS and PIP_NO_INDEX, which the Dockerfiles default to pip's online behaviour.

buildah's storage keeps only the images (bases are loaded back from their archives when missing):
builds run without its layer cache, which would keep gigabytes of intermediate layers per worker
rebuild, and the image a rebuild replaces is removed.

Only building needs root (buildah and debootstrap); finding cached images does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from aiops import __version__
from aiops.devenv.toolchain import K8S_VERSION, cache_dir

REPO = Path(__file__).resolve().parents[3]
IMAGES_DIR = REPO / "images"
REGISTRY = "localhost/aiops"
# Bump when the way images are built changes in a way none of the hashed inputs shows.
RECIPE_VERSION = 1
KEY_LABEL = "dev.aiops.image-key"
WHEELS_MOUNT = "/wheels"
LOG_TAIL_LINES = 30


class ImageBuildError(RuntimeError):
    """An image could not be built or imported; the message says why and what to do."""


# ---- the Debian base ---------------------------------------------------------------------------

SUITE = "bookworm"
# debootstrap installs the release as it was; these bring the fixes since (python:3.11-slim has them).
UPDATE_SUITES = (f"{SUITE}-updates", f"{SUITE}-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# What the images need from Debian is in the base, so no build step needs the network.
BASE_PACKAGES = {
    "python3": "python:3.11-slim's role: Python 3.11 and its standard library",
    "python3-venv": "the images' virtualenvs, with ensurepip's bundled pip (no network needed)",
    "python-is-python3": "`python` on PATH, as in python:3.11-slim",
    "ca-certificates": "TLS for the clients in the images",
    "libpython3.11": "Triton's Python-backend stub links libpython3.11.so.1.0",
    "tini": "Milvus's entrypoint, /tini as in milvusdb/milvus",
}
# Left out of the root filesystem, as Debian's slim images leave them out: documentation, manuals,
# translations, apt's package lists and caches, install logs (copyright files stay).
SLIMMED_DIRS = ("usr/share/man", "usr/share/info", "usr/share/lintian", "var/lib/apt/lists",
                "var/cache/apt", "var/log")


def find_mirror(sources: Iterable[tuple[str, str]], suite: str = SUITE) -> str:
    """The first `deb` mirror serving `suite` with `main`, from apt source files given as
    (file name, text): one-line `.list` files and deb822 `.sources` files."""
    for name, text in sources:
        entries = _deb822_entries(text) if name.endswith(".sources") else _one_line_entries(text)
        for types, uris, suites, components in entries:
            if "deb" in types and suite in suites and "main" in components and uris:
                return uris[0].rstrip("/")
    raise ImageBuildError(f"no Debian mirror for {suite} main in /etc/apt/sources.list(.d): the base "
                          "image is made with debootstrap from the mirror apt uses")


def _one_line_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str], list[str]]]:
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 4:
            yield [words[0]], [words[1]], [words[2]], words[3:]


def _deb822_entries(text: str) -> Iterator[tuple[list[str], list[str], list[str], list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        if fields.get("enabled", ["yes"])[0].lower() != "no":
            yield fields.get("types", []), fields.get("uris", []), fields.get("suites", []), \
                fields.get("components", [])


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[tuple[str, str]]:
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    return [(f.name, f.read_text(errors="replace")) for f in files
            if f.is_file() and f.name.endswith((".list", ".sources"))]


def image_apt_sources(sources: list[tuple[str, str]]) -> str:
    """The image's own /etc/apt/sources.list.d/debian.sources: the release and its update suites
    from the mirrors this machine uses (an update suite it has no mirror for is left out)."""
    by_mirror: dict[str, list[str]] = {}
    for suite in (SUITE, *UPDATE_SUITES):
        try:
            by_mirror.setdefault(find_mirror(sources, suite), []).append(suite)
        except ImageBuildError:
            if suite == SUITE:
                raise
    return "\n".join(f"Types: deb\nURIs: {mirror}\nSuites: {' '.join(suites)}\nComponents: main\n"
                     f"Signed-By: {KEYRING}\n" for mirror, suites in by_mirror.items())


def base_recipe() -> dict[str, str]:
    return {"suite": SUITE, "variant": "minbase", "packages": ",".join(sorted(BASE_PACKAGES)),
            "mirror": find_mirror(apt_sources()), "sources": image_apt_sources(apt_sources()),
            "slimmed": ",".join(SLIMMED_DIRS), "code": code_digest(write_base_rootfs, upgrade_rootfs, slim_rootfs)}


def write_base_rootfs(context: Path, log: Path) -> None:
    """rootfs.tar for images/debian-python: debootstrap, slimmed, without /dev, /proc and /sys
    contents (the runtime provides those)."""
    require_tool("debootstrap", "apt-get install debootstrap")
    rootfs = context.parent / "rootfs"
    recipe = base_recipe()
    run_logged(["debootstrap", f"--variant={recipe['variant']}", f"--include={recipe['packages']}",
                SUITE, str(rootfs), recipe["mirror"]], log, "debootstrap")
    upgrade_rootfs(rootfs, recipe["sources"], log)
    slim_rootfs(rootfs)
    run_logged(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(context / "rootfs.tar"),
                "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "."],
               log, "tar of the base root filesystem")
    shutil.rmtree(rootfs)


def upgrade_rootfs(rootfs: Path, sources: str, log: Path) -> None:
    """The updates published since the release, with apt in the new root (chroot, host network)."""
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's, release only
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for step in (["apt-get", "update", "-q"], ["apt-get", "upgrade", "-y", "-q"], ["apt-get", "clean"]):
        run_logged(["env", "-i", *[f"{k}={v}" for k, v in env.items()], "chroot", str(rootfs), *step], log,
                   " ".join(step) + " in the base")


def slim_rootfs(rootfs: Path) -> None:
    """What a container does not need (SLIMMED_DIRS, docs, translations) out; host files reset."""
    for relative in SLIMMED_DIRS:
        for entry in (rootfs / relative).glob("*"):
            _remove(entry)
    for package in (rootfs / "usr/share/doc").glob("*"):
        if package.is_dir() and not package.is_symlink():
            for entry in package.iterdir():
                if entry.name != "copyright":
                    _remove(entry)
    for entry in (rootfs / "usr/share/locale").glob("*"):
        if entry.name != "locale.alias":
            _remove(entry)
    # The host's, copied by debootstrap; a container runtime mounts its own. /etc/hosts for the
    # runtimes that do not (buildah's RUN steps): Milvus's embedded etcd resolves "localhost".
    for name, text in (("resolv.conf", ""), ("hostname", "localhost\n"),
                       ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")):
        (rootfs / "etc" / name).write_text(text)
        (rootfs / "etc" / name).chmod(0o644)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ---- the pause container -----------------------------------------------------------------------

PAUSE_VERSION = "3.2"  # the sandbox image Kubernetes 1.20 defaults to
PAUSE_CFLAGS = ("-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}-aiops")


def pause_source() -> Path:
    """pause.c as the Kubernetes build caches it beside its binaries (see build-kubernetes.sh)."""
    return cache_dir() / f"k8s-{K8S_VERSION}" / "src" / "pause.c"


def pause_recipe() -> dict[str, str]:
    source = pause_source()
    if not source.is_file():
        raise ImageBuildError(f"{source} is missing: it comes with the Kubernetes build, run "
                              "`make toolchain` (or `aiops dev toolchain`) first")
    require_tool("gcc", "apt-get install gcc libc6-dev")
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    return {"pause.c": file_digest(source), "gcc": gcc, "glibc": os.confstr("CS_GNU_LIBC_VERSION") or "",
            "cflags": " ".join(PAUSE_CFLAGS), "code": code_digest(write_pause_binary)}


def write_pause_binary(context: Path, log: Path) -> None:
    run_logged(["gcc", *PAUSE_CFLAGS, "-o", str(context / "pause"), str(pause_source())], log, "compiling pause.c")


# ---- cluster DNS -------------------------------------------------------------------------------

# Debian's dnsmasq for the local node's cluster DNS (see aiops.devenv.clusterdns). The packages the
# base lacks are downloaded with the host's apt (the same suite as the base) into the context's
# debs/, and the Dockerfile installs them: the build itself stays offline.
CLUSTER_DNS_PACKAGES = ("dnsmasq-base",)
CLUSTER_DNS_SYNC = REPO / "operator" / "aiops" / "devenv" / "clusterdns_sync.py"


def apt_closure(packages: Iterable[str]) -> list[str]:
    """The packages and everything they could depend on (not recommends), alternatives included:
    what the key follows, since any of them may be what the base lacks."""
    out = run_checked(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                       "--no-breaks", "--no-replaces", "--no-enhances", *packages], "resolving Debian packages")
    return sorted({line.strip() for line in out.splitlines() if line and not line[0].isspace()
                   and not line.startswith("<")})


def cluster_dns_recipe() -> dict[str, str]:
    """The .deb files of the closure as apt has them now (names carry versions), not downloaded."""
    require_tool("apt-get", "a Debian host: the cluster-dns image takes dnsmasq from Debian")
    uris = run_checked(["apt-get", "download", "--print-uris", *apt_closure(CLUSTER_DNS_PACKAGES)],
                       "listing Debian packages")
    debs = sorted(line.split()[1] for line in uris.splitlines() if line.startswith("'"))
    return {"debs": " ".join(debs), "code": code_digest(apt_closure, write_cluster_dns_debs)}


def write_cluster_dns_debs(context: Path, log: Path) -> None:
    """What `apt-get install` would add to the base (apt's answer against the base's own dpkg
    status, so alternatives the base already satisfies are not dragged in), downloaded."""
    status = context.parent / "base-dpkg-status"
    status.write_bytes(read_from_image(IMAGES["debian-python"].ref, "var/lib/dpkg/status"))
    plan = run_checked(["apt-get", "install", "--simulate", "--no-install-recommends", "-o",
                        f"Dir::State::status={status}", *CLUSTER_DNS_PACKAGES], "planning the cluster-dns packages")
    missing = [line.split()[1] for line in plan.splitlines() if line.startswith("Inst ")]
    debs = context / "debs"
    debs.mkdir()
    with contextlib.chdir(debs):
        run_logged(["apt-get", "download", "-q", *missing], log, "apt-get download")


def read_from_image(ref: str, path: str) -> bytes:
    """A file of an image in buildah's storage."""
    container = run_checked(["buildah", "from", "--pull=never", ref], f"opening {ref}").strip()
    try:
        rootfs = Path(run_checked(["buildah", "mount", container], f"mounting {ref}").strip())
        return (rootfs / path).read_bytes()
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)


def cluster_dns_context() -> dict[str, Path]:
    return {**context_files(IMAGES_DIR / "cluster-dns"), "clusterdns_sync.py": CLUSTER_DNS_SYNC}


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
    return _digest({"requirements": requirements, "python": python, "machine": machine})[:16]


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
    return Wheelhouse(path, key, _digest(json.loads((path / "manifest.json").read_text())))


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


# ---- the registry ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageSpec:
    """How to build one image. `bases`: (build arg, name) of the local images it builds FROM.
    `generate` writes files made here into the staged context; `recipe` is what they are made
    from, for the key (the made files themselves, a debootstrap for one, are not reproducible).
    Bases come before the images that build FROM them."""

    name: str
    ref: str
    dockerfile: Path
    context: Callable[[], dict[str, Path]]
    target: str | None = None
    bases: tuple[tuple[str, str], ...] = ()
    wheelhouse: bool = False
    generate: Callable[[Path, Path], None] | None = None  # (context, log)
    recipe: Callable[[], dict[str, str]] | None = None


IMAGES: dict[str, ImageSpec] = {spec.name: spec for spec in (
    ImageSpec("debian-python", f"{REGISTRY}/debian-python:{SUITE}", IMAGES_DIR / "debian-python" / "Dockerfile",
              recipe_dir_context("debian-python"), generate=write_base_rootfs, recipe=base_recipe),
    ImageSpec("operator", f"{REGISTRY}/operator:{__version__}", REPO / "Dockerfile", repo_context,
              target="operator", bases=(("PYTHON_IMAGE", "debian-python"),), wheelhouse=True),
    ImageSpec("tritonserver", f"{REGISTRY}/tritonserver:2.51.0-cpu", IMAGES_DIR / "tritonserver" / "Dockerfile",
              recipe_dir_context("tritonserver"), bases=(("BASE_IMAGE", "debian-python"),), wheelhouse=True),
    ImageSpec("triton", f"{REGISTRY}/triton:{__version__}", REPO / "Dockerfile", repo_context,
              target="triton", bases=(("PYTHON_IMAGE", "debian-python"), ("TRITON_IMAGE", "tritonserver")),
              wheelhouse=True),
    ImageSpec("worker", f"{REGISTRY}/worker:{__version__}", REPO / "Dockerfile", repo_context,
              target="worker", bases=(("PYTHON_IMAGE", "debian-python"), ("TRITON_IMAGE", "tritonserver")),
              wheelhouse=True),
    ImageSpec("milvus", f"{REGISTRY}/milvus:2.3.5", IMAGES_DIR / "milvus" / "Dockerfile",
              recipe_dir_context("milvus"), bases=(("BASE_IMAGE", "debian-python"),), wheelhouse=True),
    ImageSpec("cluster-dns", f"{REGISTRY}/cluster-dns:1", IMAGES_DIR / "cluster-dns" / "Dockerfile",
              cluster_dns_context, bases=(("BASE_IMAGE", "debian-python"),), generate=write_cluster_dns_debs,
              recipe=cluster_dns_recipe),
    # Last: its source comes with the Kubernetes build, which may not have run yet.
    ImageSpec("pause", f"{REGISTRY}/pause:{PAUSE_VERSION}", IMAGES_DIR / "pause" / "Dockerfile",
              recipe_dir_context("pause"), generate=write_pause_binary, recipe=pause_recipe),
)}


def build_order(names: Iterable[str]) -> list[str]:
    """The named images and the local bases they build FROM, bases first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in IMAGES:
            raise ImageBuildError(f"no image named {name!r}; the images are: {', '.join(IMAGES)}")
        for _, base in IMAGES[name].bases:
            visit(base)
        if name not in order:
            order.append(name)

    for name in names:
        visit(name)
    return order


def spec_for(name_or_ref: str) -> ImageSpec:
    for spec in IMAGES.values():
        if name_or_ref in (spec.name, spec.ref):
            return spec
    raise ImageBuildError(f"no image {name_or_ref!r}; the images are: "
                          f"{', '.join(s.ref for s in IMAGES.values())}")


# ---- keys --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyInputs:
    """Every input of one build, as plain data: what the cache key hashes."""

    ref: str
    target: str | None
    dockerfile: str  # digest
    files: dict[str, str]  # path in the context -> digest (with the executable bit)
    build_args: dict[str, str]
    bases: dict[str, str]  # name -> key
    recipe: dict[str, str]
    wheelhouse: str | None  # manifest digest


def image_key(inputs: KeyInputs) -> str:
    return _digest({"recipe_version": RECIPE_VERSION, **asdict(inputs)})[:20]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() + ("+x" if os.access(path, os.X_OK) else "")


def code_digest(*functions: Callable) -> str:
    """What a recipe does, for its key: editing how the base's root filesystem is made rebuilds it."""
    return _digest([inspect.getsource(f) for f in functions])


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def build_args_for(spec: ImageSpec, wheelhouse: Wheelhouse | None) -> dict[str, str]:
    args = {arg: IMAGES[base].ref for arg, base in spec.bases}
    if wheelhouse is not None:
        args.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=f"{WHEELS_MOUNT}/{wheelhouse.key}")
    return args


def key_inputs(spec: ImageSpec, files: dict[str, Path], base_keys: dict[str, str],
               wheelhouse: Wheelhouse | None) -> KeyInputs:
    return KeyInputs(
        ref=spec.ref, target=spec.target, dockerfile=file_digest(spec.dockerfile),
        files={relative: file_digest(path) for relative, path in files.items()},
        build_args=build_args_for(spec, wheelhouse), bases=base_keys,
        recipe=spec.recipe() if spec.recipe else {}, wheelhouse=wheelhouse.manifest if wheelhouse else None)


# ---- buildah -----------------------------------------------------------------------------------

def bud_argv(spec: ImageSpec, key: str, build_args: dict[str, str], context: Path,
             wheelhouse: Wheelhouse | None) -> list[str]:
    """`buildah bud` for one image: no network, local bases only, the key as a label."""
    argv = ["buildah", "bud", "--format", "docker", "--network", "none", "--pull=never",
            "-f", str(spec.dockerfile), "-t", spec.ref, "--label", f"{KEY_LABEL}={key}"]
    if spec.target:
        argv += ["--target", spec.target]
    for name, value in sorted(build_args.items()):
        argv += ["--build-arg", f"{name}={value}"]
    if wheelhouse is not None:
        argv += ["-v", f"{wheelhouse.path}:{WHEELS_MOUNT}/{wheelhouse.key}:ro"]
    return [*argv, str(context)]


def stored_image(ref: str) -> dict | None:
    """buildah's record of the image under `ref` (None: not in its storage)."""
    result = subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True, text=True)
    return json.loads(result.stdout) if result.returncode == 0 else None


def storage_key(ref: str) -> str | None:
    """The key label of the image buildah's storage has under `ref` (None: not there)."""
    image = stored_image(ref)
    return (image["OCIv1"]["config"].get("Labels") or {}).get(KEY_LABEL) if image else None


def remove_replaced(ref: str, previous_id: str | None) -> None:
    """The image a rebuild untagged: nothing names it any more. Kept if something still uses it
    (a container, or an image built FROM it), which buildah refuses to remove."""
    current = stored_image(ref)
    if previous_id and current and current["FromImageID"] != previous_id:
        subprocess.run(["buildah", "rmi", previous_id], capture_output=True)


def ensure_in_storage(image: BuiltImage) -> None:
    """A base must be in buildah's storage for the builds FROM it; a cached archive is loaded
    back when the storage lost it or holds another build under the same name."""
    if storage_key(image.ref) != image.key:
        run_logged(["buildah", "pull", "--quiet", f"docker-archive:{image.archive}"],
                   image.archive.with_suffix(".pull.log"), f"loading {image.ref} into buildah's storage")


# ---- the cache ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    key: str
    archive: Path
    config_digest: str  # the image ID: what a containerd's copy is compared by
    size_bytes: int  # uncompressed: the sum of its layers
    archive_bytes: int
    build_seconds: float  # how long it took when it was built
    cached: bool = False  # found in the cache by this call


def images_cache() -> Path:
    return cache_dir() / "images"


def archive_path(name: str, key: str) -> Path:
    return images_cache() / f"{name}-{key}.tar"


def read_cached(spec: ImageSpec, key: str) -> BuiltImage | None:
    """The cached image for this key, if its archive is complete (the metadata is written after
    the archive is renamed into place, and records its size)."""
    archive = archive_path(spec.name, key)
    try:
        meta = json.loads(archive.with_suffix(".json").read_text())
        if archive.stat().st_size != meta["archive_bytes"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return BuiltImage(name=spec.name, ref=spec.ref, key=key, archive=archive, config_digest=meta["config_digest"],
                      size_bytes=meta["size_bytes"], archive_bytes=meta["archive_bytes"],
                      build_seconds=meta["build_seconds"], cached=True)


def archive_facts(archive: Path) -> tuple[str, int]:
    """(config digest, uncompressed size) of a docker-archive: its manifest names the config
    file (sha256 of the image config) and its layers, which are plain tars."""
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        (manifest,) = json.load(tar.extractfile(members["manifest.json"]))
    config = manifest["Config"].removesuffix(".json").rsplit("/", 1)[-1]
    return f"sha256:{config}", sum(members[layer].size for layer in manifest["Layers"])


def export_archive(spec: ImageSpec, key: str, log: Path) -> Path:
    archive = archive_path(spec.name, key)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    run_logged(["buildah", "push", "--quiet", spec.ref, f"docker-archive:{partial}:{spec.ref}"], log,
               f"exporting {spec.ref}")
    partial.rename(archive)
    return archive


def record(spec: ImageSpec, key: str, archive: Path, seconds: float) -> BuiltImage:
    config_digest, size = archive_facts(archive)
    image = BuiltImage(name=spec.name, ref=spec.ref, key=key, archive=archive, config_digest=config_digest,
                       size_bytes=size, archive_bytes=archive.stat().st_size, build_seconds=round(seconds, 1))
    meta = {k: v for k, v in asdict(image).items() if k not in ("archive", "cached")}
    partial = archive.with_name(f".{archive.stem}.json.partial")
    partial.write_text(json.dumps(meta, indent=1))
    partial.rename(archive.with_suffix(".json"))
    return image


def drop_older_archives(spec: ImageSpec, key: str) -> None:
    """One archive (and build log) per image: the others are earlier builds (the worker's is
    gigabytes)."""
    earlier = re.compile(rf"{re.escape(spec.name)}-(?!{key})[0-9a-f]{{20}}\.")
    for directory in (images_cache(), images_cache() / "logs"):
        for old in directory.iterdir() if directory.is_dir() else ():
            if earlier.match(old.name):
                old.unlink(missing_ok=True)


# ---- building ----------------------------------------------------------------------------------

@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One builder at a time on this machine: builds share buildah's storage and the cache."""
    images_cache().mkdir(parents=True, exist_ok=True)
    with open(images_cache() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check_can_build() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building images needs root: buildah (and debootstrap for the base) run as "
                              "root here. Run `sudo -E .venv/bin/aiops dev images`; cached images need no root")
    require_tool("buildah", "apt-get install buildah")


def build(spec: ImageSpec, key: str, files: dict[str, Path], build_args: dict[str, str],
          wheelhouse: Wheelhouse | None) -> BuiltImage:
    """Builds in a staged context (exactly the hashed files, plus the made ones) and caches the
    archive; the build's log stays in the cache's logs/."""
    log = images_cache() / "logs" / f"{spec.name}-{key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    print(f"aiops: building {spec.ref} (log: {log})", flush=True)
    started = time.monotonic()
    previous = stored_image(spec.ref)
    work = Path(tempfile.mkdtemp(prefix=f".work-{spec.name}-", dir=images_cache()))
    try:
        context = work / "context"
        context.mkdir()
        stage_context(files, context)
        if spec.generate:
            spec.generate(context, log)
        run_logged(bud_argv(spec, key, build_args, context, wheelhouse), log, f"building {spec.ref}")
        archive = export_archive(spec, key, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    image = record(spec, key, archive, time.monotonic() - started)
    drop_older_archives(spec, key)
    remove_replaced(spec.ref, previous["FromImageID"] if previous else None)
    return image


def ensure_images(names: Iterable[str] | None = None) -> dict[str, BuiltImage]:
    """The named images (all without names) and the local bases they build FROM, bases first:
    from the cache when their key is there, built otherwise."""
    order = build_order(list(names) if names else list(IMAGES))
    built: dict[str, BuiltImage] = {}
    wheelhouse: Wheelhouse | None = None
    with contextlib.ExitStack() as stack:
        locked = False
        for name in order:
            spec = IMAGES[name]
            if spec.wheelhouse and wheelhouse is None:
                wheelhouse = ensure_wheelhouse()
            uses = wheelhouse if spec.wheelhouse else None
            files = spec.context()
            inputs = key_inputs(spec, files, {base: built[base].key for _, base in spec.bases}, uses)
            key = image_key(inputs)
            image = read_cached(spec, key)
            if image is None and not locked:
                check_can_build()
                stack.enter_context(build_lock())
                locked = True
                image = read_cached(spec, key)  # another builder may have finished it meanwhile
            if image is None:
                for _, base in spec.bases:
                    ensure_in_storage(built[base])
                image = build(spec, key, files, inputs.build_args, uses)
            built[name] = image
    return built


def format_table(images: Iterable[BuiltImage]) -> str:
    rows = [("IMAGE", "SIZE", "ARCHIVE", "BUILD")]
    for image in images:
        seconds = f"{image.build_seconds:.0f} s"
        rows.append((image.ref, _megabytes(image.size_bytes), _megabytes(image.archive_bytes),
                     f"cached (built in {seconds})" if image.cached else f"built in {seconds}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# ---- containerd --------------------------------------------------------------------------------

def import_into_containerd(address: str, refs: Iterable[str] | None = None, namespace: str = "k8s.io",
                           ctr: str = "ctr") -> dict[str, str]:
    """Loads the cached archives of `refs` (image refs or names; all images without) into the
    containerd at `address`, building what is missing. An image already there with the same
    content (the same image config) is skipped. Returns ref -> "imported" or "present"."""
    specs = [spec_for(r) for r in refs] if refs is not None else list(IMAGES.values())
    built = ensure_images([spec.name for spec in specs])
    outcome: dict[str, str] = {}
    for spec in specs:
        image = built[spec.name]
        if containerd_config_digest(ctr, address, namespace, image.ref) == image.config_digest:
            outcome[image.ref] = "present"
            continue
        run_checked([ctr, "-a", address, "-n", namespace, "images", "import", str(image.archive)],
                    f"importing {image.ref} into containerd at {address}")
        found = containerd_config_digest(ctr, address, namespace, image.ref)
        if found != image.config_digest:
            raise ImageBuildError(f"containerd at {address} has {image.ref} with config {found} after importing "
                                  f"{image.archive}, whose config is {image.config_digest}")
        outcome[image.ref] = "imported"
    return outcome


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
