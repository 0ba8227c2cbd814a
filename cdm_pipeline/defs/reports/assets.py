"""Reports: the run's governance report and the customer insights dashboard, written last.

Both pages are static HTML under ``reports_dir`` (``lib/reports/``); the materialisation's
metadata carries their paths, so the UI's asset page says where to open them.
"""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.catalog import (
    AUDIENCE_FILES_KEY_PATH,
    CUSTOMER_360,
    GOLDEN,
    GOVERNANCE_REPORT_KEY_PATH,
    ID_CHANGES,
    INSIGHTS_KEY_PATH,
    JOURNEY_EVENTS,
    JOURNEYS,
    MEMBERSHIP_HISTORY,
    ORDER_ATTRIBUTION,
    PRIVACY_REQUESTS,
    RETENTION_PURGES,
    SEGMENTS,
    XREF,
    asset_key,
)
from cdm_pipeline.lib.reports import write_reports
from cdm_pipeline.lib.reports.runs import started_at_of
from cdm_pipeline.project import WAREHOUSE_POOL, project_config
from cdm_pipeline.resources import WarehouseResource

GOVERNANCE_REPORT_KEY = asset_key(*GOVERNANCE_REPORT_KEY_PATH)
INSIGHTS_KEY = asset_key(*INSIGHTS_KEY_PATH)


def build_reports_asset(config: CdmConfig) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            GOVERNANCE_REPORT_KEY,
            # After the exports: the audience files are the run's last privacy-relevant action.
            deps=[
                asset_key(*AUDIENCE_FILES_KEY_PATH),
                *(t.asset_key for t in (
                    PRIVACY_REQUESTS, RETENTION_PURGES, XREF, GOLDEN, ID_CHANGES, MEMBERSHIP_HISTORY,
                )),
            ],
            description="One HTML page per run day (reports/runs/<date>/index.html, copied to"
            " runs/latest/): rows landed, rejected and quarantined per source and why, quality"
            " results against the previous run, identity figures, privacy actions.",
            group_name="reports", kinds={"html"}, owners=["team:data-governance"],
        ),
        dg.AssetSpec(
            INSIGHTS_KEY,
            deps=[
                t.asset_key
                for t in (
                    CUSTOMER_360, SEGMENTS, MEMBERSHIP_HISTORY, JOURNEYS, JOURNEY_EVENTS, ORDER_ATTRIBUTION,
                    RETENTION_PURGES,
                )
            ],
            description="One HTML page (reports/insights/index.html): customers by source overlap,"
            " RFM grid, segment and lifecycle movement, journey funnel, revenue by channel under"
            " each attribution model, e-mail engagement over time.",
            group_name="reports", kinds={"html"}, owners=["team:marketing-analytics"],
        ),
    ]

    @dg.multi_asset(name="write_reports", specs=specs, pool=WAREHOUSE_POOL)
    def reports(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        record = context.instance.get_run_record_by_id(context.run.run_id)
        started_at = started_at_of(record.start_time) if record is not None else None
        with warehouse.get_connection() as conn:
            with fail_cleanly("reports"):
                # Every earlier step of the run succeeded, or this one would not run.
                written = write_reports(conn, config, context.run.run_id, started_at=started_at)
        g, i = written.governance, written.insights
        context.log.info(f"governance report: {g.page}; insights dashboard: {i.page}")
        yield dg.MaterializeResult(
            asset_key=GOVERNANCE_REPORT_KEY,
            metadata={
                "page": dg.MetadataValue.path(str(g.page)),
                "latest": dg.MetadataValue.path(str(g.latest)),
                "open": dg.MetadataValue.url(g.page.as_uri()),
                "run_date": g.run_date.isoformat(),
                "rows_landed": g.landed, "lines_rejected": g.rejected,
                "rows_quarantined": g.quarantined, "expectations_failed": g.expectations_failed,
            },
        )
        yield dg.MaterializeResult(
            asset_key=INSIGHTS_KEY,
            metadata={
                "page": dg.MetadataValue.path(str(i.page)),
                "open": dg.MetadataValue.url(i.page.as_uri()),
                "as_of_date": str(i.as_of_date), "customers": i.customers, "revenue": float(i.revenue or 0),
            },
        )

    return reports


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_reports_asset(project_config())])
