"""Pydantic models -> structural OpenAPI v3 schemas, as apiextensions.k8s.io/v1 requires them.

Pydantic writes JSON Schema 2020-12 with `$ref`s, nullable unions and numeric exclusive bounds;
the API server wants every node typed and inline, no nulls, OpenAPI 3.0 boolean exclusive bounds,
and explicit markers for int-or-string and free-form values. This module bridges the two and keeps
descriptions, defaults, enums, bounds, patterns and required lists.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault

# Output key order: what a reader of the YAML or of `kubectl explain` looks for first.
KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "oneOf",
)
PASSED_THROUGH = set(KEY_ORDER) - {
    "exclusiveMinimum",
    "exclusiveMaximum",
    "properties",
    "items",
    "additionalProperties",
    "anyOf",
    "default",
}
DROPPED = {"title", "$defs"}
FREE_FORM = {"x-kubernetes-preserve-unknown-fields": True}


class NotStructural(ValueError):
    """The model uses a shape a structural schema cannot state (e.g. a union of two objects)."""


class _DefaultsFromFactories(GenerateJsonSchema):
    """Reports defaults made by `default_factory` too, so the API server applies them.

    A nested model's default is written minimally (only what differs from its own defaults):
    `{}` lets the server fill in the nested defaults itself."""

    def get_default_value(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return value


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema, camelCase, with defaults of factories."""
    return model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_DefaultsFromFactories
    )


def structural_schema(model: type[BaseModel], *, with_defaults: bool = True) -> dict[str, Any]:
    """The model as a structural schema. `with_defaults=False` drops defaults (for status, which
    the operator writes whole: a server-filled default would hide a value it forgot)."""
    schema = json_schema(model)
    return _convert(schema, schema.get("$defs", {}), with_defaults)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inlines a `$ref` (plain or wrapped in a one-element allOf); the referring node's own keys
    (its field description and default) win over the referenced model's."""
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**{k: v for k, v in node.items() if k != "allOf"}, **node["allOf"][0]}
    if "$ref" not in node:
        return node
    target = defs[node["$ref"].rsplit("/", 1)[-1]]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _drop_null_branch(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`X | None` becomes an optional X: Kubernetes drops nulls of non-nullable fields."""
    if "anyOf" not in node or node.get("x-kubernetes-int-or-string"):
        return node
    branches = [b for b in node["anyOf"] if b != {"type": "null"}]
    if len(branches) != 1:
        raise NotStructural(
            f"a union of {len(branches)} types cannot be structural: {node['anyOf']}"
        )
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", NoDefault) is None:
        del rest["default"]
    return {**_resolve(branches[0], defs), **rest}


def _convert(node: dict[str, Any], defs: dict[str, Any], with_defaults: bool) -> dict[str, Any]:
    node = _drop_null_branch(_resolve(node, defs), defs)
    node = _resolve(node, defs)
    if not node or node == {"additionalProperties": True}:
        return dict(FREE_FORM)  # Any: a free-form value
    out: dict[str, Any] = {k: v for k, v in node.items() if k in PASSED_THROUGH}
    if "const" in node:
        out["enum"] = [node["const"]]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:  # JSON Schema 2020-12 number -> OpenAPI 3.0 boolean
            out[plain] = node[bound]
            out[bound] = True
    if with_defaults and _worth_defaulting(node):
        out["default"] = node["default"]
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        out["properties"] = {
            name: _convert(sub, defs, with_defaults) for name, sub in node["properties"].items()
        }
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" not in node:
        out["additionalProperties"] = _convert(extra, defs, with_defaults)
    elif extra is True or (
        node.get("type") == "object" and "properties" not in node and extra is None
    ):
        out.update(FREE_FORM)
    if "items" in node:
        out["items"] = _convert(node["items"], defs, with_defaults)
    unknown = (
        set(node)
        - PASSED_THROUGH
        - DROPPED
        - {
            "const",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "default",
            "anyOf",
            "properties",
            "additionalProperties",
            "items",
        }
    )
    if unknown:
        raise NotStructural(f"no structural form for {sorted(unknown)} in {node}")
    if "type" not in out and not (
        out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise NotStructural(f"untyped schema node: {node}")
    return _ordered(out)


def _worth_defaulting(node: dict[str, Any]) -> bool:
    """Defaults that change something: not null, and not the empty list or map that an absent
    field already means (it would only clutter every stored object)."""
    default = node.get("default")
    if default is None or default == []:
        return False
    return default != {} or "properties" in node


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(KEY_ORDER)}
    return {k: node[k] for k in sorted(node, key=lambda k: (rank.get(k, len(rank)), k))}
