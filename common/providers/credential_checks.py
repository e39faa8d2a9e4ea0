"""A tenant's credential and settings checked against its provider's models, before anything is stored.

Only the shape is checked (no call leaves the platform): a service account key must parse and hold a private
key `cryptography` can load, an access key must look like one, a location must be a bucket URI or an
absolute path. A tenant who pasted the wrong thing hears so at setup, not hours later in a failed step.

Refusals are built from where the problem is and what kind it is, never from the input: a message names
the field and the rule, and no part of the credential ever reaches a response or a log.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from common.errors import BadRequest, ValidationFailed
from common.metadata.integrations import Integration
from common.providers.base import InvalidCredential, InvalidSettings, SettingsModel
from common.providers.registry import integration_provider, integration_providers


def require_integration_provider(provider: str) -> None:
    """Refuse (400) a provider the registry keeps no integration for."""
    names = integration_providers()
    if provider not in names:
        raise BadRequest(f"provider must be one of: {', '.join(names)}", code="unknown_provider")


def parse_credential(provider: str, credential: str | dict[str, Any]) -> BaseModel:
    """The provider's credential model for `credential`, or InvalidCredential naming the rule it breaks.

    Objects may also arrive as a string holding their JSON (as a key file is usually pasted).
    """
    spec = integration_provider(provider).credential
    assert spec is not None  # integration_provider guarantees it
    subject = f"{provider} credential"
    value: Any = credential
    if (
        isinstance(value, str)
        and spec.object_model is not None
        and (spec.string_model is None or value.startswith("{"))
    ):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise InvalidCredential(f"{subject} is not JSON; expected {spec.expected}") from None
    if isinstance(value, str) and spec.string_model is not None:
        model = spec.string_model
    elif isinstance(value, dict) and spec.object_model is not None:
        model = spec.object_model
    else:
        raise InvalidCredential(f"{subject} must be {spec.expected}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _refusal(InvalidCredential, subject, exc, model, name_unknown=False) from None


def parse_settings(provider: str, settings: dict[str, Any]) -> SettingsModel:
    """The provider's settings model for `settings`, or InvalidSettings naming the field."""
    model = integration_provider(provider).settings
    try:
        return model.model_validate(settings)
    except ValidationError as exc:
        raise _refusal(InvalidSettings, f"{provider} settings", exc, model, name_unknown=True) from None


def parsed_credential(integration: Integration) -> BaseModel:
    """A stored integration's credential as its provider's model (e.g. GcpServiceAccount, AwsAccessKey)."""
    return parse_credential(integration.provider, integration.credential.get_secret_value())


def parsed_settings(integration: Integration) -> SettingsModel:
    """A stored integration's settings as its provider's model (e.g. GcpSettings, with table_parts())."""
    return parse_settings(integration.provider, integration.settings)


def settings_document(settings: SettingsModel) -> dict[str, Any]:
    """Settings as stored and shown: JSON values, unset optional ones left out."""
    return settings.model_dump(mode="json", exclude_none=True)


def _refusal(
    error: type[ValidationFailed], subject: str, exc: ValidationError, model: type[BaseModel], *,
    name_unknown: bool,
) -> ValidationFailed:  # fmt: skip
    """One 422 naming each failed field and rule, built without looking at the input."""
    problems = [_problem(e, model, name_unknown) for e in exc.errors(include_input=False, include_url=False)]
    message = f"{subject}: " + "; ".join(f"{field} {text}" if field else text for field, text in problems)
    return error(message, errors=[{"field": field, "message": text} for field, text in problems])


def _problem(error: Any, model: type[BaseModel], name_unknown: bool) -> tuple[str, str]:
    """(field, what is wrong with it) of one pydantic error, from its location and kind only."""
    loc = [str(part) for part in error["loc"] if str(part) != "root"]
    field = loc[0] if loc else ""
    kind = error["type"]
    known = {name: info for name, info in model.model_fields.items() if name != "root"}
    if kind == "extra_forbidden":
        accepted = ", ".join(known)
        if not name_unknown:
            return "", f"has a field it does not take (accepted: {accepted})"
        shown = field if len(field) <= 64 else field[:64] + "..."
        return shown, f"is not a setting of this provider (accepted: {accepted or 'none'})"
    if kind == "missing":
        return field, "is missing"
    if kind == "value_error":
        return field, str(error["ctx"]["error"])
    if kind == "literal_error":
        return field, f"must be {error['ctx']['expected']}"
    description = known[field].description if field in known else None
    return field, f"must be {description}" if description else "has the wrong type or format"
