"""What a standalone Milvus server is configured with: the ports each of its components takes and the
files rendered from the `milvus` package's templates (milvus.yaml, the embedded etcd's
embedEtcd.yaml, glog.conf).

Kept apart from the process (aiops.devenv.milvusserver) so the rendering can be tested without a
server: apart from asking the kernel for free ports, it only reads the package and writes files.
"""

from __future__ import annotations

import re
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

# Every placeholder port of the package's config template, plus the two of the embedded etcd and
# the health/metrics port (METRICS_PORT in the environment).
PORT_KEYS = ("proxy_port", "health_port", "etcd_port", "etcd_peer_port", "root_coord_port",
             "proxy_internal_port", "query_coord_port", "query_node_port", "index_coord_port",
             "index_node_port", "data_coord_port", "data_node_port")
ADVERTISING_ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def package_dir() -> Path:
    import milvus  # the PyPI `milvus` package (embedded server); part of the project's `devenv` extra

    return Path(milvus.__file__).resolve().parent


def package_version() -> str:
    import milvus

    return milvus.__version__


# ---- the ports ------------------------------------------------------------------------------

def free_ports(count: int, avoid: set[int] = frozenset()) -> list[int]:
    """Ports the kernel says are free on every interface (Milvus binds `*:port`), all held at once
    so they differ from each other."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("", 0))
            if sock.getsockname()[1] in avoid:
                sock.close()
                continue
            held.append(sock)
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
            return True
        except OSError:
            return False


@dataclass(frozen=True)
class MilvusPorts:
    """Where one server's components listen (all interfaces; see aiops.devenv.milvusserver)."""

    proxy_port: int
    health_port: int
    etcd_port: int
    etcd_peer_port: int
    root_coord_port: int
    proxy_internal_port: int
    query_coord_port: int
    query_node_port: int
    index_coord_port: int
    index_node_port: int
    data_coord_port: int
    data_node_port: int

    @classmethod
    def choose(cls, proxy_port: int = 0, health_port: int = 0, previous: dict | None = None) -> MilvusPorts:
        """Given ports as asked (0: any); the rest as last time on this dir when still free, else free."""
        wanted = {"proxy_port": proxy_port, "health_port": health_port}
        previous = previous or {}
        chosen: dict[str, int] = {}
        for key in PORT_KEYS:
            if wanted.get(key):
                chosen[key] = wanted[key]
            elif previous.get(key) and port_is_free(previous[key]):
                chosen[key] = previous[key]
        missing = [key for key in PORT_KEYS if key not in chosen]
        for key, port in zip(missing, free_ports(len(missing), set(chosen.values()))):
            chosen[key] = port
        return cls(**chosen)


# ---- the config files ------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*(?:\(\s*[a-z]+\s*\))?\s*(?::\s*([^}]*?))?\s*\}\}")
_KEY_LINE = re.compile(r"^( *)([A-Za-z0-9_]+):([^#]*)(#.*)?$")


def render_template(template: str, values: dict[str, object]) -> str:
    """The package's `{{ name(type): default }}` placeholders, filled from values or their defaults."""
    def fill(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = values.get(name, default)
        if value is None:
            raise KeyError(f"milvus config template: no value for {name}")
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    return _PLACEHOLDER.sub(fill, template)


def override_keys(yaml_text: str, overrides: dict[str, object]) -> str:
    """Sets dotted keys (`proxy.ip`) in the template's YAML by line, keeping its comments: the
    template indents by two spaces, and parsing and dumping it would change how Milvus reads
    empty values."""
    path: list[str] = []
    seen: set[str] = set()
    out = []
    for line in yaml_text.splitlines():
        match = _KEY_LINE.match(line) if not line.lstrip().startswith("#") else None
        if match:
            depth = len(match.group(1)) // 2
            path = [*path[:depth], match.group(2)]
            dotted = ".".join(path)
            if dotted in overrides:
                line = f"{match.group(1)}{match.group(2)}: {overrides[dotted]}"
                seen.add(dotted)
        out.append(line)
    for dotted in [key for key in overrides if key not in seen]:
        out = insert_key(out, dotted, overrides[dotted])
    return "\n".join(out) + "\n"


def insert_key(lines: list[str], dotted: str, value: object) -> list[str]:
    """Adds `a.b.c: value` right under the top-level section `a:` (e.g. etcd.config.path, which
    the template leaves out)."""
    section, *rest = dotted.split(".")
    if not rest or f"{section}:" not in lines:
        raise KeyError(f"milvus config template has no section for {dotted}")
    at = lines.index(f"{section}:") + 1
    added = [f"{'  ' * (depth + 1)}{name}:" for depth, name in enumerate(rest[:-1])]
    added.append(f"{'  ' * len(rest)}{rest[-1]}: {value}")
    return [*lines[:at], *added, *lines[at:]]


def etcd_config(base: Path, ports: MilvusPorts) -> str:
    """The embedded etcd on its own loopback ports (its defaults, 2379/2380, allow one server)."""
    client, peer = f"http://127.0.0.1:{ports.etcd_port}", f"http://127.0.0.1:{ports.etcd_peer_port}"
    return "\n".join([
        "name: milvus-embedded",
        f"data-dir: {base / 'data' / 'etcd.data'}",
        f"listen-client-urls: {client}", f"advertise-client-urls: {client}",
        f"listen-peer-urls: {peer}", f"initial-advertise-peer-urls: {peer}",
        f"initial-cluster: milvus-embedded={peer}", ""])


def write_configs(base: Path, ports: MilvusPorts, authorization: bool,
                  settings: dict[str, object] | None = None) -> Path:
    """`<base>/configs/milvus.yaml` (+ glog.conf, embedEtcd.yaml); returns the config dir.
    settings: more dotted keys to set (`dataCoord.compaction.enableAutoCompaction: false`)."""
    configs, data, logs = base / "configs", base / "data", base / "logs"
    for d in (configs, data, logs):
        d.mkdir(parents=True, exist_ok=True)
    template = (package_dir() / "data" / "config.yaml.template").read_text()
    values = {**{k: v for k, v in asdict(ports).items() if k not in ("health_port", "etcd_peer_port")},
              "etcd_data_dir": data / "etcd.data", "etcd_log_path": logs / "etcd.log",
              "local_storage_dir": data, "rocksmq_data_dir": data / "rocksmq", "system_log_path": logs,
              "authorization_enabled": authorization}
    overrides: dict[str, object] = {"etcd.config.path": configs / "embedEtcd.yaml"}
    # Advertise loopback: the components call each other at these addresses, and "the first
    # unicast address" of a sandbox or a CI runner may change or be unreachable.
    overrides.update({f"{role}.ip": "127.0.0.1" for role in ADVERTISING_ROLES})
    overrides.update(settings or {})
    text = override_keys(render_template(template, values), overrides)
    (configs / "milvus.yaml").write_text(text)
    (configs / "embedEtcd.yaml").write_text(etcd_config(base, ports))
    shutil.copy(package_dir() / "data" / "glog.conf", configs / "glog.conf")
    return configs
