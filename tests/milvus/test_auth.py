"""The managed Milvus with sign-in on, on the real Milvus 2.3 server: the operator replaces root's
built-in password with its own before anything else uses Milvus, after which only clients with
that password get in; the ingest worker signs in with the Secret the operator writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from vectorhelpers import make_spec, write_jsonl

from aiops.indexing.probe import MILVUS_DEFAULT_PASSWORD, IndexProbe, ProbeError

PASSWORD = "f" * 64  # what OperatorKey.derive gives: 64 hex digits


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory):
    from aiops.devenv.milvusserver import MilvusServer

    server = MilvusServer(tmp_path_factory.mktemp("milvus-auth"), authorization=True).start()
    try:
        yield server
    finally:
        server.stop()


def signs_in(uri: str, token: str) -> bool:
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, token=token, timeout=10)
    except Exception:
        return False
    try:
        client.list_collections()
        return True
    except Exception:
        return False
    finally:
        client.close()


def test_the_built_in_password_is_replaced_once_and_then_refused(secured_server):
    uri, probe = secured_server.uri, IndexProbe()
    assert not signs_in(uri, ""), "sign-in is required"
    assert signs_in(uri, f"root:{MILVUS_DEFAULT_PASSWORD}"), "a new Milvus opens with its built-in password"
    assert asyncio.run(probe.secure(uri, PASSWORD)) is True
    assert not signs_in(uri, f"root:{MILVUS_DEFAULT_PASSWORD}")
    assert not signs_in(uri, "")
    assert signs_in(uri, f"root:{PASSWORD}")
    assert asyncio.run(probe.secure(uri, PASSWORD)) is False, "already ours: nothing changes"
    with pytest.raises(ProbeError) as refused:
        asyncio.run(probe.secure(uri, "0" * 64))  # another operator's key: neither password opens root
    assert refused.value.reason == "MilvusAuthFailed" and "another operator's key" in str(refused.value)
    assert signs_in(uri, f"root:{PASSWORD}")


def test_the_ingest_worker_signs_in_with_the_mounted_secret(secured_server, tmp_path, corpus):
    uri = secured_server.uri
    asyncio.run(IndexProbe().secure(uri, PASSWORD))
    source = write_jsonl(tmp_path / "cm" / "docs.jsonl", corpus[:40]).parent
    _, wire = make_spec("signed_in", embedding={"device": "cpu", "maxSequenceLength": 128, "batchSize": 32})
    (tmp_path / "spec.json").write_text(json.dumps(wire))
    creds = tmp_path / "credentials"  # the Secret as the Job mounts it: keys username, password
    creds.mkdir()

    def run(password: str) -> dict:
        (creds / "username").write_text("root")
        (creds / "password").write_text(password)
        result = tmp_path / "result.json"
        result.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "aiops", "worker", "embed", "--spec", str(tmp_path / "spec.json"),
                        "--source", str(source), "--milvus-uri", uri, "--credentials-dir", str(creds),
                        "--result", str(result)], capture_output=True, text=True, timeout=300)
        return json.loads(result.read_text())

    refused = run(MILVUS_DEFAULT_PASSWORD)
    assert refused["ok"] is False and "illegal connection params" in refused["message"], refused
    done = run(PASSWORD)
    assert done["ok"] is True and done["rows"] == 40, done
