"""The managed Milvus and the ingest Job built from a VectorIndex spec, without a cluster."""

from __future__ import annotations

import copy
import json

import yaml

from aiops.api.vectorindex import VectorIndexSpec
from aiops.builders.ingest_job import build_ingest_configmap, build_ingest_job, ingest_key
from aiops.builders.jobs import SPEC_ANNOTATION
from aiops.builders.milvus import (
    build_milvus_auth_secret,
    build_milvus_configmap,
    build_milvus_statefulset,
    milvus_uri,
)
from aiops.indexing.schedule import last_tick, seconds_until_next_tick

EXAMPLE = next(d for d in yaml.safe_load_all(open("examples/vectorindex.yaml")) if d["kind"] == "VectorIndex")


def spec(**changes) -> VectorIndexSpec:
    wire = copy.deepcopy(EXAMPLE["spec"])
    wire.update(changes)
    return VectorIndexSpec.model_validate(wire)


def container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def test_milvus_gets_the_shared_gpu_only_for_gpu_indexes():
    cpu = container(build_milvus_statefulset("idx", spec()))
    assert cpu["resources"]["limits"] == {"memory": "32Gi"}
    gpu = container(build_milvus_statefulset("idx", spec(index={"type": "GPU_CAGRA"})))
    assert gpu["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu.shared": "1"}


def test_milvus_keeps_its_data_on_a_claim_and_its_gpu_pool_capped():
    sts = build_milvus_statefulset("idx", spec())
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert {"name": "data", "mountPath": "/var/lib/milvus"} in container(sts)["volumeMounts"]
    assert container(sts)["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    data = build_milvus_configmap("idx", spec())["data"]
    user = yaml.safe_load(data["user.yaml"])
    assert user == {"gpu": {"initMemSize": 1024, "maxMemSize": 8192}, "etcd": {"endpoints": ["127.0.0.1:2379"]}}
    etcd = yaml.safe_load(data["embedEtcd.yaml"])  # metadata store without authentication: loopback only
    assert etcd["listen-client-urls"] == etcd["advertise-client-urls"] == "http://127.0.0.1:2379"
    assert milvus_uri("idx", "ns") == "http://idx-milvus.ns.svc:19530"
    # Every client signs in; the operator replaces root's built-in password (indexing/probe.py secure).
    assert {"name": "COMMON_SECURITY_AUTHORIZATIONENABLED", "value": "true"} in container(sts)["env"]
    secret = build_milvus_auth_secret("idx", "root", "p" * 64, "0a1b2c3d")
    assert secret["type"] == "kubernetes.io/basic-auth" and secret["metadata"]["name"] == "idx-milvus-auth-0a1b2c3d"
    assert secret["stringData"] == {"username": "root", "password": "p" * 64}


def test_ingest_job_embeds_on_the_shared_gpu_and_reads_credentials_from_the_secret():
    job = build_ingest_job("idx", spec(), "k1", "http://m:19530", "img:1", "ns")
    c = container(job)
    assert c["resources"]["limits"]["nvidia.com/gpu.shared"] == "1"
    assert "--milvus-uri=http://m:19530" in c["args"] and "--source=/etc/aiops/source" in c["args"]
    assert "--owner=ns/idx" in c["args"], "the collection is recorded as this VectorIndex's"
    carried = json.loads(job["spec"]["template"]["metadata"]["annotations"][SPEC_ANNOTATION])
    assert VectorIndexSpec.from_wire(carried) == spec() and build_ingest_configmap("idx", spec(), "k1") is None
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    external = spec(milvus={"external": {"uri": "http://milvus.search:19530",
                                         "credentials": {"secretName": "milvus-auth"}}})
    c = container(build_ingest_job("idx", external, "k1", "http://milvus.search:19530", "img:1", "ns"))
    volumes = build_ingest_job("idx", external, "k1", "u", "i", "ns")["spec"]["template"]["spec"]["volumes"]
    secret = next(v for v in volumes if v["name"] == "credentials")["secret"]
    assert secret["secretName"] == "milvus-auth" and [i["key"] for i in secret["items"]] == ["username", "password"]
    assert "--credentials-dir=/etc/aiops/milvus-credentials" in c["args"]
    managed = build_ingest_job("idx", spec(), "k1", "u", "i", "ns", managed_credentials="idx-milvus-auth-0a1b2c3d")
    secret = next(v for v in managed["spec"]["template"]["spec"]["volumes"] if v["name"] == "credentials")["secret"]
    assert secret["secretName"] == "idx-milvus-auth-0a1b2c3d" and [i["key"] for i in secret["items"]] == [
        "username", "password"]
    assert "--credentials-dir=/etc/aiops/milvus-credentials" in container(managed)["args"]
    cpu = spec(embedding={**EXAMPLE["spec"]["embedding"], "device": "cpu"})
    limits = container(build_ingest_job("idx", cpu, "k", "u", "i", "ns"))["resources"]["limits"]
    assert not any("gpu" in k for k in limits)


def test_ingest_key_follows_spec_and_source_version():
    assert ingest_key(spec(), "cm:1") == ingest_key(spec(), "cm:1")
    assert ingest_key(spec(), "cm:1") != ingest_key(spec(), "cm:2")
    assert ingest_key(spec(), "cm:1") != ingest_key(spec(index={"type": "IVF_FLAT"}), "cm:1")


def test_schedule_ticks():
    import datetime as dt

    now = dt.datetime(2026, 1, 1, 10, 47, 30, tzinfo=dt.UTC)
    assert last_tick("*/30 * * * *", now) == dt.datetime(2026, 1, 1, 10, 30, tzinfo=dt.UTC)
    assert seconds_until_next_tick("*/30 * * * *", now) == 750
    assert last_tick("@daily", now) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
