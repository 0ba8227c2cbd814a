"""Marts layer: customer 360, segments, journeys and attribution, rebuilt after identity each night.

One step builds all six tables in one transaction (``lib/marts/build.py``) so they always
describe the same night; each table is its own asset, with the lineage between them declared,
so the UI shows which table feeds which.
"""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.check_results import asset_check_result
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.catalog import (
    CUSTOMER_360,
    GOLDEN,
    JOURNEY_EVENTS,
    JOURNEYS,
    MART_TABLES,
    MEMBERSHIP_HISTORY,
    ORDER_ATTRIBUTION,
    PRIVACY_REQUESTS,
    SEGMENTS,
    XREF,
    Table,
    staging_table,
)
from cdm_pipeline.lib.marts.build import MartsSummary, build_marts
from cdm_pipeline.lib.marts.checks import ONE_ROW_CHECK, WEIGHTS_CHECK, check_marts
from cdm_pipeline.lib.marts.inputs import MartsInputError
from cdm_pipeline.project import WAREHOUSE_POOL, nightly_freshness_policy, project_config
from cdm_pipeline.resources import WarehouseResource

# Queued erasures are carried out before the marts are built, so no table or audience file of
# the night ever holds a person erased that night.
_DEPS = {
    JOURNEY_EVENTS: [
        XREF.asset_key, PRIVACY_REQUESTS.asset_key,
        *(staging_table(kind).asset_key for kind in ("orders", "email_events", "web_events")),
    ],
    JOURNEYS: [JOURNEY_EVENTS.asset_key],
    ORDER_ATTRIBUTION: [JOURNEY_EVENTS.asset_key],
    CUSTOMER_360: [
        GOLDEN.asset_key, XREF.asset_key, PRIVACY_REQUESTS.asset_key, JOURNEY_EVENTS.asset_key,
        staging_table("contacts").asset_key,
    ],
    SEGMENTS: [CUSTOMER_360.asset_key, JOURNEY_EVENTS.asset_key],
    MEMBERSHIP_HISTORY: [SEGMENTS.asset_key],
}
# Which asset each check is on.
_CHECKED = {ONE_ROW_CHECK: CUSTOMER_360, WEIGHTS_CHECK: ORDER_ATTRIBUTION}


def build_marts_asset(config: CdmConfig) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            table.asset_key, deps=_DEPS[table], description=table.grain, group_name="marts",
            kinds={"duckdb"}, owners=["team:marketing-analytics"],
            freshness_policy=nightly_freshness_policy(config),
        )
        for table in MART_TABLES
    ]

    @dg.multi_asset(
        name="build_marts",
        specs=specs,
        check_specs=[
            dg.AssetCheckSpec(
                ONE_ROW_CHECK, asset=CUSTOMER_360.asset_key, blocking=True,
                description="[critical] customer_360 and customer_segments hold exactly one row per"
                " golden customer.",
            ),
            dg.AssetCheckSpec(
                WEIGHTS_CHECK, asset=ORDER_ATTRIBUTION.asset_key,
                description="[critical] Attribution weights sum to 1 for every order and model.",
            ),
        ],
        pool=WAREHOUSE_POOL,
    )
    def build(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        with warehouse.get_connection() as conn:
            with fail_cleanly("marts", (MartsInputError,)):
                summary = build_marts(conn, config)
            checks = check_marts(conn)
        for table, metadata in _metadata(summary).items():
            yield dg.MaterializeResult(asset_key=table.asset_key, metadata=metadata)
        for check in checks:
            yield asset_check_result(context, _CHECKED[check.name].asset_key, check, dg.AssetCheckSeverity.ERROR)

    return build


def _metadata(s: MartsSummary) -> dict[Table, dict]:
    e = s.events
    as_of = {"as_of_date": s.as_of.isoformat()}
    return {
        JOURNEY_EVENTS: {
            "dagster/row_count": e.events, **as_of,
            **{f"{kind}_events": n for kind, n in e.by_kind.items()},
            "touches": e.touches, "web_sessions": e.sessions,
            "unattributed_orders": e.unattributed_orders,
            "unattributed_email_events": e.unattributed_email_events,
            "anonymous_web_events": e.unattributed_web_events,
            "orders_without_exchange_rate": e.orders_without_rate,
            **{f"seconds_{phase}": round(v, 2) for phase, v in s.seconds.items()},
        },
        JOURNEYS: {"dagster/row_count": s.journeys, **as_of},
        ORDER_ATTRIBUTION: {"attributed_orders": s.attributed_orders, **as_of},
        CUSTOMER_360: {"dagster/row_count": s.customers, **as_of},
        SEGMENTS: {"dagster/row_count": s.segments, **as_of},
        MEMBERSHIP_HISTORY: {
            "entered": s.memberships.entered, "exited": s.memberships.exited,
            "open_stays": s.memberships.open_stays, **as_of,
        },
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_marts_asset(project_config())])
