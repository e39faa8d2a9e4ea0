"""Everything that crosses a function boundary, as versioned pydantic messages (CONTRACT §4).

Also turns a Pub/Sub push CloudEvent back into (message, attributes) so handlers never parse by hand.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.types import TemplatePath, TenantId

log = logging.getLogger(__name__)

PUBSUB_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
#: A dispatcher cadence: the `dispatchers:` key in configs/schedules.yml, its job `convergence-dispatch-<cadence>`.
CADENCE_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"


class StepMessage(BaseModel):
    """Execute step `step_index` of run `run_id` of tenant `tenant_id`."""

    model_config = ConfigDict(extra="ignore")

    schema_: Literal["convergence.step/v1"] = Field("convergence.step/v1", alias="schema")
    run_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    tenant_id: TenantId
    step_index: int = Field(ge=0, le=1000)

    def attributes(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "run_id": self.run_id}


class ScheduleMessage(BaseModel):
    """Start one template for many tenants (a scheduled or bulk run)."""

    model_config = ConfigDict(extra="ignore")

    schema_: Literal["convergence.schedule/v1"] = Field("convergence.schedule/v1", alias="schema")
    template: TemplatePath
    tenants: Literal["*"] | list[str] = "*"
    parameters: dict[str, Any] = Field(default_factory=dict)
    trigger_by: str = "scheduler"
    trigger_type: Literal["schedule", "bulk"] = "schedule"
    schedule_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.:-]{1,200}$",
        description="the schedule that is due (platform name or tenant id)",
    )
    due_at: str | None = Field(
        None, description="the cron slot being started, ISO 8601 UTC (deduplication key)"
    )
    chunk: int | None = Field(None, ge=0, description="second level of a fan-out: which chunk of the tenants")
    bulk_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the bulk run (POST /api/v1/admin/runs/bulk) this message belongs to; its runs carry it",
    )  # fmt: skip
    only_ready: bool = Field(
        True,
        description="start the template only for tenants that can run it (its provider's integration or rows"
        " in its source table, common.services.readiness); the others are counted skipped. A tenant's own"
        " schedule sets it false: the tenant asked for that run.",
    )

    def attributes(self) -> dict[str, str]:
        attributes = {"template": self.template}
        if self.chunk is not None:
            attributes["chunk"] = str(self.chunk)
        if self.bulk_id is not None:
            attributes["bulk_id"] = self.bulk_id
        return attributes


class DispatchMessage(BaseModel):
    """A tick of a Cloud Scheduler dispatcher job: start every schedule of `cadence` that is due by `now`."""

    model_config = ConfigDict(extra="ignore")

    schema_: Literal["convergence.dispatch/v1"] = Field("convergence.dispatch/v1", alias="schema")
    cadence: str = Field(pattern=CADENCE_PATTERN, description="dispatcher job name, e.g. every-15-minutes")
    now: str | None = Field(None, description="the tick's time (ISO 8601); the receiving time when absent")

    def attributes(self) -> dict[str, str]:
        return {"cadence": self.cadence}


MESSAGE_TYPES: dict[str, type[BaseModel]] = {
    "convergence.step/v1": StepMessage,
    "convergence.schedule/v1": ScheduleMessage,
    "convergence.dispatch/v1": DispatchMessage,
}


def encode(message: BaseModel) -> bytes:
    """The Pub/Sub data bytes of a message."""
    return message.model_dump_json(by_alias=True).encode()


class DeadMessage(Exception):
    """A message nobody can ever process: log it and acknowledge it, never crash-loop on it."""


def pubsub_payload(event_data: Any) -> tuple[bytes, dict[str, str], int]:
    """(data, attributes, delivery attempt) from the data of a Pub/Sub push CloudEvent."""
    try:
        message = event_data["message"]
        data = base64.b64decode(message.get("data", ""), validate=True)
        attributes = dict(message.get("attributes") or {})
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise DeadMessage(f"not a Pub/Sub push envelope: {exc}") from None
    attempt = event_data.get("deliveryAttempt") or message.get("deliveryAttempt") or 1
    return data, attributes, int(attempt)


def decode_event(
    event: Any, expected: type[BaseModel] | tuple[type[BaseModel], ...]
) -> tuple[BaseModel, dict[str, str], int]:
    """Parse a CloudEvent carrying a Pub/Sub message into the expected message model (or one of several)."""
    data, attributes, attempt = pubsub_payload(event.data if hasattr(event, "data") else event)
    try:
        raw = json.loads(data)
        schema = raw.get("schema") if isinstance(raw, dict) else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeadMessage(f"message data is not JSON: {exc}") from None
    model = MESSAGE_TYPES.get(schema or "")
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if model not in wanted:
        names = " or ".join(m.__name__ for m in wanted)
        raise DeadMessage(f"unexpected message schema {schema!r}; wanted {names}")
    try:
        return model.model_validate(raw), attributes, attempt
    except ValidationError as exc:
        raise DeadMessage(f"malformed {schema} message: {exc.errors(include_input=False)}") from None
