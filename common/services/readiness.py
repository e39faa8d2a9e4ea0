"""Which tenants can run a template: a fan-out starts it only for them and counts the others skipped.

A tenant can run a template when the template's provider (the first segment of its path) has an integration
of the tenant, whatever its status, or when the template's source table already holds at least one row in
the tenant's dataset (data uploaded or loaded earlier). Without either the template has nothing to read: a
platform schedule of `gcp/cost/cost_billing` for "*" would give every such tenant a COMPLETE run of zero rows
each day. A template is never skipped when its provider keeps no integration (`ProviderSpec.has_integration`
is false, as for `focus`, which reads the files a run names) or when it reads no source table
(`gcp/example/dryrun`): nothing would tell a tenant that can run it from one that cannot.

The source table is the one the template's first step reads or loads into: the first of its
`source_tables`, else its `table`. A table named through a placeholder counts as none.

Who applies the rule: `common.services.fanout.start_chunk`, for every schedules message with `only_ready`
(platform schedules and bulk runs, for "*" and for tenant lists alike; a tenant's own schedule does not ask
for it, as the tenant chose that run).

Cost, per fan-out chunk (at most FANOUT_CHUNK_SIZE tenants): one query on the control dataset for the
integrations; then, for the tenants without one, one query per SOURCE_QUERY_TENANTS tenants, a UNION ALL of
`SELECT ... FROM {tenant}.{table} LIMIT 1` (BigQuery takes up to 1,000 tables in one query and bills each
at least 10 MB: about 5 GB for a chunk of 500 tenants). Where the table is missing from some of those
datasets (it is created by its first load, as aws_cur_raw is), each of them is looked up once (a metadata
call, not a query job) and the query repeats over those that have it.

A transient error propagates, so the chunk is redelivered; any other error fails open (every tenant counts
as ready, as before this rule) with a warning, so a readiness problem never stops a schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import ConvergenceError, TransientError
from common.metadata import integrations
from common.providers.registry import find_provider
from common.runtime import Runtime
from common.templates import load_template
from common.templates.models import PipelineTemplate
from common.tenancy import TABLE_NAME_RE
from common.warehouse.sql import table_ref

log = logging.getLogger(__name__)

SOURCE_QUERY_TENANTS = 500  # tenants' source tables per query


@dataclass(frozen=True)
class Requirement:
    """What a tenant needs to run a template: an integration of `provider`, or rows in `source_table`."""

    provider: str
    source_table: str

    @property
    def reason(self) -> str:
        """Why a tenant without either is skipped."""
        return f"no {self.provider} integration and no rows in {self.source_table}"


def source_table(template: PipelineTemplate) -> str | None:
    """The table the template's first step reads or loads into, or None when it names none."""
    config = template.steps[0].config
    tables = config.get("source_tables")
    first = (tables[0] if tables else None) if isinstance(tables, list) else config.get("table")
    return first if isinstance(first, str) and TABLE_NAME_RE.fullmatch(first) else None


def requirement(template: str) -> Requirement | None:
    """What a tenant needs to run `template` (provider/domain/name); None when every tenant can run it."""
    provider, domain, name = template.split("/")
    spec = find_provider(provider)
    if spec is None or not spec.has_integration:
        return None
    table = source_table(load_template(provider, domain, name))
    return Requirement(provider, table) if table else None


def split_ready(rt: Runtime, template: str, tenants: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(the tenants that can run `template`, in their order; each other tenant → why it is skipped)."""
    tenants = list(tenants)
    if not tenants:
        return [], {}
    try:
        need = requirement(template)
    except ConvergenceError:  # an unknown or broken template: starting it refuses it, with the reason
        return tenants, {}
    if need is None:
        return tenants, {}
    try:
        ready = integrations.orgs_with_integration(rt, need.provider, tenants)
        ready |= holding_rows(rt, [t for t in tenants if t not in ready], need.source_table)
    except TransientError:
        raise
    except ConvergenceError as exc:
        log.warning("readiness of %d tenants for %s not known, starting all: %s", len(tenants), template,
                    exc.message)  # fmt: skip
        return tenants, {}
    return [t for t in tenants if t in ready], {t: need.reason for t in tenants if t not in ready}


def holding_rows(rt: Runtime, tenants: Sequence[str], table: str) -> set[str]:
    """Those of `tenants` whose dataset has `table` with at least one row."""
    found: set[str] = set()
    for first in range(0, len(tenants), SOURCE_QUERY_TENANTS):
        batch = list(tenants[first : first + SOURCE_QUERY_TENANTS])
        try:
            found |= _with_rows(rt, batch, table)
        except ConvergenceError as exc:
            if exc.status != 404:
                raise
            # Some of these datasets lack the table (created by its first load): ask only those that have it.
            found |= _with_rows(rt, [t for t in batch if rt.warehouse.table_exists(t, table)], table)
    return found


def _with_rows(rt: Runtime, tenants: list[str], table: str) -> set[str]:
    if not tenants:
        return set()
    selects = " UNION ALL ".join(
        f"(SELECT @t{i} AS tenant_id FROM {table_ref(tenant, table)} LIMIT 1)"
        for i, tenant in enumerate(tenants)
    )
    rows = rt.warehouse.query(selects, {f"t{i}": tenant for i, tenant in enumerate(tenants)})
    return {row["tenant_id"] for row in rows}
