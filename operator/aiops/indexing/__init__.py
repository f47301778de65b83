"""VectorIndex: Milvus, ingest Jobs and the live index's recall, kept in step with the spec."""
