"""Governance: privacy requests governance staff queue in ``privacy.requests_path``.

The asset runs in every ``cdm run`` (and alone as the ``privacy_requests`` job), after identity and
before the marts: each request not yet carried out is erased or exported
(``lib/privacy/requests.py``). After an erasure the
warehouse file is rewritten so the deleted rows' bytes are gone; the duckdb pool guarantees no
other step has the file open.
"""

from pathlib import Path

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.catalog import PRIVACY_REQUESTS, XREF
from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey
from cdm_pipeline.lib.privacy.erasure import compact_if_pending
from cdm_pipeline.lib.privacy.requests import RequestFileError, process_requests
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
        rewritten = compact_if_pending(Path(warehouse.database), warehouse.connection_config)
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


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[build_privacy_requests_asset(project_config())],
        jobs=[
            dg.define_asset_job(
                PRIVACY_REQUESTS_JOB,
                selection=dg.AssetSelection.assets(PRIVACY_REQUESTS.asset_key),
                description="Carry out the privacy requests queued in privacy.requests_path.",
            )
        ],
    )
