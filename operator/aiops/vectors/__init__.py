"""VectorIndex data path: documents -> embeddings -> Milvus, and the index's upkeep.

documents: reading the source and its hashes; embedder: torch mean-pooled sentence embeddings;
store: collection, index, rows, counts and compaction on Milvus; recall: recall@k of the served
index against exact search; ingest: one idempotent ingest run (what `aiops worker embed` does).
"""
