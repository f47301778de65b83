"""The kubelet's device-plugin API (v1beta1) as Python gRPC stubs, generated on first use.

Where the API comes from: `deviceplugin_v1beta1.proto` beside this file is, byte for byte,
`staging/src/k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto` of Debian's `kubernetes`
1.20.2 source package (Apache-2.0, like this project), the same file build-kubernetes.sh copies
into the toolchain cache. It ships with the package rather than being read from that cache so
that the device plugin and its tests need neither the 15-minute Kubernetes build nor root; the
v1beta1 API is frozen, and a unit test checks the copy against the cached one whenever the build
has run.

Why generated at run time and not committed: generated code is tied to the protobuf runtime that
generates it; the stubs are regenerated whenever the proto or grpcio-tools changes (both are in
the cache key), so an upgrade never loads stale code.

Its gogo options are Go-only and file-level (they shape Go code, not the wire format); they are
stripped before generation because gogo.proto is not available to protoc here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from aiops.devenv.toolchain import ToolchainError, cache_dir

PROTO = Path(__file__).with_name("deviceplugin_v1beta1.proto")
MODULE = "deviceplugin_v1beta1"  # the generated modules: <MODULE>_pb2, <MODULE>_pb2_grpc
API_VERSION = "v1beta1"  # what RegisterRequest.version must say

_GOGO_LINE = re.compile(r'^\s*(import\s+"github\.com/gogo/protobuf/gogoproto/gogo\.proto";'
                        r"|option\s+\(gogoproto\.[a-z_]+\)\s*=\s*\w+\s*;)\s*$")


@dataclass(frozen=True)
class DevicePluginApi:
    """The generated messages (`pb`) and services (`grpc`) of the device-plugin API."""

    pb: ModuleType
    grpc: ModuleType


def strip_gogo(proto_text: str) -> str:
    """The proto without gogo's import and file options; fails loudly if gogo is still used
    elsewhere (field options), since protoc would then fail on a missing import instead."""
    kept = [line for line in proto_text.splitlines() if not _GOGO_LINE.match(line)]
    text = "\n".join(kept) + "\n"
    if "gogoproto" in text:
        raise ToolchainError("the device-plugin proto uses gogo options beyond the file-level ones; "
                             "extend strip_gogo() for them")
    return text


def _grpcio_tools_version() -> str:
    try:
        return importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        raise ToolchainError("grpcio-tools is missing: `pip install -e '.[dev]'` (or `make venv`)") from None


def stubs_dir(proto: Path = PROTO) -> Path:
    """Where the stubs for this proto and this grpcio-tools live in the per-user cache."""
    digest = hashlib.sha256(proto.read_bytes()).hexdigest()[:16]
    return cache_dir() / "deviceplugin-stubs" / f"{digest}-grpcio-tools-{_grpcio_tools_version()}"


def _run_protoc(proto_file: Path, out_dir: Path) -> None:
    from grpc_tools import protoc

    args = ["protoc", f"-I{proto_file.parent}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(proto_file)]
    if protoc.main(args) != 0:
        raise ToolchainError(f"grpc_tools.protoc failed on {proto_file} (its message is above)")


def generate_stubs(proto: Path = PROTO) -> Path:
    """Generates the stubs once per proto and grpcio-tools version; returns their directory.

    Written to a temporary sibling and renamed into place, so an interrupted run never leaves a
    half-written cache entry; a concurrent run that wins the rename is as good as ours."""
    final = stubs_dir(proto)
    if (final / f"{MODULE}_pb2_grpc.py").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".stubs.") as tmp:
        work = Path(tmp)
        source = work / "src" / f"{MODULE}.proto"
        source.parent.mkdir()
        source.write_text(strip_gogo(proto.read_text()))
        staging = work / "out"
        staging.mkdir()
        _run_protoc(source, staging)
        try:
            staging.rename(final)
        except OSError:
            if not (final / f"{MODULE}_pb2_grpc.py").exists():
                raise
    return final


def _load_module(name: str, path: Path) -> ModuleType:
    """Imports a generated module by path; registered in sys.modules under its own top-level name
    because the generated `_pb2_grpc` module imports its `_pb2` sibling that way."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def load_api() -> DevicePluginApi:
    """The device-plugin API's modules, generated into the cache on first use. Cached per process:
    protobuf's descriptor pool accepts each proto file only once."""
    out = generate_stubs()
    pb = _load_module(f"{MODULE}_pb2", out / f"{MODULE}_pb2.py")
    services = _load_module(f"{MODULE}_pb2_grpc", out / f"{MODULE}_pb2_grpc.py")
    return DevicePluginApi(pb=pb, grpc=services)
