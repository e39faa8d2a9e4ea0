"""Multi-statement transactions for `BigQueryWarehouse.run_atomically`, one way per backend.

On BigQuery the statements run as one script (`transaction_script`): BEGIN TRANSACTION, each statement with
its parameters renamed apart, COMMIT, and the affected-row counts selected last.

bqemulator (1.4) does not bind query parameters inside multi-statement scripts and has no @@row_count, so
with BIGQUERY_EMULATOR_HOST set the adapter uses `run_emulated_transaction` instead: snapshot, run one by
one, restore on failure. Real BigQuery never takes that path.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from common.errors import ConvergenceError
from common.warehouse.base import Params, Statement
from common.warehouse.bigquery_codec import INTERNAL_PREFIX
from common.warehouse.bigquery_params import QueryParameter, prepare, tokenize
from common.warehouse.sql import table_ref


class ScriptRunner(Protocol):
    """What an emulated transaction needs of the adapter: table existence, parameterised statements, and
    parameterless internal statements (snapshots) that bypass the adapter's checks."""

    def table_exists(self, dataset: str, table: str) -> bool: ...

    def execute(self, sql: str, params: Params | None = None) -> int: ...

    def _run_internal(self, sql: str) -> None: ...

# Logged under the adapter's name, so logging set up for common.warehouse.bigquery covers this path.
log = logging.getLogger("common.warehouse.bigquery")

ROW_COUNTS = "_convergence_row_counts"


def transaction_script(statements: Sequence[Statement]) -> tuple[str, list[QueryParameter]]:
    """One BigQuery script running the statements in a transaction and returning their affected rows.

    Parameters are renamed per statement (@s0_id, @s1_id, ...) because a script shares one parameter
    namespace; @@row_count after each statement is collected and selected last. An error rolls the
    transaction back: BigQuery aborts a script's open transaction when a statement fails.
    """
    lines = [f"DECLARE {ROW_COUNTS} ARRAY<INT64> DEFAULT [];", "BEGIN TRANSACTION;"]
    parameters: list[QueryParameter] = []
    for index, (sql, params) in enumerate(statements):
        text, bound = prepare(sql, params, prefix=f"s{index}_")
        last = tokenize(text)[-1]
        if last.token_type == TokenType.SEMICOLON:
            text = text[: last.start]
        # The terminator on a line of its own, so a trailing -- comment cannot swallow it.
        lines += [text.strip(), ";"]
        lines.append(f"SET {ROW_COUNTS} = ARRAY_CONCAT({ROW_COUNTS}, [IFNULL(@@row_count, 0)]);")
        parameters += bound
    lines += ["COMMIT TRANSACTION;", f"SELECT {ROW_COUNTS} AS row_counts;"]
    return "\n".join(lines), parameters


def run_emulated_transaction(warehouse: ScriptRunner, statements: Sequence[Statement]) -> list[int]:
    """All-or-nothing on bqemulator, which cannot bind parameters inside a script.

    Each table the statements write is copied first; the statements then run one by one as ordinary
    parameterised jobs; if one fails, every copied table gets its rows back in one script (which needs
    no parameters) and the error is raised. This mirrors bqemulator's own snapshot-based transactions;
    like them it does not isolate concurrent writers. Real BigQuery never takes this path.
    """
    snapshots: dict[str, str] = {}  # table → its copy, both as `dataset`.`table`
    try:
        for dataset, table in _dml_targets(statements):
            if warehouse.table_exists(dataset, table):
                copy = table_ref(dataset, f"{INTERNAL_PREFIX}txn_{uuid.uuid4().hex}")
                warehouse._run_internal(f"CREATE TABLE {copy} AS SELECT * FROM {table_ref(dataset, table)}")
                snapshots[table_ref(dataset, table)] = copy
        try:
            return [warehouse.execute(sql, params) for sql, params in statements]
        except BaseException:
            restore = " ".join(
                f"DELETE FROM {target} WHERE TRUE; INSERT INTO {target} SELECT * FROM {copy};"
                for target, copy in snapshots.items()
            )
            if restore:
                warehouse._run_internal(f"BEGIN TRANSACTION; {restore} COMMIT TRANSACTION;")
            raise
    finally:
        for copy in snapshots.values():
            try:
                warehouse._run_internal(f"DROP TABLE IF EXISTS {copy}")
            except ConvergenceError as exc:
                log.warning("could not drop the transaction snapshot %s: %s", copy, exc.message)


def _dml_targets(statements: Sequence[Statement]) -> list[tuple[str, str]]:
    """(dataset, table) of every table an INSERT, UPDATE, DELETE or MERGE among the statements writes."""
    targets: list[tuple[str, str]] = []
    for sql, _ in statements:
        try:
            trees = sqlglot.parse(sql, read="bigquery")
        except sqlglot.errors.ParseError:
            continue  # the statement itself will fail, with the parser's message
        for tree in trees:
            if not isinstance(tree, exp.Insert | exp.Update | exp.Delete | exp.Merge):
                continue
            table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if isinstance(table, exp.Table) and table.db and (table.db, table.name) not in targets:
                targets.append((table.db, table.name))
    return targets
