"""Outgoing mail: one message, sent by SMTP when SMTP_HOST is set, else written into the tenant's outbox.

Every mail the platform sends goes through here: the notify.email step, the failure notice of a scheduled
run and the welcome at onboarding. A message carries a Message-ID fixed by what it is about (a run's step,
a run's failure, an organisation's welcome), and an outbox file is named the same way, so sending the same
message again rewrites one file and lets a mail server or client recognise the copy.
"""

from __future__ import annotations

import os
import re
import smtplib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Literal

from common.errors import ConfigurationError, TransientError
from common.settings import Settings
from common.tenancy import validate_tenant_id

# A file of a tenant's outbox: `{run}-{step}.eml` at the top, the platform's own notices in `notices/`.
OUTBOX_NAME_RE = re.compile(r"^(notices/)?[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.eml$")
MESSAGE_KEY_RE = re.compile(r"[^A-Za-z0-9._-]+")
SMTP_TIMEOUT_SECONDS = 30


class MailNotSent(TransientError):
    """The SMTP server could not be reached or refused the message (worth trying again later)."""

    code = "mail_not_sent"


@dataclass(frozen=True)
class Delivery:
    """Where a message went: handed to the SMTP server, or written to `path` in the outbox."""

    via: Literal["smtp", "outbox"]
    path: Path | None = None


def message_id(settings: Settings, key: str) -> str:
    """The Message-ID of the message about `key` (e.g. `run.step`): the same for every copy of it."""
    domain = settings.smtp_from.rpartition("@")[2] or "localhost"
    return f"<{MESSAGE_KEY_RE.sub('-', key).strip('-') or 'message'}@{domain}>"


def compose(
    settings: Settings,
    *,
    to: Sequence[str],
    subject: str,
    body: str,
    key: str,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """A plain-text message from the platform's sender to `to`, identified by `key` (see `message_id`)."""
    if not to:
        raise ConfigurationError("a message needs at least one recipient")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(to)
    message["Subject"] = " ".join(subject.split())
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(settings, key)
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message


def send(settings: Settings, message: EmailMessage, *, tenant_id: str, outbox_name: str) -> Delivery:
    """Hand `message` to the SMTP server, or without one write it to `outbox/{tenant_id}/{outbox_name}`.

    The outbox file is replaced whole (written aside, then renamed), so a reader never sees half a message.
    Raises MailNotSent when the SMTP server cannot take it.
    """
    validate_tenant_id(tenant_id, field="tenant_id")
    if not OUTBOX_NAME_RE.fullmatch(outbox_name):
        raise ConfigurationError(f"not an outbox file name: {outbox_name!r}")
    if settings.smtp_host:
        _send_smtp(settings, message)
        return Delivery("smtp")
    path = settings.outbox_dir / tenant_id / outbox_name
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_suffix(".tmp")
    aside.write_bytes(bytes(message))
    os.replace(aside, path)
    return Delivery("outbox", path)


def _send_smtp(settings: Settings, message: EmailMessage) -> None:
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailNotSent(f"SMTP server {settings.smtp_host} did not take the message: {exc}") from None
