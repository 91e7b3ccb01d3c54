"""Offline validation of custom resources against the vendored CRD schemas (vendor.py).

Two checks, as an API server with strict field validation would make them: the object
satisfies the CRD's OpenAPI schema (types, enums, required fields, bounds), and it has no
field the schema does not declare (the API server would drop it silently, and a misspelt
`replica` would go unnoticed), except below `x-kubernetes-preserve-unknown-fields`.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from deploy.k8s.crds.vendor import load


def problems(obj: dict[str, Any]) -> list[str]:
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    kind = obj.get("kind", "?")
    name = f"{kind}/{obj.get('metadata', {}).get('name', '?')}"
    try:
        schema = load(group, kind, version)["schema"]
    except KeyError:
        return [f"{name}: no vendored schema for {obj.get('apiVersion')} {kind}"]
    found = [
        f"{name}: {'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]
    found += [f"{name}: {where}: unknown field" for where in _unknown(obj, schema, "")]
    return found


def _unknown(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict):
        declared = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            here = f"{where}.{key}" if where else key
            if declared is not None and key in declared:
                out += _unknown(item, declared[key], here)
            elif isinstance(extra, dict):
                out += _unknown(item, extra, here)
            elif declared is not None and extra is None:
                out.append(here)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            out += _unknown(item, schema["items"], f"{where}[{index}]")
    return out
