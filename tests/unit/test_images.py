"""The pure parts of the offline image builds (aiops.devenv.images): cache keys, build contexts,
the registry's consistency with the Dockerfiles, the cache's completeness rule, and the containerd
import's skip rule (against a fake `ctr`). Real builds are slow and need root: not here."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from aiops.devenv import imagecache, imagerecipes, images, imagetools
from aiops.devenv.imagecache import BuiltImage
from aiops.devenv.images import (
    IMAGES,
    ImageBuildError,
    ImageSpec,
    KeyInputs,
    Wheelhouse,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOPS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "images").mkdir(parents=True)
    return tmp_path / "cache" / "images"


# ---- the mirror --------------------------------------------------------------------------------

def test_mirror_from_deb822_sources_skips_deb_src_and_other_suites():
    sources = [
        ("aiops-deb-src.sources", "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n"
                                  "Components: main\n"),
        ("debian.sources", "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n"
                           "Components: main\n\n"
                           "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
                           "Suites: bookworm bookworm-updates\nComponents: main\n"),
    ]
    assert imagerecipes.find_mirror(sources) == "http://mirror.example/debian"


def test_mirror_from_one_line_lists_with_options():
    sources = [("sources.list", "# deb http://old.example/debian bookworm main\n"
                                "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main contrib\n")]
    assert imagerecipes.find_mirror(sources) == "http://one.example/debian"


def test_no_mirror_says_what_is_missing():
    with pytest.raises(ImageBuildError, match="no Debian mirror for bookworm"):
        imagerecipes.find_mirror([("x.list", "deb http://a.example/debian trixie main\n")])


# ---- build contexts ----------------------------------------------------------------------------

def test_the_repository_context_is_what_the_dockerignore_lets_through():
    files = imagetools.repo_context()
    assert {"pyproject.toml", "README.md", "operator/aiops/cli.py", "operator/aiops/worker/train.py"} <= set(files)
    assert not [f for f in files if f.startswith("operator/aiops/devenv/")], "no image runs the dev environment"
    assert not [f for f in files if not (f in ("pyproject.toml", "README.md") or f.startswith("operator/"))]
    assert not [f for f in files if "__pycache__" in f or ".egg-info" in f or f.endswith(".pyc")]


def test_dockerignore_semantics(tmp_path):
    (tmp_path / ".dockerignore").write_text("# comment\n*\n!keep/\n**/*.log\n!keep/important.log\nkeep/skip\n")
    for name in ("top.txt", "keep/a.py", "keep/sub/b.log", "keep/important.log", "keep/skip/c.py", "gone/d.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert sorted(imagetools.context_files(tmp_path)) == ["keep/a.py", "keep/important.log"]


def test_a_context_without_dockerignore_is_every_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.sh").write_text("x")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert sorted(imagetools.context_files(tmp_path)) == ["Dockerfile", "a/b.sh"]


# ---- keys --------------------------------------------------------------------------------------

BASE_INPUTS = KeyInputs(ref="localhost/aiops/x:1", target="x", dockerfile="d1", files={"a": "1", "b": "2"},
                        build_args={"BASE": "localhost/aiops/base:1"}, bases={"base": "k1"},
                        recipe={"packages": "python3"}, wheelhouse="w1")


@pytest.mark.parametrize("change", [
    {"ref": "localhost/aiops/x:2"}, {"target": "y"}, {"dockerfile": "d2"}, {"files": {"a": "1", "b": "3"}},
    {"files": {"a": "1", "b": "2", "c": "4"}}, {"files": {"a": "1", "c": "2"}},
    {"build_args": {"BASE": "localhost/aiops/base:2"}}, {"bases": {"base": "k2"}},
    {"recipe": {"packages": "python3,tini"}}, {"wheelhouse": "w2"}, {"wheelhouse": None},
], ids=lambda c: next(iter(c)))
def test_every_input_changes_the_key(change):
    assert images.image_key(dataclasses.replace(BASE_INPUTS, **change)) != images.image_key(BASE_INPUTS)


def test_the_key_is_stable_and_names_files_safely():
    key = images.image_key(BASE_INPUTS)
    assert key == images.image_key(dataclasses.replace(BASE_INPUTS, files={"b": "2", "a": "1"}))
    assert re.fullmatch(r"[0-9a-f]{20}", key)


def spec_in(tmp_path: Path, **kw) -> ImageSpec:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (context / "a").write_text("one")
    (context / ".dockerignore").write_text("notes.txt\n")
    return ImageSpec(name="x", ref="localhost/aiops/x:1", dockerfile=context / "Dockerfile",
                     context=lambda: imagetools.context_files(context), **kw)


def key_of(spec: ImageSpec, bases=None, wheelhouse=None) -> str:
    return images.image_key(images.key_inputs(spec, spec.context(), bases or {}, wheelhouse))


def test_context_edits_change_the_key_and_ignored_files_do_not(tmp_path):
    spec = spec_in(tmp_path)
    before = key_of(spec)
    (tmp_path / "ctx" / "notes.txt").write_text("ignored by the .dockerignore")
    assert key_of(spec) == before
    (tmp_path / "ctx" / "a").write_text("two")
    assert key_of(spec) != before
    edited = key_of(spec)
    (tmp_path / "ctx" / "a").chmod(0o755)
    assert key_of(spec) != edited, "the executable bit is an input"
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY a /b\n")
    assert key_of(spec) != edited


def test_a_rebuilt_base_or_another_wheelhouse_changes_the_key(tmp_path):
    spec = spec_in(tmp_path, bases=(("BASE_IMAGE", "debian-python"),), wheelhouse=True)
    one = Wheelhouse(tmp_path / "w", "wkey1", "manifest1")
    key = key_of(spec, {"debian-python": "k1"}, one)
    assert key_of(spec, {"debian-python": "k2"}, one) != key
    assert key_of(spec, {"debian-python": "k1"}, dataclasses.replace(one, manifest="manifest2")) != key
    assert key_of(spec, {"debian-python": "k1"}, dataclasses.replace(one, key="wkey2")) != key


def test_the_recipe_of_made_files_is_an_input(tmp_path):
    recipe = {"mirror": "http://a.example/debian"}
    spec = spec_in(tmp_path, recipe=lambda: dict(recipe))
    before = key_of(spec)
    recipe["mirror"] = "http://b.example/debian"
    assert key_of(spec) != before


def test_how_made_files_are_made_is_part_of_their_recipe():
    assert imagetools.code_digest(imagerecipes.slim_rootfs) != imagetools.code_digest(imagerecipes.write_pause_binary)


def test_the_base_gets_the_release_and_its_updates_from_this_machines_mirrors():
    sources = [("debian.sources", "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n"
                                  "Components: main\n\nTypes: deb\nURIs: http://m.example/debian-security\n"
                                  "Suites: bookworm-security\nComponents: main\n")]
    text = imagerecipes.image_apt_sources(sources)
    assert "URIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n" in text
    assert "URIs: http://m.example/debian-security\nSuites: bookworm-security\n" in text
    only_release = imagerecipes.image_apt_sources([("s.list", "deb http://m.example/debian bookworm main\n")])
    assert "Suites: bookworm\n" in only_release and "security" not in only_release


def test_the_wheelhouse_key_follows_the_requirements():
    reqs = imagetools.wheelhouse_requirements()
    key = imagetools.wheelhouse_key(reqs, "cp311", "x86_64")
    assert imagetools.wheelhouse_key({**reqs, "resolved": [*reqs["resolved"], "x==1"]}, "cp311", "x86_64") != key
    assert imagetools.wheelhouse_key(reqs, "cp312", "x86_64") != key


# ---- the registry ------------------------------------------------------------------------------

def test_the_registry_names_the_images_the_node_uses():
    assert {spec.ref for spec in IMAGES.values()} == {
        "localhost/aiops/debian-python:bookworm", "localhost/aiops/operator:0.1.0", "localhost/aiops/worker:0.1.0",
        "localhost/aiops/triton:0.1.0",
        "localhost/aiops/tritonserver:2.51.0-cpu", "localhost/aiops/milvus:2.3.5", "localhost/aiops/pause:3.2",
        "localhost/aiops/cluster-dns:1"}
    assert all(name == spec.name for name, spec in IMAGES.items())


def test_every_recipe_dir_has_an_image_and_no_context_is_the_whole_repository():
    dirs = {d.name for d in (ROOT / "images").iterdir() if (d / "Dockerfile").exists()}
    assert dirs == {spec.dockerfile.parent.name for spec in IMAGES.values() if spec.dockerfile.parent != ROOT}
    for spec in IMAGES.values():
        files = spec.context()
        assert not [f for f in files if f.startswith(("tests/", ".venv/", ".git/"))], spec.name


def dockerfile_steps(path: Path) -> list[tuple[str, str]]:
    from test_dockerfile import instructions  # the same parser (tests/unit is on the import path)

    return instructions(path.read_text())


@pytest.mark.parametrize("name", list(IMAGES))
def test_bases_are_build_args_the_dockerfile_builds_from(name):
    spec = IMAGES[name]
    steps = dockerfile_steps(spec.dockerfile)
    froms = [a.split()[0] for k, a in steps if k == "FROM"]
    declared = {a.split("=")[0] for k, a in steps if k == "ARG"}
    for arg, base in spec.bases:
        assert arg in declared and "${" + arg + "}" in froms, (name, arg)
        assert list(IMAGES).index(base) < list(IMAGES).index(name), "bases come first in the registry"
    if spec.target:
        assert any(a.split()[-1] == spec.target for k, a in steps if k == "FROM" and " AS " in a.upper())
    if spec.wheelhouse:
        assert {"PIP_NO_INDEX", "PIP_FIND_LINKS"} <= declared


def test_build_order_puts_bases_first_once():
    assert images.build_order(["worker", "operator"]) == ["debian-python", "tritonserver", "worker", "operator"]
    assert images.build_order(["pause"]) == ["pause"]
    with pytest.raises(ImageBuildError, match="no image named 'nope'"):
        images.build_order(["nope"])


def test_the_wheelhouse_holds_every_pinned_wheel_the_local_images_fetch():
    reqs = imagetools.wheelhouse_requirements()
    pinned = set()
    for dockerfile in (ROOT / "images").glob("*/Dockerfile"):
        for k, a in dockerfile_steps(dockerfile):
            if k == "RUN" and "pip" in a:
                pinned |= set(re.findall(r"\b([A-Za-z][\w.-]*==[\w.]+)", a))
    assert pinned and pinned <= set(reqs["no_deps"]), pinned - set(reqs["no_deps"])
    resolved = " ".join(reqs["resolved"])
    assert "torch==2.13.0" in resolved and "sentence-transformers" in resolved
    assert "pytriton" not in resolved and "milvus-lite" not in resolved, "no development servers in the images"
    assert any(r.startswith("setuptools") for r in reqs["no_deps"]), "pip builds the package offline"


def test_the_base_carries_what_the_images_need_from_debian():
    assert {"python3", "python3-venv", "python-is-python3", "ca-certificates"} <= set(imagerecipes.BASE_PACKAGES)
    assert "libpython3.11" in imagerecipes.BASE_PACKAGES and "tini" in imagerecipes.BASE_PACKAGES


def test_buildah_runs_offline_on_local_bases_with_the_wheelhouse_read_only(tmp_path):
    spec = IMAGES["worker"]
    wheelhouse = Wheelhouse(tmp_path / "wh", "abc123", "m")
    args = images.build_args_for(spec, wheelhouse)
    assert args == {"PYTHON_IMAGE": "localhost/aiops/debian-python:bookworm",
                    "TRITON_IMAGE": "localhost/aiops/tritonserver:2.51.0-cpu",
                    "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheels/abc123"}
    argv = images.bud_argv(spec, "k" * 20, args, tmp_path / "ctx", wheelhouse)
    joined = " ".join(argv)
    assert argv[:2] == ["buildah", "bud"] and argv[-1] == str(tmp_path / "ctx")
    assert "--network none" in joined and "--pull=never" in joined
    assert f"--label {images.KEY_LABEL}={'k' * 20}" in joined and "--target worker" in joined
    assert f"-v {tmp_path / 'wh'}:/wheels/abc123:ro" in joined
    assert f"-f {ROOT / 'Dockerfile'}" in joined and "-t localhost/aiops/worker:0.1.0" in joined


def test_building_without_root_says_so(monkeypatch):
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(ImageBuildError, match="needs root"):
        images.check_can_build()


# ---- the cache ---------------------------------------------------------------------------------

def docker_archive(path: Path, ref: str, layers: list[bytes]) -> str:
    """A minimal docker-archive (what `buildah push ... docker-archive:` writes); returns the config digest."""
    config = json.dumps({"rootfs": {"type": "layers"}}).encode()
    import hashlib

    config_hex = hashlib.sha256(config).hexdigest()
    members = {f"{config_hex}.json": config}
    names = []
    for i, layer in enumerate(layers):
        names.append(f"layer{i}.tar")
        members[names[-1]] = layer
    members["manifest.json"] = json.dumps([{"Config": f"{config_hex}.json", "RepoTags": [ref],
                                            "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"sha256:{config_hex}"


def test_an_archive_counts_only_with_its_metadata_and_its_recorded_size(cache):
    spec = IMAGES["pause"]
    key = "a" * 20
    archive = imagecache.archive_path(spec.name, key)
    assert imagecache.read_cached(spec, key) is None
    digest = docker_archive(archive, spec.ref, [b"x" * 1000, b"y" * 24])
    assert imagecache.read_cached(spec, key) is None, "no metadata yet: the build did not finish"
    image = imagecache.record(spec, key, archive, 12.34)
    assert (image.config_digest, image.size_bytes, image.archive_bytes) == (digest, 1024, archive.stat().st_size)
    cached = imagecache.read_cached(spec, key)
    assert cached == dataclasses.replace(image, cached=True, build_seconds=12.3)
    with open(archive, "ab") as f:
        f.write(b"\0" * 512)
    assert imagecache.read_cached(spec, key) is None, "an archive that is not the one recorded is not reused"


def test_a_new_build_drops_the_older_archives_of_that_image_only(cache):
    (cache / "logs").mkdir()
    for name in ("debian-python-" + "1" * 20 + ".tar", "debian-python-" + "1" * 20 + ".json",
                 "debian-python-" + "2" * 20 + ".tar", "operator-" + "1" * 20 + ".tar", ".lock",
                 "logs/debian-python-" + "1" * 20 + ".log", "logs/debian-python-" + "2" * 20 + ".log"):
        (cache / name).write_text("x")
    imagecache.drop_older_archives(IMAGES["debian-python"], "2" * 20)
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "debian-python-" + "2" * 20 + ".tar", "logs",
                                                       "operator-" + "1" * 20 + ".tar"]
    assert [p.name for p in (cache / "logs").iterdir()] == ["debian-python-" + "2" * 20 + ".log"]


def test_the_table_says_what_was_built_and_what_came_from_the_cache(tmp_path):
    one = BuiltImage("pause", "localhost/aiops/pause:3.2", "k", tmp_path, "sha256:1", 700_000, 710_000, 3.0)
    two = BuiltImage("worker", "localhost/aiops/worker:0.1.0", "k", tmp_path, "sha256:2", 3_100_000_000,
                     3_100_100_000, 412.0, cached=True)
    lines = imagecache.format_table([one, two]).splitlines()
    assert lines[0].split() == ["IMAGE", "SIZE", "ARCHIVE", "BUILD"]
    assert "0.7 MB" in lines[1] and "built in 3 s" in lines[1]
    assert "3100.0 MB" in lines[2] and "cached (built in 412 s)" in lines[2]


# ---- containerd --------------------------------------------------------------------------------

FAKE_CTR = textwrap.dedent('''\
    import json, sys
    from pathlib import Path
    state = Path(sys.argv[0]).with_name("state.json")
    data = json.loads(state.read_text())
    args = sys.argv[1:]
    assert args[:4] == ["-a", "/run/c.sock", "-n", "k8s.io"], args
    data["calls"].append(args[4:])
    verb = args[4:6]
    if verb == ["images", "ls"]:
        ref = args[6].removeprefix("name==")
        print("REF TYPE DIGEST SIZE PLATFORMS LABELS")
        if ref in data["images"]:
            kind = "application/vnd.docker.distribution.manifest.v2+json"
            print(f"{ref} {kind} {data['images'][ref]} 1.0 MiB linux/amd64 -")
    elif verb == ["content", "get"]:
        print(json.dumps(data["content"][args[6]]))
    elif verb == ["images", "import"]:
        ref, config = data["archives"][args[6]]
        data["images"][ref] = "sha256:m-" + config
        data["content"]["sha256:m-" + config] = {"config": {"digest": config}}
    state.write_text(json.dumps(data))
''')


def test_import_skips_images_containerd_has_with_the_same_config(tmp_path, monkeypatch):
    ctr = tmp_path / "ctr"
    ctr.write_text(f"#!{sys.executable}\n{FAKE_CTR}")
    ctr.chmod(0o755)
    built = {name: BuiltImage(name, IMAGES[name].ref, "k", tmp_path / f"{name}.tar", f"sha256:{name}-new", 1, 1, 1.0,
                              cached=True) for name in ("pause", "operator", "milvus")}
    state = {"calls": [], "archives": {str(b.archive): [b.ref, b.config_digest] for b in built.values()},
             "images": {built["pause"].ref: "sha256:m-pause", built["operator"].ref: "sha256:m-old"},
             "content": {"sha256:m-pause": {"config": {"digest": "sha256:pause-new"}},
                         "sha256:m-old": {"config": {"digest": "sha256:operator-old"}}}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    monkeypatch.setattr(images, "ensure_images", lambda names: {n: built[n] for n in names})
    outcome = images.import_into_containerd("/run/c.sock", ["pause", "localhost/aiops/operator:0.1.0", "milvus"],
                                            ctr=str(ctr))
    assert outcome == {"localhost/aiops/pause:3.2": "present", "localhost/aiops/operator:0.1.0": "imported",
                       "localhost/aiops/milvus:2.3.5": "imported"}
    imports = [c for c in json.loads((tmp_path / "state.json").read_text())["calls"] if c[:2] == ["images", "import"]]
    assert imports == [["images", "import", str(built["operator"].archive)],
                       ["images", "import", str(built["milvus"].archive)]]


def test_an_index_is_followed_to_its_linux_amd64_manifest():
    index = {"manifests": [{"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
                           {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert imagetools.manifest_for_platform(index) == "sha256:amd"
    listing = "REF TYPE DIGEST SIZE PLATFORMS LABELS\nlocalhost/aiops/a:1 t sha256:x 1.0 MiB linux/amd64 -\n"
    assert imagetools.listed_target(listing, "localhost/aiops/a:1") == "sha256:x"
    assert imagetools.listed_target(listing, "localhost/aiops/a:2") is None


def test_an_unknown_ref_names_the_images():
    with pytest.raises(ImageBuildError, match="localhost/aiops/operator:0.1.0"):
        images.spec_for("localhost/aiops/nope:1")
