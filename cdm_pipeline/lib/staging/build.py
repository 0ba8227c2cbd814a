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
from cdm_pipeline.lib.catalog import (
    RAW_PURGE_KIND,
    RETENTION_PURGES,
    ensure,
    quarantine_table,
    raw_table,
    staging_table,
)
from cdm_pipeline.lib.staging.columns import quarantine_columns, staging_columns
from cdm_pipeline.lib.staging.loss import SourceLoss, measure_losses
from cdm_pipeline.lib.staging.mapping import parsed_sql, record_id_sql, records_sql, spec_for, text_sql
from cdm_pipeline.lib.staging.rules import PARSED_COLUMNS, RULES, bool_sql
from cdm_pipeline.lib.standardise import register_standardisers
from cdm_pipeline.lib.warehouse import quote_ident, safe_error_message, table_exists

logger = logging.getLogger(__name__)

_MAPPED = "_cdm_mapped"
_JUDGED = "_cdm_judged"


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
    losses: list[SourceLoss] = field(default_factory=list)  # per source: what was held back


def _refuse_to_empty(
    conn: duckdb.DuckDBPyConnection, kind: str, sources: list[SourceConfig], partition_date: dt.date
) -> None:
    """Refuse to replace a staged partition by nothing because retention purged its raw copy.

    Retention (``retention.raw_days``) deletes old raw copies and keeps their staged rows; staging
    such a partition again on its own (a re-run of the step, not of the extract) would empty it
    and retire its customers' ids. The extract reloads the raw copy first (`cdm run --date D`).
    A partition whose raw copy is empty for another reason (an extract allowed to shrink) stages
    as it is.
    """
    if not table_exists(conn, RETENTION_PURGES):
        return
    (cutoff,) = conn.execute(
        f"SELECT max(cutoff_date) FROM {RETENTION_PURGES} WHERE kind = $kind", {"kind": RAW_PURGE_KIND}
    ).fetchone()
    if cutoff is None or partition_date >= cutoff:
        return
    raw_rows = sum(
        conn.execute(f"SELECT count(*) FROM {raw_table(s.name)} WHERE _partition_date = ?", [partition_date])
        .fetchone()[0]
        for s in sources
    )
    if raw_rows:
        return
    staged_rows = sum(
        conn.execute(f"SELECT count(*) FROM {table} WHERE _partition_date = ?", [partition_date]).fetchone()[0]
        for table in (staging_table(kind), quarantine_table(kind))
    )
    if staged_rows:
        raise StagingError(
            f"{staging_table(kind).full_name}: the raw copy of partition {partition_date} was purged by"
            " retention.raw_days;"
            f" its {staged_rows:,} staged rows are kept. To stage it again, extract it again first:"
            f" cdm run --date {partition_date}"
        )


def ensure_staging_tables(conn: duckdb.DuckDBPyConnection, kind: str) -> None:
    # A warehouse written by an earlier version gets the canonical columns added since (ensure).
    ensure(conn, staging_table(kind))
    ensure(conn, quarantine_table(kind))


def stage_partition(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, kind: str, partition_date: dt.date
) -> StagedPartition:
    """Replace one partition of ``staging.<kind>`` and ``quarantine.<kind>``."""
    register_standardisers(conn)
    result = StagedPartition(kind, partition_date)
    sources = [s for s in config.sources_staged_as(kind) if table_exists(conn, raw_table(s.name))]
    staged, held = staging_table(kind), quarantine_table(kind)
    conn.execute("BEGIN TRANSACTION")
    try:
        ensure_staging_tables(conn, kind)
        _refuse_to_empty(conn, kind, sources, partition_date)
        conn.execute(f"DELETE FROM {staged} WHERE _partition_date = ?", [partition_date])
        conn.execute(f"DELETE FROM {held} WHERE _partition_date = ?", [partition_date])
        if sources:
            _create_mapped(conn, config, kind, sources, partition_date)
            conn.execute(f"CREATE OR REPLACE TEMP TABLE {_JUDGED} AS {RULES[kind]}",
                         {"default_region": config.default_region} if kind == "contacts" else {})
            columns = ", ".join(quote_ident(c) for c in staging_columns(kind))
            conn.execute(
                f"INSERT INTO {staged} ({columns}) SELECT {columns} FROM {_JUDGED}"
                " WHERE quarantine_reason IS NULL ORDER BY source_name, _source_file, _source_row"
            )
            q_columns = ", ".join(quote_ident(c) for c in quarantine_columns(kind))
            conn.execute(
                f"INSERT INTO {held} ({q_columns}) SELECT {q_columns} FROM {_JUDGED}"
                " WHERE quarantine_reason IS NOT NULL ORDER BY source_name, _source_file, _source_row"
            )
            _count(conn, result)
            result.losses = measure_losses(conn, kind, sources, _MAPPED, _JUDGED, PARSED_COLUMNS[kind], bool_sql)
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
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, kind: str, sources: list[SourceConfig],
    partition_date: dt.date,
) -> None:
    """The records of every source of the kind under canonical names, trimmed, values parsed."""
    params = {"partition": partition_date}
    selects = []
    for i, source in enumerate(sources):
        params[f"name_{i}"] = source.name
        params[f"system_{i}"] = source.system
        items = mapped_items(config, kind, source)
        selects.append(
            f"SELECT $name_{i} AS source_name, $system_{i} AS source_system, {', '.join(items)}"
            f" FROM ({records_sql(source)})"
        )
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {_MAPPED} AS " + " UNION ALL ".join(selects), params)


def mapped_items(config: CdmConfig, kind: str, source: SourceConfig) -> list[str]:
    """The SELECT items of one source's records under the kind's canonical columns.

    ``source_record_id``, each canonical column as text, ``<column>__parsed`` for typed ones,
    then the lineage columns. An orders source read as contacts (its buyers) maps the contacts
    columns it shares, with the order date as the record's time.
    """
    parsed = PARSED_COLUMNS[kind]
    specs = {c: spec_for(source, kind, c) for c in CANONICAL_COLUMNS[kind]}
    texts = {c: text_sql(source, c, spec) for c, spec in specs.items()}
    record_id = record_id_sql(source, texts)
    if kind == "orders" and "contact_id" not in source.mapped and source.carries_identity:
        texts["contact_id"] = record_id  # the order's own buyer record
    items = [f"{record_id} AS source_record_id"]
    for column, text in texts.items():
        items.append(f"{text} AS {quote_ident(column)}")
        if column in parsed:
            typed = parsed_sql(text, parsed[column], specs[column], source, config)
            items.append(f"{typed} AS {quote_ident(column + '__parsed')}")
    return items + ["_source_file", "_source_row", "_partition_date"]


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
    """Per partition: records of every source of the kind, staged rows, quarantined rows.

    A record is a raw row, unless the source groups line items (one record per id) or explodes
    a list (one record per element): counted from the same relation staging reads.
    """
    out = []
    for day in partition_dates:
        raw = 0
        for source in config.sources_staged_as(kind):
            if table_exists(conn, raw_table(source.name)):
                raw += conn.execute(
                    f"SELECT count(*) FROM ({records_sql(source)})", {"partition": day}
                ).fetchone()[0]
        staged, held = (
            conn.execute(f"SELECT count(*) FROM {table} WHERE _partition_date = ?", [day]).fetchone()[0]
            if table_exists(conn, table) else 0
            for table in (staging_table(kind), quarantine_table(kind))
        )
        out.append((day, raw, staged, held))
    return out
