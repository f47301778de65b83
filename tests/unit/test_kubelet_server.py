"""The simulated node's kubelet API for container logs, over real TLS with certificates from the
devenv CA: only a client with a certificate of that CA is answered, and tailLines/limitBytes
select as the kubelet does."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

import pytest

from aiops.devenv.kubeletserver import KubeletServer, current_run, select
from aiops.devenv.pki import CertRequest, LocalCA


def test_tail_lines_then_limit_bytes_as_the_kubelet_selects():
    text = b"one\ntwo\nthree\nfour\n"
    assert select(text, 2, None) == b"three\nfour\n"
    assert select(text, 2, 8) == b"three\nfo"
    assert select(text, None, 3) == b"one" and select(text, 0, None) == b""
    assert select(b"no newline at the end", 1, None) == b"no newline at the end"


def test_the_current_run_of_a_restarted_container_is_served():
    log = (b"--- 2026-12-03T05:00:00 starting: python3 -c x\nfirst run\n"
           b"--- 2026-12-03T05:00:09 starting: python3 -c x\nsecond run\n--- not a start line\n")
    assert current_run(log) == b"second run\n--- not a start line\n"
    assert current_run(b"no marker\n") == b"no marker\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = LocalCA(tmp_path_factory.mktemp("pki")).ensure()
    serving = ca.issue(CertRequest("kubelet", "node", client=False, server=True, ip_addresses=("127.0.0.1",)))
    client = ca.issue(CertRequest("apiserver-kubelet-client", "kube-apiserver-kubelet-client"))
    stranger = LocalCA(tmp_path_factory.mktemp("other")).ensure().issue(CertRequest("x", "x"))
    return ca, serving, client, stranger


def fetch(port: int, path: str, ca: Path, cert: tuple[Path, Path] | None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(*cert)
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=context, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_logs_go_only_to_clients_of_the_cluster_ca(pki, tmp_path):
    ca, serving, client, stranger = pki
    log = tmp_path / "embed.log"
    log.write_text("--- 2026-12-03T05:00:00 starting: aiops\n" + "".join(f"line {i}\n" for i in range(100)))
    files = {("ns", "pod", "embed"): log}
    server = KubeletServer(lambda *key: files.get(key), *serving, ca.cert).start()
    try:
        assert fetch(server.port, "/containerLogs/ns/pod/embed?tailLines=2", ca.cert, client) == (
            200, b"line 98\nline 99\n")
        assert fetch(server.port, "/containerLogs/ns/pod/embed?tailLines=2&limitBytes=4", ca.cert, client) == (
            200, b"line")
        assert fetch(server.port, "/containerLogs/ns/pod/other", ca.cert, client)[0] == 404
        assert fetch(server.port, "/containerLogs/ns/pod/embed?follow=true", ca.cert, client)[0] == 400
        for who in (None, stranger):  # no client certificate, or one of another CA: no answer
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                fetch(server.port, "/containerLogs/ns/pod/embed", ca.cert, who)
    finally:
        server.stop()
