"""Build one daily partition of ``staging.<kind>`` and ``quarantine.<kind>`` from raw.

All sources of a kind are mapped to canonical column names (``_cdm_mapped``), standardised and
judged by the kind's rules (rules.py), then split into the two tables in one transaction, so a
partition is replaced whole or not at all and every raw row lands in exactly one of them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import duckdb

from cdm_pipeline.config import CANONICAL_COLUMNS, CdmConfig, SourceConfig
from cdm_pipeline.lib.extract.load import RAW_SCHEMA
from cdm_pipeline.lib.staging.columns import quarantine_columns, staging_columns
from cdm_pipeline.lib.staging.rules import PARSED_COLUMNS, RULES
from cdm_pipeline.lib.standardise import register_standardisers
from cdm_pipeline.lib.warehouse import qualified, quote_ident, safe_error_message, table_columns, table_exists

logger = logging.getLogger(__name__)

STAGING_SCHEMA = "staging"
QUARANTINE_SCHEMA = "quarantine"
_MAPPED = "_cdm_mapped"
_JUDGED = "_cdm_judged"
# Free-text columns whose inner runs of whitespace carry no meaning (names are the standardiser's).
_COLLAPSE = frozenset({"address_line1", "address_line2", "city", "region", "company", "campaign_name"})


class StagingError(Exception):
    """A partition that could not be staged; the message carries no row values."""


@dataclass
class StagedPartition:
    """Counts from staging one partition of one kind (no values: they may be personal)."""

    kind: str
    partition_date: dt.date
    raw_rows: int = 0
    staged: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)


def ensure_staging_tables(conn: duckdb.DuckDBPyConnection, kind: str) -> None:
    for schema, columns, table in (
        (STAGING_SCHEMA, staging_columns(kind), kind),
        (QUARANTINE_SCHEMA, quarantine_columns(kind), kind),
    ):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        body = ", ".join(f"{quote_ident(name)} {sql_type}" for name, sql_type in columns.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified(schema, table)} ({body})")
        # A warehouse written by an earlier version lacks the canonical columns added since:
        # add them (empty for the partitions already staged) rather than fail every insert.
        existing = set(table_columns(conn, schema, table))
        for name, sql_type in columns.items():
            if name not in existing:
                conn.execute(
                    f"ALTER TABLE {qualified(schema, table)} ADD COLUMN {quote_ident(name)} {sql_type}"
                )


def stage_partition(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, kind: str, partition_date: dt.date
) -> StagedPartition:
    """Replace one partition of ``staging.<kind>`` and ``quarantine.<kind>``."""
    register_standardisers(conn)
    result = StagedPartition(kind, partition_date)
    sources = [s for s in config.sources_of_kind(kind) if table_exists(conn, RAW_SCHEMA, s.name)]
    staging_table = qualified(STAGING_SCHEMA, kind)
    quarantine_table = qualified(QUARANTINE_SCHEMA, kind)
    conn.execute("BEGIN TRANSACTION")
    try:
        ensure_staging_tables(conn, kind)
        conn.execute(f"DELETE FROM {staging_table} WHERE _partition_date = ?", [partition_date])
        conn.execute(f"DELETE FROM {quarantine_table} WHERE _partition_date = ?", [partition_date])
        if sources:
            _create_mapped(conn, kind, sources, partition_date)
            conn.execute(f"CREATE OR REPLACE TEMP TABLE {_JUDGED} AS {RULES[kind]}",
                         {"default_region": config.default_region} if kind == "contacts" else {})
            columns = ", ".join(quote_ident(c) for c in staging_columns(kind))
            conn.execute(
                f"INSERT INTO {staging_table} ({columns}) SELECT {columns} FROM {_JUDGED}"
                " WHERE quarantine_reason IS NULL ORDER BY source_name, _source_file, _source_row"
            )
            q_columns = ", ".join(quote_ident(c) for c in quarantine_columns(kind))
            conn.execute(
                f"INSERT INTO {quarantine_table} ({q_columns}) SELECT {q_columns} FROM {_JUDGED}"
                " WHERE quarantine_reason IS NOT NULL ORDER BY source_name, _source_file, _source_row"
            )
            _count(conn, result)
            conn.execute(f"DROP TABLE {_JUDGED}")
            conn.execute(f"DROP TABLE {_MAPPED}")
        conn.execute("COMMIT")
    except duckdb.Error as exc:
        conn.execute("ROLLBACK")
        raise StagingError(f"staging {kind} for {partition_date}: {safe_error_message(exc)}") from None
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    logger.info(
        "staged %s %s: %d raw rows, %d staged, %d quarantined",
        kind, partition_date, result.raw_rows, result.staged, result.quarantined,
    )
    return result


def _create_mapped(
    conn: duckdb.DuckDBPyConnection, kind: str, sources: list[SourceConfig], partition_date: dt.date
) -> None:
    """The raw rows of every source of the kind under canonical names, trimmed, dates parsed."""
    canonical = CANONICAL_COLUMNS[kind]
    parsed = PARSED_COLUMNS[kind]
    selects, params = [], {"partition": partition_date}
    for i, source in enumerate(sources):
        params[f"name_{i}"] = source.name
        params[f"system_{i}"] = source.system
        items = [
            f"$name_{i} AS source_name",
            f"$system_{i} AS source_system",
            f"{_clean(quote_ident(source.id_column))} AS source_record_id",
        ]
        for column in canonical:
            spec = source.column_spec(column)
            text = _clean(quote_ident(spec.column), column in _COLLAPSE) if spec else "NULL::VARCHAR"
            items.append(f"{text} AS {quote_ident(column)}")
            if column in parsed:
                items.append(f"{_parse(text, parsed[column], spec and spec.format, f'fmt_{i}_{column}', params)}"
                             f" AS {quote_ident(column + '__parsed')}")
        items += ["_source_file", "_source_row", "_partition_date"]
        selects.append(
            f"SELECT {', '.join(items)} FROM {qualified(RAW_SCHEMA, source.name)}"
            " WHERE _partition_date = $partition"
        )
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {_MAPPED} AS " + " UNION ALL ".join(selects), params)


def _clean(expression: str, collapse: bool = False) -> str:
    # Exports pad values and write empty strings for "no value"; neither is information.
    if collapse:
        expression = f"regexp_replace({expression}, '\\s+', ' ', 'g')"
    return f"nullif(trim({expression}), '')"


def _parse(text: str, sql_type: str, fmt: str | None, param: str, params: dict) -> str:
    if fmt:
        params[param] = fmt
        return f"try_strptime({text}, ${param})::{sql_type}"
    return f"TRY_CAST({text} AS {sql_type})"


def _count(conn: duckdb.DuckDBPyConnection, result: StagedPartition) -> None:
    result.raw_rows = conn.execute(f"SELECT count(*) FROM {_MAPPED}").fetchone()[0]
    reasons = conn.execute(
        f"SELECT quarantine_reason, count(*) FROM {_JUDGED} WHERE quarantine_reason IS NOT NULL"
        " GROUP BY 1 ORDER BY 1"
    ).fetchall()
    result.quarantine_reasons = dict(reasons)
    result.quarantined = sum(result.quarantine_reasons.values())
    result.staged = result.raw_rows - result.quarantined
    flags = conn.execute(
        f"SELECT flag, count(*) FROM (SELECT unnest(quality_flags) AS flag FROM {_JUDGED}"
        " WHERE quarantine_reason IS NULL) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    result.flags = dict(flags)


def count_conservation(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, kind: str, partition_dates: list[dt.date]
) -> list[tuple[dt.date, int, int, int]]:
    """Per partition: raw rows of every source of the kind, staged rows, quarantined rows."""
    out = []
    for day in partition_dates:
        raw = 0
        for source in config.sources_of_kind(kind):
            if table_exists(conn, RAW_SCHEMA, source.name):
                raw += conn.execute(
                    f"SELECT count(*) FROM {qualified(RAW_SCHEMA, source.name)} WHERE _partition_date = ?",
                    [day],
                ).fetchone()[0]
        staged, held = (
            conn.execute(
                f"SELECT count(*) FROM {qualified(schema, kind)} WHERE _partition_date = ?", [day]
            ).fetchone()[0]
            if table_exists(conn, schema, kind) else 0
            for schema in (STAGING_SCHEMA, QUARANTINE_SCHEMA)
        )
        out.append((day, raw, staged, held))
    return out
