"""`aiops worker embed` as the operator's Job runs it: killed half-way and re-run, checksum-only,
handled failures, the result JSON the operator reads from the termination message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from vectorhelpers import make_spec, write_jsonl

from aiops.vectors import store
from aiops.vectors.ingest import KILL_AFTER_ENV

RESULT_KEYS = {"ok", "total", "embedded", "skipped", "deleted", "failed", "durationSeconds", "documentsPerSecond",
               "sourceChecksum", "collection", "rows"}


def run_worker(tmp_path: Path, wire: dict, source: Path, uri: str | None, *extra: str,
               env: dict | None = None) -> tuple[int, dict | None]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(wire))
    result_file = tmp_path / "result.json"
    result_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "aiops", "worker", "embed", "--spec", str(spec_file), "--source", str(source),
            "--result", str(result_file), *(["--milvus-uri", uri] if uri else []), *extra]
    proc = subprocess.run(argv, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, capture_output=True,
                          text=True, timeout=300)
    text = result_file.read_text() if result_file.exists() else ""
    assert len(text) < 3072
    return proc.returncode, (json.loads(text) if text else None)


def test_killed_half_way_then_rerun_leaves_exactly_one_row_per_document(tmp_path, milvus, milvus_server, corpus):
    docs = corpus[:320]
    source = write_jsonl(tmp_path / "cm" / "docs.jsonl", docs).parent
    spec, wire = make_spec("killed_run", embedding={"device": "cpu", "maxSequenceLength": 128, "batchSize": 32})
    if milvus.has_collection(spec.collection.name):
        milvus.drop_collection(spec.collection.name)

    code, result = run_worker(tmp_path, wire, source, milvus_server.uri, env={KILL_AFTER_ENV: "4"})
    assert code == -signal.SIGKILL and result is None
    stored = store.count_rows(milvus, "killed_run")
    assert 4 * 32 <= stored < len(docs)  # four batches acknowledged, perhaps the in-flight fifth

    code, result = run_worker(tmp_path, wire, source, milvus_server.uri)
    assert code == 0, result
    assert set(result) >= RESULT_KEYS and result["ok"] is True
    assert result["embedded"] == len(docs) - stored and result["skipped"] == stored
    assert result["rows"] == len(docs) == store.count_rows(milvus, "killed_run")
    ids = {row["id"] for page in store.iterate_rows(milvus, "killed_run", ["id"]) for row in page}
    assert ids == {d["id"] for d in docs}

    code, result = run_worker(tmp_path, wire, source, milvus_server.uri)  # and once more: nothing to do
    assert (code, result["embedded"], result["rows"]) == (0, 0, len(docs))


def test_checksum_only_reads_the_source_and_nothing_else(tmp_path, corpus):
    source = write_jsonl(tmp_path / "cm" / "docs.jsonl", corpus[:10]).parent
    _, wire = make_spec("unused")
    code, first = run_worker(tmp_path, wire, source, None, "--checksum-only")
    assert code == 0 and first["ok"] and first["files"] == 1 and first["sourceChecksum"].startswith("sha256:")
    write_jsonl(source / "docs.jsonl", corpus[1:10])
    _, second = run_worker(tmp_path, wire, source, None, "--checksum-only")
    assert second["sourceChecksum"] != first["sourceChecksum"]


def test_handled_failures_say_why(tmp_path, milvus_server):
    _, wire = make_spec("failures")
    source = tmp_path / "cm"
    code, result = run_worker(tmp_path, wire, source, milvus_server.uri)
    assert (code, result["ok"], result["reason"]) == (1, False, "SourceNotFound")
    write_jsonl(source / "docs.jsonl", [{"id": 1}, {"text": "no id"}])
    code, result = run_worker(tmp_path, wire, source, milvus_server.uri)
    assert (code, result["reason"]) == (1, "NoValidDocuments")
    code, result = run_worker(tmp_path, {**wire, "collection": {"name": "x"}}, source, milvus_server.uri)
    assert (code, result["reason"]) == (1, "InvalidSpec")


def test_a_collection_owned_by_another_vectorindex_fails_the_run_and_keeps_its_rows(tmp_path, milvus, milvus_server,
                                                                                   corpus):
    spec, wire = make_spec("owned_by_a", embedding={"device": "cpu", "maxSequenceLength": 128, "batchSize": 32})
    if milvus.has_collection("owned_by_a"):
        milvus.drop_collection("owned_by_a")
    source = write_jsonl(tmp_path / "cm" / "docs.jsonl", corpus[:5]).parent
    code, result = run_worker(tmp_path, wire, source, milvus_server.uri, "--owner", "team-a/manuals")
    assert (code, result["rows"]) == (0, 5)
    write_jsonl(source / "docs.jsonl", corpus[50:52])
    code, result = run_worker(tmp_path, wire, source, milvus_server.uri, "--owner", "team-b/faq")
    assert (code, result["reason"]) == (1, "CollectionOwned") and "team-a/manuals" in result["message"]
    assert store.count_rows(milvus, "owned_by_a") == 5
    milvus.drop_collection("owned_by_a")
