"""The project's container images, built offline from the repository with buildah and cached as
archives that a containerd imports.

No registry is reachable here, so every image is made from what this machine has: a Debian base
from debootstrap (the apt mirror) stands in for python:3.11-slim; the operator and worker images
are the two targets of the shipped Dockerfile; Triton, Milvus, the pod sandbox's pause container
and the local node's cluster DNS are `images/<name>/` around what the project already runs (the
nvidia-pytriton and milvus wheels, Kubernetes' pause.c, Debian's dnsmasq).

The cache (imagecache.py): one docker-archive per image under ~/.cache/aiops/images/, named by a
key that hashes every build input (the Dockerfile, each file of the build context, the build args,
the keys of the local images it builds FROM, the recipe of files made here such as the base's root
filesystem, and the wheelhouse). An archive is written under a temporary name and renamed when complete, so an
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
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from aiops import __version__
from aiops.devenv.imagecache import (
    BuiltImage,
    archive_path,
    build_lock,
    drop_older_archives,
    images_cache,
    read_cached,
    record,
)
from aiops.devenv.imagerecipes import (
    PAUSE_VERSION,
    SUITE,
    base_recipe,
    cluster_dns_context,
    cluster_dns_recipe,
    pause_recipe,
    write_base_rootfs,
    write_cluster_dns_debs,
    write_pause_binary,
)
from aiops.devenv.imagetools import (
    IMAGES_DIR,
    REPO,
    ImageBuildError,
    Wheelhouse,
    containerd_config_digest,
    digest,
    ensure_wheelhouse,
    file_digest,
    recipe_dir_context,
    repo_context,
    require_tool,
    run_checked,
    run_logged,
    stage_context,
)

REGISTRY = "localhost/aiops"
# Bump when the way images are built changes in a way none of the hashed inputs shows.
RECIPE_VERSION = 1
KEY_LABEL = "dev.aiops.image-key"
WHEELS_MOUNT = "/wheels"


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
    return digest({"recipe_version": RECIPE_VERSION, **asdict(inputs)})[:20]


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


def export_archive(spec: ImageSpec, key: str, log: Path) -> Path:
    """Into the cache, under a temporary name until complete: an interrupted export is never reused."""
    archive = archive_path(spec.name, key)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    run_logged(["buildah", "push", "--quiet", spec.ref, f"docker-archive:{partial}:{spec.ref}"], log,
               f"exporting {spec.ref}")
    partial.rename(archive)
    return archive


# ---- building ----------------------------------------------------------------------------------

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
