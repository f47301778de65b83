#!/usr/bin/env bash
# Builds the real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler) and node (kubelet, kube-proxy) from Debian's `kubernetes` source package and
# caches the five binaries, with the two source files the real node needs beside them: the pause
# container's pause.c and the kubelet's device-plugin API (api.proto).
#
# Why from source: no Docker and no download host for prebuilt binaries is reachable here; Debian
# ships the full 1.20 source with vendor/. Cold build: ~10 min on 2 cores. The cache is written to a
# temp dir and moved into place only when complete, so a failed or killed build is never reused.
#
# Usage: hack/build-kubernetes.sh DEST_DIR   (DEST_DIR/bin/ receives the binaries)
set -euo pipefail

dest=${1:?usage: build-kubernetes.sh DEST_DIR}
dest=$(realpath -m "$dest")  # no trailing slash: the staging dir is a sibling
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
sources=(build/pause/linux/pause.c staging/src/k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto)

have_all() {
  for b in "${bins[@]}"; do [ -x "$1/bin/$b" ] || return 1; done
  for f in "${sources[@]}"; do [ -f "$1/src/$(basename "$f")" ] || return 1; done
}
if have_all "$dest"; then echo "kubernetes control plane already cached in $dest"; exit 0; fi

die() { echo "build-kubernetes: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root for apt-get (run as root, as CI does), or put the binaries in $dest/bin"

src_list=/etc/apt/sources.list.d/aiops-deb-src.sources
if [ ! -f "$src_list" ]; then
  cat >"$src_list" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq || die "apt-get update failed: check the network to Debian's mirror"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-1.19-go golang-github-modern-go-reflect2-dev \
  etcd-server rsync dpkg-dev >/dev/null || die "apt-get install of the Go toolchain and etcd failed"
# Debian starts etcd as a service on install; we run our own on other ports, so stop the system one.
systemctl disable --now etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || true
pkill -x etcd 2>/dev/null || true

work=$(mktemp -d "${TMPDIR:-/tmp}/aiops-k8s-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get source --download-only -qq kubernetes || die "apt-get source kubernetes failed (needs the deb-src entry in $src_list)"
orig=$(ls kubernetes_*.orig.tar.* | head -n1)
[ -n "$orig" ] || die "no kubernetes orig tarball downloaded"
mkdir src && tar -xf "$orig" -C src --strip-components=1

# Kubernetes 1.20 vendors modern-go/reflect2 v1.0.1, which crashes at run time with Go >= 1.18.
# v1.0.2 from Debian is API-compatible: swap the sources, keep vendor/modules.txt.
r2=src/vendor/github.com/modern-go/reflect2
rm -f "$r2"/*.go "$r2"/*.s
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$r2"/
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2"/ 2>/dev/null || true
rm -f "$r2"/*_test.go

cd src
# Kubernetes' own build (GOPATH mode); a plain `go build -mod=vendor` fails on go.mod checks.
# One make call for all five: the generators and shared packages build once.
PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 \
  make WHAT="${bins[*]/#/cmd/}" >"$work/build.log" 2>&1 \
  || { tail -n 30 "$work/build.log" >&2; die "kubernetes build failed (log above)"; }

staging="$dest.partial.$$"
rm -rf "$staging"; mkdir -p "$staging/bin"
mkdir -p "$staging/src"
for b in "${bins[@]}"; do install -m 0755 "_output/bin/$b" "$staging/bin/$b"; done
for f in "${sources[@]}"; do install -m 0644 "$f" "$staging/src/$(basename "$f")"; done
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"; mv "$staging" "$dest"
echo "kubernetes control plane and node built into $dest"
