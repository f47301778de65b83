"""A container's volumes and env resolved to this machine (planning is pure; materialize writes)."""

from pathlib import Path

import pytest
from kubernetes import client

from aiops.devenv.podenv import container_env, container_mounts, materialize, plan_volumes

DATA = {("configmap", "ns", "settings"): {"mode": "fast", "threads": "2"},
        ("secret", "ns", "creds"): {"token": "s3cr3t"}}


def lookup(kind, namespace, name):
    return DATA.get((kind, namespace, name))


def pod(volumes=(), containers=()):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", namespace="ns", uid="u-1", labels={"app": "x"}),
        spec=client.V1PodSpec(node_name="n0", volumes=list(volumes), containers=list(containers)))


VOLUMES = [
    client.V1Volume(name="repo",
                    persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name="models")),
    client.V1Volume(name="host", host_path=client.V1HostPathVolumeSource(path="/srv/data")),
    client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource()),
    client.V1Volume(name="cfg", config_map=client.V1ConfigMapVolumeSource(name="settings")),
    client.V1Volume(name="sec", secret=client.V1SecretVolumeSource(
        secret_name="creds", items=[client.V1KeyToPath(key="token", path="auth/token")])),
    client.V1Volume(name="gone", config_map=client.V1ConfigMapVolumeSource(name="missing", optional=True)),
    client.V1Volume(name="nfs", nfs=client.V1NFSVolumeSource(server="x", path="/y")),
]


def test_volume_kinds_map_to_local_paths():
    plans = plan_volumes(pod(VOLUMES), Path("/vol"), Path("/pods/p"))
    assert plans["repo"].path == "/vol/ns/models"
    assert plans["host"].path == "/srv/data"
    assert plans["tmp"].path == "/pods/p/volumes/tmp"
    assert plans["cfg"].path == "/pods/p/volumes/cfg" and plans["cfg"].source == "settings"
    assert plans["sec"].items == (("token", "auth/token"),)
    assert "nfs" not in plans  # nothing this node can provide


def test_mounts_apply_sub_path_and_map_the_termination_message():
    plans = plan_volumes(pod(VOLUMES), Path("/vol"), Path("/pods/p"))
    c = client.V1Container(name="c", image="i", volume_mounts=[
        client.V1VolumeMount(name="repo", mount_path="/models", sub_path="v1"),
        client.V1VolumeMount(name="tmp", mount_path="/tmp"),
        client.V1VolumeMount(name="nfs", mount_path="/nfs")])
    mounts = container_mounts(c, plans, "/pods/p/c/termination-log")
    assert mounts == {"/models": "/vol/ns/models/v1", "/tmp": "/pods/p/volumes/tmp",
                      "/dev/termination-log": "/pods/p/c/termination-log"}
    c.termination_message_path = "/result/msg"
    assert "/result/msg" in container_mounts(c, plans, "/t")


def test_materialize_writes_config_maps_and_secrets(tmp_path):
    plans = plan_volumes(pod(VOLUMES), tmp_path / "vol", tmp_path / "pod")
    plans.pop("host")
    materialize(plans, "ns", lookup)
    assert (tmp_path / "pod/volumes/cfg/mode").read_text() == "fast"
    assert (tmp_path / "pod/volumes/sec/auth/token").read_text() == "s3cr3t"
    assert (tmp_path / "pod/volumes/tmp").is_dir()
    assert (tmp_path / "vol/ns/models").is_dir()  # the claim's directory exists, empty


def test_materialize_fails_on_a_missing_required_config_map(tmp_path):
    vol = client.V1Volume(name="cfg", config_map=client.V1ConfigMapVolumeSource(name="nope"))
    with pytest.raises(KeyError, match="nope"):
        materialize(plan_volumes(pod([vol]), tmp_path, tmp_path), "ns", lookup)


def test_env_resolves_value_from_and_expands_references():
    c = client.V1Container(name="c", image="i", env_from=[
        client.V1EnvFromSource(prefix="CFG_", config_map_ref=client.V1ConfigMapEnvSource(name="settings"))],
        env=[client.V1EnvVar(name="A", value="1"),
             client.V1EnvVar(name="B", value="$(A)-$(CFG_mode)"),
             client.V1EnvVar(name="IP", value_from=client.V1EnvVarSource(
                 field_ref=client.V1ObjectFieldSelector(field_path="status.podIP"))),
             client.V1EnvVar(name="APP", value_from=client.V1EnvVarSource(
                 field_ref=client.V1ObjectFieldSelector(field_path="metadata.labels['app']"))),
             client.V1EnvVar(name="TOKEN", value_from=client.V1EnvVarSource(
                 secret_key_ref=client.V1SecretKeySelector(name="creds", key="token"))),
             client.V1EnvVar(name="OPT", value_from=client.V1EnvVarSource(
                 config_map_key_ref=client.V1ConfigMapKeySelector(name="x", key="y", optional=True)))])
    env = container_env(pod(containers=[c]), c, "127.100.0.9", lookup, base={"PATH": "/bin"})
    assert env["PATH"] == "/bin" and env["HOSTNAME"] == "p"
    assert env["CFG_threads"] == "2"
    assert env["B"] == "1-fast"
    assert env["IP"] == "127.100.0.9" and env["APP"] == "x"
    assert env["TOKEN"] == "s3cr3t"
    assert "OPT" not in env


def test_env_with_a_missing_required_key_is_a_config_error():
    c = client.V1Container(name="c", image="i", env=[client.V1EnvVar(
        name="X", value_from=client.V1EnvVarSource(
            config_map_key_ref=client.V1ConfigMapKeySelector(name="settings", key="nope")))])
    with pytest.raises(KeyError, match="nope"):
        container_env(pod(containers=[c]), c, "127.0.0.1", lookup)
