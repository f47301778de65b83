"""The files the images' builds need that are made on this machine, each with a recipe (what
its cache key hashes): the Debian base's root filesystem (debootstrap from the apt mirror, upgraded
and slimmed), the pod sandbox's pause binary (Kubernetes' pause.c), and Debian's dnsmasq packages
for the local node's cluster DNS."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from aiops.devenv.imagetools import (
    IMAGES_DIR,
    REPO,
    ImageBuildError,
    code_digest,
    context_files,
    file_digest,
    require_tool,
    run_checked,
    run_logged,
)
from aiops.devenv.toolchain import K8S_VERSION, cache_dir

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
    from aiops.devenv.images import IMAGES  # the registry names this recipe's image: imported at use

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
