"""Which run a report describes: its id, when it started, and the report before it.

``governance.run_reports`` keeps one row per run that got a report. "What happened since the
previous report" (privacy actions, quality changes) is measured from the row before.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdm_pipeline.lib.catalog import EXTRACT_LOG, QUALITY_RESULTS, RESOLUTION_RUNS, RUN_REPORTS, ensure
from cdm_pipeline.lib.identity.run_ids import IS_COMMAND_RESOLUTION_SQL
from cdm_pipeline.lib.warehouse import quote_ident, table_exists

# Tables whose rows carry the Dagster run that wrote them, with the time they were written
# (identity also logs the re-resolutions after erasures and re-links, which are no run).
_RUN_ACTIVITY = (
    (EXTRACT_LOG, "loaded_at", "true"),
    (QUALITY_RESULTS, "evaluated_at", "true"),
    (RESOLUTION_RUNS, "resolved_at", f"NOT {IS_COMMAND_RESOLUTION_SQL}"),
    (RUN_REPORTS, "started_at", "true"),
)


@dataclass(frozen=True)
class RunScope:
    """The run a governance report describes."""

    run_id: str
    started_at: dt.datetime
    reported_at: dt.datetime
    outcome: str
    previous_run_id: str | None
    previous_reported_at: dt.datetime | None


def started_at_of(start_time: float | None) -> dt.datetime | None:
    """A Dagster run record's ``start_time`` (seconds since the epoch) as a UTC time."""
    return dt.datetime.fromtimestamp(start_time, dt.timezone.utc) if start_time else None


def failed_outcome(failed_steps: list[str]) -> str:
    """The outcome a report gives a failed run: the steps that failed, by name (never a message)."""
    return "failed: " + (", ".join(sorted(set(failed_steps))) or "the run")


def _activity_sql(conn: duckdb.DuckDBPyConnection) -> str | None:
    parts = [
        f"SELECT run_id, {quote_ident(column)} AS seen_at FROM {table} WHERE run_id IS NOT NULL AND {condition}"
        for table, column, condition in _RUN_ACTIVITY
        if table_exists(conn, table)
    ]
    return " UNION ALL ".join(parts) or None


def latest_run_id(conn: duckdb.DuckDBPyConnection) -> str | None:
    """The run that wrote to the warehouse last (extract, quality, identity or a report)."""
    activity = _activity_sql(conn)
    if activity is None:
        return None
    row = conn.execute(f"SELECT arg_max(run_id, seen_at) FROM ({activity})").fetchone()
    return row[0] if row else None


def run_started_at(conn: duckdb.DuckDBPyConnection, run_id: str) -> dt.datetime | None:
    """The earliest time the warehouse saw ``run_id`` (its first extract, check or resolution)."""
    activity = _activity_sql(conn)
    if activity is None:
        return None
    return conn.execute(f"SELECT min(seen_at) FROM ({activity}) WHERE run_id = ?", [run_id]).fetchone()[0]


def run_scope(
    conn: duckdb.DuckDBPyConnection, run_id: str, reported_at: dt.datetime,
    started_at: dt.datetime | None, outcome: str,
) -> RunScope:
    """The scope of a report on ``run_id`` written at ``reported_at``.

    ``started_at`` comes from Dagster when the caller has it; otherwise the warehouse's first
    trace of the run stands in. A run reported before keeps its first report's time, so a
    rebuilt page covers the same period (actions logged since belong to the next run's report).
    """
    started = started_at or run_started_at(conn, run_id) or reported_at
    previous = None
    if table_exists(conn, RUN_REPORTS):
        first = conn.execute(f"SELECT reported_at FROM {RUN_REPORTS} WHERE run_id = ?", [run_id]).fetchone()
        reported_at = first[0] if first else reported_at
        previous = conn.execute(
            f"""SELECT run_id, reported_at FROM {RUN_REPORTS} WHERE run_id <> ? AND started_at < ?
            ORDER BY started_at DESC LIMIT 1""",
            [run_id, started],
        ).fetchone()
    return RunScope(
        run_id=run_id, started_at=started, reported_at=reported_at, outcome=outcome,
        previous_run_id=previous[0] if previous else None,
        previous_reported_at=previous[1] if previous else None,
    )


def later_runs_started(conn: duckdb.DuckDBPyConnection, scope: RunScope) -> list[dt.datetime]:
    """When the reported runs that started after this one started (a report rebuilt for an old run)."""
    if not table_exists(conn, RUN_REPORTS):
        return []
    rows = conn.execute(
        f"SELECT started_at FROM {RUN_REPORTS} WHERE run_id <> ? AND started_at > ?", [scope.run_id, scope.started_at]
    ).fetchall()
    return [row[0] for row in rows]


def record_report(conn: duckdb.DuckDBPyConnection, scope: RunScope, page: str) -> None:
    """Replace the run's row (its ``reported_at`` is the first report's: see ``run_scope``)."""
    ensure(conn, RUN_REPORTS)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"DELETE FROM {RUN_REPORTS} WHERE run_id = ?", [scope.run_id])
        conn.execute(
            f"INSERT INTO {RUN_REPORTS} VALUES (?, ?, ?, ?, ?)",
            [scope.run_id, scope.started_at, scope.reported_at, scope.outcome, page],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def reported_runs(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(run_id, started_at, reported_at, outcome, page), newest first, for the index page."""
    if not table_exists(conn, RUN_REPORTS):
        return []
    return conn.execute(
        f"SELECT run_id, started_at, reported_at, outcome, page FROM {RUN_REPORTS} ORDER BY started_at DESC"
    ).fetchall()
