"""Pieces shared by the three kinds: base models, names, quantities, GPU requests, references,
conditions and history entries.

Spec models are strict and forbid unknown fields, so that they accept exactly what the generated
CRD schema accepts (a property test holds them to that). Rules that relate two fields to each other
are not here: the schema cannot express them on Kubernetes 1.20, so they live in
`aiops.api.validation`, where they become a `Valid=False` condition instead of a rejected apply.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "aiops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
# What NVIDIA's device plugin advertises for a time-sliced GPU with `renameByDefault: true`:
# the reference node's GPU 2, shared by Milvus and training.
DEFAULT_SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"

# Kubernetes name formats (RFC 1123 label and subdomain), as the API server checks them.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Triton model name is a directory in the model repository.
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Extended resource names such as nvidia.com/gpu or nvidia.com/gpu.shared.
RESOURCE_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
ENV_VAR_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A ConfigMap or Secret key as the API server allows it (alphanumerics, "-", "_", "."; not "." or
# ".." and not starting with ".."): a key used as a volume item path can then never leave the
# volume, and a key the API server would refuse is refused at apply, not on every reconcile.
DATA_KEY = r"^(\.[-_a-zA-Z0-9][-._a-zA-Z0-9]*|[-_a-zA-Z0-9][-._a-zA-Z0-9]*)$"
# A non-negative Kubernetes quantity ("64Gi", "500m", "1.5", "2e3").
QUANTITY = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The object as in a manifest: camelCase, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(ApiModel):
    r"""Strict like the API server: "2" is not an integer and an unknown field is an error.

    Patterns avoid \s, \d and \w, whose meaning differs between Go's regexp (the API server),
    Rust's (pydantic) and Python's; explicit classes mean the same everywhere."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Parses a manifest's camelCase form only, as the API server would read it (the Python
        field names are for code, not for manifests)."""
        if isinstance(data, Mapping) and not isinstance(data, dict):
            data = dict(data)  # e.g. Kopf's read-only view of a spec
        return cls.model_validate(data, by_alias=True, by_name=False)


class StatusModel(ApiModel):
    """Written by the operator; tolerant when reading what another version wrote."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def unknown_fields(cls, data: Any, path: str = "status") -> list[str]:
        """The paths in `data` (wire form) that this model does not declare: what the API server
        would prune without a word, since the CRD's schema is generated from the model."""
        return _unknown_fields(cls, data, path)


@functools.cache
def _wire_fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by wire name, with their annotations."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _unknown_fields(annotation: Any, data: Any, path: str) -> list[str]:
    if not isinstance(data, (dict, list)):  # a leaf: nothing below it to be unknown (most of a status)
        return []
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _unknown_fields(members[0], data, path) if len(members) == 1 else []
    if origin is typing.Annotated:
        return _unknown_fields(args[0], data, path)
    if origin in (list, tuple) and args and isinstance(data, list):
        return [u for i, item in enumerate(data) for u in _unknown_fields(args[0], item, f"{path}[{i}]")]
    if origin is dict and len(args) == 2 and isinstance(data, dict):
        return [u for k, v in data.items() for u in _unknown_fields(args[1], v, f"{path}.{k}")]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(data, dict):
        fields = _wire_fields(annotation)
        out = []
        for key, value in data.items():
            if key not in fields:
                out.append(f"{path}.{key}")
            else:
                out += _unknown_fields(fields[key], value, f"{path}.{key}")
        return out
    return []  # a scalar, Any, or a free-form map: nothing the schema would prune


class OneOf(SpecModel):
    """A union in the Kubernetes style (like volume sources): exactly one member field is set.

    The same rule becomes a `oneOf` of `required` lists in the schema, which the API server
    enforces, so the model and the CRD agree."""

    one_of: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> Any:
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        target["oneOf"] = [{"required": [to_camel(f)]} for f in cls.one_of]
        return json_schema

    @model_validator(mode="after")
    def _exactly_one_member(self) -> OneOf:
        chosen = [f for f in self.one_of if getattr(self, f) is not None]
        if len(chosen) != 1:
            names = ", ".join(to_camel(f) for f in self.one_of)
            raise ValueError(f"set exactly one of {names} (got {len(chosen)})")
        return self


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, int) and value < 0:
        raise ValueError("a quantity cannot be negative")
    return value


Quantity = Annotated[
    StrictInt | Annotated[StrictStr, Field(pattern=QUANTITY)],
    AfterValidator(_check_quantity),
    # The int-or-string form Kubernetes uses for quantities; `minimum` only binds integers and
    # `pattern` only strings.
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity; write it as a string ("64Gi"), since server-side apply of a Pod
on Kubernetes 1.20 rejects bare numbers as quantities."""


def quantity_str(value: int | str) -> str:
    """The quantity as the string a Pod's resources need."""
    return str(value)


ConditionStatus = Literal["True", "False", "Unknown"]
ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]


class Condition(StatusModel):
    """One aspect of the object's state, in the shape of Kubernetes' metav1.Condition."""

    type: str = Field(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
        description="Aspect this condition reports, in CamelCase (e.g. Valid, Ready, Degraded).",
    )
    status: ConditionStatus = Field(description="Whether the aspect holds: True, False or Unknown.")
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        min_length=1,
        max_length=1024,
        description="Why the status is what it is, as a CamelCase word (e.g. InsufficientGPU).",
    )
    message: str = Field(
        max_length=32768,
        description="What happened, why, and what to do about it, for the reader of "
        "kubectl describe.",
    )
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition was computed from."
    )


def gpus_field(default: int, description: str) -> Any:
    """The GPU count of a workload; kinds differ only in the default (2 for Triton, 1 shared)."""
    return Field(default=default, ge=0, le=64, description=description)


def gpu_resource_name_field(default: str) -> Any:
    return Field(
        default=default,
        pattern=RESOURCE_NAME,
        max_length=253,
        description="Extended resource name the NVIDIA device plugin advertises for these GPUs.",
    )


def memory_field(default: str) -> Any:
    return Field(default=default, description="Memory limit per pod, as a quantity (e.g. 64Gi).")


def memory_request(resources: Any) -> str:
    """The memory a pod of these resources requests: memoryRequest, else its memory limit."""
    return str(resources.memory_request if resources.memory_request is not None else resources.memory)


def memory_request_field(default: str | None) -> Any:
    return Field(
        default=default,
        description="Memory request per pod: what the scheduler reserves on the node and the "
        "operator's capacity check counts; at most memory. Unset: equal to memory.",
    )


def cpu_field() -> Any:
    return Field(
        default=None,
        description='CPU request per pod, as a quantity (e.g. "4" or 500m); unset: none.',
    )


class SecretKeyRef(SpecModel):
    """A key in a Secret of the same namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name of the Secret.")
    key: str = Field(pattern=DATA_KEY, max_length=253, description="Key within the Secret.")


class ConfigMapKeyRef(SpecModel):
    """A key in a ConfigMap of the same namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name of the ConfigMap.")
    key: str = Field(pattern=DATA_KEY, max_length=253, description="Key within the ConfigMap.")


class EnvVarSource(OneOf):
    """Where an environment variable's value comes from."""

    one_of: ClassVar[tuple[str, ...]] = ("secret_key_ref", "config_map_key_ref")
    secret_key_ref: SecretKeyRef | None = Field(
        default=None, description="Take the value from a Secret key."
    )
    config_map_key_ref: ConfigMapKeyRef | None = Field(
        default=None, description="Take the value from a ConfigMap key."
    )


class EnvVar(SpecModel):
    """An environment variable for a container: a literal value or a reference, not both."""

    name: str = Field(pattern=ENV_VAR_NAME, max_length=256, description="Variable name.")
    value: str | None = Field(default=None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Reference to a Secret or ConfigMap key holding the value."
    )


class PersistentVolumeClaimPath(SpecModel):
    """A path inside a PersistentVolumeClaim of the same namespace."""

    claim_name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="Name of the PVC.")
    sub_path: str | None = Field(
        default=None,
        pattern=r"^[^/]",
        max_length=4096,
        description="Path relative to the volume's root, without '..'; unset: the root itself.",
    )


class HostPath(SpecModel):
    """A directory on the node itself: for single-node installs like the reference node."""

    path: str = Field(pattern=r"^/", max_length=4096, description="Absolute path on the node.")


class ObjectStore(SpecModel):
    """A model repository in object storage, in the URI form Triton accepts."""

    uri: str = Field(
        pattern=r"^(s3|gs|as)://[!-~]+$",
        max_length=2048,
        description="s3://[host:port/]bucket/path, gs://bucket/path or as://account/container/path",
    )
    credentials_secret: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="Secret whose keys become the server's environment (e.g. AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).",
    )


class ModelRepository(OneOf):
    """Where a Triton model repository lives (the layout <model>/<version>/ plus config.pbtxt)."""

    one_of: ClassVar[tuple[str, ...]] = ("persistent_volume_claim", "host_path", "object_store")
    persistent_volume_claim: PersistentVolumeClaimPath | None = Field(
        default=None,
        description="The repository is in a PVC (ReadWriteMany to share across nodes).",
    )
    host_path: HostPath | None = Field(
        default=None,
        description="The repository is a directory on the node (single-node installs).",
    )
    object_store: ObjectStore | None = Field(
        default=None, description="The repository is in S3, GCS or Azure storage."
    )


class HistoryEntry(StatusModel):
    """One thing that happened to a model version."""

    version: int = Field(ge=1, description="The model version.")
    time: datetime = Field(description="When it happened.")
    outcome: Literal["Serving", "Superseded", "Failed", "RolledBack"] = Field(
        description="Serving: became the serving version; Superseded: replaced by a newer good "
        "version; Failed: never served (validation, deploy or health check failed); RolledBack: "
        "served, then was replaced by the last good version."
    )
    reason: str = Field(default="", max_length=1024, description="CamelCase cause of the outcome.")
    message: str = Field(
        default="", max_length=32768, description="Details for the person reading it."
    )


class StatusBase(StatusModel):
    """What every kind reports."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions (Valid, Ready and kind-specific ones), one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
