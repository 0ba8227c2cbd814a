"""Marts layer: customer 360, segments, journeys and attribution, rebuilt after identity each night.

One step builds all six tables in one transaction (``lib/marts/build.py``) so they always
describe the same night; each table is its own asset, with the lineage between them declared,
so the UI shows which table feeds which.
"""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.governance.assets import PRIVACY_REQUESTS_KEY
from cdm_pipeline.defs.identity.assets import GOLDEN_KEY, XREF_KEY
from cdm_pipeline.defs.staging.assets import staging_key
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.marts.build import MartsSummary, build_marts
from cdm_pipeline.lib.marts.inputs import MartsInputError
from cdm_pipeline.project import WAREHOUSE_POOL, nightly_freshness_policy, project_config
from cdm_pipeline.resources import WarehouseResource


def marts_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["marts", table])


EVENTS_KEY = marts_key("customer_journey_events")
JOURNEYS_KEY = marts_key("customer_journeys")
ATTRIBUTION_KEY = marts_key("order_attribution")
C360_KEY = marts_key("customer_360")
SEGMENTS_KEY = marts_key("customer_segments")
HISTORY_KEY = marts_key("segment_membership_history")

WEIGHTS_CHECK = "weights_sum_to_one"
ONE_ROW_CHECK = "one_row_per_customer"

_DESCRIPTIONS = {
    EVENTS_KEY: "One row per order, e-mail event and web event of a known customer, in time order,"
    " with channel, web session (30 min inactivity) and touch sequence.",
    JOURNEYS_KEY: "One row per customer with activity: first and last touch, touches per channel,"
    " days from first touch to first purchase, furthest funnel stage.",
    ATTRIBUTION_KEY: "One row per counted order, attribution model (first_touch, last_touch, linear,"
    " position_based) and touch in the lookback window, with its weight.",
    C360_KEY: "One row per golden customer: attributes, orders and revenue, e-mail engagement,"
    " web activity, consent and the systems that know them.",
    SEGMENTS_KEY: "One row per customer: RFM scores and segment, lifecycle stage, engagement tier"
    " and the custom segments of cdm.yaml.",
    HISTORY_KEY: "One row per stay of a customer in a segment, with entered_on and exited_on.",
}
# Queued erasures are carried out before the marts are built, so no table or audience file of
# the night ever holds a person erased that night.
_DEPS = {
    EVENTS_KEY: [
        XREF_KEY, PRIVACY_REQUESTS_KEY,
        staging_key("orders"), staging_key("email_events"), staging_key("web_events"),
    ],
    JOURNEYS_KEY: [EVENTS_KEY],
    ATTRIBUTION_KEY: [EVENTS_KEY],
    C360_KEY: [GOLDEN_KEY, XREF_KEY, PRIVACY_REQUESTS_KEY, EVENTS_KEY, staging_key("contacts")],
    SEGMENTS_KEY: [C360_KEY, EVENTS_KEY],
    HISTORY_KEY: [SEGMENTS_KEY],
}


def build_marts_asset(config: CdmConfig) -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            key, deps=_DEPS[key], description=description, group_name="marts",
            kinds={"duckdb"}, owners=["team:marketing-analytics"],
            freshness_policy=nightly_freshness_policy(config),
        )
        for key, description in _DESCRIPTIONS.items()
    ]

    @dg.multi_asset(
        name="build_marts",
        specs=specs,
        check_specs=[
            dg.AssetCheckSpec(
                ONE_ROW_CHECK, asset=C360_KEY, blocking=True,
                description="[critical] customer_360 and customer_segments hold exactly one row per"
                " golden customer.",
            ),
            dg.AssetCheckSpec(
                WEIGHTS_CHECK, asset=ATTRIBUTION_KEY,
                description="[critical] Attribution weights sum to 1 for every order and model.",
            ),
        ],
        pool=WAREHOUSE_POOL,
    )
    def build(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        with warehouse.get_connection() as conn:
            with fail_cleanly("marts", (MartsInputError,)):
                summary = build_marts(conn, config)
            checks = list(_check_results(conn))
        for key, metadata in _metadata(summary).items():
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)
        yield from checks

    return build


def _metadata(s: MartsSummary) -> dict[dg.AssetKey, dict]:
    e = s.events
    as_of = {"as_of_date": s.as_of.isoformat()}
    return {
        EVENTS_KEY: {
            "dagster/row_count": e.events, **as_of,
            **{f"{kind}_events": n for kind, n in e.by_kind.items()},
            "touches": e.touches, "web_sessions": e.sessions,
            "unattributed_orders": e.unattributed_orders,
            "unattributed_email_events": e.unattributed_email_events,
            "anonymous_web_events": e.unattributed_web_events,
            "orders_without_exchange_rate": e.orders_without_rate,
            **{f"seconds_{phase}": round(v, 2) for phase, v in s.seconds.items()},
        },
        JOURNEYS_KEY: {"dagster/row_count": s.journeys, **as_of},
        ATTRIBUTION_KEY: {"attributed_orders": s.attributed_orders, **as_of},
        C360_KEY: {"dagster/row_count": s.customers, **as_of},
        SEGMENTS_KEY: {"dagster/row_count": s.segments, **as_of},
        HISTORY_KEY: {
            "entered": s.memberships.entered, "exited": s.memberships.exited,
            "open_stays": s.memberships.open_stays, **as_of,
        },
    }


def _check_results(conn):
    golden, c360, c360_distinct, segments, segments_distinct, bad_orders = conn.execute(
        """SELECT
            (SELECT count(*) FROM identity.golden_customers),
            (SELECT count(*) FROM marts.customer_360),
            (SELECT count(DISTINCT customer_id) FROM marts.customer_360),
            (SELECT count(*) FROM marts.customer_segments),
            (SELECT count(DISTINCT customer_id) FROM marts.customer_segments),
            (SELECT count(*) FROM (SELECT order_source, order_id, model FROM marts.order_attribution
                GROUP BY ALL HAVING abs(sum(weight) - 1) > 1e-9))"""
    ).fetchall()[0]
    yield dg.AssetCheckResult(
        asset_key=C360_KEY, check_name=ONE_ROW_CHECK,
        passed=golden == c360 == c360_distinct == segments == segments_distinct,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"golden_customers": golden, "customer_360_rows": c360, "customer_segments_rows": segments},
    )
    yield dg.AssetCheckResult(
        asset_key=ATTRIBUTION_KEY, check_name=WEIGHTS_CHECK, passed=bad_orders == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"order_models_not_summing_to_one": bad_orders},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_marts_asset(project_config())])
