"""The platform's schedules file, configs/schedules.yml: its dispatchers and platform-wide schedules, checked.

`dispatchers:` are the Cloud Scheduler jobs, one per cadence (never one per tenant); each tick publishes
{"schema": "convergence.dispatch/v1", "cadence": <name>} to the schedules topic. `schedules:` start one
template for many tenants when due. A schedule runs no more often than its dispatcher ticks, and its template
and parameters must resolve, or the file is refused at load with a line naming what is wrong.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.bus.messages import CADENCE_PATTERN
from common.errors import BadRequest, ConfigurationError, NotFound
from common.services.cron import longest_interval, parse_cron, parse_time_zone, shortest_interval
from common.settings import CONFIGS_DIR
from common.templates import load_template, resolve_template
from common.templates.resolver import InvalidParameter
from common.tenancy import TENANT_ID_RE
from common.types import TemplatePath

PLATFORM_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # no "-": never equal to a tenant schedule id (a UUID)
CADENCE_RE = re.compile(CADENCE_PATTERN)


class DispatcherConfig(BaseModel):
    """A Cloud Scheduler job ticking on `cron`; each tick publishes a convergence.dispatch/v1 message."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    time_zone: str = "Etc/UTC"
    description: str = ""


class PlatformSchedule(BaseModel):
    """One template for many tenants, started by its dispatcher when due."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    time_zone: str
    template: TemplatePath
    tenants: Literal["*"] | list[str]
    parameters: dict[str, Any] = Field(default_factory=dict)
    dispatcher: str | None = None  # the finest dispatcher when absent
    enabled: bool = True


class SchedulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dispatchers: dict[str, DispatcherConfig] = Field(min_length=1)
    schedules: dict[str, PlatformSchedule] = Field(default_factory=dict)


@dataclass(frozen=True)
class PlatformConfig:
    """configs/schedules.yml, checked; `periods` holds each dispatcher's longest gap between ticks."""

    dispatchers: dict[str, DispatcherConfig]
    periods: dict[str, dt.timedelta]
    schedules: dict[str, PlatformSchedule]

    @property
    def default_dispatcher(self) -> str:
        """The finest dispatcher: it starts every tenant schedule and platform ones naming none."""
        return min(self.periods, key=lambda name: (self.periods[name], name))

    def dispatcher_of(self, schedule: PlatformSchedule) -> str:
        return schedule.dispatcher or self.default_dispatcher


def check_platform_config(raw: Any) -> PlatformConfig:
    """Validate a decoded schedules file; ConfigurationError names what is wrong."""
    try:
        parsed = SchedulesFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(
            f"configs/schedules.yml is invalid: {exc.errors(include_url=False)}"
        ) from None
    periods = {}
    for name, dispatcher in parsed.dispatchers.items():
        try:
            if not CADENCE_RE.fullmatch(name):
                raise BadRequest(f"the name must match {CADENCE_RE.pattern}")
            periods[name] = longest_interval(parse_cron(dispatcher.cron))
            parse_time_zone(dispatcher.time_zone)
        except BadRequest as exc:
            raise ConfigurationError(f"configs/schedules.yml dispatcher {name}: {exc.message}") from None
    config = PlatformConfig(parsed.dispatchers, periods, parsed.schedules)
    for name, schedule in parsed.schedules.items():
        try:
            if not PLATFORM_NAME_RE.fullmatch(name):
                raise BadRequest(f"the name must match {PLATFORM_NAME_RE.pattern}")
            if isinstance(schedule.tenants, list) and not all(
                TENANT_ID_RE.fullmatch(t) for t in schedule.tenants
            ):
                raise BadRequest(
                    f'tenants must be "*" or a list of tenant ids matching {TENANT_ID_RE.pattern}'
                )
            dispatcher = config.dispatcher_of(schedule)
            if dispatcher not in periods:
                raise BadRequest(f"no dispatcher {dispatcher!r} under dispatchers")
            if shortest_interval(parse_cron(schedule.cron)) < periods[dispatcher]:
                raise BadRequest(f"it runs more often than its dispatcher {dispatcher} ticks")
            parse_time_zone(schedule.time_zone)
            check_runnable(schedule.template, schedule.parameters, tenant_id="schedule_check")
        except BadRequest as exc:
            raise ConfigurationError(f"configs/schedules.yml schedule {name}: {exc.message}") from None
    return config


@lru_cache(maxsize=1)
def platform_config() -> PlatformConfig:
    """configs/schedules.yml, read and checked once per instance."""
    try:
        raw = yaml.safe_load((CONFIGS_DIR / "schedules.yml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read configs/schedules.yml: {exc}") from None
    return check_platform_config(raw)


def check_runnable(template: str, parameters: dict[str, Any], *, tenant_id: str) -> None:
    """The template is runnable by tenants and the parameters resolve against it (else 400 naming it)."""
    provider, domain, name = template.split("/")
    try:
        loaded = load_template(provider, domain, name)
    except NotFound:
        raise BadRequest(f"no runnable template {template}", code="template_not_found") from None
    if "trigger_by" in parameters:
        raise InvalidParameter("trigger_by is set by the scheduler and cannot be a schedule parameter")
    resolve_template(
        loaded, tenant_id=tenant_id, provider=provider, domain=domain,
        template_name=name, run_id="schedule-validation", request=parameters,
    )  # fmt: skip
