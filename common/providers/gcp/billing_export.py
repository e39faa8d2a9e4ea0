"""One UTC day of a tenant's Google Cloud billing export, copied into `{tenant}.gcp_billing_export_v1`.

The day is `usage_start_time` in [date, date + 1). The copy deletes that day from the destination and
inserts the source's rows in one transaction, so a redelivered or re-run step never duplicates a row.

Where the export lives decides how it is read:

- In the platform's own engine (DuckDB, or bqemulator), the export must be a table of the tenant's own
  dataset; naming another dataset (another tenant's, the control dataset) or another project is refused
  (`source_forbidden`). The copy is one DELETE + INSERT ... SELECT inside the engine.
- On Google Cloud, the export is in the tenant's project and is read with the tenant's own service account
  (read-only scope, token endpoint fixed to Google's whatever the key file says), landed in a staging table
  of the tenant's dataset, swapped in with the same DELETE + INSERT ... SELECT, and the staging table dropped.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from common.errors import ConvergenceError, TerminalError, TransientError
from common.metadata.schemas import TableSchema
from common.settings import Settings
from common.warehouse.base import Warehouse
from common.warehouse.sql import quote_identifier, table_ref

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_UNIVERSE = "googleapis.com"
READ_ONLY_SCOPE = "https://www.googleapis.com/auth/bigquery.readonly"
# Columns every standard usage cost export has had; the newer ones (tags, cost_at_list, ...) may be absent
# from an older export and are then copied as NULL.
CORE_COLUMNS = (
    "billing_account_id",
    "service",
    "sku",
    "usage_start_time",
    "cost",
    "currency",
    "usage",
    "credits",
)
DAY_FILTER = (
    "usage_start_time >= TIMESTAMP(@date) AND usage_start_time < TIMESTAMP(DATE_ADD(@date, INTERVAL 1 DAY))"
)
# Key-file fields google-auth needs; anything else a tenant puts in its key file is ignored.
_KEY_FIELDS = ("type", "project_id", "private_key_id", "private_key", "client_email", "client_id")
_QUERY_TIMEOUT = 300.0


@dataclass(frozen=True)
class ExportTable:
    """The billing export table an integration names: project.dataset.table."""

    project: str
    dataset: str
    table: str

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"


@dataclass
class CopyOutcome:
    rows: int
    details: dict[str, Any] = field(default_factory=dict)


def uses_platform_engine(settings: Settings) -> bool:
    """Whether billing exports live in the platform's own engine (DuckDB or the BigQuery emulator)."""
    return settings.convergence_warehouse == "duckdb" or bool(settings.bigquery_emulator_host)


def _select_list(schema: TableSchema, present: Sequence[str], source: str) -> str:
    """The destination's columns as read from a source having `present` columns (absent newer ones NULL)."""
    have = {name.lower() for name in present}
    lacking = [name for name in CORE_COLUMNS if name not in have]
    if lacking:
        raise TerminalError(
            f"{source} is not a billing export: it lacks {', '.join(lacking)}", code="source_schema_mismatch"
        )
    return ", ".join(
        quote_identifier(f.name)
        if f.name in have
        else f"CAST(NULL AS {f.standard_sql_type()}) AS {quote_identifier(f.name)}"
        for f in schema.fields
    )


def replace_day(
    wh: Warehouse,
    dataset: str,
    schema: TableSchema,
    source_sql: str,
    present: Sequence[str],
    day: dt.date,
    source: str,
) -> tuple[int, int]:
    """Delete the day from the destination and insert the source's day, atomically: (deleted, inserted)."""
    target = table_ref(dataset, schema.name)
    columns = ", ".join(quote_identifier(name) for name in schema.column_names)
    select = _select_list(schema, present, source)
    deleted, inserted = wh.run_atomically(
        [
            (f"DELETE FROM {target} WHERE {DAY_FILTER}", {"date": day}),
            (
                f"INSERT INTO {target} ({columns}) SELECT {select} FROM {source_sql} WHERE {DAY_FILTER}",
                {"date": day},
            ),
        ]
    )
    return deleted, inserted


# -- the platform's own engine ---------------------------------------------------------------------------


def copy_within_engine(
    wh: Warehouse, settings: Settings, tenant: str, schema: TableSchema, source: ExportTable, day: dt.date
) -> CopyOutcome:
    """Copy the day from a table of the tenant's own dataset; anything else is `source_forbidden`."""
    if source.project != settings.gcp_project_id or source.dataset != tenant:
        raise TerminalError(
            f"billing_export_table must be a table of {settings.gcp_project_id}.{tenant} (the tenant's own"
            f" dataset) in this deployment, not {source}",
            code="source_forbidden",
        )
    details: dict[str, Any] = {"source": str(source), "table": schema.name, "date": day.isoformat()}
    if source.table.lower() == schema.name.lower():
        rows = wh.query(
            f"SELECT COUNT(*) AS n FROM {table_ref(tenant, schema.name)} WHERE {DAY_FILTER}", {"date": day}
        )
        details.update(
            copied=False, reason="the billing export is the destination table itself; nothing to copy"
        )
        return CopyOutcome(int(rows[0]["n"]), details)
    if not wh.table_exists(tenant, source.table):
        raise TerminalError(f"billing export table {source} does not exist", code="source_not_found")
    present = wh.table_columns(tenant, source.table)
    deleted, inserted = replace_day(
        wh, tenant, schema, table_ref(tenant, source.table), present, day, str(source)
    )
    details.update(copied=True, rows_replaced=deleted)
    return CopyOutcome(inserted, details)


# -- the tenant's own Google Cloud project ---------------------------------------------------------------


def service_account_credentials(key: Mapping[str, Any]) -> Any:
    """Read-only BigQuery credentials of the tenant's service account.

    The token endpoint and universe are Google's whatever the key file says: a tenant must not make the
    platform post a signed assertion to an address of its choosing.
    """
    from google.oauth2 import service_account

    info = {name: key[name] for name in _KEY_FIELDS if name in key}
    info.update(token_uri=GOOGLE_TOKEN_URI, universe_domain=GOOGLE_UNIVERSE)
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=[READ_ONLY_SCOPE])
    except (ValueError, KeyError, TypeError):
        raise TerminalError(
            "the gcp integration's credential is not a usable service account key", code="invalid_credential"
        ) from None


def tenant_bigquery_client(key: Mapping[str, Any]) -> Any:
    """A BigQuery client acting as the tenant's service account, in the key's project."""
    from google.cloud import bigquery

    return bigquery.Client(project=key.get("project_id"), credentials=service_account_credentials(key))


def day_query(source: ExportTable, columns: Sequence[str], day: dt.date) -> tuple[str, list[Any]]:
    """SQL reading one UTC day of the export, the bounds passed as @day_start and @day_end parameters."""
    from google.cloud import bigquery

    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    selected = ", ".join(quote_identifier(name) for name in columns)
    sql = (
        f"SELECT {selected} FROM {quote_identifier(source.project)}.{table_ref(source.dataset, source.table)}"
        " WHERE usage_start_time >= @day_start AND usage_start_time < @day_end"
    )
    params = [
        bigquery.ScalarQueryParameter("day_start", "TIMESTAMP", start),
        bigquery.ScalarQueryParameter("day_end", "TIMESTAMP", start + dt.timedelta(days=1)),
    ]
    return sql, params


@contextmanager
def tenant_project_errors(source: ExportTable) -> Iterator[None]:
    """Errors of the tenant's project as the platform's: transient for outages and quotas, else terminal."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exceptions

    try:
        yield
    except ConvergenceError:
        raise
    except (gexc.ServerError, gexc.TooManyRequests, gexc.RetryError, requests.exceptions.ConnectionError,
            requests.exceptions.Timeout, auth_exceptions.TransportError, TimeoutError) as exc:  # fmt: skip
        raise TransientError(f"BigQuery unavailable while reading {source}: {type(exc).__name__}") from None
    except auth_exceptions.RefreshError as exc:
        if getattr(exc, "retryable", False):
            raise TransientError("Google's token endpoint is unavailable; retrying later") from None
        raise TerminalError(
            "Google refused the gcp integration's service account key", code="invalid_credential"
        ) from None
    except gexc.GoogleAPICallError as exc:
        reasons = {str(e.get("reason")) for e in exc.errors or () if isinstance(e, Mapping)}
        if reasons & {"rateLimitExceeded", "quotaExceeded", "backendError", "internalError"}:
            raise TransientError(f"BigQuery busy while reading {source}") from None
        if isinstance(exc, gexc.NotFound):
            raise TerminalError(
                f"billing export table {source} does not exist", code="source_not_found"
            ) from None
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            raise TerminalError(
                f"the gcp integration's service account may not read {source}", code="source_forbidden"
            ) from None
        first = (exc.message or str(exc)).strip().splitlines()[0][:300]
        raise TerminalError(f"BigQuery refused to read {source}: {first}", code="source_unreadable") from None


def export_columns(client: Any, source: ExportTable) -> list[str]:
    """The column names of the tenant's export table."""
    with tenant_project_errors(source):
        return [f.name for f in client.get_table(str(source)).schema]


def fetch_day(client: Any, source: ExportTable, columns: Sequence[str], day: dt.date) -> pa.Table:
    """The day's rows of the tenant's export as Arrow, read through jobs.query (allowed by the read-only scope)."""
    from google.cloud import bigquery

    sql, params = day_query(source, columns, day)
    with tenant_project_errors(source):
        job = client.query(
            sql, job_config=bigquery.QueryJobConfig(query_parameters=params), api_method="QUERY"
        )
        return job.result(timeout=_QUERY_TIMEOUT).to_arrow(create_bqstorage_client=False)


def land_day(
    wh: Warehouse, dataset: str, schema: TableSchema, data: pa.Table, day: dt.date, source: str
) -> tuple[int, int]:
    """Stage the day's rows in the tenant's dataset, swap them in atomically, drop the staging table."""
    from common.warehouse.bigquery_codec import INTERNAL_PREFIX  # the adapter hides tables so named

    staging = f"{INTERNAL_PREFIX}staging_{schema.name}_{uuid.uuid4().hex[:12]}"
    wh.create_table(dataset, schema.model_copy(update={"name": staging}))
    try:
        if data.num_rows:
            wh.load_arrow(dataset, staging, data, mode="append")
        return replace_day(wh, dataset, schema, table_ref(dataset, staging), schema.column_names, day, source)
    finally:
        wh.execute(f"DROP TABLE IF EXISTS {table_ref(dataset, staging)}")


def copy_from_tenant_project(
    wh: Warehouse, tenant: str, schema: TableSchema, source: ExportTable, day: dt.date, client: Any
) -> CopyOutcome:
    """Read the day from the tenant's project with the tenant's client and land it in the tenant's dataset."""
    present = export_columns(client, source)
    _select_list(schema, present, str(source))  # refuses a table that is not a billing export
    columns = [name for name in schema.column_names if name in set(present)]
    data = fetch_day(client, source, columns, day)
    deleted, inserted = land_day(wh, tenant, schema, data, day, str(source))
    details = {"source": str(source), "table": schema.name, "date": day.isoformat(), "copied": True,
               "rows_replaced": deleted}  # fmt: skip
    return CopyOutcome(inserted, details)
