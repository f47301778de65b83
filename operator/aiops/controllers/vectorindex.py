"""VectorIndex handlers. So far: semantic validation (the Valid condition); Milvus, ingestion
and index optimization build on it."""

from aiops.api.registry import VECTOR_INDEX
from aiops.controllers.validity import validate_only

validate_only(VECTOR_INDEX)
