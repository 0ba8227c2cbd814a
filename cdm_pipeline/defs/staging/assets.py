"""Staging layer: ``staging.<kind>`` and ``quarantine.<kind>`` per kind, with quality checks.

Every expectation of the kind's Great Expectations suite is a Dagster asset check on the staging
table (blocking when critical), plus a row-conservation check proving raw = staging + quarantine
per partition. Checks run in the same step as the build, on the same connection, so they see
exactly what was just written.
"""

import dagster as dg

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import quarantine_table, raw_table, staging_table
from cdm_pipeline.lib.quality.expectations import SUITES
from cdm_pipeline.lib.staging.build import StagingError, stage_partition
from cdm_pipeline.lib.staging.columns import KINDS
from cdm_pipeline.lib.staging.gate import CONSERVATION_CHECK, LOSS_CHECK, check_staging
from cdm_pipeline.project import CHECK_DETAIL, WAREHOUSE_POOL, daily_partitions, partition_dates, project_config
from cdm_pipeline.resources import WarehouseResource


def build_staging_asset(kind: str, config: CdmConfig) -> dg.AssetsDefinition:
    sources = config.sources_staged_as(kind)
    deps = [raw_table(s.name).asset_key for s in sources]
    suite = SUITES[kind]
    check_specs = [
        dg.AssetCheckSpec(
            spec.key,
            asset=staging_table(kind).asset_key,
            description=f"[{spec.severity}] {spec.description}",
            blocking=spec.severity == "critical",
        )
        for spec in suite
    ] + [
        dg.AssetCheckSpec(
            CONSERVATION_CHECK,
            asset=staging_table(kind).asset_key,
            description="[critical] Per partition, raw rows of every source of this kind ="
            " staging rows + quarantine rows: nothing is dropped silently.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            LOSS_CHECK,
            asset=staging_table(kind).asset_key,
            description="[critical] Per source and partition, the share of records quarantined and"
            " the share of each mapped date, amount or yes/no column that could not be parsed stay"
            " within loss_limits (cdm.yaml): a wrong format cannot empty a table while checks pass.",
            blocking=True,
        ),
    ]

    @dg.multi_asset(
        name=f"stage_{kind}",
        specs=[
            dg.AssetSpec(
                staging_table(kind).asset_key, deps=deps, description=staging_table(kind).grain, group_name="staging",
                kinds={"duckdb"}, owners=["team:data-engineering"],
            ),
            dg.AssetSpec(
                quarantine_table(kind).asset_key, deps=deps, group_name="quarantine", kinds={"duckdb"},
                owners=["team:data-governance"], description=quarantine_table(kind).grain,
            ),
        ],
        check_specs=check_specs,
        partitions_def=daily_partitions(config),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
    )
    def stage(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        dates = partition_dates(context.partition_keys)
        with warehouse.get_connection() as conn:
            try:
                staged = [stage_partition(conn, config, kind, day) for day in dates]
            except StagingError as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            gate = check_staging(conn, config, kind, dates, context.run.run_id, staged=staged)
        conservation = gate.conservation
        yield from _materializations(kind, staged)
        for spec, outcome in zip(suite, _in_suite_order(suite, gate.outcomes), strict=True):
            yield dg.AssetCheckResult(
                asset_key=staging_table(kind).asset_key,
                check_name=spec.key,
                passed=outcome.success,
                severity=dg.AssetCheckSeverity.ERROR if spec.severity == "critical" else dg.AssetCheckSeverity.WARN,
                metadata={
                    "severity": spec.severity,
                    "unexpected_count": outcome.unexpected_count or 0,
                    "element_count": outcome.element_count or 0,
                    "unexpected_percent": float(outcome.unexpected_percent or 0.0),
                    "observed_value": outcome.observed_value or "",
                    "partitions": f"{min(dates)}..{max(dates)}",
                    "failed_partitions": ", ".join(str(d) for d in gate.partitions_failed[spec.key]) or "none",
                },
            )
        for problem in gate.loss_problems:
            context.log.error(f"staging {kind}: {problem}")
        losses = [loss for part in staged for loss in part.losses]
        yield dg.AssetCheckResult(
            asset_key=staging_table(kind).asset_key,
            check_name=LOSS_CHECK,
            passed=not gate.loss_problems,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "limits_exceeded": "\n".join(gate.loss_problems) or "none",
                CHECK_DETAIL: "; ".join(gate.loss_problems) or "within loss_limits",
                "records": sum(loss.records for loss in losses),
                "quarantined": sum(loss.quarantined for loss in losses),
                **{
                    f"quarantined_share_{name}": float(
                        sum(x.quarantined for x in losses if x.source == name)
                        / max(1, sum(x.records for x in losses if x.source == name))
                    )
                    for name in sorted({loss.source for loss in losses})
                },
            },
        )
        broken = [(d, raw, s, q) for d, raw, s, q in conservation if raw != s + q]
        yield dg.AssetCheckResult(
            asset_key=staging_table(kind).asset_key,
            check_name=CONSERVATION_CHECK,
            passed=not broken,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "raw_rows": sum(c[1] for c in conservation),
                "staged_rows": sum(c[2] for c in conservation),
                "quarantined_rows": sum(c[3] for c in conservation),
                "partitions_checked": len(conservation),
                "partitions_out_of_balance": ", ".join(str(b[0]) for b in broken) or "none",
            },
        )

    return stage


def _in_suite_order(suite, outcomes):
    by_key = {o.key: o for o in outcomes}
    return [by_key[spec.key] for spec in suite]


def _materializations(kind: str, staged):
    reasons: dict[str, int] = {}
    flags: dict[str, int] = {}
    for part in staged:
        for k, v in part.quarantine_reasons.items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in part.flags.items():
            flags[k] = flags.get(k, 0) + v
    rows = sum(p.staged for p in staged)
    held = sum(p.quarantined for p in staged)
    yield dg.MaterializeResult(
        asset_key=staging_table(kind).asset_key,
        metadata={
            "dagster/row_count": rows,
            "raw_rows": sum(p.raw_rows for p in staged),
            "quarantined_rows": held,
            **{f"flag_{k}": v for k, v in sorted(flags.items())},
        },
    )
    yield dg.MaterializeResult(
        asset_key=quarantine_table(kind).asset_key,
        metadata={"dagster/row_count": held, **{f"reason_{k}": v for k, v in sorted(reasons.items())}},
    )


@dg.definitions
def defs() -> dg.Definitions:
    config = project_config()
    return dg.Definitions(assets=[build_staging_asset(kind, config) for kind in KINDS])
