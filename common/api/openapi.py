"""The OpenAPI 3.1 document of a route table, generated from the models its routes declare.

Every body, query parameter and answer schema is pydantic's own JSON schema of the declared model
(`model_json_schema`, answers in serialization mode and by alias, as they are sent), with nested definitions
hoisted into components.schemas, so the document cannot describe a field a route does not have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel

from common.api.http import Route
from common.contracts.errors import ApiError
from common.types import SEGMENT_PATTERN, TABLE_NAME_PATTERN, TEMPLATE_NAME_PATTERN, TENANT_ID_PATTERN

REF_TEMPLATE = "#/components/schemas/{model}"
STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 400: "Bad input", 401: "Missing or wrong key",
    403: "Key of another tenant", 404: "Unknown (or another tenant's)", 405: "Method not allowed",
    409: "Conflict", 413: "Body too large", 415: "Unsupported Content-Type", 422: "Invalid body",
    429: "Rate or quota exceeded", 503: "Dependency down",
}  # fmt: skip
PATH_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
PATH_PARAM_PATTERNS = {
    "org": TENANT_ID_PATTERN,
    "table": TABLE_NAME_PATTERN,
    "provider": SEGMENT_PATTERN,
    "domain": SEGMENT_PATTERN,
    "template": TEMPLATE_NAME_PATTERN,
    "run_id": r"^[A-Za-z0-9_-]{1,64}$",
}
SECURITY = {
    "none": None,
    "root": [{"rootKey": []}],
    "tenant": [{"apiKey": []}],
    "root_or_tenant": [{"rootKey": []}, {"apiKey": []}],
}
SECURITY_SCHEMES = {
    "rootKey": {"type": "apiKey", "in": "header", "name": "X-CA-Root-Key"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


class SchemaComponents:
    """components.schemas while a document is built: each model's schema under its name, $defs beside it."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        """The model's JSON schema with its definitions moved into components (their refs point there)."""
        schema = model.model_json_schema(by_alias=True, mode=mode, ref_template=REF_TEMPLATE)
        for name, definition in schema.pop("$defs", {}).items():
            self._put(name, definition)
        return schema

    def ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, str]:
        """A $ref to the model's schema, which is added to components."""
        self._put(model.__name__, self.schema(model, mode))
        return {"$ref": REF_TEMPLATE.format(model=model.__name__)}

    def _put(self, name: str, schema: dict[str, Any]) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name}: rename one of the models")


def _query_parameters(model: type[BaseModel], components: SchemaComponents) -> list[dict[str, Any]]:
    """One query parameter per model field, with its type, enum, pattern, bounds, default and description."""
    schema = components.schema(model, "validation")
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


def _parameters(route: Route, components: SchemaComponents) -> list[dict[str, Any]]:
    """Path parameters, then the query model's fields, then the optional headers."""
    parameters: list[dict[str, Any]] = []
    for name in PATH_PARAM.findall(route.path):
        schema = {"type": "string"}
        if name in PATH_PARAM_PATTERNS:
            schema["pattern"] = PATH_PARAM_PATTERNS[name]
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if route.query is not None:
        parameters += _query_parameters(route.query, components)
    parameters += [
        {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in route.headers.items()
    ]
    return parameters


def _request_body(route: Route, components: SchemaComponents) -> dict[str, Any] | None:
    if route.body is not None:
        return {
            "required": False,
            "content": {"application/json": {"schema": components.ref(route.body, "validation")}},
        }
    if route.raw_body:
        return {
            "required": True,
            "content": {
                ct: {"schema": {"type": "string", "format": fmt}} for ct, fmt in route.raw_body.items()
            },
        }
    return None


def _operation(route: Route, components: SchemaComponents) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in route.statuses:
        model = route.answer_model(status)
        description = route.error_descriptions.get(status, STATUS_TEXT.get(status, str(status)))
        schema = components.ref(model, "serialization")
        media_type = route.media_type if status in route.responses else "application/json"
        responses[str(status)] = {"description": description, "content": {media_type: {"schema": schema}}}
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "parameters": _parameters(route, components),
        "responses": responses,
    }
    if SECURITY[route.auth] is not None:
        operation["security"] = SECURITY[route.auth]
    body = _request_body(route, components)
    if body is not None:
        operation["requestBody"] = body
    return operation


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """OpenAPI 3.1 describing exactly `routes` (one function's table, or all of them). Do not mutate it."""
    return _document(tuple(routes))


@lru_cache(maxsize=8)
def _document(routes: tuple[Route, ...]) -> dict[str, Any]:
    components = SchemaComponents()
    components.ref(ApiError, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = PATH_PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Convergence",
            "version": "1",
            "description": "Multi-tenant cloud cost data platform.",
        },
        "paths": paths,
        "components": {"schemas": components.schemas, "securitySchemes": SECURITY_SCHEMES},
    }
