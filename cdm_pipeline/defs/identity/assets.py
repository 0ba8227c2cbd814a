"""Identity layer: stable golden customers from every staged contact-like record.

One step resolves the whole population (it is not partitioned: a person's records span every
day), after staging in the same run; blocking staging checks that fail stop it. Its checks run
on the tables it has just written.
"""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.check_results import asset_check_result
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.catalog import GOLDEN, ID_CHANGES, OVERRIDES_APPLIED, OVERSIZE_CLUSTERS, XREF, staging_table
from cdm_pipeline.lib.identity.checks import (
    ONE_CUSTOMER_CHECK,
    OVERRIDES_CHECK,
    SIZE_CHECK,
    check_identity,
)
from cdm_pipeline.lib.identity.clusters import OverrideFileError
from cdm_pipeline.lib.identity.engine import EngineUnavailable
from cdm_pipeline.lib.identity.matching import TooManyComparisons
from cdm_pipeline.lib.identity.model import ModelError
from cdm_pipeline.lib.identity.resolve import IdentitySummary, resolve_identities
from cdm_pipeline.project import WAREHOUSE_POOL, project_config
from cdm_pipeline.resources import LinkageEngineResource, WarehouseResource

# Only the first check stops the steps downstream; the other two warn.
_SEVERITY = {
    ONE_CUSTOMER_CHECK: dg.AssetCheckSeverity.ERROR,
    SIZE_CHECK: dg.AssetCheckSeverity.WARN,
    OVERRIDES_CHECK: dg.AssetCheckSeverity.WARN,
}


def build_identity_asset(config: CdmConfig) -> dg.AssetsDefinition:
    deps = [staging_table("contacts").asset_key, staging_table("web_events").asset_key]
    kinds = {"duckdb", "splink"} | ({"spark"} if config.engine.name == "spark" else set())
    common = {"deps": deps, "group_name": "identity", "kinds": kinds, "owners": ["team:data-governance"]}

    @dg.multi_asset(
        name="resolve_identities",
        specs=[
            dg.AssetSpec(table.asset_key, **common, description=table.grain)
            for table in (XREF, GOLDEN, ID_CHANGES)
        ],
        check_specs=[
            dg.AssetCheckSpec(
                ONE_CUSTOMER_CHECK, asset=XREF.asset_key, blocking=True,
                description="[critical] Every record of the identity graph maps to exactly one"
                " active customer, and every customer has a golden record.",
            ),
            dg.AssetCheckSpec(
                SIZE_CHECK, asset=XREF.asset_key,
                description="[warning] No customer has more records than identity.max_cluster_size"
                f" after re-clustering on stronger evidence (see {OVERSIZE_CLUSTERS.full_name}).",
            ),
            dg.AssetCheckSpec(
                OVERRIDES_CHECK, asset=XREF.asset_key,
                description="[warning] Every governance override names known records and took"
                f" effect (see {OVERRIDES_APPLIED.full_name}).",
            ),
        ],
        pool=WAREHOUSE_POOL,
    )
    def resolve(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, linkage_engine: LinkageEngineResource
    ):
        with warehouse.get_connection() as conn:
            expected = (TooManyComparisons, ModelError, OverrideFileError, EngineUnavailable)
            with fail_cleanly("identity resolution", expected):
                summary = resolve_identities(
                    conn, config, context.run.run_id, spark_session=linkage_engine.spark_session()
                )
            scores = {}
            if summary.scores is not None:
                scores = {
                    "pairwise_precision": round(summary.scores.precision, 5),
                    "pairwise_recall": round(summary.scores.recall, 5),
                    "pairwise_f1": round(summary.scores.f1, 5),
                    "evaluated_records": summary.scores.records,
                }
            elif summary.truth_problem:
                context.log.warning(f"identity evaluation skipped: {summary.truth_problem}")
            # Level names and figures only: the signals carry no personal value.
            for warning in summary.signals.warnings if summary.signals else ():
                context.log.warning(f"identity signal: {warning}")
            checks = check_identity(conn, summary)
        yield dg.MaterializeResult(asset_key=XREF.asset_key, metadata={**_xref_metadata(summary), **scores})
        yield dg.MaterializeResult(
            asset_key=GOLDEN.asset_key, metadata={"dagster/row_count": summary.golden_customers}
        )
        yield dg.MaterializeResult(
            asset_key=ID_CHANGES.asset_key,
            metadata={
                "new_ids": summary.ids.new,
                "merged_ids": summary.ids.merged,
                "split_ids": summary.ids.split,
                "retired_ids": summary.ids.retired,
                "unchanged_ids": summary.ids.unchanged,
            },
        )
        for check in checks:
            yield asset_check_result(context, XREF.asset_key, check, _SEVERITY[check.name])

    return resolve


def _xref_metadata(s: IdentitySummary) -> dict:
    return {
        "dagster/row_count": s.records.total,
        "contact_records": s.records.contacts,
        "web_client_records": s.records.web_clients,
        "web_login_records": s.records.web_users,
        "deterministic_edges": s.deterministic.edges,
        **{f"deterministic_edges_{rule}": n for rule, n in s.deterministic.edges_by_rule.items()},
        "blocklisted_values": s.deterministic.blocklisted_values,
        "over_cap_values": s.deterministic.over_cap_values,
        "over_cap_records": s.deterministic.over_cap_records,
        "comparisons": s.matching.comparisons,
        **{f"comparisons_{rule.replace('+', '_')}": n for rule, n in s.matching.comparisons_by_rule.items()},
        "match_edges": s.matching.edges,
        "clusters": s.clusters.clusters,
        # Records that share their customer with at least one other record.
        "match_rate": round(1 - s.clusters.size_distribution.get("1", 0) / s.clusters.records, 5)
        if s.clusters.records else 0.0,
        "records_per_customer": round(s.clusters.records / s.clusters.clusters, 4) if s.clusters.clusters else 0.0,
        "largest_cluster": s.clusters.largest,
        **{f"clusters_of_size_{size}": n for size, n in s.clusters.size_distribution.items()},
        "oversize_clusters": s.clusters.oversize_found,
        "merges_on_cluster_evidence": s.clusters.merges_on_cluster_evidence,
        # The model's own view, without labels (README, "Signals without labels").
        **({
            "expected_precision": round(s.signals.expected_precision, 5),
            "expected_recall": round(s.signals.expected_recall, 5),
        } if s.signals and s.signals.expected_precision is not None else {}),
        **({"singleton_share": round(s.signals.singleton_share, 5),
            "untrained_levels": len(s.signals.untrained_levels),
            "signal_warnings": len(s.signals.warnings)} if s.signals else {}),
        "customers": s.ids.customers,
        "new_ids": s.ids.new,
        "merged_ids": s.ids.merged,
        "split_ids": s.ids.split,
        "retired_ids": s.ids.retired,
        # Which resolution ran and why (incremental.py); an incremental night's counts.
        **({"identity_mode": s.mode.name, "identity_mode_reason": s.mode.reason} if s.mode else {}),
        "identity_engine": s.engine,
        **({
            "changed_records": s.changes.changed,
            "rescored_records": s.changes.rescored,
            "removed_records": s.changes.removed,
            "reclustered_records": s.changes.scope,
        } if s.changes else {}),
        "model_version": s.model_version,
        "model_trained_this_run": s.model_trained,
        "model_columns": ", ".join(s.model_columns),
        "columns_not_in_model": ", ".join(s.columns_not_in_model) or "none",
        **{f"seconds_{phase}": round(v, 2) for phase, v in s.seconds.items()},
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_identity_asset(project_config())])
