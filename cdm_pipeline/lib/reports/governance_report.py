"""The governance report of one run: ``<reports>/runs/<date>/index.html``, a copy at
``runs/latest/index.html`` and the list of every report at ``runs/index.html``.

``<date>`` is the day the run started in the config's time zone; a second run on the same day
replaces that day's page (``runs/index.html`` lists both runs, the page holds the later one).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.privacy.backups import list_snapshots
from cdm_pipeline.lib.privacy.retention import retention_purges_between
from cdm_pipeline.lib.reports import charts
from cdm_pipeline.lib.reports.page import navigation, relative_href, render, write_page
from cdm_pipeline.lib.reports.run_figures import (
    identity_figures,
    landing_figures,
    privacy_figures,
    quality_figures,
)
from cdm_pipeline.lib.reports.runs import (
    RunScope,
    later_runs_started,
    record_report,
    reported_runs,
    run_scope,
)

# The identity figures of resolution_runs the page tabulates, in order.
IDENTITY_ROWS = (
    ("records", "records resolved"), ("contact_records", "contact records"),
    ("web_identities", "web identities"), ("deterministic_edges", "deterministic links"),
    ("comparisons", "pairs compared by the model"), ("match_edges", "model links above the threshold"),
    ("clusters", "clusters"), ("customers", "customers"), ("largest_cluster", "largest cluster (records)"),
    ("new_ids", "new customer ids"), ("merged_ids", "customer ids merged"), ("split_ids", "customer ids split"),
    ("retired_ids", "customer ids retired"), ("oversize_clusters", "oversize clusters"),
    ("overrides_applied", "overrides applied"), ("blocklisted_values", "identifiers ignored (blocklist)"),
    ("over_cap_values", "identifiers ignored (shared too widely)"),
)


@dataclass(frozen=True)
class GovernanceReport:
    """Where the report went and its headline figures (for Dagster metadata and the CLI).

    ``page`` is the day's page when this run is the newest of its day, else the run's own page.
    """

    page: Path
    run_page: Path
    latest: Path
    index: Path
    run_date: dt.date
    landed: int
    rejected: int
    quarantined: int
    expectations_failed: int


def runs_folder(config: CdmConfig) -> Path:
    return config.reports_dir / "runs"


def write_governance_report(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, run_id: str, *,
    outcome: str, started_at: dt.datetime | None = None, now: dt.datetime | None = None,
) -> GovernanceReport:
    """Write the run's page, its ``latest`` copy and the index; record the report in the warehouse."""
    now = now or dt.datetime.now(dt.timezone.utc)
    scope = run_scope(conn, run_id, now, started_at, outcome)
    zone = zoneinfo.ZoneInfo(config.timezone)
    run_date = scope.started_at.astimezone(zone).date()
    folder = runs_folder(config)
    # Every run keeps its own page; the day's index.html and latest/ show the newest run.
    run_page = folder / run_date.isoformat() / f"run-{run_id[:8]}.html"
    later = later_runs_started(conn, scope)
    newest_of_day = not any(t.astimezone(zone).date() == run_date for t in later)

    landing = landing_figures(conn, config, run_id)
    quality = quality_figures(conn, run_id)
    identity = identity_figures(conn, run_id)
    privacy = privacy_figures(conn, scope)
    retention = retention_purges_between(conn, scope.previous_reported_at, scope.reported_at)
    totals = {
        "landed": sum(s.landed for s in landing),
        "rejected": sum(s.rejected for s in landing),
        "quarantined": sum(s.quarantined for s in landing),
    }
    failed = sum(t.failed_critical + t.failed_warning for t in quality)
    html = render(
        "governance.html.j2",
        title=f"Run report {run_date.isoformat()}",
        subtitle=f"What the nightly run did to the data: loads, quality, identity and privacy ({config.timezone}).",
        links=navigation(config.reports_dir, run_page.parent),
        scope=scope, timezone=config.timezone,
        started=scope.started_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        previous_reported=(
            scope.previous_reported_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if scope.previous_reported_at else ""
        ),
        landing=landing, totals=totals, landing_chart=_landing_chart(landing) if landing else None,
        quality=quality, quality_failed=failed,
        quality_critical=sum(t.failed_critical for t in quality),
        data_docs_href=relative_href(run_page.parent, config.reports_dir / "data_docs" / "index.html"),
        identity=identity, identity_rows=IDENTITY_ROWS,
        cluster_chart=_cluster_chart(identity) if identity else None,
        privacy=privacy,
        backups=list_snapshots(config.backups.dir), backups_keep=config.backups.keep,
        retention=retention, retention_configured=config.retention.enabled,
        generated_at=now.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
        warehouse_name=config.warehouse.name,
    )
    write_page(run_page, html)
    # The copies sit at the same depth as the run's page, so its relative links hold in them.
    day_page = write_page(run_page.with_name("index.html"), html) if newest_of_day else run_page
    latest = folder / "latest" / "index.html"
    if not later:
        write_page(latest, html)
    record_report(conn, scope, run_page.relative_to(folder).as_posix())
    index = write_runs_index(conn, config, now)
    return GovernanceReport(day_page, run_page, latest, index, run_date, totals["landed"], totals["rejected"],
                            totals["quarantined"], failed)


def write_runs_index(conn: duckdb.DuckDBPyConnection, config: CdmConfig, now: dt.datetime) -> Path:
    """``runs/index.html``: every run that got a report, newest first, linked to its own page."""
    folder = runs_folder(config)
    zone = zoneinfo.ZoneInfo(config.timezone)
    rows = []
    for run_id, started_at, reported_at, outcome, page in reported_runs(conn):
        rows.append({
            "run_id": run_id, "day": started_at.astimezone(zone).date().isoformat(), "outcome": outcome,
            "started": started_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            "reported": reported_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            "href": page,
        })
    html = render(
        "runs_index.html.j2",
        title="Run reports",
        subtitle=f"Every run with a governance report, newest first ({config.timezone}).",
        links=navigation(config.reports_dir, folder), runs=rows,
        generated_at=now.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"), warehouse_name=config.warehouse.name,
    )
    return write_page(folder / "index.html", html)


def _landing_chart(landing) -> charts.Chart:
    # Staged rows would dwarf the rest: the chart shows what was held back, the table the whole.
    return charts.grouped_bar_chart(
        "rows_held_back", "Rows of this run held back per source: rejected, quarantined and suppressed",
        [s.source for s in landing],
        {
            "rejected (unreadable)": [s.rejected for s in landing],
            "quarantined (critical rule)": [s.quarantined for s in landing],
            "suppressed (erased people)": [s.suppressed for s in landing],
        },
        value_label="rows", stacked=True, horizontal=True,
    )


def _cluster_chart(identity) -> charts.Chart:
    return charts.bar_chart(
        "cluster_sizes", "Customers by the number of source records resolved into them",
        [label for label, _, _ in identity.cluster_sizes], [n for _, n, _ in identity.cluster_sizes],
        value_label="customers",
    )


__all__ = ["GovernanceReport", "RunScope", "write_governance_report", "write_runs_index"]
