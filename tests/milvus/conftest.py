"""One real standalone Milvus 2.3 server for the session (aiops.devenv.milvusserver, free ports,
a temporary base dir), the real embedding model on CPU, and a real-text corpus built offline.

Real Milvus, not milvus-lite: lite merges duplicate primary keys on insert and would hide exactly
the duplicate rows these tests look for."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vectorhelpers import CORPUS_SIZE, MAX_TOKENS


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator:
    from aiops.devenv.milvusserver import MilvusServer

    # Milvus's own background compaction would race the operator's compaction policy under test
    # (a CI run saw the deleted rows already gone); the tests decide when to compact.
    server = MilvusServer(tmp_path_factory.mktemp("milvus"),
                          settings={"dataCoord.compaction.enableAutoCompaction": "false"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus(milvus_server):
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_server.uri)
    yield client
    client.close()


@pytest.fixture(scope="session")
def embedder():
    from aiops.vectors.embedder import Embedder

    return Embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu", max_sequence_length=MAX_TOKENS,
                    batch_size=64)


@pytest.fixture(scope="session")
def corpus() -> list[dict]:
    from aiops.vectors.corpus import load_corpus

    return load_corpus(CORPUS_SIZE)
