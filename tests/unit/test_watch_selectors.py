"""The operator's Job, Deployment and StatefulSet informers are filtered by the API server on the
managed-by label, so every such object the operator makes must carry it, or the operator would
never see its own children."""

from __future__ import annotations

import copy

import yaml

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.api.vectorindex import VectorIndexSpec
from aiops.builders.jobs import worker_job
from aiops.builders.milvus import build_milvus_statefulset
from aiops.builders.triton import build_triton_deployment
from aiops.controllers.settings import OWNED_SELECTOR
from aiops.controllers.watches import KINDS


def owned(obj: dict) -> bool:
    key, value = OWNED_SELECTOR.split("=")
    return all(labels.get(key) == value for labels in (obj["metadata"]["labels"],
                                                       obj["spec"]["template"]["metadata"]["labels"]))


def test_the_filtered_kinds_and_what_the_builders_label():
    selectors = {plural: selector for plural, (_, selector, _) in KINDS.items()}
    assert selectors == {"jobs": OWNED_SELECTOR, "deployments": OWNED_SELECTOR, "statefulsets": OWNED_SELECTOR,
                         # a foreign GPU pod frees GPUs; VectorIndex sources are the user's ConfigMaps
                         "pods": "", "configmaps": "", "nodes": ""}

    md = ModelDeploymentSpec.from_wire({"model": {"name": "m", "version": 1},
                                        "repository": {"hostPath": {"path": "/m"}}})
    assert owned(build_triton_deployment("md", md, surge=False, control_secret="md-model-control-0"))
    example = next(d for d in yaml.safe_load_all(open("examples/vectorindex.yaml")) if d["kind"] == "VectorIndex")
    assert owned(build_milvus_statefulset("idx", VectorIndexSpec.model_validate(copy.deepcopy(example["spec"]))))
    # Every Job (validation, training steps, ingestion) is built by worker_job, whatever labels it is given.
    assert owned(worker_job("j", {"app": "x"}, {"name": "c", "image": "i"}, [], backoff_limit=0))
