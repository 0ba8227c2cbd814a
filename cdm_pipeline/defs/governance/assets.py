"""Governance: privacy requests governance staff queue in ``privacy.requests_path``.

The asset runs in every ``cdm run`` (and alone as the ``privacy_requests`` job), after identity and
before the marts: each request not yet carried out is erased or exported
(``lib/privacy/requests.py``). After an erasure the
warehouse file is rewritten so the deleted rows' bytes are gone; the duckdb pool guarantees no
other step has the file open.

The retention asset runs after the marts: it purges what ``retention:`` in cdm.yaml no longer
keeps (``lib/privacy/retention.py``) and does nothing when that section is unset.
"""

import os
from pathlib import Path

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.catalog import (
    BACKUP_SNAPSHOT_KEY_PATH,
    GOVERNANCE_REPORT_KEY_PATH,
    INSIGHTS_KEY_PATH,
    MART_TABLES,
    PRIVACY_REQUESTS,
    RETENTION_PURGES,
    XREF,
    asset_key,
)
from cdm_pipeline.lib.marts.inputs import MartsInputError
from cdm_pipeline.lib.personal_data.keyed_hash import KEY_ENV_VAR, MissingPrivacyKey, privacy_key
from cdm_pipeline.lib.privacy.backups import BackupError, write_snapshot
from cdm_pipeline.lib.privacy.erasure import compact_if_pending
from cdm_pipeline.lib.privacy.requests import RequestFileError, process_requests
from cdm_pipeline.lib.privacy.retention import RetentionError, purge_expired_data
from cdm_pipeline.lib.warehouse import PIPELINE_LOCK_WAIT
from cdm_pipeline.project import WAREHOUSE_POOL, project_config
from cdm_pipeline.resources import WarehouseResource

PRIVACY_REQUESTS_JOB = "privacy_requests"


def build_privacy_requests_asset(config: CdmConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=PRIVACY_REQUESTS.asset_key,
        # A request names an e-mail, a phone or a customer id: identity says whose records those are.
        deps=[XREF.asset_key],
        group_name="governance",
        kinds={"duckdb"},
        owners=["team:data-governance"],
        pool=WAREHOUSE_POOL,
        description=PRIVACY_REQUESTS.grain,
    )
    def privacy_requests(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        outcomes = []
        if config.privacy.requests_path.exists():
            with warehouse.get_connection() as conn:
                with fail_cleanly("privacy requests", (RequestFileError, MissingPrivacyKey)):
                    outcomes = process_requests(conn, config, None, context.run.run_id)
        erased = sum(1 for o in outcomes if o.action == "erase" and o.status == "done")
        # Also finishes an erasure (from the CLI or an earlier run) that died before its rewrite.
        rewritten = compact_if_pending(
            Path(warehouse.database), warehouse.connection_config, warehouse.encryption(), PIPELINE_LOCK_WAIT
        )
        if rewritten:
            context.log.info("warehouse file rewritten: deleted rows' bytes are gone")
        return dg.MaterializeResult(
            metadata={
                "processed": len(outcomes),
                "erased": erased,
                "access_exports": sum(1 for o in outcomes if o.action == "access" and o.status == "done"),
                "not_found": sum(1 for o in outcomes if o.status == "not_found"),
                "invalid": sum(1 for o in outcomes if o.status == "invalid"),
                "rows_affected": sum(o.rows_affected for o in outcomes),
                "warehouse_rewritten": rewritten,
            }
        )

    return privacy_requests


def build_retention_asset(config: CdmConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=RETENTION_PURGES.asset_key,
        # After the marts: inactivity is read from the night's journeys and consent from customer_360.
        deps=[table.asset_key for table in MART_TABLES],
        group_name="governance",
        kinds={"duckdb"},
        owners=["team:data-governance"],
        pool=WAREHOUSE_POOL,
        description=RETENTION_PURGES.grain,
    )
    def retention_purge(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        if not config.retention.enabled:
            return dg.MaterializeResult(metadata={"retention_configured": False})
        with warehouse.get_connection() as conn:
            with fail_cleanly("retention", (RetentionError, MartsInputError)):
                purge = purge_expired_data(conn, config, context.run.run_id)
        # The deleted rows' bytes leave the file (the purge recorded that a rewrite is owed).
        rewritten = compact_if_pending(
            Path(warehouse.database), warehouse.connection_config, warehouse.encryption(), PIPELINE_LOCK_WAIT
        )
        return dg.MaterializeResult(
            metadata={
                "retention_configured": True,
                "purge_id": purge.purge_id,
                "as_of_date": purge.as_of.isoformat(),
                "rows_deleted": purge.total_rows,
                **{f"{k.kind}_rows_deleted": k.total_rows for k in purge.kinds},
                **{f"{k.kind}_cutoff": k.cutoff.isoformat() for k in purge.kinds},
                **({"customers_erased": k.customers_erased} if (k := purge.kind("inactive_customers")) else {}),
                "warehouse_rewritten": rewritten,
            }
        )

    return retention_purge


def build_nightly_backup_asset(config: CdmConfig) -> dg.AssetsDefinition:
    @dg.asset(
        key=asset_key(*BACKUP_SNAPSHOT_KEY_PATH),
        # Last: the reports run only when every earlier step succeeded, so a failed night is never
        # the snapshot that pushes a good one out of backups.keep.
        deps=[asset_key(*GOVERNANCE_REPORT_KEY_PATH), asset_key(*INSIGHTS_KEY_PATH)],
        group_name="governance",
        kinds={"duckdb"},
        owners=["team:data-governance"],
        pool=WAREHOUSE_POOL,
        description="One snapshot folder per successful night under backups.dir (cdm backup), the"
        " oldest beyond backups.keep pruned.",
    )
    def backup_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        with warehouse.get_connection() as conn:
            with fail_cleanly("backup", (BackupError, OSError, MissingPrivacyKey)):
                key = privacy_key() if os.environ.get(KEY_ENV_VAR) else None
                snapshot = write_snapshot(
                    conn, config, Path(context.instance.root_directory), privacy_key=key,
                    encryption=warehouse.encryption(),
                )
        return dg.MaterializeResult(metadata={
            "snapshot": dg.MetadataValue.path(str(snapshot.path)), "bytes": snapshot.size, "files": snapshot.files,
        })

    return backup_snapshot


@dg.definitions
def defs() -> dg.Definitions:
    config = project_config()
    return dg.Definitions(
        assets=[
            build_privacy_requests_asset(config), build_retention_asset(config),
            *([build_nightly_backup_asset(config)] if config.backups.nightly else []),
        ],
        jobs=[
            dg.define_asset_job(
                PRIVACY_REQUESTS_JOB,
                selection=dg.AssetSelection.assets(PRIVACY_REQUESTS.asset_key),
                description="Carry out the privacy requests queued in privacy.requests_path.",
            )
        ],
    )
