"""The three kinds of contract model the HTTP API declares per route: body, query string and answer.

Each kind fixes the pydantic configuration that makes its generated JSON schema true to behaviour: a body
refuses unknown fields, a query string ignores parameters it does not name (as the routes always have), and
an answer lists every field it carries, all of them present in every answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import BadRequest


class RequestBody(BaseModel):
    """A JSON request body: unknown fields are refused (422), strings are trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class QueryParameters(BaseModel):
    """A query string, parsed by the request plumbing: one value per name, an empty value counts as absent.

    A refused value is answered 400 with `error_code` and the sentence `messages` holds for the parameter,
    so the API keeps the codes and wording its callers rely on.
    """

    model_config = ConfigDict(extra="ignore")

    error_code: ClassVar[str] = "invalid_query"
    messages: ClassVar[dict[str, str]] = {}
    single_values: ClassVar[bool] = False  # refuse `?name=a&name=b` instead of taking the first

    @classmethod
    def refusal(cls, name: str) -> str:
        """The sentence a caller gets when the value of parameter `name` is refused."""
        return cls.messages.get(name, f"{name} is not valid")


class ResponseBody(BaseModel):
    """A JSON answer: exactly these fields, every one of them in every answer (null when it has no value)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


QueryModel = TypeVar("QueryModel", bound=QueryParameters)


def parse_query_string(
    model: type[QueryModel], args: Iterable[tuple[str, list[str]]]
) -> QueryModel:
    """A query string (name → every value given) as `model`; a refused value is 400 naming the parameter.

    The first value of a name counts (a model with `single_values` refuses a repeated name) and an empty value
    is absent, so `?limit=` means the default. Names the model does not have are ignored, unless its
    configuration forbids extra fields. This is the one query-string parser of the API.
    """
    given: dict[str, str] = {}
    for name, values in args:
        if name not in model.model_fields:
            if model.model_config.get("extra") == "forbid":
                allowed = ", ".join(model.model_fields)
                raise BadRequest(f"unknown query parameter {name[:60]!r}; allowed: {allowed}",
                                 code=model.error_code, parameter=name[:60])  # fmt: skip
            continue
        if model.single_values and len(values) > 1:
            raise BadRequest(f"give {name} once", code=model.error_code, parameter=name)
        if values and values[0] != "":
            given[name] = values[0]
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        name = str(exc.errors()[0]["loc"][0])
        raise BadRequest(model.refusal(name), code=model.error_code, parameter=name) from None
