"""The embedder matches sentence-transformers; the Milvus starter runs several servers at once."""

from __future__ import annotations

import threading

import numpy as np
from pymilvus import MilvusClient

from aiops.devenv.milvusserver import MilvusServer, healthy
from aiops.devenv.milvusserver_config import free_ports


def test_embeddings_match_sentence_transformers(embedder, corpus):
    from sentence_transformers import SentenceTransformer

    from aiops.vectors.embedder import resolve_model_path

    texts = [d["text"] for d in corpus[:48]]
    reference = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    reference.max_seq_length = embedder.max_length
    expected = reference.encode(texts, batch_size=16, normalize_embeddings=True)
    got = embedder.encode(texts)
    assert got.shape == (48, 384) and got.dtype == np.float32
    assert np.min(np.sum(got * expected, axis=1)) > 0.9999


def test_two_more_servers_share_a_port_number_on_their_own_listen_hosts(tmp_path, milvus):
    """Three servers at once (the session's and two pod-like ones): 127.0.0.2 and 127.0.0.3 both
    serve on the same port, which works because Milvus itself runs on other free ports there."""
    port, health = free_ports(2)
    servers = [MilvusServer(tmp_path / name, host=host, port=port, health_port=health)
               for name, host in (("a", "127.0.0.2"), ("b", "127.0.0.3"))]
    starting = [threading.Thread(target=s.start) for s in servers]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    try:
        for server in servers:
            assert server.running() and healthy(server.health_url)
            assert server.uri.endswith(f":{port}")
            client = MilvusClient(uri=server.uri)
            client.create_collection(f"only_on_{server.host.replace('.', '_')}", dimension=4)
            assert len(client.list_collections()) == 1
            client.close()
        assert not any(name.startswith("only_on_") for name in milvus.list_collections())
    finally:
        for server in servers:
            server.stop()
    assert not any(server.running() for server in servers)
