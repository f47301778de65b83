"""Lays out Milvus from the PyPI `milvus` wheel as the milvusdb/milvus images have it, under a root
tree that the Dockerfile copies onto /. Usage: python3 layout.py WHEEL GLOG_CONF ROOT

- /milvus/bin/milvus and its bundled libraries in /milvus/lib (the wheel keeps them lzma'd).
- /milvus/configs/milvus.yaml rendered from the wheel's template with the values milvusdb's own
  milvus.yaml has, except that every path Milvus writes is under /var/lib/milvus (the operator's
  PVC): the image runs as a non-root uid on a root filesystem it cannot write.
- /milvus/configs/glog.conf: the C++ core's logging to stdout instead of files in the working dir.

The template's `{{ name(type): default }}` placeholders are read the way
aiops.devenv.milvusserver.render_template reads them; this script runs inside the image build,
where the aiops package is not installed.
"""

import lzma
import re
import shutil
import sys
import zipfile
from pathlib import Path

DATA = "/var/lib/milvus"
VALUES = {
    # Embedded etcd (ETCD_USE_EMBED=true) keeps its data here unless ETCD_DATA_DIR says otherwise.
    "etcd_data_dir": f"{DATA}/etcd",
    "local_storage_dir": f"{DATA}/data",
    "rocksmq_data_dir": f"{DATA}/rdb_data",
    # Empty: logs go to stdout only, as in milvusdb's image.
    "system_log_path": "",
}
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*(?:\(\s*[a-z]+\s*\))?\s*(?::\s*([^}]*?))?\s*\}\}")


def render(template: str) -> str:
    def fill(match: re.Match) -> str:
        value = VALUES.get(match.group(1), match.group(2))
        if value is None:
            raise SystemExit(f"layout.py: the milvus template needs a value for {match.group(1)}")
        return value

    return PLACEHOLDER.sub(fill, template)


def unpack_binaries(wheel: zipfile.ZipFile, root: Path) -> None:
    for name in wheel.namelist():
        if not (name.startswith("milvus/data/bin/") and name.endswith(".lzma")):
            continue
        file = name.rsplit("/", 1)[1].removesuffix(".lzma")
        target = root / "milvus" / ("bin" if file == "milvus" else "lib") / file
        target.parent.mkdir(parents=True, exist_ok=True)
        with wheel.open(name) as packed, lzma.open(packed) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        target.chmod(0o755)


def main(wheel_path: str, glog_conf: str, root_dir: str) -> None:
    root = Path(root_dir)
    configs = root / "milvus" / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        unpack_binaries(wheel, root)
        template = wheel.read("milvus/data/config.yaml.template").decode()
    (configs / "milvus.yaml").write_text(render(template))
    shutil.copy(glog_conf, configs / "glog.conf")
    if not (root / "milvus" / "bin" / "milvus").exists():
        raise SystemExit(f"layout.py: no milvus binary in {wheel_path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
