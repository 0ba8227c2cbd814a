"""``cdm report``: rebuild the report pages from the warehouse and print where they are.

Also what ``cdm run`` and ``cdm demo`` print about the pages: a run that failed before its
reports step gets its governance report here, so the failed night is documented too.
"""

from __future__ import annotations

import datetime as dt
import sys
import webbrowser
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_OK, EXIT_USAGE, CommandError
from cdm_pipeline.config import CdmConfig

_REFUSAL = "cdm report: error"


def report_command(config_path: Path | None, run_id: str | None, open_pages: bool) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.cli.warehouse_access import command_warehouse
    from cdm_pipeline.lib.reports import write_reports
    from cdm_pipeline.lib.reports.runs import latest_run_id, run_started_at

    config = resolve_config(config_path)
    with command_warehouse(config) as conn:
        run_id = run_id or latest_run_id(conn)
        if run_id is None:
            raise CommandError(
                "the warehouse has no run yet: run `cdm run` or `cdm demo` first", EXIT_USAGE, prefix=_REFUSAL
            )
        started_at, outcome = _run_from_storage(config, run_id)
        if started_at is None and run_started_at(conn, run_id) is None:
            # A mistyped id would otherwise get a page of empty sections and a place in the list.
            raise CommandError(
                f"no run {run_id!r} in the warehouse or the run storage", EXIT_USAGE, prefix=_REFUSAL
            )
        written = write_reports(conn, config, run_id, started_at=started_at, outcome=outcome)
    g, i = written.governance, written.insights
    print(f"governance report (run {run_id[:8]}, {outcome}): {g.page}")
    print(f"  latest run: {g.latest}")
    print(f"  all runs:   {g.index}")
    print(f"insights dashboard (as of {i.as_of_date or 'no marts yet'}): {i.page}")
    if open_pages:
        for page in (g.page, i.page):
            if not webbrowser.open(page.as_uri()):
                print(f"no web browser could be started here: open {page} yourself", file=sys.stderr)
    return EXIT_OK


def report_lines_after_run(config: CdmConfig, run_id: str, success: bool, failed_steps: list[str]) -> list[str]:
    """The pages of a finished run; writes its governance report when the run failed before it."""
    from cdm_pipeline.lib.catalog import RUN_REPORTS
    from cdm_pipeline.lib.reports.governance_report import runs_folder, write_governance_report
    from cdm_pipeline.lib.reports.insights_report import insights_page
    from cdm_pipeline.lib.reports.runs import failed_outcome
    from cdm_pipeline.lib.warehouse import open_config_warehouse, table_exists

    if not config.warehouse.exists():
        return []
    with open_config_warehouse(config) as conn:
        page = None
        if table_exists(conn, RUN_REPORTS):
            row = conn.execute(
                f"""SELECT page, started_at >= (SELECT max(started_at) FROM {RUN_REPORTS}) FROM {RUN_REPORTS}
                WHERE run_id = ?""", [run_id],
            ).fetchone()
            if row:
                # The newest run's page is also its day's index.html, the address people know.
                page = runs_folder(config) / row[0]
                page = page.with_name("index.html") if row[1] else page
        if page is None:
            started_at, _ = _run_from_storage(config, run_id)
            outcome = "succeeded" if success else failed_outcome(failed_steps)
            page = write_governance_report(conn, config, run_id, started_at=started_at, outcome=outcome).page
    lines = [f"  governance report: {page}"]
    insights = insights_page(config)
    if success and insights.exists():
        lines.append(f"  insights dashboard: {insights}")
    return lines


def _run_from_storage(config: CdmConfig, run_id: str) -> tuple[dt.datetime | None, str]:
    """When the run started and how it ended, from Dagster's run storage (if it holds the run)."""
    import dagster as dg

    from cdm_pipeline.lib.reports.runs import started_at_of
    from cdm_pipeline.runner import use_dagster_home

    use_dagster_home(config)
    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None, "outcome unknown: not in this run storage"
    started = started_at_of(record.start_time)
    status = record.dagster_run.status
    outcome = {
        dg.DagsterRunStatus.SUCCESS: "succeeded", dg.DagsterRunStatus.FAILURE: "failed",
        dg.DagsterRunStatus.CANCELED: "canceled",
    }.get(status, status.value.lower().replace("_", " "))
    return started, outcome
