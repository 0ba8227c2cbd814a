"""Exports layer: audience files for ad platforms, written after the marts each night."""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.catalog import AUDIENCE_FILES_KEY_PATH, CUSTOMER_360, SEGMENTS, asset_key
from cdm_pipeline.lib.exports.audiences import ExportError, write_nightly_exports
from cdm_pipeline.project import WAREHOUSE_POOL, nightly_freshness_policy, project_config
from cdm_pipeline.resources import WarehouseResource

AUDIENCES_KEY = asset_key(*AUDIENCE_FILES_KEY_PATH)


def build_exports_asset(config: CdmConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=AUDIENCES_KEY,
        deps=[SEGMENTS.asset_key, CUSTOMER_360.asset_key],
        group_name="exports",
        kinds={"duckdb", "csv"},
        owners=["team:marketing-analytics"],
        pool=WAREHOUSE_POOL,
        freshness_policy=nightly_freshness_policy(config),
        description="One CSV per segment in exports.segments and as-of date"
        " (data/exports/<segment>/<date>.csv): SHA-256 of e-mail and E.164 phone of the"
        " customers whose consent allows it.",
    )
    def audience_files(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        if not config.exports.segments:
            context.log.info("no segments in exports.segments: nothing to write")
            return dg.MaterializeResult(metadata={"segments_exported": 0})
        with warehouse.get_connection() as conn:
            with fail_cleanly("exports", (ExportError,)):
                exports = write_nightly_exports(conn, config)
        metadata: dict = {"segments_exported": len(exports), "dagster/row_count": sum(e.exported for e in exports)}
        for e in exports:
            folder = e.segment.folder
            metadata[f"{folder}_exported"] = e.exported
            metadata[f"{folder}_members"] = e.members
            metadata[f"{folder}_excluded_for_consent"] = e.excluded_no_consent
            metadata[f"{folder}_without_email_or_phone"] = e.excluded_no_identifier
        if exports:
            metadata["as_of_date"] = exports[0].as_of_date.isoformat()
            metadata["folder"] = dg.MetadataValue.path(str(config.exports.dir))
        return dg.MaterializeResult(metadata=metadata)

    return audience_files


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_exports_asset(project_config())])
