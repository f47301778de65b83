"""VectorIndex: a Milvus collection kept in step with a document source:
new documents are embedded on the shared GPU, stored with their metadata, and the index is
optimised and measured."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from aiops.api.common import (
    DATA_KEY,
    DEFAULT_SHARED_GPU_RESOURCE,
    DNS_SUBDOMAIN,
    ImagePullPolicy,
    OneOf,
    PersistentVolumeClaimPath,
    Quantity,
    SpecModel,
    StatusBase,
    StatusModel,
    cpu_field,
    gpu_resource_name_field,
    gpus_field,
    memory_field,
    memory_request_field,
)

MILVUS_IMAGE = "milvusdb/milvus:v2.4.15-gpu"
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

Metric = Literal["COSINE", "L2", "IP"]
IndexType = Literal[
    "FLAT",
    "IVF_FLAT",
    "IVF_SQ8",
    "IVF_PQ",
    "HNSW",
    "SCANN",
    "DISKANN",
    "AUTOINDEX",
    "GPU_IVF_FLAT",
    "GPU_IVF_PQ",
    "GPU_CAGRA",
    "GPU_BRUTE_FORCE",
]
EmbeddingDevice = Literal["auto", "cuda", "cpu"]
VectorIndexPhase = Literal[
    "Pending", "Invalid", "Provisioning", "Ingesting", "Ready", "Degraded", "Failed"
]
IndexState = Literal["Absent", "Building", "Ready", "Failed"]

# Output sizes of embedding models people commonly name, to catch a dimension that cannot match.
KNOWN_EMBEDDING_DIMENSIONS: dict[str, int] = {
    "sentence-transformers/all-MiniLM-L6-v2": 384,
    "sentence-transformers/all-MiniLM-L12-v2": 384,
    "sentence-transformers/paraphrase-MiniLM-L6-v2": 384,
    "sentence-transformers/multi-qa-MiniLM-L6-cos-v1": 384,
    "sentence-transformers/all-mpnet-base-v2": 768,
    "sentence-transformers/multi-qa-mpnet-base-dot-v1": 768,
    "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2": 384,
    "sentence-transformers/paraphrase-multilingual-mpnet-base-v2": 768,
    "BAAI/bge-small-en-v1.5": 384,
    "BAAI/bge-base-en-v1.5": 768,
    "BAAI/bge-large-en-v1.5": 1024,
    "BAAI/bge-m3": 1024,
    "intfloat/e5-small-v2": 384,
    "intfloat/e5-base-v2": 768,
    "intfloat/e5-large-v2": 1024,
    "intfloat/multilingual-e5-small": 384,
    "intfloat/multilingual-e5-base": 768,
    "intfloat/multilingual-e5-large": 1024,
    "thenlper/gte-small": 384,
    "thenlper/gte-base": 768,
    "thenlper/gte-large": 1024,
    "nomic-ai/nomic-embed-text-v1.5": 768,
}


def known_embedding_dimension(model: str) -> int | None:
    """Dimension of a known model, by full name or by the part after the organisation."""
    if model in KNOWN_EMBEDDING_DIMENSIONS:
        return KNOWN_EMBEDDING_DIMENSIONS[model]
    short = {name.split("/", 1)[1]: dim for name, dim in KNOWN_EMBEDDING_DIMENSIONS.items()}
    return short.get(model.rsplit("/", 1)[-1])


class MilvusResources(SpecModel):
    """Resources of the managed Milvus server (seed: vector-db, GPU 2, 32 GB)."""

    gpus: int = gpus_field(
        1, "Shared GPUs for Milvus, requested only when index.type is a GPU_* index."
    )
    gpu_resource_name: str = gpu_resource_name_field(DEFAULT_SHARED_GPU_RESOURCE)
    memory: Quantity = memory_field("32Gi")
    memory_request: Quantity | None = memory_request_field(None)
    cpu: Quantity | None = cpu_field()


class GPUMemoryPool(SpecModel):
    """Milvus's GPU memory pool, capped so it cannot take the shared GPU from training."""

    initial_mib: int = Field(
        default=1024, ge=0, le=1048576, description="Pool size at start (MiB)."
    )
    max_mib: int = Field(default=8192, ge=1, le=1048576, description="Largest pool size (MiB).")


class ManagedMilvus(SpecModel):
    """A Milvus standalone server the operator runs in the namespace."""

    image: str = Field(
        default=MILVUS_IMAGE, min_length=1, max_length=512, description="Milvus image."
    )
    image_pull_policy: ImagePullPolicy = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    storage_size: Quantity = Field(default="50Gi", description="Size of the data volume.")
    storage_class_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="StorageClass of the data volume; unset: the cluster default.",
    )
    resources: MilvusResources = Field(
        default_factory=MilvusResources, description="Server resources."
    )
    gpu_memory_pool: GPUMemoryPool = Field(
        default_factory=GPUMemoryPool, description="GPU memory pool limits for GPU indexes."
    )


class MilvusCredentials(SpecModel):
    """A Secret with the user name and password (or token) for Milvus."""

    secret_name: str = Field(
        pattern=DNS_SUBDOMAIN, max_length=253,
        description="Name of the Secret. It must carry the annotation aiops.dev/milvus-uris listing "
                    "the URIs it may be sent to (comma-separated), so only someone who may edit the "
                    "Secret can let a VectorIndex use it; otherwise MilvusReady=False, "
                    "CredentialsNotPermitted, and no Job mounts it.",
    )
    username_key: str = Field(
        default="username", pattern=DATA_KEY, max_length=253, description="Key of the user name."
    )
    password_key: str = Field(
        default="password", pattern=DATA_KEY, max_length=253, description="Key of the password."
    )
    token_key: str | None = Field(
        default=None,
        pattern=DATA_KEY,
        max_length=253,
        description="Key of an API token; used instead of user name and password when set.",
    )


class ExternalMilvus(SpecModel):
    """An existing Milvus, e.g. a distributed cluster for more than one node."""

    uri: str = Field(
        pattern=r"^(https?|tcp|grpc)://[A-Za-z0-9.-]+(:[0-9]+)?(/[!-~]*)?$",
        max_length=2048,
        description="Milvus endpoint, e.g. http://milvus.search.svc:19530.",
    )
    database: str = Field(
        default="default",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=255,
        description="Database name.",
    )
    credentials: MilvusCredentials | None = Field(
        default=None, description="Where the credentials are; never put them in the spec itself."
    )


class MilvusConnection(OneOf):
    """Which Milvus holds the collection: one the operator manages, or an external one."""

    one_of: ClassVar[tuple[str, ...]] = ("managed", "external")
    managed: ManagedMilvus | None = Field(
        default=None, description="Run Milvus standalone in the namespace, on the shared GPU."
    )
    external: ExternalMilvus | None = Field(default=None, description="Use an existing Milvus.")


class Collection(SpecModel):
    """The Milvus collection: primary key = document id, the vector, text hash and metadata."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=255,
        description="Collection name. The collection records this VectorIndex (namespace/name) as its "
                    "owner in the collection property aiops.owner; another VectorIndex naming it is "
                    "refused (Valid=False, CollectionOwned) until that property is set empty.",
    )
    dimension: int = Field(
        ge=2,
        le=32768,
        description="Vector dimension; must equal the embedding model's output size.",
    )
    metric: Metric = Field(default="COSINE", description="Similarity metric.")


class Index(SpecModel):
    """The vector index; changing it rebuilds the index without losing data."""

    type: IndexType = Field(
        default="HNSW", description="Milvus index type; GPU_* types need a GPU."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Build parameters for the index type (e.g. M and efConstruction for HNSW, "
        "nlist for IVF_*); unset ones take the operator's defaults.",
    )
    search_params: dict[str, Any] = Field(
        default_factory=dict, description="Search parameters (e.g. ef for HNSW, nprobe for IVF_*)."
    )


class EmbeddingResources(SpecModel):
    """Resources of each ingest Job, which embeds documents on the shared GPU. The memory is
    separate from Milvus's 32Gi: the reference node has 128 GB for all four workloads."""

    gpus: int = gpus_field(
        1, "Shared GPUs per ingest Job (the reference node embeds on GPU 2); 0 embeds on CPU."
    )
    gpu_resource_name: str = gpu_resource_name_field(DEFAULT_SHARED_GPU_RESOURCE)
    memory: Quantity = memory_field("8Gi")
    memory_request: Quantity | None = memory_request_field(None)
    cpu: Quantity | None = cpu_field()


class Embedding(SpecModel):
    """How documents become vectors."""

    model: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        min_length=1,
        max_length=512,
        description="Sentence-transformers model name or a path inside the worker image.",
    )
    batch_size: int = Field(default=64, ge=1, le=8192, description="Documents embedded per batch.")
    device: EmbeddingDevice = Field(
        default="auto", description="auto: cuda when a GPU is allocated, else cpu."
    )
    normalize: bool = Field(
        default=True, description="Scale vectors to unit length (use with COSINE or IP)."
    )
    max_sequence_length: int | None = Field(
        default=None,
        ge=8,
        le=32768,
        description="Tokens per document kept; unset: the model's limit.",
    )
    resources: EmbeddingResources = Field(
        default_factory=EmbeddingResources, description="Resources of the ingest Job."
    )


class ConfigMapDocuments(SpecModel):
    """Documents in a ConfigMap: every key (or one key) holds JSON Lines."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name of the ConfigMap.")
    key: str | None = Field(
        default=None, pattern=DATA_KEY, max_length=253, description="Only this key; unset: all keys."
    )


class DocumentSource(OneOf):
    """Where the documents are: JSON Lines, one {"id", "text", "metadata"} object per line."""

    one_of: ClassVar[tuple[str, ...]] = ("config_map", "persistent_volume_claim")
    config_map: ConfigMapDocuments | None = Field(
        default=None, description="Documents in a ConfigMap."
    )
    persistent_volume_claim: PersistentVolumeClaimPath | None = Field(
        default=None, description="A .jsonl file, or a directory of them, in a PVC."
    )
    id_field: str = Field(
        default="id", min_length=1, max_length=128, description="Field holding the document id."
    )
    text_field: str = Field(
        default="text", min_length=1, max_length=128, description="Field holding the text."
    )
    metadata_field: str = Field(
        default="metadata",
        min_length=1,
        max_length=128,
        description="Field holding the metadata object.",
    )
    delete_missing: bool = Field(
        default=True, description="Remove vectors of documents no longer in the source."
    )
    allow_empty: bool = Field(
        default=False,
        description="Let a source with no documents at all delete every stored vector. Off: such an ingest "
        "fails with SourceEmpty and the index keeps serving (an emptied ConfigMap key or a volume mounted "
        "empty looks the same as a cleared source).",
    )


class Ingest(SpecModel):
    """When new and changed documents are ingested."""

    schedule: str | None = Field(
        default=None,
        pattern=r"^(@(hourly|daily|weekly|monthly|yearly|annually)|[!-~]+( [!-~]+){4})$",
        max_length=128,
        description="Cron schedule (5 fields, or @hourly/@daily/...) for periodic ingestion.",
    )
    on_source_change: bool = Field(
        default=True, description="Also ingest when the source ConfigMap changes."
    )
    suspend: bool = Field(default=False, description="Pause ingestion; the index keeps serving.")
    backoff_limit: int = Field(
        default=3, ge=0, le=20, description="Retries of a failed ingest Job."
    )


class Compaction(SpecModel):
    """Reclaiming space left by deleted documents."""

    enabled: bool = Field(default=True, description="Compact when deletes pass the ratio.")
    deleted_ratio: float = Field(
        default=0.2, gt=0, le=1, description="Deleted rows over all rows that triggers compaction."
    )


class Rebuild(SpecModel):
    """Rebuilding the index as the collection changes."""

    enabled: bool = Field(default=True, description="Rebuild when a trigger below fires.")
    growth_ratio: float = Field(
        default=0.5,
        gt=0,
        le=100,
        description="Growth since the last build that triggers a rebuild.",
    )


class RecallCheck(SpecModel):
    """Measuring the served index against exact search."""

    enabled: bool = Field(default=True, description="Measure recall periodically.")
    k: int = Field(default=10, ge=1, le=1000, description="Neighbours compared (recall@k).")
    min_recall: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Recall below this triggers a rebuild or a parameter raise.",
    )
    sample_queries: int = Field(
        default=100, ge=1, le=10000, description="Held-out queries in each measurement."
    )
    interval_seconds: int = Field(
        default=3600, ge=60, le=604800, description="Seconds between measurements."
    )


class IndexOptimization(SpecModel):
    """The index optimisation policy."""

    compaction: Compaction = Field(default_factory=Compaction, description="Compaction policy.")
    rebuild: Rebuild = Field(default_factory=Rebuild, description="Rebuild policy.")
    recall: RecallCheck = Field(default_factory=RecallCheck, description="Recall measurement.")


class VectorIndexSpec(SpecModel):
    """A Milvus collection fed from a document source through an embedding model."""

    milvus: MilvusConnection = Field(
        default_factory=lambda: MilvusConnection(managed=ManagedMilvus()),
        description="The Milvus to use; by default one the operator manages.",
    )
    collection: Collection = Field(description="The collection.")
    index: Index = Field(default_factory=Index, description="The vector index.")
    embedding: Embedding = Field(default_factory=Embedding, description="The embedding model.")
    source: DocumentSource = Field(description="The documents to index.")
    ingest: Ingest = Field(default_factory=Ingest, description="When to ingest.")
    optimization: IndexOptimization = Field(
        default_factory=IndexOptimization, description="Index optimisation policy."
    )


class DocumentCounts(StatusModel):
    """Documents by state."""

    total: int = Field(default=0, ge=0, description="Documents in the source.")
    ingested: int = Field(default=0, ge=0, description="Documents stored with a current vector.")
    pending: int = Field(default=0, ge=0, description="New or changed documents not yet stored.")
    failed: int = Field(
        default=0, ge=0, description="Documents that could not be embedded or stored."
    )
    deleted: int = Field(
        default=0, ge=0, description="Vectors removed because the document left the source."
    )
    deletions_held: int = Field(
        default=0,
        ge=0,
        description="Vectors of documents missing from the source that were kept: a line that is not JSON "
        "or a file that could not be read may hold them; removed once every line reads.",
    )


class IngestProgress(StatusModel):
    """The running ingest, from its pod every few seconds."""

    done: int | None = Field(default=None, description="Documents embedded and stored so far.")
    total: int | None = Field(default=None, description="Documents this run embeds.")
    documents_per_second: float | None = Field(default=None, description="Rate since the pod started.")
    percent: float | None = Field(default=None, description="Share done, 0-100.")
    eta_seconds: float | None = Field(default=None, description="Time left at the pod's pace so far.")
    updated_at: datetime | None = Field(default=None, description="When the operator read it.")


class IngestRun(StatusModel):
    """The outcome of the last ingest."""

    job: str | None = Field(default=None, description="Name of the ingest Job.")
    key: str | None = Field(
        default=None, description="Spec and source version the run ingested (same key: same run)."
    )
    embedded: int | None = Field(default=None, ge=0, description="Documents embedded (new or changed).")
    skipped: int | None = Field(
        default=None, ge=0, description="Documents already stored with the same content hash."
    )
    start_time: datetime | None = Field(default=None, description="When it started.")
    completion_time: datetime | None = Field(default=None, description="When it ended.")
    duration_seconds: float | None = Field(default=None, description="How long it took.")
    documents_per_second: float | None = Field(
        default=None, description="Embedding plus upsert throughput."
    )
    outcome: Literal["Running", "Succeeded", "Failed"] | None = Field(
        default=None, description="Result."
    )
    message: str | None = Field(default=None, description="What failed, if anything.")


class IndexStatus(StatusModel):
    """The index Milvus serves."""

    type: str | None = Field(default=None, description="Index type built.")
    state: IndexState = Field(default="Absent", description="Build state.")
    params: dict[str, Any] = Field(default_factory=dict, description="Build parameters in effect.")
    search_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Search parameters the operator raised to keep recall above the floor (Milvus "
        "stores none); unset: the spec's or the defaults.",
    )
    metric: str | None = Field(default=None, description="Similarity metric of the index.")
    indexed_rows: int | None = Field(default=None, ge=0, description="Rows the index covers.")
    rows: int | None = Field(default=None, ge=0, description="Rows when the index was built.")
    built_at: datetime | None = Field(default=None, description="When it was last built.")
    recall_at_k: float | None = Field(default=None, description="Last measured recall@k.")
    recall_measured_at: datetime | None = Field(
        default=None, description="When recall was measured."
    )


class VectorIndexStatus(StatusBase):
    """Documents, ingestion and the index."""

    phase: VectorIndexPhase = Field(default="Pending", description="Where the index stands.")
    milvus_uri: str | None = Field(default=None, description="Milvus endpoint in use.")
    credentials_secret: str | None = Field(
        default=None, description="Managed Milvus: the Secret (keys username, password) with which "
        "applications in this namespace sign in to it; every client must.")
    collection: str | None = Field(default=None, description="Collection in use.")
    source_checksum: str | None = Field(
        default=None, description="Hash of the source last ingested."
    )
    documents: DocumentCounts = Field(
        default_factory=DocumentCounts, description="Document counts."
    )
    last_ingest: IngestRun | None = Field(default=None, description="The last ingest run.")
    progress: IngestProgress | None = Field(default=None, description="The running ingest's progress, live.")
    index: IndexStatus | None = Field(default=None, description="The served index.")
