"""The repository of `org_notification_settings`: who the platform mails for an organisation. The only module
with its SQL.

Rows are append-only: an organisation's settings are its newest row, so two instances writing at once
never undo each other's write half-way, and no row is ever updated. An organisation without a row has the
defaults: its admin_email is its one recipient, and failures are mailed. A platform bootstrapped before
this table existed reads the defaults until bootstrap runs again (which creates the table).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass

from common.errors import NotFound
from common.metadata import organizations
from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.types import as_utc

TABLE = "org_notification_settings"
# RFC 2606: a name under .invalid never resolves. The older onboarding route gives an organisation
# onboarded without an address `admin@{tenant}.invalid`; nothing is ever mailed there.
PLACEHOLDER_SUFFIX = ".invalid"


@dataclass(frozen=True)
class NotificationSettings:
    """An organisation's notification settings, as stored (the defaults when it never set any)."""

    emails: tuple[str, ...] = ()
    include_admin_email: bool = True
    on_failure: bool = True
    updated_at: dt.datetime | None = None

    def same_choice(self, other: NotificationSettings) -> bool:
        """Whether both say the same, whenever they were written."""
        return (self.emails, self.include_admin_email, self.on_failure) == (
            other.emails, other.include_admin_email, other.on_failure,
        )  # fmt: skip


DEFAULTS = NotificationSettings()


def latest(rt: Runtime, org_slug: str) -> NotificationSettings:
    """The organisation's current settings: its newest row, else the defaults."""
    try:
        rows = rt.warehouse.query(
            f"SELECT emails, include_admin_email, on_failure, updated_at FROM {control_ref(rt, TABLE)}"
            " WHERE org_slug = @org ORDER BY updated_at DESC, seq DESC LIMIT 1",
            {"org": org_slug},
        )
    except NotFound:  # bootstrapped before the table existed
        return DEFAULTS
    if not rows:
        return DEFAULTS
    row = rows[0]
    return NotificationSettings(
        emails=tuple(row["emails"] or ()),
        include_admin_email=bool(row["include_admin_email"]),
        on_failure=bool(row["on_failure"]),
        updated_at=as_utc(row["updated_at"]),
    )


def append(
    rt: Runtime, org_slug: str, settings: NotificationSettings, *, updated_by: str, now: dt.datetime
) -> NotificationSettings:
    """Record `settings` as the organisation's current ones (stamped `now`); returns them as stored."""
    rt.warehouse.execute(
        f"INSERT INTO {control_ref(rt, TABLE)}"
        " (org_slug, emails, include_admin_email, on_failure, updated_by, updated_at, seq)"
        " VALUES (@org, @emails, @include_admin_email, @on_failure, @updated_by, @now, @seq)",
        {
            "org": org_slug,
            "emails": list(settings.emails),
            "include_admin_email": settings.include_admin_email,
            "on_failure": settings.on_failure,
            "updated_by": updated_by,
            "now": now,
            "seq": time.time_ns(),
        },
    )
    return NotificationSettings(settings.emails, settings.include_admin_email, settings.on_failure, now)


def distinct_addresses(addresses: Iterable[str]) -> list[str]:
    """Each address once (compared without case), in the order given, placeholders (.invalid) left out."""
    seen: set[str] = set()
    kept = []
    for address in addresses:
        folded = address.strip().casefold()
        if folded and folded not in seen and not folded.endswith(PLACEHOLDER_SUFFIX):
            seen.add(folded)
            kept.append(address.strip())
    return kept


def effective_recipients(admin_email: str | None, settings: NotificationSettings) -> list[str]:
    """Who the organisation's mail goes to under `settings`: admin_email (unless left out), then the rest."""
    admin = [admin_email] if admin_email and settings.include_admin_email else []
    return distinct_addresses([*admin, *settings.emails])


def recipients(rt: Runtime, org_slug: str, *, failure: bool) -> list[str]:
    """The organisation's recipients, for mail that names none; [] for a failure it asked not to hear of."""
    settings = latest(rt, org_slug)
    if failure and not settings.on_failure:
        return []
    profile = organizations.get_profile(rt, org_slug)
    return effective_recipients(profile["admin_email"] if profile else None, settings)
