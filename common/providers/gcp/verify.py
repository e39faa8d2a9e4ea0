"""The read-only check of a gcp integration: can the billing export table be read where runs read it?

Where the export is read depends on the deployment, as for gcp.billing_export (see billing_export):

- On Google Cloud: one BigQuery tables.get of `billing_export_table`, made with the tenant's service account
  key (read-only scope, Google's token endpoint) through the official client. Reading the table's metadata
  proves the key signs in and may read the table; its columns prove it is a billing export.
- In the platform's own engine (DuckDB, or the BigQuery emulator): a run copies the export from a table of
  the tenant's own dataset and never uses the key. The proof is the same question asked of the engine: the
  table is in the tenant's dataset, exists, and has a billing export's columns. The message says the key
  itself was not used.

Not found, not allowed, a refused key, not a billing export: INVALID. BigQuery or the token endpoint
unavailable: UNVERIFIED.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from common.errors import TerminalError, TransientError
from common.providers.base import Verification, VerificationRequest, proved, refused, unverified
from common.providers.gcp.billing_export import (
    CORE_COLUMNS,
    ExportTable,
    tenant_bigquery_client,
    tenant_project_errors,
    uses_platform_engine,
)
from common.providers.gcp.credentials import GcpServiceAccount, GcpSettings
from common.runtime import Runtime

ClientFactory = Callable[[Mapping[str, Any]], Any]


def verify_billing_export(
    request: VerificationRequest, *, client_factory: ClientFactory | None = None
) -> Verification:
    """Read the export table's metadata where a run would read the export (see the module's docstring).

    `client_factory` makes the BigQuery client from the key file (default: tenant_bigquery_client).
    """
    account, settings = request.credential, request.settings
    assert isinstance(account, GcpServiceAccount) and isinstance(settings, GcpSettings)
    source = ExportTable(*settings.table_parts())
    if uses_platform_engine(request.runtime.settings):
        return _in_platform_engine(request.runtime, request.tenant_id, source)
    return _in_tenant_project(account, source, request.timeout, client_factory or tenant_bigquery_client)


def _lacking(columns: Sequence[str]) -> list[str]:
    have = {name.lower() for name in columns}
    return [name for name in CORE_COLUMNS if name not in have]


def _in_platform_engine(rt: Runtime, tenant: str, source: ExportTable) -> Verification:
    project = rt.settings.gcp_project_id
    if source.project != project or source.dataset != tenant:
        return refused(
            f"billing_export_table must be a table of {project}.{tenant} (the tenant's own dataset) in this"
            f" deployment, not {source}"
        )
    try:
        if not rt.warehouse.table_exists(tenant, source.table):
            return refused(f"billing export table {source} does not exist")
        lacking = _lacking(rt.warehouse.table_columns(tenant, source.table))
    except TransientError as exc:
        return unverified(f"the platform's warehouse did not answer: {exc.message}")
    if lacking:
        return refused(f"{source} is not a billing export: it lacks {', '.join(lacking)}")
    return proved(
        f"billing export table {source} exists in the platform's warehouse, where runs of this deployment"
        " read it (the service account key is not used here)"
    )


def _in_tenant_project(
    account: GcpServiceAccount, source: ExportTable, timeout: float, client_factory: ClientFactory
) -> Verification:
    try:
        client = client_factory(account.info())
    except TerminalError as exc:
        return refused(exc.message)
    try:
        with tenant_project_errors(source):
            table = client.get_table(str(source), retry=None, timeout=timeout)
    except TransientError as exc:
        return unverified(exc.message)
    except TerminalError as exc:
        return refused(exc.message)
    finally:
        client.close()
    lacking = _lacking([field.name for field in table.schema])
    if lacking:
        return refused(f"{source} is not a billing export: it lacks {', '.join(lacking)}")
    return proved(f"the service account {account.client_email} can read billing export table {source}")
