"""The report pages people read: a governance report per run and the customer insights dashboard.

Both are static HTML under ``reports_dir`` built from aggregates the warehouse computes; charts are
PNG images inside the page, so a page is one file that opens with no network.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.reports.governance_report import GovernanceReport, write_governance_report

if TYPE_CHECKING:
    from cdm_pipeline.lib.reports.insights_report import InsightsDashboard


@dataclass(frozen=True)
class WrittenReports:
    governance: GovernanceReport
    insights: InsightsDashboard


def write_reports(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, run_id: str, *,
    started_at: dt.datetime | None = None, outcome: str = "succeeded",
) -> WrittenReports:
    """Write the run's governance report and the insights dashboard."""
    # Imported here: insights_report imports this package's modules, which would make a cycle.
    from cdm_pipeline.lib.reports.insights_report import write_insights_dashboard

    now = dt.datetime.now(dt.timezone.utc)
    governance = write_governance_report(conn, config, run_id, started_at=started_at, outcome=outcome, now=now)
    dashboard = write_insights_dashboard(conn, config, now=now)
    return WrittenReports(governance, dashboard)


__all__ = ["WrittenReports", "write_reports"]
