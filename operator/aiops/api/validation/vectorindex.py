"""The VectorIndex's rules: embedding dimension, index parameters, GPU placement and the ingest
schedule (checked by croniter, the library that runs it)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

from aiops.api.common import ModelRepository
from aiops.api.validation.base import ClusterFacts, Problem, gpus_fit_a_node, memory_rules, repository_rules
from aiops.api.vectorindex import VectorIndexSpec, known_embedding_dimension

INT32_MAX = 2**31 - 1
# Build parameters Milvus 2.4 accepts per index type, with their valid integer ranges
# (None: not an integer range, e.g. a string or boolean option).
INDEX_PARAMS: dict[str, dict[str, tuple[int, int] | None]] = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": (1, 65536)},
    "IVF_SQ8": {"nlist": (1, 65536)},
    "IVF_PQ": {"nlist": (1, 65536), "m": (1, 65536), "nbits": (1, 64)},
    "HNSW": {"M": (2, 2048), "efConstruction": (1, INT32_MAX)},
    "SCANN": {"nlist": (1, 65536), "with_raw_data": None},
    "DISKANN": {},
    "AUTOINDEX": {},
    "GPU_IVF_FLAT": {"nlist": (1, 65536)},
    "GPU_IVF_PQ": {"nlist": (1, 65536), "m": (1, 65536), "nbits": (1, 64)},
    "GPU_CAGRA": {
        "intermediate_graph_degree": (1, 1024),
        "graph_degree": (1, 1024),
        "build_algo": None,
        "cache_dataset_on_device": None,
    },
    "GPU_BRUTE_FORCE": {},
}
CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
# Where "does it ever fire" is asked from: any fixed instant will do, a leap year's start covers
# February 29th within croniter's search.
CRON_REFERENCE = dt.datetime(2028, 1, 1)


def rules(vi: VectorIndexSpec, facts: ClusterFacts) -> Iterator[Problem]:
    yield from _dimension_rules(vi)
    yield from _index_param_rules(vi)
    yield from _gpu_placement_rules(vi, facts)
    if vi.ingest.schedule is not None:
        yield from _cron_rules("spec.ingest.schedule", vi.ingest.schedule)
    if vi.source.persistent_volume_claim is not None:
        yield from repository_rules(
            "spec.source",
            ModelRepository(persistent_volume_claim=vi.source.persistent_volume_claim),
            facts,
        )


def _dimension_rules(vi: VectorIndexSpec) -> Iterator[Problem]:
    expected = known_embedding_dimension(vi.embedding.model)
    if expected is not None and expected != vi.collection.dimension:
        yield Problem(
            "spec.collection.dimension",
            "DimensionMismatch",
            f"embedding model {vi.embedding.model} produces {expected}-dimensional "
            f"vectors but the collection declares {vi.collection.dimension}; set "
            f"collection.dimension to {expected} or choose another model.",
        )


def _index_param_rules(vi: VectorIndexSpec) -> Iterator[Problem]:
    index = vi.index
    allowed = INDEX_PARAMS[index.type]
    for name, value in sorted(index.params.items()):
        field = f"spec.index.params.{name}"
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            yield Problem(
                field,
                "UnknownIndexParam",
                f"{index.type} has no build parameter {name!r} (it takes: {known}); a "
                "misspelt parameter would silently fall back to a default.",
            )
        elif (bounds := allowed[name]) is not None:
            low, high = bounds
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                yield Problem(
                    field,
                    "IndexParamOutOfRange",
                    f"{index.type} needs {name} to be an integer from {low} to {high}, "
                    f"not {value!r}.",
                )
    m = index.params.get("m")
    if (
        index.type in ("IVF_PQ", "GPU_IVF_PQ")
        and isinstance(m, int)
        and m > 0
        and vi.collection.dimension % m
    ):
        yield Problem(
            "spec.index.params.m",
            "PQSubvectorsDoNotDivideDimension",
            f"product quantization splits each vector into m={m} parts, which must "
            f"divide the dimension {vi.collection.dimension}.",
        )
    ef = index.search_params.get("ef")
    if (
        index.type == "HNSW"
        and isinstance(ef, int)
        and vi.optimization.recall.enabled
        and ef < vi.optimization.recall.k
    ):
        yield Problem(
            "spec.index.searchParams.ef",
            "SearchEfBelowK",
            f"HNSW search needs ef >= k, but ef is {ef} and the recall check asks for "
            f"k={vi.optimization.recall.k}; raise ef or lower optimization.recall.k.",
        )


def _gpu_placement_rules(vi: VectorIndexSpec, facts: ClusterFacts) -> Iterator[Problem]:
    managed = vi.milvus.managed
    if managed is not None:
        yield from memory_rules("spec.milvus.managed.resources", managed.resources)
    yield from memory_rules("spec.embedding.resources", vi.embedding.resources)
    if vi.index.type.startswith("GPU_") and managed is not None:
        if managed.resources.gpus == 0:
            yield Problem(
                "spec.milvus.managed.resources.gpus",
                "GPUIndexWithoutGPU",
                f"index type {vi.index.type} runs on a GPU, but the managed Milvus "
                "requests none; request a GPU or choose a CPU index such as HNSW.",
            )
        yield from gpus_fit_a_node(
            "spec.milvus.managed.resources.gpus",
            managed.resources.gpus,
            managed.resources.gpu_resource_name,
            facts,
        )
        pool = managed.gpu_memory_pool
        if pool.initial_mib > pool.max_mib:
            yield Problem(
                "spec.milvus.managed.gpuMemoryPool.initialMib",
                "GPUMemoryPoolInitialAboveMax",
                f"the pool starts at {pool.initial_mib} MiB but may grow only to "
                f"{pool.max_mib} MiB; make initialMib at most maxMib.",
            )
    embedding = vi.embedding
    gpus = embedding.resources.gpus
    if embedding.device == "cuda" and gpus == 0:
        yield Problem(
            "spec.embedding.device",
            "CUDAWithoutGPU",
            "embedding.device is cuda but embedding.resources.gpus is 0; request a GPU "
            "or use device auto or cpu.",
        )
    if embedding.device == "cpu" and gpus > 0:
        yield Problem(
            "spec.embedding.resources.gpus",
            "GPURequestedForCPUEmbedding",
            f"embedding runs on cpu but would hold {gpus} shared GPU(s) that training "
            "needs; set embedding.resources.gpus to 0 or the device to auto or cuda.",
        )
    if embedding.device != "cpu":
        yield from gpus_fit_a_node(
            "spec.embedding.resources.gpus", gpus, embedding.resources.gpu_resource_name, facts
        )


def _cron_rules(field: str, schedule: str) -> Iterator[Problem]:
    """The schedule as croniter, which runs it (`aiops.indexing.schedule`), reads it: each field
    on its own first, so the message names the wrong one, then whether it ever fires."""
    fields = schedule.split(" ")
    if len(fields) == len(CRON_FIELDS):
        for position, (name, text) in enumerate(zip(CRON_FIELDS, fields, strict=True)):
            alone = " ".join(text if i == position else "*" for i in range(len(CRON_FIELDS)))
            try:
                croniter(alone)
            except CroniterError as e:
                yield Problem(field, "InvalidSchedule", f"the {name} field {text!r} of schedule {schedule!r} is "
                              f"invalid: {_croniter_says(e)}.")
                return
    try:
        croniter(schedule, CRON_REFERENCE).get_next(dt.datetime)
    except CroniterBadDateError:
        yield Problem(field, "InvalidSchedule", f"schedule {schedule!r} never fires: no date has that day of "
                      "the month in that month.")
    except CroniterError as e:
        yield Problem(field, "InvalidSchedule", f"schedule {schedule!r} is invalid: {_croniter_says(e)}.")


def _croniter_says(error: Exception) -> str:
    """croniter's message without the expression it quotes first ("[60 * * * *] is not ...")."""
    return re.sub(r"^\[[^\]]*\]\s*(is\s+)?", "", str(error)).rstrip(".") or type(error).__name__
