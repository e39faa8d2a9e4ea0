"""The OpenAPI 3 document, generated from the route table so it cannot drift from behaviour."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from common.api.routes import routes_for

STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 400: "Bad input", 401: "Missing or wrong key",
    403: "Key of another tenant", 404: "Unknown (or another tenant's)", 405: "Method not allowed",
    409: "Conflict", 413: "Body too large", 415: "Unsupported Content-Type", 422: "Invalid body",
    429: "Rate or quota exceeded", 503: "Dependency down",
}  # fmt: skip
PATH_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
PATH_PARAM_PATTERNS = {
    "org": r"^[a-z][a-z0-9_]{2,49}$",
    "table": r"^[a-z][a-z0-9_]{0,63}$",
    "provider": r"^[a-z][a-z0-9_]{0,49}$",
    "domain": r"^[a-z][a-z0-9_]{0,49}$",
    "template": r"^[a-z][a-z0-9_]{0,49}$",
    "run_id": r"^[A-Za-z0-9_-]{1,64}$",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "additionalProperties": True,
}


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Move a model schema's $defs into components (refs already point there)."""
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    return schema


def _query_parameters(model: type[BaseModel], components: dict[str, Any]) -> list[dict[str, Any]]:
    """One optional query parameter per model field, with its type, enum, pattern, default and text."""
    schema = _hoist(model.model_json_schema(ref_template="#/components/schemas/{model}"), components)
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        options = [p for p in prop.pop("anyOf", []) if p.get("type") != "null"]
        if len(options) == 1:
            prop = {**options[0], **prop}
        elif options:
            prop["anyOf"] = options
        if prop.get("default", 0) is None:
            del prop["default"]
        parameters.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                           "description": description, "schema": prop})  # fmt: skip
    return parameters


@lru_cache(maxsize=4)
def openapi_document(group: str = "both") -> dict[str, Any]:
    """OpenAPI 3.1 for the routes a function serves."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes_for(group):
        path = PATH_PARAM.sub(r"{\1}", route.path)
        parameters = [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "string", "pattern": PATH_PARAM_PATTERNS.get(name, ".*")}}
            for name in PATH_PARAM.findall(route.path)
        ] + [
            {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
            for name, text in route.query.items()
        ] + [
            {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string"}}
            for name, text in route.headers.items()
        ]  # fmt: skip
        query_model = getattr(route, "query_model", None)
        if query_model is not None:
            parameters += _query_parameters(query_model, components)
        response_schema: dict[str, Any] = {"type": "object"}
        response_model = getattr(route, "response_model", None)
        if response_model is not None:
            components[response_model.__name__] = _hoist(
                response_model.model_json_schema(
                    by_alias=True, mode="serialization", ref_template="#/components/schemas/{model}"
                ),
                components,
            )
            response_schema = {"$ref": f"#/components/schemas/{response_model.__name__}"}
        error_descriptions = getattr(route, "error_descriptions", {})
        operation: dict[str, Any] = {
            "operationId": route.handler.__name__,
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                str(route.status): {"description": STATUS_TEXT[route.status],
                                    "content": {"application/json": {"schema": response_schema}}},
            },
        }  # fmt: skip
        for status in sorted(set(route.errors) | {405}):
            operation["responses"][str(status)] = {
                "description": error_descriptions.get(status, STATUS_TEXT[status]),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        if route.auth == "root":
            operation["security"] = [{"rootKey": []}]
        elif route.auth == "tenant":
            operation["security"] = [{"apiKey": []}]
        elif route.auth == "root_or_tenant":
            operation["security"] = [{"rootKey": []}, {"apiKey": []}]
        if route.request_model is not None:
            schema = route.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components[route.request_model.__name__] = _hoist(schema, components)
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.request_model.__name__}"}}},
            }
        elif route.request_content:
            operation["requestBody"] = {
                "required": True,
                "content": {ct: {"schema": {"type": "string", "format": fmt}} for ct, fmt in route.request_content.items()},
            }
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Convergence", "version": "1", "description": "Multi-tenant cloud cost data platform."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "rootKey": {"type": "apiKey", "in": "header", "name": "X-CA-Root-Key"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
