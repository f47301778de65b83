"""The pure parts of the VectorIndex data path: no server, no model."""

from __future__ import annotations

import json

from vectorhelpers import make_spec

from aiops.api.vectorindex import DocumentSource, Embedding
from aiops.devenv.milvusserver_config import MilvusPorts, etcd_config, override_keys, render_template, write_configs
from aiops.vectors.documents import (
    BadDocument,
    Document,
    content_hash,
    embedding_identity,
    parse_line,
    read_documents,
    source_checksum,
    source_files,
)
from aiops.vectors.ingest import IngestResult, plan
from aiops.vectors.store import build_params, index_matches, search_params

SOURCE = DocumentSource.from_wire({"configMap": {"name": "docs"}})
IDENTITY = embedding_identity(Embedding())


def test_lines_become_documents_or_say_why_not():
    doc = parse_line('{"id": 7, "text": "hello", "metadata": {"a": 1}}', "f:1", SOURCE, IDENTITY)
    assert isinstance(doc, Document) and doc.id == "7" and doc.metadata == {"a": 1}
    assert doc.content_hash == content_hash("hello", {"a": 1}, IDENTITY)
    reasons = [parse_line(line, "f:2", SOURCE, IDENTITY).reason for line in
               ("[1]", "{", '{"text": "x"}', '{"id": "a", "text": "  "}', '{"id": "a", "text": "x", "metadata": 3}',
                '{"id": true, "text": "x"}')]
    assert [r.split(" ")[0] for r in reasons] == ["not", "not", "missing", "missing", "'metadata'", "missing"]


def test_custom_fields_and_hash_follows_model_settings():
    source = DocumentSource.from_wire({"configMap": {"name": "d"}, "idField": "key", "textField": "body",
                                       "metadataField": "meta"})
    doc = parse_line('{"key": "k", "body": "b", "meta": {"x": 2}}', "f:1", source, IDENTITY)
    assert (doc.id, doc.text, doc.metadata) == ("k", "b", {"x": 2})
    other = embedding_identity(Embedding.from_wire({"maxSequenceLength": 64}))
    assert content_hash("b", {}, IDENTITY) != content_hash("b", {}, other)


def test_configmap_mounts_are_read_without_their_hidden_links(tmp_path):
    data = tmp_path / "..2026_11_24"
    data.mkdir()
    (data / "a.jsonl").write_text('{"id": "1", "text": "one"}\n\n{"id": "1", "text": "again"}\n')
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "a.jsonl").symlink_to("..data/a.jsonl")
    files = source_files(tmp_path)
    assert files == [tmp_path / "a.jsonl"]
    assert source_files(tmp_path, key="a.jsonl") == [tmp_path / "a.jsonl"]
    parsed = read_documents(files, SOURCE, Embedding())
    assert [d.id for d in parsed.documents] == ["1"] and parsed.bad[0].reason == "duplicate id"
    before = source_checksum(files, tmp_path)
    (data / "a.jsonl").write_text('{"id": "1", "text": "one"}\n')
    assert source_checksum(files, tmp_path) != before


def test_plan_embeds_new_and_changed_and_deletes_only_what_left():
    docs = [Document(i, "t", {}, f"h{i}") for i in ("a", "b", "c")]
    todo, gone = plan(docs, {"a": "ha", "b": "old", "x": "hx", "bad": "h"}, True, keep_ids={"bad"})
    assert [d.id for d in todo] == ["b", "c"] and gone == ["x"]
    assert plan(docs, {"x": "hx"}, False, set())[1] == []


def test_result_json_stays_small_with_many_failures():
    result = IngestResult(failures=[BadDocument(f"f:{i}", "i" * 500, "r" * 500) for i in range(1000)])
    assert len(json.dumps(result.to_json())) < 1500


def test_index_params_defaults_and_comparison():
    spec, _ = make_spec("c", index={"type": "IVF_PQ"})
    assert build_params(spec) == {"nlist": 128, "m": 96, "nbits": 8}
    hnsw, _ = make_spec("c", index={"type": "HNSW", "params": {"M": 32}, "searchParams": {"ef": 100}})
    assert build_params(hnsw) == {"M": 32, "efConstruction": 200} and search_params(hnsw) == {"ef": 100}
    described = {"index_type": "HNSW", "metric_type": "COSINE", "M": "32", "efConstruction": "200"}
    assert index_matches(described, "HNSW", "COSINE", build_params(hnsw))
    assert not index_matches(described, "HNSW", "L2", build_params(hnsw))
    assert not index_matches(described, "HNSW", "COSINE", {"M": 16, "efConstruction": 200})


def test_milvus_config_gets_its_own_ports_and_etcd(tmp_path):
    ports = MilvusPorts(*range(30001, 30013))
    template = "a:\n  port: {{ proxy_port(int): 19530 }}\n  ip: # x\nb: {{ other: z }}\n"
    text = override_keys(render_template(template, {"proxy_port": 30001}), {"a.ip": "127.0.0.1"})
    assert text == "a:\n  port: 30001\n  ip: 127.0.0.1\nb: z\n"
    assert override_keys("a:\n  ip: # x\n", {"a.config.path": "/p"}) == "a:\n  config:\n    path: /p\n  ip: # x\n"
    etcd = etcd_config(tmp_path, ports)
    assert "listen-client-urls: http://127.0.0.1:30003" in etcd and "initial-cluster: milvus-embedded=" in etcd


def test_settings_reach_the_real_config_template(tmp_path):
    import yaml

    ports = MilvusPorts(*range(30001, 30013))
    configs = write_configs(tmp_path, ports, False, {"dataCoord.compaction.enableAutoCompaction": "false"})
    config = yaml.safe_load((configs / "milvus.yaml").read_text())
    assert config["dataCoord"]["compaction"]["enableAutoCompaction"] is False
    assert config["proxy"]["port"] == ports.proxy_port and config["proxy"]["ip"] == "127.0.0.1"
