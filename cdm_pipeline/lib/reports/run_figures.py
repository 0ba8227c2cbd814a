"""The figures of one run's governance report, aggregated in DuckDB: counts, rates, ids of
customers and requests; never a personal value.

Each function answers one section of the page and copes with a warehouse that lacks its tables
(a config without that kind of source, a run that stopped early).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import (
    AUDIT_LOG,
    EXTRACT_LOG,
    GOLDEN,
    OVERRIDES_APPLIED,
    OVERSIZE_CLUSTERS,
    PRIVACY_REQUESTS,
    QUALITY_RESULTS,
    RESOLUTION_RUNS,
    SUPPRESSION_LIST,
    quarantine_table,
    rejects_table,
    staging_table,
)
from cdm_pipeline.lib.reports.runs import RunScope
from cdm_pipeline.lib.warehouse import quote_ident, table_exists

# Buckets of the cluster-size distribution: records per customer.
CLUSTER_SIZE_BUCKETS = (("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4", 4, 4), ("5", 5, 5),
                        ("6–10", 6, 10), ("11–20", 11, 20), ("21+", 21, None))


@dataclass
class SourceLanding:
    """What one source's extract and staging did with the run's partitions."""

    source: str
    system: str
    kind: str
    partitions: int
    first_partition: object
    last_partition: object
    files: int
    landed: int  # rows read: loaded + rejected lines + suppressed
    loaded: int
    rejected: int
    suppressed: int
    staged: int
    quarantined: int
    rejected_by_reason: list[tuple[str, int]] = field(default_factory=list)
    quarantined_by_reason: list[tuple[str, int]] = field(default_factory=list)
    flagged_by_flag: list[tuple[str, int]] = field(default_factory=list)


def landing_figures(conn: duckdb.DuckDBPyConnection, config: CdmConfig, run_id: str) -> list[SourceLanding]:
    """Rows landed, rejected (unreadable), quarantined (failed a critical rule) per source, and why."""
    if not table_exists(conn, EXTRACT_LOG):
        return []
    # A retried step logs a partition twice: the last load is the one the tables hold.
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _report_loads AS
        SELECT * FROM {EXTRACT_LOG} WHERE run_id = ?
        QUALIFY row_number() OVER (PARTITION BY source_name, partition_date ORDER BY loaded_at DESC) = 1""",
        [run_id],
    )
    out = []
    for source in config.sources:
        row = conn.execute(
            """SELECT count(*), min(partition_date), max(partition_date), coalesce(sum(files), 0),
            coalesce(sum(rows_loaded), 0), coalesce(sum(rejected_lines), 0), coalesce(sum(suppressed_rows), 0)
            FROM _report_loads WHERE source_name = ?""",
            [source.name],
        ).fetchone()
        partitions, first, last, files, loaded, rejected, suppressed = row
        if not partitions:
            continue
        in_run = "_partition_date IN (SELECT partition_date FROM _report_loads WHERE source_name = ?)"
        rejects, staged_table = rejects_table(source.name), staging_table(source.kind)
        held = quarantine_table(source.kind)
        rejected_by = (
            conn.execute(
                f"SELECT error_type, count(*) FROM {rejects} WHERE {in_run} GROUP BY 1 ORDER BY 2 DESC, 1",
                [source.name],
            ).fetchall()
            if table_exists(conn, rejects) else []
        )
        staged, flagged_by, quarantined_by = 0, [], []
        if table_exists(conn, staged_table):
            staged = conn.execute(
                f"SELECT count(*) FROM {staged_table} WHERE source_name = ? AND {in_run}",
                [source.name, source.name],
            ).fetchone()[0]
            flagged_by = conn.execute(
                f"""SELECT flag, count(*) FROM (SELECT unnest(quality_flags) AS flag FROM {staged_table}
                WHERE source_name = ? AND {in_run}) GROUP BY 1 ORDER BY 2 DESC, 1""",
                [source.name, source.name],
            ).fetchall()
        if table_exists(conn, held):
            quarantined_by = conn.execute(
                f"""SELECT quarantine_reason, count(*) FROM {held}
                WHERE source_name = ? AND {in_run} GROUP BY 1 ORDER BY 2 DESC, 1""",
                [source.name, source.name],
            ).fetchall()
        out.append(SourceLanding(
            source=source.name, system=source.system, kind=source.kind, partitions=partitions,
            first_partition=first, last_partition=last, files=files,
            landed=loaded + rejected + suppressed, loaded=loaded, rejected=rejected, suppressed=suppressed,
            staged=staged, quarantined=sum(n for _, n in quarantined_by),
            rejected_by_reason=rejected_by, quarantined_by_reason=quarantined_by, flagged_by_flag=flagged_by,
        ))
    return out


@dataclass
class TableQuality:
    table: str
    partitions: str
    expectations: int
    passed: int
    failed_critical: int
    failed_warning: int
    previous_run_id: str | None
    previous_failed: int | None
    # One row per expectation that failed in this run or the previous one:
    # (expectation, severity, success, unexpected, elements, rate, previous success, previous rate)
    changes: list[tuple] = field(default_factory=list)


def quality_figures(conn: duckdb.DuckDBPyConnection, run_id: str) -> list[TableQuality]:
    """Quality results per table for the run, beside the previous run that validated the table."""
    if not table_exists(conn, QUALITY_RESULTS):
        return []
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE _report_quality AS
        SELECT run_id, table_name, expectation, any_value(severity) AS severity, bool_and(success) AS success,
            sum(unexpected_count) AS unexpected, sum(element_count) AS elements,
            sum(unexpected_count) / nullif(sum(element_count), 0) AS rate,
            min(partition_start) AS first_partition, max(partition_end) AS last_partition,
            max(evaluated_at) AS evaluated_at
        FROM {QUALITY_RESULTS} GROUP BY run_id, table_name, expectation"""
    )
    tables = conn.execute(
        """WITH this AS (SELECT table_name, min(evaluated_at) AS at FROM _report_quality WHERE run_id = ? GROUP BY 1)
        SELECT this.table_name,
            (SELECT arg_max(q.run_id, q.evaluated_at) FROM _report_quality q
             WHERE q.table_name = this.table_name AND q.run_id <> ? AND q.evaluated_at < this.at)
        FROM this ORDER BY 1""",
        [run_id, run_id],
    ).fetchall()
    out = []
    for table, previous in tables:
        summary = conn.execute(
            """SELECT count(*), count(*) FILTER (success),
                count(*) FILTER (NOT success AND severity = 'critical'),
                count(*) FILTER (NOT success AND severity <> 'critical'),
                min(first_partition), max(last_partition)
            FROM _report_quality WHERE run_id = ? AND table_name = ?""",
            [run_id, table],
        ).fetchone()
        previous_failed = None
        if previous is not None:
            previous_failed = conn.execute(
                "SELECT count(*) FILTER (NOT success) FROM _report_quality WHERE run_id = ? AND table_name = ?",
                [previous, table],
            ).fetchone()[0]
        changes = conn.execute(
            """SELECT coalesce(c.expectation, p.expectation), coalesce(c.severity, p.severity), c.success,
                c.unexpected, c.elements, c.rate, p.success, p.rate
            FROM (SELECT * FROM _report_quality WHERE run_id = ? AND table_name = ?) c
            FULL JOIN (SELECT * FROM _report_quality WHERE run_id = ? AND table_name = ?) p USING (expectation)
            WHERE NOT coalesce(c.success, true) OR NOT coalesce(p.success, true)
            ORDER BY coalesce(c.severity, p.severity), 1""",
            [run_id, table, previous, table],
        ).fetchall()
        first, last = summary[4], summary[5]
        out.append(TableQuality(
            table=table, partitions=str(first) if first == last else f"{first} to {last}",
            expectations=summary[0], passed=summary[1], failed_critical=summary[2], failed_warning=summary[3],
            previous_run_id=previous, previous_failed=previous_failed, changes=changes,
        ))
    return out


@dataclass
class IdentityFigures:
    run: dict
    previous: dict | None
    cluster_sizes: list[tuple[str, int, int]]  # (bucket, customers, records)
    oversize: list[tuple]  # (customer_id, records_before, resolved_by, largest_after)
    overrides: list[tuple]  # (line, decision, outcome)


def identity_figures(conn: duckdb.DuckDBPyConnection, run_id: str) -> IdentityFigures | None:
    """The run's resolution figures, the previous resolution's, and the cluster sizes now."""
    if not table_exists(conn, RESOLUTION_RUNS):
        return None
    cursor = conn.execute(
        f"SELECT * FROM {RESOLUTION_RUNS} WHERE run_id = ? ORDER BY resolved_at DESC LIMIT 1", [run_id]
    )
    columns = [d[0] for d in cursor.description]
    row = cursor.fetchone()
    if row is None:
        return None
    run = dict(zip(columns, row, strict=True))
    previous_row = conn.execute(
        f"SELECT * FROM {RESOLUTION_RUNS} WHERE resolved_at < ? ORDER BY resolved_at DESC LIMIT 1",
        [run["resolved_at"]],
    ).fetchone()
    previous = dict(zip(columns, previous_row, strict=True)) if previous_row else None
    cluster_sizes = []
    if table_exists(conn, GOLDEN):
        counts = conn.execute(
            f"SELECT record_count, count(*) FROM {GOLDEN} GROUP BY 1"
        ).fetchall()
        for label, low, high in CLUSTER_SIZE_BUCKETS:
            inside = [(size, n) for size, n in counts if size >= low and (high is None or size <= high)]
            cluster_sizes.append((label, sum(n for _, n in inside), sum(size * n for size, n in inside)))
    oversize = (
        conn.execute(
            f"""SELECT customer_id, records_before, resolved_by, largest_after FROM {OVERSIZE_CLUSTERS}
            WHERE run_id = ? ORDER BY records_before DESC""", [run_id],
        ).fetchall()
        if table_exists(conn, OVERSIZE_CLUSTERS) else []
    )
    overrides = (
        conn.execute(
            f"SELECT line, decision, outcome FROM {OVERRIDES_APPLIED} WHERE run_id = ? ORDER BY line",
            [run_id],
        ).fetchall()
        if table_exists(conn, OVERRIDES_APPLIED) else []
    )
    return IdentityFigures(run, previous, cluster_sizes, oversize, overrides)


@dataclass
class PrivacyFigures:
    requests: list[tuple]  # (action, status, requests, customers, rows affected)
    actions: list[tuple]  # audit log: (occurred_at, action, request_id, rows_affected, detail)
    suppression_entries: int


def privacy_figures(conn: duckdb.DuckDBPyConnection, scope: RunScope) -> PrivacyFigures:
    """Requests carried out and audit-log actions since the previous report, up to this one."""
    since = scope.previous_reported_at
    requests = (
        conn.execute(
            f"""SELECT action, status, count(*), coalesce(sum(customers), 0), coalesce(sum(rows_affected), 0)
            FROM {PRIVACY_REQUESTS} WHERE {_since_previous_report("processed_at")}
            GROUP BY 1, 2 ORDER BY 1, 2""",
            [since, since, scope.reported_at],
        ).fetchall()
        if table_exists(conn, PRIVACY_REQUESTS) else []
    )
    actions = (
        conn.execute(
            f"""SELECT occurred_at, action, request_id, rows_affected, detail FROM {AUDIT_LOG}
            WHERE {_since_previous_report("occurred_at")} ORDER BY occurred_at""",
            [since, since, scope.reported_at],
        ).fetchall()
        if table_exists(conn, AUDIT_LOG) else []
    )
    suppression = (
        conn.execute(f"SELECT count(*) FROM {SUPPRESSION_LIST}").fetchone()[0]
        if table_exists(conn, SUPPRESSION_LIST) else 0
    )
    return PrivacyFigures(requests, actions, suppression)


def _since_previous_report(column: str) -> str:
    """``column`` after the previous report (if any) and at or before this one.

    Binds three values: the previous report's time twice, then this report's.
    """
    at = quote_ident(column)
    return f"(? IS NULL OR {at} > ?) AND {at} <= ?"
