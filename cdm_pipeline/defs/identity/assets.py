"""Identity layer: stable golden customers from every staged contact-like record.

One step resolves the whole population (it is not partitioned: a person's records span every
day), after staging in the same run; blocking staging checks that fail stop it. Its checks run
on the tables it has just written.
"""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.defs.staging.assets import staging_key
from cdm_pipeline.defs.step_failures import fail_cleanly
from cdm_pipeline.lib.identity.clusters import OverrideFileError
from cdm_pipeline.lib.identity.matching import TooManyComparisons
from cdm_pipeline.lib.identity.model import ModelError
from cdm_pipeline.lib.identity.resolve import IdentitySummary, resolve_identities
from cdm_pipeline.project import WAREHOUSE_POOL, project_config
from cdm_pipeline.resources import WarehouseResource

XREF_KEY = dg.AssetKey(["identity", "customer_xref"])
GOLDEN_KEY = dg.AssetKey(["identity", "golden_customers"])
CHANGES_KEY = dg.AssetKey(["identity", "customer_id_changes"])

ONE_CUSTOMER_CHECK = "every_record_has_one_customer"
SIZE_CHECK = "clusters_within_size_cap"
OVERRIDES_CHECK = "overrides_applied"


def build_identity_asset(config: CdmConfig) -> dg.AssetsDefinition:
    deps = [staging_key("contacts"), staging_key("web_events")]
    common = {"deps": deps, "group_name": "identity", "kinds": {"duckdb", "splink"}, "owners": ["team:data-governance"]}

    @dg.multi_asset(
        name="resolve_identities",
        specs=[
            dg.AssetSpec(
                XREF_KEY, **common,
                description="One row per contact-like source record (contacts, web clients and"
                " logins) with its stable customer_id, the rule and match probability that joined it.",
            ),
            dg.AssetSpec(
                GOLDEN_KEY, **common,
                description="One row per customer: surviving name, email, phone, birth date,"
                " address and consent, with provenance in identity.golden_customer_provenance.",
            ),
            dg.AssetSpec(
                CHANGES_KEY, **common,
                description="One row per customer id issued, merged, split or retired by a run.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                ONE_CUSTOMER_CHECK, asset=XREF_KEY, blocking=True,
                description="[critical] Every record of the identity graph maps to exactly one"
                " active customer, and every customer has a golden record.",
            ),
            dg.AssetCheckSpec(
                SIZE_CHECK, asset=XREF_KEY,
                description="[warning] No customer has more records than identity.max_cluster_size"
                " after re-clustering on stronger evidence (see identity.oversize_clusters).",
            ),
            dg.AssetCheckSpec(
                OVERRIDES_CHECK, asset=XREF_KEY,
                description="[warning] Every governance override names known records and took"
                " effect (see identity.overrides_applied).",
            ),
        ],
        pool=WAREHOUSE_POOL,
    )
    def resolve(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        with warehouse.get_connection() as conn:
            with fail_cleanly("identity resolution", (TooManyComparisons, ModelError, OverrideFileError)):
                summary = resolve_identities(conn, config, context.run.run_id)
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
            checks = list(_check_results(conn, summary))
        yield dg.MaterializeResult(asset_key=XREF_KEY, metadata={**_xref_metadata(summary), **scores})
        yield dg.MaterializeResult(
            asset_key=GOLDEN_KEY, metadata={"dagster/row_count": summary.golden_customers}
        )
        yield dg.MaterializeResult(
            asset_key=CHANGES_KEY,
            metadata={
                "new_ids": summary.ids.new,
                "merged_ids": summary.ids.merged,
                "split_ids": summary.ids.split,
                "retired_ids": summary.ids.retired,
                "unchanged_ids": summary.ids.unchanged,
            },
        )
        yield from checks

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
        "model_version": s.model_version,
        "model_trained_this_run": s.model_trained,
        "model_columns": ", ".join(s.model_columns),
        "columns_not_in_model": ", ".join(s.columns_not_in_model) or "none",
        **{f"seconds_{phase}": round(v, 2) for phase, v in s.seconds.items()},
    }


def _check_results(conn, summary: IdentitySummary):
    unmapped, multiple, inactive, no_golden = conn.execute(
        """SELECT
            (SELECT count(*) FROM identity_work.records r ANTI JOIN identity.customer_xref x
                USING (source_name, source_record_id)),
            (SELECT count(*) FROM (SELECT source_name, source_record_id FROM identity.customer_xref
                GROUP BY ALL HAVING count(*) > 1)),
            (SELECT count(*) FROM identity.customer_xref x JOIN identity.customer_id_registry g
                USING (customer_id) WHERE g.status <> 'active'),
            (SELECT count(DISTINCT customer_id) FROM identity.customer_xref x
                ANTI JOIN identity.golden_customers USING (customer_id))"""
    ).fetchall()[0]
    yield dg.AssetCheckResult(
        asset_key=XREF_KEY, check_name=ONE_CUSTOMER_CHECK,
        passed=unmapped == multiple == inactive == no_golden == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "unmapped_records": unmapped, "records_with_several_customers": multiple,
            "records_on_inactive_ids": inactive, "customers_without_golden_record": no_golden,
        },
    )
    remaining = summary.clusters.oversize_found and conn.execute(
        "SELECT count(*) FROM identity.oversize_clusters WHERE run_id = ? AND resolved_by = 'unresolved'",
        [summary.run_id],
    ).fetchall()[0][0]
    yield dg.AssetCheckResult(
        asset_key=XREF_KEY, check_name=SIZE_CHECK, passed=not remaining,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "oversize_clusters_found": summary.clusters.oversize_found,
            "oversize_clusters_remaining": int(remaining or 0),
            "largest_cluster": summary.clusters.largest,
        },
    )
    outcomes = summary.clusters.overrides
    failed = sum(n for outcome, n in outcomes.items() if outcome not in ("linked", "separated"))
    yield dg.AssetCheckResult(
        asset_key=XREF_KEY, check_name=OVERRIDES_CHECK, passed=failed == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"overrides": sum(outcomes.values()), **{f"outcome_{k}": v for k, v in outcomes.items()}},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_identity_asset(project_config())])
