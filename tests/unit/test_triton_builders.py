"""The Triton Deployment, Service and load configuration built from a ModelDeployment spec."""

from aiops.api.modeldeployment import ModelDeploymentSpec
from aiops.builders.triton import (
    build_triton_deployment,
    build_triton_service,
    child_name,
    triton_model_config,
)


def spec(**extra):
    base = {"model": {"name": "resnet", "version": 3}, "repository": {"hostPath": {"path": "/srv/models"}}}
    base.update(extra)
    return ModelDeploymentSpec.model_validate(base)


def deployment(name, s, surge):
    return build_triton_deployment(name, s, surge=surge, control_secret=f"{name}-model-control-0")


def container(dep):
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_seed_defaults_two_gpus_64gi_explicit_model_control():
    dep = deployment("llm", spec(), surge=False)
    c = container(dep)
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "64Gi"}
    assert "--model-control-mode=explicit" in c["args"]
    assert "--model-repository=/models" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/resnet/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    vol = dep["spec"]["template"]["spec"]["volumes"][0]
    assert vol["hostPath"] == {"path": "/srv/models", "type": "Directory"}
    assert c["volumeMounts"][0] == {"name": "model-repository", "mountPath": "/models", "readOnly": True}


def test_version_is_not_in_the_pod_template():
    """A version change must not roll pods: it is swapped in the running server."""
    v3 = deployment("llm", spec(), surge=False)
    v4 = deployment("llm", spec(model={"name": "resnet", "version": 4}), surge=False)
    assert v3 == v4


def test_pods_run_non_root_with_a_read_only_root():
    pod = deployment("llm", spec(), surge=False)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc["allowPrivilegeEscalation"]


def test_surge_only_when_capacity_allows():
    assert deployment("a", spec(), surge=True)["spec"]["strategy"]["rollingUpdate"] == \
        {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment("a", spec(), surge=False)["spec"]["strategy"]["rollingUpdate"] == \
        {"maxSurge": 0, "maxUnavailable": 1}


def test_pvc_with_sub_path_and_custom_gpu_resource():
    s = spec(repository={"persistentVolumeClaim": {"claimName": "models", "subPath": "triton"}},
             resources={"gpus": 1, "gpuResourceName": "nvidia.com/gpu.shared", "memory": "8Gi", "cpu": "2"})
    dep = deployment("a", s, surge=False)
    c = container(dep)
    assert c["volumeMounts"][0]["subPath"] == "triton"
    assert dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == \
        {"claimName": "models", "readOnly": True}
    assert c["resources"] == {"limits": {"nvidia.com/gpu.shared": "1", "memory": "8Gi"},
                              "requests": {"memory": "8Gi", "cpu": "2"}}
    assert dep["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu.shared"


def test_object_store_repository_uses_the_uri_and_credentials_secret():
    s = spec(repository={"objectStore": {"uri": "s3://bucket/models", "credentialsSecret": "s3-creds"}})
    dep = deployment("a", s, surge=False)
    c = container(dep)
    assert "--model-repository=s3://bucket/models" in c["args"]
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert all(m["name"] != "model-repository" for m in c["volumeMounts"])


def test_runtime_env_and_args():
    s = spec(runtime={"args": ["--log-verbose=1"], "env": [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})
    c = container(deployment("a", s, surge=False))
    assert c["args"][-1] == "--log-verbose=1"
    assert c["env"] == [{"name": "AIOPS_MODEL_CONTROL_KEY",
                         "valueFrom": {"secretKeyRef": {"name": "a-model-control-0", "key": "key"}}},
                        {"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]


def test_service_selects_the_deployments_pods():
    dep, svc = deployment("a", spec(), surge=False), build_triton_service("a")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_long_names_fit_a_dns_label_and_stay_distinct():
    a, b = child_name("x" * 70, "triton"), child_name("x" * 69 + "y", "triton")
    assert len(a) <= 63 and len(b) <= 63 and a != b and a.endswith("-triton")
    assert child_name("short", "triton") == "short-triton"


def test_model_config_pins_versions_and_applies_batching():
    base = {"name": "resnet", "backend": "python", "max_batch_size": 4,
            "version_policy": {"latest": {"num_versions": 1}},
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]}
    s = spec(batching={"maxBatchSize": 16, "preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 500})
    cfg = triton_model_config(base, s, [3, 2, 3])
    assert cfg["version_policy"] == {"specific": {"versions": [2, 3]}}
    assert cfg["max_batch_size"] == 16
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 500, "preferred_batch_size": [4, 8]}
    assert cfg["input"] == base["input"] and base["version_policy"] == {"latest": {"num_versions": 1}}


def test_model_config_without_batching_support_is_left_unbatched():
    base = {"name": "m", "backend": "python", "max_batch_size": 0, "dynamic_batching": {}}
    cfg = triton_model_config(base, spec(), [1])
    assert cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg
    cfg = triton_model_config({"max_batch_size": 8}, spec(batching={"enabled": False}), [1])
    assert cfg["max_batch_size"] == 8 and "dynamic_batching" not in cfg


def test_serving_options_reach_the_model_config_and_the_server():
    base = {"name": "m", "backend": "onnxruntime", "max_batch_size": 8,
            "instance_group": [{"count": 4, "kind": "KIND_GPU", "gpus": [0]}],
            "parameters": {"execution_mode": {"string_value": "0"}},
            "optimization": {"priority": "PRIORITY_MAX"}}
    s = spec(serving={"instances": 2, "threadsPerInstance": 3, "graphOptimization": "basic",
                      "responseCache": {"enabled": True, "size": "32Mi"}})
    cfg = triton_model_config(base, s, [1])
    assert cfg["instance_group"] == [{"count": 2, "kind": "KIND_GPU"}]
    assert cfg["parameters"] == {"execution_mode": {"string_value": "0"},
                                 "intra_op_thread_count": {"string_value": "3"}}
    # Triton's onnxruntime backend: -1 basic, 1 extended, 2 none, anything else all.
    assert cfg["optimization"] == {"priority": "PRIORITY_MAX", "graph": {"level": -1}}
    assert cfg["response_cache"] == {"enable": True}
    assert base["optimization"] == {"priority": "PRIORITY_MAX"}, "the repository's config is not changed"
    assert "--cache-config=local,size=33554432" in container(deployment("m", s, surge=False))["args"]
    cpu = triton_model_config(base, spec(resources={"gpus": 0}, serving={"instances": 3}), [1])
    assert cpu["instance_group"] == [{"count": 3, "kind": "KIND_CPU"}]
    levels = {level: triton_model_config(base, spec(serving={"graphOptimization": level}), [1])["optimization"]
              ["graph"]["level"] for level in ("all", "extended", "basic", "none")}
    assert levels == {"all": 0, "extended": 1, "basic": -1, "none": 2}


def test_unset_serving_options_leave_the_repository_config_alone():
    base = {"name": "m", "backend": "python", "max_batch_size": 0,
            "instance_group": [{"count": 2, "kind": "KIND_CPU"}], "parameters": {"a": {"string_value": "1"}}}
    cfg = triton_model_config(base, spec(), [1])
    assert cfg["instance_group"] == base["instance_group"] and cfg["parameters"] == base["parameters"]
    assert "optimization" not in cfg and "response_cache" not in cfg
    assert not any(a.startswith("--cache-config") for a in container(deployment("m", spec(), surge=False))["args"])
