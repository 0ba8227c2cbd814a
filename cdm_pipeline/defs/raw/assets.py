"""Raw layer: one daily-partitioned asset per configured source (``raw.<source>``), with its
rejected lines in ``quarantine.<source>_rejects``.

Two checks on each raw table say what the extract lost: a blocking one when more than the
source's ``loss_limits.rejected_share`` of a partition's records could not be read (nothing
downstream runs on it), and a warning when a dated source had no file for a partition.

A partition loaded before is never replaced by a smaller one unless the run allows it:
``cdm run --allow-shrink``, ``CDM_ALLOW_SHRINK=1`` in the environment, or the run tag
``cdm/allow_shrink: true`` on a run launched from the UI.
"""


import datetime as dt
import os
from collections.abc import Mapping

import dagster as dg

from cdm_pipeline.config import MIN_LOST, CdmConfig, SourceConfig
from cdm_pipeline.defs.step_failures import fail_if_disk_full
from cdm_pipeline.lib.catalog import asset_key, landing_key_path, raw_table, rejects_table
from cdm_pipeline.lib.extract import ExtractError, load_partition
from cdm_pipeline.lib.extract.loss import judge_rejected_shares, partitions_without_files, percent
from cdm_pipeline.project import CHECK_DETAIL, WAREHOUSE_POOL, daily_partitions, partition_dates, project_config
from cdm_pipeline.resources import WarehouseResource


def _landing_asset_key(source_name: str) -> dg.AssetKey:
    return asset_key(*landing_key_path(source_name))


ALLOW_SHRINK_ENV = "CDM_ALLOW_SHRINK"
ALLOW_SHRINK_TAG = "cdm/allow_shrink"
_YES = frozenset({"1", "true", "yes"})


def shrink_allowed(tags: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this run may replace a loaded partition with fewer rows or files."""
    return (
        tags.get(ALLOW_SHRINK_TAG, "").strip().lower() in _YES
        or environ.get(ALLOW_SHRINK_ENV, "").strip().lower() in _YES
    )


REJECTED_SHARE_CHECK = "rejected_share_within_limit"
FILES_LANDED_CHECK = "files_landed"


def raw_check_specs(source: SourceConfig, config: CdmConfig) -> list[dg.AssetCheckSpec]:
    limit = config.loss_limit(source, "rejected_share")
    specs = [
        dg.AssetCheckSpec(
            REJECTED_SHARE_CHECK,
            asset=raw_table(source.name).asset_key,
            description=f"[critical] Per partition, the lines the reader could not read are at most"
            f" {percent(limit)} of the records landed (loss_limits.rejected_share; above it fails"
            f" once {MIN_LOST} lines are lost, or every record is): the files are then probably"
            " broken or misread, and nothing downstream runs on them.",
            blocking=True,
        )
    ]
    if not source.is_snapshot:  # a snapshot without its file fails the load itself
        specs.append(
            dg.AssetCheckSpec(
                FILES_LANDED_CHECK,
                asset=raw_table(source.name).asset_key,
                description=f"[warning] Every partition has a file matching {source.path}: a night"
                " whose export did not arrive loads no rows, and says so here.",
            )
        )
    return specs


def build_landing_spec(source: SourceConfig, config: CdmConfig) -> dg.AssetSpec:
    """The source's files in the landing folder: an external asset, the start of the lineage.

    Its raw table and its rejects table both come from these files, which is what ties the
    quarantine of unreadable lines into the one lineage graph.
    """
    layout = "one full snapshot re-read every day" if source.is_snapshot else "one folder per daily partition"
    return dg.AssetSpec(
        _landing_asset_key(source.name),
        description=f"The {source.format} files {source.system} exports for {source.name}"
        f" ({source.kind}), {layout}: {source.path} under the landing folder.",
        group_name="landing",
        kinds={source.format},
        owners=["team:data-engineering"],
        tags={"cdm/source_system": source.system, "cdm/source_kind": source.kind},
        partitions_def=None if source.is_snapshot else daily_partitions(config),
    )


def build_raw_asset(source: SourceConfig, config: CdmConfig) -> dg.AssetsDefinition:
    """The extract step of one source: its raw table and its rejects table, one partition per day."""
    layout = "a full snapshot, re-read for every partition" if source.is_snapshot else "one folder per day"
    specs = [
        dg.AssetSpec(
            raw_table(source.name).asset_key,
            deps=[_landing_asset_key(source.name)],
            description=(
                f"One row per record landed by {source.name} ({source.system} {source.kind},"
                f" {source.format}) per daily partition; every column as text plus _source_file,"
                f" _source_row, _partition_date, _loaded_at. Files: {source.path} ({layout})."
            ),
            group_name="raw",
            kinds={"duckdb"},
            owners=["team:data-engineering"],
            tags={"cdm/source_system": source.system, "cdm/source_kind": source.kind},
        ),
        dg.AssetSpec(
            rejects_table(source.name).asset_key,
            deps=[_landing_asset_key(source.name)],
            description=(
                f"One row per line of {source.name} that could not be read (wrong column count,"
                " bad quoting, invalid UTF-8 or JSON), with file, line, error and the line as text."
            ),
            group_name="quarantine",
            kinds={"duckdb"},
            owners=["team:data-governance"],
        ),
    ]

    @dg.multi_asset(
        name=f"extract_{source.name}",
        specs=specs,
        check_specs=raw_check_specs(source, config),
        partitions_def=daily_partitions(config),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        retry_policy=extract_retry_policy(config),
    )
    def extract(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        loaded_at = dt.datetime.now(dt.timezone.utc)
        allow_shrink = shrink_allowed(context.run.tags)
        loads = []
        try:
            with warehouse.get_connection() as conn:
                for partition_date in partition_dates(context.partition_keys):
                    try:
                        loads.append(
                            load_partition(
                                conn, source, config.landing_dir, partition_date, loaded_at,
                                config=config, run_id=context.run.run_id, allow_shrink=allow_shrink,
                            )
                        )
                    except ExtractError as exc:
                        # The message names the file and column, never a value. An error in the
                        # files or the config would fail again: only file-system refusals retry.
                        raise dg.Failure(description=str(exc), allow_retries=exc.transient) from None
        except Exception as exc:
            # A full disk stays full: say which one, at once, instead of retrying for minutes. (Also
            # behind an ExtractError's Failure, or the failed ROLLBACK that followed the write.)
            fail_if_disk_full(exc, config.warehouse.parent)
            raise
        rows = sum(load.rows for load in loads)
        rejects = sum(load.rejects for load in loads)
        rejects_by_error: dict[str, int] = {}
        for load in loads:
            for error, count in load.rejects_by_error.items():
                rejects_by_error[error] = rejects_by_error.get(error, 0) + count
        missing = sorted({c for load in loads for c in load.missing_optional_columns})
        suppressed = sum(load.suppressed for load in loads)
        if suppressed:
            context.log.info(
                f"{source.name}: {suppressed} rows or lines of erased people not loaded (suppression list)"
            )
        if rejects:
            context.log.warning(
                f"{source.name}: {rejects} malformed lines moved to quarantine"
                f" ({', '.join(f'{k}: {v}' for k, v in rejects_by_error.items())})"
            )
        refused = [name for load in loads for name in load.refused_files]
        if refused:
            context.log.warning(
                f"{source.name}: {len(refused)} file(s) resolve outside the landing folder and were not read"
                f" ({', '.join(refused[:5])}{' ...' if len(refused) > 5 else ''}); see the rejects table"
            )
        shrunk = [load for load in loads if load.shrank_from]
        for load in shrunk:
            context.log.warning(
                f"{source.name}: partition {load.partition_date} shrank from {load.shrank_from[0]} rows in"
                f" {load.shrank_from[1]} files to {load.rows} rows (allowed by {ALLOW_SHRINK_TAG}/--allow-shrink)"
            )
        encoding_warnings = [warning for load in loads for warning in load.encoding_warnings]
        for warning in encoding_warnings:
            context.log.warning(warning)
        no_files = [] if source.is_snapshot else partitions_without_files(loads)
        if no_files:
            context.log.warning(
                f"{source.name}: no file matches {source.path} for {len(no_files)} partition(s)"
                f" ({_dates(no_files)}): 0 rows loaded there"
            )
        yield dg.MaterializeResult(
            asset_key=raw_table(source.name).asset_key,
            metadata={
                "dagster/row_count": rows,
                "rows_loaded": rows,
                "rejected_lines": rejects,
                "suppressed_rows": suppressed,
                "files_read": sum(load.files for load in loads),
                "files_refused": len(refused),
                "partitions_shrunk": ", ".join(str(load.partition_date) for load in shrunk) or "none",
                "partitions": len(loads),
                "empty_partitions": sum(1 for load in loads if load.rows == 0),
                "mapped_columns_absent": ", ".join(missing) or "none",
                "encoding_problems": "\n".join(encoding_warnings) or "none",
            },
        )
        yield dg.MaterializeResult(
            asset_key=rejects_table(source.name).asset_key,
            metadata={
                "dagster/row_count": rejects,
                "rejected_lines": rejects,
                **{f"rejected_{k.lower().replace(' ', '_')}": v for k, v in rejects_by_error.items()},
            },
        )
        yield from _check_results(context, source, config, loads, no_files)

    return extract


def _check_results(context, source: SourceConfig, config: CdmConfig, loads, no_files):
    verdict = judge_rejected_shares(loads, config.loss_limit(source, "rejected_share"))
    worst = verdict.worst
    if not verdict.passed:
        context.log.error(
            f"{source.name}: rejected lines above {percent(verdict.limit)} of the records in"
            f" {len(verdict.over_limit)} partition(s): "
            + "; ".join(p.describe() for p in verdict.over_limit)
        )
    yield dg.AssetCheckResult(
        asset_key=raw_table(source.name).asset_key,
        check_name=REJECTED_SHARE_CHECK,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "limit": verdict.limit,
            "partitions_checked": len(verdict.partitions),
            "partitions_over_limit": "; ".join(p.describe() for p in verdict.over_limit) or "none",
            "worst_share": worst.share if worst else 0.0,
            "worst_partition": str(worst.partition_date) if worst else "none",
            "top_error_types": ", ".join(f"{k}: {v}" for k, v in verdict.top_error_types) or "none",
            CHECK_DETAIL: "; ".join(p.describe() for p in verdict.over_limit) or "within the limit",
        },
    )
    if source.is_snapshot:
        return
    yield dg.AssetCheckResult(
        asset_key=raw_table(source.name).asset_key,
        check_name=FILES_LANDED_CHECK,
        passed=not no_files,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "partitions_checked": len(loads),
            "partitions_without_files": _dates(no_files) or "none",
            "path": source.path,
            CHECK_DETAIL: f"no file matching {source.path} for {_dates(no_files)}" if no_files else "a file every day",
        },
    )


def _dates(dates: list[dt.date], shown: int = 10) -> str:
    text = ", ".join(str(d) for d in dates[:shown])
    return text + (f" and {len(dates) - shown} more" if len(dates) > shown else "")


def extract_retry_policy(config: CdmConfig) -> dg.RetryPolicy | None:
    """Retries with backoff for what can clear by itself: a locked warehouse, a file still being
    copied, a network share that blinked (``extract_retries`` in cdm.yaml). A full disk is not
    retried (``fail_if_disk_full``): it stays full."""
    retries = config.extract_retries
    if retries.max_retries == 0:
        return None
    return dg.RetryPolicy(
        max_retries=retries.max_retries,
        delay=retries.delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL if retries.backoff == "exponential" else dg.Backoff.LINEAR,
    )


@dg.definitions
def defs() -> dg.Definitions:
    config = project_config()
    return dg.Definitions(
        assets=[build_landing_spec(source, config) for source in config.sources]
        + [build_raw_asset(source, config) for source in config.sources]
    )
