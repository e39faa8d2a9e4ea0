"""What the platform mails an organisation on its own, and the settings that say to whom.

The settings (GET/PUT /api/v1/organizations/{org}/notifications) name the organisation's recipients: its
admin_email, unless left out, and up to 20 more addresses. They receive the welcome at onboarding, the
failure of every scheduled or bulk run, and any template notification that names no recipient.

A notice is claimed before it is sent (`common.metadata.notification_deliveries`), so a step message
delivered twice, or two instances closing the same run, send it once. A notice that cannot be sent is
logged; it never fails the onboarding or the run it is about.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any, Literal

from common import mail
from common.contracts.notifications import NotificationSettingsRequest
from common.errors import ConvergenceError, NotFound
from common.metadata import notification_deliveries, notification_settings, organizations
from common.metadata.notification_settings import NotificationSettings
from common.metadata.runs import RunRecord, StepRecord
from common.processors.notify import EmailConfig
from common.processors.registry import processor_specs
from common.providers.registry import integration_providers
from common.runtime import Runtime
from common.templates.models import ResolvedPipeline
from common.types import utcnow

log = logging.getLogger(__name__)

UNATTENDED_TRIGGERS = frozenset({"schedule", "bulk"})  # runs nobody is watching: their failure is mailed
NoticeOutcome = Literal["sent", "outbox", "failed", "skipped"]


# -- the settings route --------------------------------------------------------------------------------


def _profile(rt: Runtime, org: str) -> dict[str, Any]:
    profile = organizations.get_profile(rt, org)
    if profile is None:
        raise NotFound(f"no organisation {org}", code="org_not_found")
    return profile


def _view(org: str, admin_email: str | None, settings: NotificationSettings) -> dict[str, Any]:
    return {
        "org_slug": org,
        "admin_email": admin_email,
        "include_admin_email": settings.include_admin_email,
        "emails": list(settings.emails),
        "on_failure": settings.on_failure,
        "recipients": notification_settings.effective_recipients(admin_email, settings),
        "updated_at": settings.updated_at,
    }


def settings_view(rt: Runtime, org: str) -> dict[str, Any]:
    """The organisation's notification settings (the defaults until it sets some)."""
    profile = _profile(rt, org)
    return _view(org, profile["admin_email"], notification_settings.latest(rt, org))


def update_settings(
    rt: Runtime, org: str, request: NotificationSettingsRequest, *, updated_by: str
) -> dict[str, Any]:
    """Set the organisation's recipients; fields the request leaves out keep their value. The last write wins.

    Setting what is already set writes nothing.
    """
    profile = _profile(rt, org)
    current = notification_settings.latest(rt, org)
    include_admin, on_failure = request.include_admin_email, request.on_failure
    wanted = NotificationSettings(
        emails=tuple(request.emails),
        include_admin_email=current.include_admin_email if include_admin is None else include_admin,
        on_failure=current.on_failure if on_failure is None else on_failure,
    )
    if current.updated_at is None or not wanted.same_choice(current):
        current = notification_settings.append(rt, org, wanted, updated_by=updated_by, now=utcnow())
    return _view(org, profile["admin_email"], current)


# -- notices -------------------------------------------------------------------------------------------


def _send_notice(
    rt: Runtime, org: str, notice_id: str, message: EmailMessage, recipients: Sequence[str], outbox_name: str
) -> NoticeOutcome:
    """Claim notice `notice_id`, then send it; a failure is logged and gives the claim back."""
    try:
        if not notification_deliveries.claim(rt, notice_id, org, recipients):
            return "skipped"  # sent already, by an earlier delivery or another instance
    except NotFound:  # bootstrapped before the claims table existed: send unclaimed rather than never
        log.warning(
            "notice %s of %s sent without a claim: bootstrap again to create its table", notice_id, org
        )
    except ConvergenceError as exc:
        log.error("notice %s of %s not sent: it could not be claimed: %s", notice_id, org, exc.message)
        return "failed"
    try:
        delivery = mail.send(rt.settings, message, tenant_id=org, outbox_name=outbox_name)
    except (ConvergenceError, OSError) as exc:
        log.error("notice %s of %s not sent: %s", notice_id, org, getattr(exc, "message", exc))
        try:
            notification_deliveries.release(rt, notice_id)
        except ConvergenceError as again:
            log.error("claim on notice %s of %s not released: %s", notice_id, org, again.message)
        return "failed"
    return "sent" if delivery.via == "smtp" else "outbox"


def send_welcome(
    rt: Runtime, org: str, *, admin_email: str, company_name: str, dryrun_status: str
) -> NoticeOutcome:
    """Welcome a new organisation at its admin_email: its dataset and the first calls to make.

    The API key is never in it (it is shown once, in the onboarding answer). Never raises: the organisation
    exists whatever becomes of its welcome.
    """
    try:
        return _send_welcome(rt, org, admin_email, company_name, dryrun_status)
    except Exception:
        log.exception("welcome of %s not sent", org)
        return "failed"


def _send_welcome(
    rt: Runtime, org: str, admin_email: str, company_name: str, dryrun_status: str
) -> NoticeOutcome:
    recipients = notification_settings.distinct_addresses([admin_email])
    if not recipients:
        return "skipped"  # a placeholder address (.invalid)
    settings = rt.settings
    providers = ", ".join(integration_providers())
    body = f"""Hello,

{company_name} is onboarded on Convergence as the organisation {org}.
Its data lives in the dataset {org} of project {settings.gcp_project_id};
nothing of another organisation is ever in it. The platform's dry run
for {org} ended {dryrun_status}.

The API key was shown once, in the answer to the onboarding request; it is
not in this mail. Every call below takes it in the header X-API-Key. Should
it be lost, rotate it: POST /api/v1/organizations/{org}/api-keys/rotate

How to start:
1. Store a provider credential ({providers}):
   POST /api/v1/integrations/{org}/{{provider}}/setup
   with {{"credential": ..., "settings": {{...}}}}
2. Or upload cost data (CSV, NDJSON or Parquet), e.g. a GCP billing export:
   POST /api/v1/data/{org}/uploads/gcp_billing_export_v1
3. Run a template, e.g. a day of GCP costs:
   POST /api/v1/pipelines/run/{org}/gcp/cost/cost_billing
   with {{"date": "YYYY-MM-DD"}}
   GET /api/v1/pipelines/templates lists every template, and
   GET /api/v1/pipelines/runs/{{pipeline_logging_id}} follows a run.
4. See the costs:
   GET /api/v1/costs/{org}/summary?start=YYYY-MM-DD&end=YYYY-MM-DD

Failed scheduled runs are mailed to this address. To add recipients:
PUT /api/v1/organizations/{org}/notifications
with {{"emails": ["finops@example.com"]}}
"""
    message = mail.compose(
        settings, to=recipients, subject=f"Welcome to Convergence: {company_name} ({org})", body=body,
        key=f"welcome.{org}", headers={"X-Convergence-Org": org},
    )  # fmt: skip
    return _send_notice(rt, org, f"welcome:{org}", message, recipients, "notices/welcome.eml")


def _email_step_types() -> frozenset[str]:
    """Every ps_type that sends a notify.email step (its name and its aliases)."""
    return frozenset(
        name
        for spec in processor_specs()
        if spec.config is EmailConfig
        for name in (spec.name, *spec.aliases)
    )


def _already_told(rt: Runtime, pipeline: ResolvedPipeline, states: Mapping[int, StepRecord]) -> set[str]:
    """Who the run's own email steps mailed after it failed (addresses casefolded)."""
    stopped = [
        i for i, r in states.items() if r.status == "FAILED" and pipeline.steps[i].on_failure == "stop"
    ]
    email_types = _email_step_types()
    told: set[str] = set()
    for index, step in enumerate(pipeline.steps):
        record = states.get(index)
        after_failure = bool(stopped) and index > min(stopped)
        if not (after_failure and step.ps_type in email_types and record and record.status == "COMPLETE"):
            continue
        if not record.rows_processed:
            continue  # it mailed nobody
        named = EmailConfig.model_validate(step.config).to
        mailed = named or notification_settings.recipients(rt, pipeline.tenant_id, failure=True)
        told.update(address.casefold() for address in mailed)
    return told


def notify_failed_run(
    rt: Runtime, run: RunRecord, pipeline: ResolvedPipeline, states: Mapping[int, StepRecord], error: str
) -> None:
    """Mail the organisation's recipients that a scheduled or bulk run failed, once.

    Recipients the run's own notification step already mailed about this failure are not mailed again.
    Never raises: a notice must not keep the run it is about from closing.
    """
    if run.trigger_type not in UNATTENDED_TRIGGERS:
        return
    try:
        _notify_failed_run(rt, run, pipeline, states, error)
    except ConvergenceError as exc:
        log.error("failure notice of run %s of %s not sent: %s", run.pipeline_logging_id, run.tenant_id, exc)
    except Exception:
        log.exception("failure notice of run %s of %s not sent", run.pipeline_logging_id, run.tenant_id)


def _notify_failed_run(
    rt: Runtime, run: RunRecord, pipeline: ResolvedPipeline, states: Mapping[int, StepRecord], error: str
) -> None:
    org, run_id = run.tenant_id, run.pipeline_logging_id
    told = _already_told(rt, pipeline, states)
    recipients = [
        a for a in notification_settings.recipients(rt, org, failure=True) if a.casefold() not in told
    ]
    if not recipients:
        return
    template = f"{pipeline.provider}/{pipeline.domain}/{pipeline.template}"
    body = f"""The {run.trigger_type} run of {template} for {org} failed.

Run:        {run_id}
Pipeline:   {pipeline.pipeline_id}
Date:       {pipeline.variables.get("date", "-")}
Started by: {run.trigger_by or "-"}
Error:      {error}

Details, with the organisation's API key:
GET /api/v1/pipelines/runs/{run_id}

You receive this as a notification recipient of {org}. Who does is set
with PUT /api/v1/organizations/{org}/notifications
"""
    subject = f"Convergence: {run.trigger_type} run of {template} failed ({org})"
    message = mail.compose(
        rt.settings, to=recipients, subject=subject, body=body, key=f"{run_id}.run-failed",
        headers={"X-Convergence-Run": run_id},
    )  # fmt: skip
    _send_notice(
        rt, org, f"run_failed:{org}:{run_id}", message, recipients, f"notices/{run_id}-run_failed.eml"
    )
