"""notify.email: a notification by SMTP when configured, otherwise a .eml file in the outbox (common.mail).

A step that names no recipient (`to` empty, or an empty `{notify_to}`) mails the organisation's recipients,
looked up when it runs: its admin_email and the addresses set with PUT /api/v1/organizations/{org}/notifications.
The outbox file name and the Message-ID are fixed by run and step, so a redelivered step rewrites the same file.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common import mail
from common.metadata import notification_settings
from common.processors.registry import StepContext, StepResult, processor
from common.types import EMAIL_PATTERN

EMAIL = EMAIL_PATTERN
EMAIL_RE = re.compile(EMAIL_PATTERN)


class EmailConfig(BaseModel):
    """A notify.email step as written in a template: recipients, subject and body.

    `to` is an address, a comma-separated list of them or a list; blank entries are dropped, and with none
    left the step mails the organisation's recipients.
    """

    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(default_factory=list, max_length=50)
    subject: str = Field(min_length=1, max_length=300)
    body: str = ""

    @field_validator("to", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return items
        split: list[Any] = []
        for item in items:
            if isinstance(item, str):
                split.extend(part.strip() for part in item.split(",") if part.strip())
            else:
                split.append(item)
        return split

    @field_validator("to")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not EMAIL_RE.fullmatch(v)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())


@processor(
    "notify.email", "shared.email_notification", "notify_systems.email_notification", config=EmailConfig
)
def send_email(ctx: StepContext, config: EmailConfig) -> StepResult:
    """Mail the step's recipients (the organisation's when it names none) by SMTP, or into the outbox."""
    recipients = config.to or notification_settings.recipients(
        ctx.runtime, ctx.tenant_id, failure=ctx.run_failed
    )
    if not recipients:
        reason = (
            "the organisation mutes failure mail" if ctx.run_failed else "the organisation has no recipient"
        )
        return StepResult(rows_processed=0, details={"via": "none", "reason": reason})
    settings = ctx.runtime.settings
    outcome = "failed" if ctx.run_failed else "succeeded so far"
    message = mail.compose(
        settings, to=recipients, subject=config.subject, key=f"{ctx.run_id}.{ctx.step.step_id}",
        body=f"{config.body.rstrip()}\n\n--\nPipeline {ctx.pipeline.pipeline_id}, run {ctx.run_id}: {outcome}.\n",
        headers={"X-Convergence-Run": ctx.run_id},
    )  # fmt: skip
    delivery = mail.send(
        settings, message, tenant_id=ctx.tenant_id, outbox_name=f"{ctx.run_id}-{ctx.step.step_id}.eml"
    )
    details: dict[str, Any] = {"via": delivery.via, "to": recipients}
    if delivery.path is not None:
        details["path"] = str(delivery.path)
    return StepResult(rows_processed=len(recipients), details=details)
