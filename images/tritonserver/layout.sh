#!/bin/sh
# Lays out Triton from the nvidia-pytriton wheel as NVIDIA's image has it, under a root tree that
# the Dockerfile copies onto /. Usage: layout.sh WHEEL NUMPY_DIR ROOT
#   WHEEL      the nvidia-pytriton wheel (tritonserver 2.51 inside)
#   NUMPY_DIR  numpy 1.x installed with `pip install --target`: the Python-backend stub was built
#              against numpy 1.x and corrupts tensors with numpy 2
#   ROOT       where to assemble opt/, etc/ and the system python's site dir
set -eu
wheel=$1 numpy=$2 root=$3
unpacked=$(mktemp -d)
python3 -m zipfile -e "$wheel" "$unpacked"
server=$unpacked/pytriton/tritonserver
opt=$root/opt/tritonserver
# The stub embeds the libpython of the interpreter that runs the models: the base's python3.
version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
stub=$server/python_backend_stubs/$version/triton_python_backend_stub
[ -f "$stub" ] || { echo "layout.sh: the wheel has no Python-backend stub for Python $version" >&2; exit 1; }

mkdir -p "$opt/bin" "$opt/lib" "$opt/backends/python" "$root/etc/ld.so.conf.d"
# tritonserver's RPATH already names $ORIGIN/../lib, where NVIDIA keeps libtritonserver.so.
cp "$server/bin/tritonserver" "$opt/bin/"
cp "$unpacked"/nvidia_pytriton.libs/* "$opt/lib/"
cp -r "$server/caches" "$opt/caches"
cp "$server/backends/python/libtriton_python.so" "$server/backends/python/triton_python_backend_utils.py" \
   "$stub" "$opt/backends/python/"
# zip does not keep modes.
chmod 0755 "$opt/bin/tritonserver" "$opt/backends/python/triton_python_backend_stub"
find "$opt/lib" "$opt/caches" "$opt/backends" -name '*.so*' -exec chmod 0755 {} +
# The backend and the stub look for their libraries beside the wheel's layout (an RPATH that
# points outside /opt/tritonserver): the loader's configuration finds them in lib/ instead.
echo /opt/tritonserver/lib > "$root/etc/ld.so.conf.d/tritonserver.conf"

# numpy for the system python that the stub embeds, where that python looks for local packages.
site=$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
mkdir -p "$root$site"
cp -r "$numpy"/. "$root$site/"
rm -rf "$unpacked"
