"""notify.email: a notification by SMTP when configured, otherwise a .eml file in the outbox.

The outbox file name is fixed by run and step, so a redelivered step rewrites the same file.
"""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.errors import TransientError
from common.processors.registry import StepContext, StepResult, processor
from common.types import EMAIL_PATTERN

EMAIL = EMAIL_PATTERN


class EmailConfig(BaseModel):
    """A notify.email step as written in a template: recipients, subject and body."""

    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(min_length=1, max_length=50)
    subject: str = Field(min_length=1, max_length=300)
    body: str = ""

    @field_validator("to", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        import re

        bad = [v for v in value if not re.fullmatch(EMAIL, v)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())


@processor("notify.email", config=EmailConfig)
def send_email(ctx: StepContext, config: EmailConfig) -> StepResult:
    """Send the message by SMTP when configured, else write it into the tenant's outbox."""
    settings = ctx.runtime.settings
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(config.to)
    message["Subject"] = config.subject
    message["X-Convergence-Run"] = ctx.run_id
    outcome = "failed" if ctx.run_failed else "succeeded so far"
    message.set_content(
        f"{config.body.rstrip()}\n\n--\nPipeline {ctx.pipeline.pipeline_id}, run {ctx.run_id}: {outcome}.\n"
    )
    if settings.smtp_host:
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls()
                if settings.smtp_username and settings.smtp_password:
                    smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientError(f"SMTP server {settings.smtp_host} did not take the message: {exc}") from None
        return StepResult(rows_processed=len(config.to), details={"via": "smtp"})
    folder = settings.outbox_dir / ctx.tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ctx.run_id}-{ctx.step.step_id}.eml"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(message))
    os.replace(tmp, path)
    return StepResult(rows_processed=len(config.to), details={"via": "outbox", "path": str(path)})
