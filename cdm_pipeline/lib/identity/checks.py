"""Identity's checks, run on the tables a resolution has just published (same connection).

Plain results (pass or fail, the counts that decided it, one line saying why); the Dagster layer
(``defs/identity/assets.py``) reports them as asset checks. Counts only, never a record's values.
"""

from __future__ import annotations

import duckdb

from cdm_pipeline.lib.catalog import GOLDEN, ID_REGISTRY, OVERSIZE_CLUSTERS, XREF
from cdm_pipeline.lib.check_results import CheckResult
from cdm_pipeline.lib.identity.records import RECORDS
from cdm_pipeline.lib.identity.resolve import IdentitySummary

ONE_CUSTOMER_CHECK = "every_record_has_one_customer"
SIZE_CHECK = "clusters_within_size_cap"
OVERRIDES_CHECK = "overrides_applied"

# Override outcomes that mean the line took effect (clusters.py).
_OVERRIDE_TOOK_EFFECT = ("linked", "separated")


def check_identity(conn: duckdb.DuckDBPyConnection, summary: IdentitySummary) -> list[CheckResult]:
    """Every record of this run's graph has exactly one active customer with a golden record; no
    cluster is left over the size cap; every governance override took effect."""
    return [_one_customer(conn, summary), _size(conn, summary), _overrides(summary)]


def _one_customer(conn: duckdb.DuckDBPyConnection, summary: IdentitySummary) -> CheckResult:
    # The run's records are identity's work table, still attached to the connection.
    unmapped, multiple, inactive, no_golden = conn.execute(
        f"""SELECT
            (SELECT count(*) FROM {RECORDS} r ANTI JOIN {XREF} x USING (source_name, source_record_id)),
            (SELECT count(*) FROM (SELECT source_name, source_record_id FROM {XREF}
                GROUP BY ALL HAVING count(*) > 1)),
            (SELECT count(*) FROM {XREF} x JOIN {ID_REGISTRY} g USING (customer_id) WHERE g.status <> 'active'),
            (SELECT count(DISTINCT customer_id) FROM {XREF} x ANTI JOIN {GOLDEN} USING (customer_id))"""
    ).fetchall()[0]
    passed = unmapped == multiple == inactive == no_golden == 0
    return CheckResult(
        ONE_CUSTOMER_CHECK, passed,
        {
            "unmapped_records": unmapped, "records_with_several_customers": multiple,
            "records_on_inactive_ids": inactive, "customers_without_golden_record": no_golden,
        },
        f"{summary.records.total} records, each on one active customer with a golden record"
        if passed
        else f"{unmapped} records without a customer, {multiple} with several, {inactive} on inactive ids;"
        f" {no_golden} customers without a golden record",
    )


def _size(conn: duckdb.DuckDBPyConnection, summary: IdentitySummary) -> CheckResult:
    clusters = summary.clusters
    remaining = 0
    if clusters.oversize_found:
        (remaining,) = conn.execute(
            f"SELECT count(*) FROM {OVERSIZE_CLUSTERS} WHERE run_id = ? AND resolved_by = 'unresolved'",
            [summary.run_id],
        ).fetchall()[0]
    return CheckResult(
        SIZE_CHECK, not remaining,
        {
            "oversize_clusters_found": clusters.oversize_found,
            "oversize_clusters_remaining": int(remaining),
            "largest_cluster": clusters.largest,
        },
        f"{remaining} of {clusters.oversize_found} oversize clusters still over identity.max_cluster_size"
        f" (see {OVERSIZE_CLUSTERS.full_name})"
        if remaining
        else f"largest cluster {clusters.largest} records ({clusters.oversize_found} re-clustered)",
    )


def _overrides(summary: IdentitySummary) -> CheckResult:
    outcomes = summary.clusters.overrides
    total = sum(outcomes.values())
    not_applied = {outcome: n for outcome, n in sorted(outcomes.items()) if outcome not in _OVERRIDE_TOOK_EFFECT}
    failed = sum(not_applied.values())
    return CheckResult(
        OVERRIDES_CHECK, failed == 0,
        {"overrides": total, **{f"outcome_{k}": v for k, v in outcomes.items()}},
        f"{total} override lines took effect"
        if failed == 0
        else f"{failed} of {total} override lines did not take effect: "
        + ", ".join(f"{n} {outcome}" for outcome, n in not_applied.items()),
    )
