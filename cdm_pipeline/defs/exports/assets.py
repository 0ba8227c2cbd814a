"""Exports layer, written after the marts each night: audience files for ad platforms, and the
analyst warehouse (the marts, pseudonymous, for analysts and BI tools)."""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.catalog import (
    ANALYST_MANIFEST,
    ANALYST_WAREHOUSE_KEY_PATH,
    AUDIENCE_FILES_KEY_PATH,
    CUSTOMER_360,
    MART_TABLES,
    RETENTION_PURGES,
    SEGMENTS,
    asset_key,
)
from cdm_pipeline.lib.exports.audiences import ExportError, write_nightly_exports
from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey, privacy_key
from cdm_pipeline.lib.privacy.analyst_export import AnalystExportError
from cdm_pipeline.lib.privacy.analyst_warehouse import build_analyst_warehouse
from cdm_pipeline.project import CHECK_DETAIL, WAREHOUSE_POOL, nightly_freshness_policy, project_config
from cdm_pipeline.resources import WarehouseResource

AUDIENCES_KEY = asset_key(*AUDIENCE_FILES_KEY_PATH)
ANALYST_WAREHOUSE_KEY = asset_key(*ANALYST_WAREHOUSE_KEY_PATH)
REFRESHED_CHECK = "refreshed"


def build_exports_asset(config: CdmConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=AUDIENCES_KEY,
        # After the retention purge: people it erased are in no file written tonight.
        deps=[SEGMENTS.asset_key, CUSTOMER_360.asset_key, RETENTION_PURGES.asset_key],
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


def build_analyst_warehouse_asset(config: CdmConfig) -> dg.AssetsDefinition:
    target = config.security.analyst_warehouse

    @dg.asset(
        key=ANALYST_WAREHOUSE_KEY,
        deps=[*(table.asset_key for table in MART_TABLES), RETENTION_PURGES.asset_key],
        group_name="exports",
        kinds={"duckdb"},
        owners=["team:data-governance"],
        pool=WAREHOUSE_POOL,
        freshness_policy=nightly_freshness_policy(config),
        check_specs=[
            dg.AssetCheckSpec(
                REFRESHED_CHECK, asset=ANALYST_WAREHOUSE_KEY,
                description="[warning] The analyst warehouse was rebuilt from tonight's marts (it"
                " needs CDM_PRIVACY_KEY for its keyed ids).",
            )
        ],
        description="One DuckDB file (security.analyst_warehouse) holding the six marts for analysts"
        " and BI tools: ids keyed-hashed, names, contact details and street addresses dropped, birth"
        f" year only (the rules of `cdm export analyst`), with {ANALYST_MANIFEST.full_name}.",
    )
    def analyst_warehouse(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        # A missing key skips the refresh rather than failing the night (see README, "Security"):
        # the analyst file cannot be built safely without it, but the personal pipeline (consent,
        # suppression, audiences) must not stop for it. The warning check is printed by `cdm run`.
        try:
            key = privacy_key()
        except MissingPrivacyKey as exc:
            detail = f"not refreshed: {exc}; the previous analyst warehouse (if any) is unchanged"
            context.log.warning(f"analyst warehouse {detail}")
            # Still a materialisation (saying it refreshed nothing): a step that ends without one
            # marks every UI backfill of the night COMPLETED_FAILED although every run succeeded.
            yield dg.MaterializeResult(metadata={"refreshed": False, CHECK_DETAIL: detail})
            yield dg.AssetCheckResult(
                check_name=REFRESHED_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
                metadata={CHECK_DETAIL: detail},
            )
            return
        with warehouse.get_connection() as conn:
            with fail_cleanly("analyst warehouse", (AnalystExportError,)):
                built = build_analyst_warehouse(conn, target, key)
        yield dg.MaterializeResult(metadata={
            "refreshed": True,
            "dagster/row_count": built.total_rows,
            **{f"{table}_rows": rows for table, rows in built.rows.items()},
            "as_of_date": built.as_of_date.isoformat(),
            "key_fingerprint": built.key_fingerprint,
            "path": dg.MetadataValue.path(str(built.path)),
        })
        yield dg.AssetCheckResult(
            check_name=REFRESHED_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN,
            metadata={CHECK_DETAIL: f"rebuilt from the marts as of {built.as_of_date}"},
        )

    return analyst_warehouse


@dg.definitions
def defs() -> dg.Definitions:
    config = project_config()
    assets = [build_exports_asset(config)]
    if config.security.analyst_warehouse is not None:
        assets.append(build_analyst_warehouse_asset(config))
    return dg.Definitions(assets=assets)
